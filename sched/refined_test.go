package sched

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestRefinedConstantNormsGiveLinearDecay(t *testing.T) {
	for _, T := range []int{50, 1000, 10000, 30000} {
		norms := make([]any, T)
		for i := range norms {
			norms[i] = 2.5
		}
		for _, norm := range []string{"l1", "l2"} {
			r, err := Parse(map[string]any{"kind": "refined", "peak_lr": 0.3, "norm": norm, "grad_norms": norms})
			if err != nil {
				t.Fatal(err)
			}
			lin, _ := Parse(map[string]any{"kind": "linear", "peak_lr": 0.3, "total_steps": T - 1})
			for n := int64(0); n < int64(T)+5; n++ {
				got, want := r.LR(n), lin.LR(n)
				if math.Abs(got-want) > 1e-12*0.3 {
					t.Fatalf("T=%d %s: LR(%d) = %.17g, linear gives %.17g", T, norm, n, got, want)
				}
			}
		}
	}
}

// refineReference is the published closed form written out naively: clean,
// resample, brute-force centred median (nearest edges, reflected tail),
// weights, plain suffix sums, normalize.
func refineReference(raw []float64, grid int, sigma float64, l1 bool) []float64 {
	var g []float64
	for _, x := range raw {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			g = append(g, x)
		}
	}
	g = g[2 : len(g)-2]
	res := make([]float64, grid)
	for i := range res {
		x := float64(i) * float64(len(g)-1) / float64(grid-1)
		j := int(math.Floor(x))
		if j >= len(g)-1 {
			res[i] = g[len(g)-1]
		} else {
			res[i] = g[j] + (g[j+1]-g[j])*(x-float64(j))
		}
	}
	width := 2*(int(sigma*float64(grid))/2) + 1
	pad := 2 * width
	ext := append([]float64(nil), res...)
	for k := 1; k <= pad; k++ { // numpy "reflect": ..., g[n-3], g[n-2] | g[n-1] | g[n-2], g[n-3], ...
		ext = append(ext, res[grid-1-k])
	}
	med := make([]float64, grid)
	h := width / 2
	win := make([]float64, width)
	for i := 0; i < grid; i++ {
		for k := -h; k <= h; k++ {
			j := min(max(i+k, 0), len(ext)-1)
			win[k+h] = ext[j]
		}
		sort.Float64s(win)
		med[i] = win[h]
	}
	w := make([]float64, grid)
	for i, x := range med {
		if l1 {
			w[i] = 1 / x
		} else {
			w[i] = 1 / (x * x)
		}
	}
	s := make([]float64, grid)
	for t := 0; t < grid; t++ {
		sum := 0.0
		for p := t + 1; p < grid; p++ {
			sum += w[p]
		}
		s[t] = w[t] * sum / w[grid-1]
	}
	mx := 0.0
	for _, x := range s {
		mx = math.Max(mx, x)
	}
	for i := range s {
		s[i] /= mx
	}
	return s
}

func TestRefinedMatchesReferenceAlgorithm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const T = 10000
	raw := make([]any, T)
	vals := make([]float64, T)
	for i := range vals {
		// Norms that fall, then spike near the end, with noise and a few NaNs.
		x := 3*math.Exp(-float64(i)/2000) + 1 + 0.3*rng.Float64()
		if i > 9000 {
			x *= 1.5
		}
		if i%997 == 13 {
			x = math.NaN()
		}
		vals[i], raw[i] = x, x
	}
	for _, l1 := range []bool{false, true} {
		norm := "l2"
		if l1 {
			norm = "l1"
		}
		r, err := Parse(map[string]any{"kind": "refined", "peak_lr": 1.0, "norm": norm, "grad_norms": raw, "filter_width": 0.02})
		if err != nil {
			t.Fatal(err)
		}
		want := refineReference(vals, T, 0.02, l1)
		for n := 0; n < T-1; n++ {
			if got := r.LR(int64(n)); math.Abs(got-want[n]) > 1e-9 {
				t.Fatalf("%s: LR(%d) = %v, reference %v", norm, n, got, want[n])
			}
		}
		if r.LR(T-1) != 0 || r.LR(T+10) != 0 {
			t.Fatalf("%s: the refined schedule must end at 0", norm)
		}
		// The refinement warms up by itself when norms start high.
		if !(r.LR(0) < r.LR(3000)) {
			t.Errorf("%s: no automatic warmup: LR(0)=%v LR(3000)=%v", norm, r.LR(0), r.LR(3000))
		}
	}
}

