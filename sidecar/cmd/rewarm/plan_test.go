package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// planKs runs `rewarm plan` and returns the k column of each bucket's table.
func planKs(t *testing.T, args ...string) ([][]int64, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := planCmd(args, &out, &errb)
	var buckets [][]int64
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "N":
			buckets = append(buckets, nil)
		case len(f) == 5 && (f[1] == "MoD" || f[1] == "dense"):
			k, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				t.Fatalf("row %q", line)
			}
			buckets[len(buckets)-1] = append(buckets[len(buckets)-1], k)
		}
	}
	return buckets, errb.String(), code
}

func TestPlanFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		want   [][]int64 // k per layer, per bucket (worked out by hand)
		stderr string
	}{
		{"buckets in --tokens", []string{"--layers", "2", "--schedule", "explicit", "--ratios", "1,0.5", "--tokens", "10,31"},
			[][]int64{{10, 5}, {31, 15}}, ""},
		{"constant layers and min-k", []string{"--layers", "4", "--tokens", "100", "--schedule", "constant",
			"--routed-layers", "1,3", "--ratio", "0.25", "--min-k", "30"}, [][]int64{{100, 30, 100, 30}}, ""},
		{"max-k", []string{"--layers", "2", "--tokens", "100", "--schedule", "interleave", "--ratio", "0.5", "--max-k", "7"},
			[][]int64{{100, 7}}, ""},
		{"preset", []string{"--layers", "5", "--tokens", "10", "--schedule", "constant", "--preset", "deep_all"},
			[][]int64{{10, 10, 5, 5, 10}}, ""},
		{"denom given", []string{"--layers", "3", "--tokens", "100", "--denom", "-5"}, nil, `"schedule.denom" = -5`},
		{"bad list", []string{"--tokens", "576,x"}, nil, `--tokens: "x" is not a number`},
		{"bad buckets", []string{"--buckets", "576,x"}, nil, `--buckets: "x" is not a number`},
		// --buckets alone replaces the default --tokens; both given plan every count, sorted.
		{"buckets alone", []string{"--layers", "2", "--schedule", "explicit", "--ratios", "1,0.5", "--buckets", "10,31"},
			[][]int64{{10, 5}, {31, 15}}, ""},
		{"tokens and buckets", []string{"--layers", "2", "--schedule", "explicit", "--ratios", "1,0.5", "--tokens", "40", "--buckets", "10,31"},
			[][]int64{{10, 5}, {31, 15}, {40, 20}}, ""},
		{"tokens list and buckets", []string{"--tokens", "8,9", "--buckets", "10"}, nil, `--tokens 8,9 with --buckets`},
		{"bad ratio", []string{"--schedule", "explicit", "--ratios", "1,a"}, nil, `--ratios: "a" is not a number`},
		// shifted_linear on 3 layers: R_raw(l) = 1 - l/2 = 1, 0.5, 0; layer 0
		// is above max_ratio 0.85, layer 2 is floored to min_ratio 0.15.
		{"shifted_linear", []string{"--layers", "3", "--tokens", "100", "--schedule", "shifted_linear"},
			[][]int64{{100, 50, 15}}, ""},
		// A flag that the chosen kind does not use is refused, not dropped.
		{"ratio with prd", []string{"--layers", "4", "--tokens", "8", "--ratio", "0.3"}, nil,
			`--ratio: mod: field "schedule.ratio" = 0.3: schedule kind "prd" does not use ratio`},
		{"shift with explicit", []string{"--layers", "2", "--tokens", "8", "--schedule", "explicit", "--ratios", "1,0.5", "--shift", "0.4"},
			nil, `--shift: mod: field "schedule.shift" = 0.4: schedule kind "explicit" does not use shift`},
		{"routed layers with interleave", []string{"--layers", "4", "--tokens", "8", "--schedule", "interleave", "--routed-layers", "1"},
			nil, `--routed-layers: mod: field "schedule.layers" = [1]: schedule kind "interleave" does not use layers`},
		{"min above max", []string{"--layers", "4", "--tokens", "8", "--min-ratio", "0.6", "--max-ratio", "0.5"}, nil,
			`--min-ratio: mod: field "schedule.min_ratio" = 0.6: must be <= max_ratio (0.5)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, stderr, code := planKs(t, tc.args...)
			if tc.stderr != "" {
				want := 1 // refused by the planner
				if strings.HasPrefix(tc.name, "bad ") || tc.name == "tokens list and buckets" {
					want = 2 // a flag value that does not parse: a usage error
				}
				if code != want || !strings.Contains(stderr, tc.stderr) {
					t.Fatalf("code %d, stderr %q; want %d and %q", code, stderr, want, tc.stderr)
				}
				return
			}
			if code != 0 || len(got) != len(tc.want) {
				t.Fatalf("code %d, stderr %q, got %v", code, stderr, got)
			}
			for i := range got {
				if len(got[i]) != len(tc.want[i]) {
					t.Fatalf("bucket %d: %v, want %v", i, got[i], tc.want[i])
				}
				for j := range got[i] {
					if got[i][j] != tc.want[i][j] {
						t.Fatalf("bucket %d: %v, want %v", i, got[i], tc.want[i])
					}
				}
			}
		})
	}
}

// plot-plan writes SVG as well as PNG, with the planned ratio and each
// bucket's k / N in the legend, and refuses other extensions.
func TestPlotPlanFormats(t *testing.T) {
	dir := t.TempDir()
	var errb bytes.Buffer
	svg := filepath.Join(dir, "plan.svg")
	if code := plotPlan([]string{"--layers", "8", "--tokens", "576,2880", "-o", svg}, &errb); code != 0 {
		t.Fatalf("svg: code %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "planned ratio R", "k / N, N=576 (mean", "k / N, N=2880 (mean"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the SVG lacks %q", want)
		}
	}
	png := filepath.Join(dir, "plan.png")
	if code := plotPlan([]string{"--layers", "8", "--tokens", "576", "-o", png}, &errb); code != 0 {
		t.Fatalf("png: code %d: %s", code, errb.String())
	}
	if b, _ := os.ReadFile(png); !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Error("not a PNG")
	}
	errb.Reset()
	if code := plotPlan([]string{"--tokens", "576", "-o", filepath.Join(dir, "plan.pdf")}, &errb); code != 2 ||
		!strings.Contains(errb.String(), ".png or .svg") {
		t.Errorf("pdf: code %d, %q", code, errb.String())
	}
}

// --spec is the whole plan: plan flags beside it are refused, not dropped,
// while plot-plan's own -o is still taken.
func TestPlanSpecFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(f, []byte("num_layers: 4\ntokens: 100\nschedule: {kind: explicit, ratios: [1, 0.5, 0.25, 1]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, stderr, code := planKs(t, "--spec", f)
	if code != 0 || len(ks) != 1 || len(ks[0]) != 4 || ks[0][1] != 50 || ks[0][2] != 25 {
		t.Fatalf("plan --spec: exit %d, k %v, stderr %q", code, ks, stderr)
	}
	_, stderr, code = planKs(t, "--spec", f, "--layers", "8", "--tokens", "576")
	if code != 2 || !strings.Contains(stderr, "--layers, --tokens with --spec") {
		t.Errorf("plan --spec --layers: exit %d, stderr %q", code, stderr)
	}
	var errb bytes.Buffer
	if code := plotPlan([]string{"--spec", f, "-o", filepath.Join(dir, "p.svg")}, &errb); code != 0 {
		t.Errorf("plot-plan --spec -o: exit %d, %s", code, errb.String())
	}
}

// svgBars reads plot-plan's bars from its SVG: each filled rectangle that
// stands on the x axis, as its x interval, by fill colour.
func svgBars(t *testing.T, svg []byte) map[string][][2]float64 {
	t.Helper()
	re := regexp.MustCompile(`<path d="M([\d.]+),([\d.]+)L[\d.]+,([\d.]+)L([\d.]+),[\d.]+L[\d.]+,[\d.]+Z" style="fill:(#[0-9A-F]+)"`)
	type rect struct {
		x0, x1, y0, y1 float64
		fill           string
	}
	var rects []rect
	bottoms := map[float64]int{}
	for _, m := range re.FindAllSubmatch(svg, -1) {
		f := func(i int) float64 { v, _ := strconv.ParseFloat(string(m[i]), 64); return v }
		r := rect{f(1), f(4), f(2), f(3), string(m[5])}
		if r.fill == "#FFFFFF" {
			continue
		}
		rects = append(rects, r)
		bottoms[r.y0]++
		bottoms[r.y1]++
	}
	var axis float64 // the edge most bars share: the x axis
	for b, n := range bottoms {
		if n > bottoms[axis] {
			axis = b
		}
	}
	out := map[string][][2]float64{}
	for _, r := range rects {
		if r.y0 == axis || r.y1 == axis {
			out[r.fill] = append(out[r.fill], [2]float64{r.x0, r.x1})
		}
	}
	return out
}

// Each bucket's bars have their own colour, no bar overlaps another even
// with many layers, and the legend gives the bars' own mean k / N (which
// rounding to a multiple moves away from the planned R's mean).
func TestPlotPlanBarsStayApart(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		layers  int
		buckets string
	}{{80, "576,2880"}, {32, "64,576,1152,2880"}, {128, "576,1152,2880"}} {
		svg := filepath.Join(dir, "p.svg")
		var errb bytes.Buffer
		if code := plotPlan([]string{"--layers", strconv.Itoa(c.layers), "--tokens", c.buckets, "-o", svg}, &errb); code != 0 {
			t.Fatalf("%+v: code %d: %s", c, code, errb.String())
		}
		b, _ := os.ReadFile(svg)
		bars := svgBars(t, b)
		nb := len(strings.Split(c.buckets, ","))
		if len(bars) != nb {
			t.Fatalf("%+v: %d bar colours, want %d", c, len(bars), nb)
		}
		var all [][2]float64
		for _, xs := range bars {
			if len(xs) != c.layers {
				t.Fatalf("%+v: %d bars of a colour, want one per layer", c, len(xs))
			}
			all = append(all, xs...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i][0] < all[j][0] })
		for i := 1; i < len(all); i++ {
			if all[i][0] < all[i-1][1]-1e-3 {
				t.Fatalf("%+v: bars [%v] and [%v] overlap", c, all[i-1], all[i])
			}
		}
	}
	// With m = 128 the bars' mean k / N is not the planned mean ratio.
	args := []string{"--layers", "32", "--tokens", "576", "--multiple", "128"}
	ks, _, _ := planKs(t, args...)
	var sum int64
	for _, k := range ks[0] {
		sum += k
	}
	svg := filepath.Join(dir, "m.svg")
	var errb bytes.Buffer
	if code := plotPlan(append(args, "-o", svg), &errb); code != 0 {
		t.Fatalf("code %d: %s", code, errb.String())
	}
	b, _ := os.ReadFile(svg)
	want := fmt.Sprintf("k / N, N=576 (mean %.4f)", float64(sum)/(32*576))
	if !bytes.Contains(b, []byte(want)) || strings.Contains(want, "0.5375") {
		t.Errorf("the legend lacks %q", want)
	}
	// More buckets than colours: refused, pointing at rewarm plan.
	errb.Reset()
	if code := plotPlan([]string{"--tokens", "1,2,3,4,5,6,7,8,9,10,11", "-o", svg}, &errb); code != 2 ||
		!strings.Contains(errb.String(), "11 buckets") || !strings.Contains(errb.String(), "rewarm plan") {
		t.Errorf("11 buckets: code %d, %q", code, errb.String())
	}
}