func TestRefinedFromFile(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "norms.txt")
	jsonl := filepath.Join(dir, "norms.jsonl")
	var a, b strings.Builder
	a.WriteString("# grad norms\n")
	for i := 0; i < 40; i++ {
		a.WriteString("1.5\n\n")
		b.WriteString(`{"step": 1, "grad_norm": 1.5}` + "\n")
	}
	_ = os.WriteFile(plain, []byte(a.String()), 0o600)
	_ = os.WriteFile(jsonl, []byte(b.String()), 0o600)
	for _, f := range []string{plain, jsonl} {
		r, err := Parse(map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms_file": f})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.LR(0); got != 1 {
			t.Errorf("%s: LR(0) = %v", f, got)
		}
		if got := r.LR(13); math.Abs(got-(1-13.0/39)) > 1e-12 {
			t.Errorf("%s: LR(13) = %v", f, got)
		}
		// The canonical form carries the values, not the path.
		c := Canonical(r)
		if _, ok := c["grad_norms_file"]; ok || len(c["grad_norms"].([]any)) != 40 {
			t.Errorf("canonical form %v", c["grad_norms_file"])
		}
	}
	bad := filepath.Join(dir, "bad.txt")
	_ = os.WriteFile(bad, []byte("1\nnope\n"), 0o600)
	for _, c := range []struct {
		spec  map[string]any
		field string
	}{
		{map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms_file": bad}, "grad_norms_file"},
		{map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms_file": filepath.Join(dir, "missing")}, "grad_norms_file"},
		{map[string]any{"kind": "refined", "peak_lr": 1.0}, "grad_norms"},
		{map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": []any{1.0, -2.0, 1.0}}, "grad_norms[1]"},
		{map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": []any{1.0}}, "grad_norms"},
		{map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": []any{1.0, 1.0, 1.0}, "norm": "l3"}, "norm"},
	} {
		_, err := Parse(c.spec)
		if err == nil || !strings.Contains(err.Error(), `"`+c.field+`"`) {
			t.Errorf("%v: error %v should name %q", c.spec, err, c.field)
		}
	}
}

// Five norms leave one after the first and last two are dropped, as the
// published preprocessing does: one point is a constant, so the schedule is
// linear decay (it used to be refused, while two to four norms were kept
// whole). Norms that leave none are refused.
func TestRefinedFromFiveNormsIsLinearDecay(t *testing.T) {
	r, err := Parse(map[string]any{"kind": "refined", "peak_lr": 0.3, "grad_norms": []any{9.0, 1.0, 4.0, 7.0, 2.0}})
	if err != nil {
		t.Fatal(err)
	}
	lin, _ := Parse(map[string]any{"kind": "linear", "peak_lr": 0.3, "total_steps": 4})
	for n := int64(0); n < 8; n++ {
		if got, want := r.LR(n), lin.LR(n); math.Abs(got-want) > 1e-12 {
			t.Fatalf("LR(%d) = %.17g, linear decay over 4 steps gives %.17g", n, got, want)
		}
	}
	nan := math.NaN()
	if _, err := Parse(map[string]any{"kind": "refined", "peak_lr": 0.3, "grad_norms": []any{nan, nan, nan}}); err == nil ||
		!strings.Contains(err.Error(), "need at least 1 finite norm") {
		t.Fatalf("norms with none finite: %v", err)
	}
}

// A norm of 0 (an update whose gradients were all zero) is dropped, as NaN
// is: Ĝ⁻² has no value there. It was refused, so a run's recorded norms with
// one zero built no schedule. A negative norm is still refused.
func TestRefinedDropsZeroNormsAsItDropsNaN(t *testing.T) {
	norms := []any{3.0, 0.0, 2.5, 2.0, 0.0, 1.5, 1.2, 1.0}
	nan := append([]any(nil), norms...)
	nan[1], nan[4] = math.NaN(), math.NaN()
	withZero, err := Parse(map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": norms})
	if err != nil {
		t.Fatal(err)
	}
	withNaN, err := Parse(map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": nan})
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(0); n < 10; n++ {
		if a, b := withZero.LR(n), withNaN.LR(n); a != b || math.IsNaN(a) {
			t.Fatalf("LR(%d): %v with zeros, %v with NaN", n, a, b)
		}
	}
	norms[2] = -1.0
	if _, err := Parse(map[string]any{"kind": "refined", "peak_lr": 1.0, "grad_norms": norms}); err == nil ||
		!strings.Contains(err.Error(), `"grad_norms[2]" = -1`) {
		t.Fatalf("a negative norm: %v", err)
	}
}
