package sched

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Refined is the schedule refined from observed gradient norms (Defazio et
// al. 2023, "When, Why and How Much? Adaptive Learning Rate Scheduling by
// Refinement"), following the authors' closed form:
//
//  1. clean: drop 0, NaN and +Inf norms, then, with more than four left, the
//     first and last two points;
//  2. resample linearly onto a grid of R points (R = total_steps, at least
//     10,000 and at most 2^20; the table is interpolated for other steps);
//  3. median-filter with width 2·⌊⌊σR⌋/2⌋+1 (σ = filter_width, 0.1 by
//     default), nearest-value edges at the start and a reflected tail of
//     twice the width at the end;
//  4. weights w_t = Ĝ_t^−2 (norm l2, SGD-like) or Ĝ_t^−1 (norm l1, Adam-like);
//  5. s_t = w_t·Σ_{p>t} w_p / w_{T−1}, normalized so max s = 1;
//     LR(n) = peak_lr·s_n, and 0 from update T on.
//
// total_steps defaults to the number of norms given (the observed run's length).
//
// Constant norms give exactly linear decay, peak_lr·(T−1−n)/(T−1). The norms
// come inline (grad_norms) or from a file (grad_norms_file: one number per
// line, or JSON lines with a "grad_norm" or "norm" key); a file is read once
// and its values are kept in the canonical spec, so a snapshot restores the
// same schedule even if the file changes.
type Refined struct {
	// PeakLR is the rate where s = 1; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// Norm is l2 (the default) or l1.
	Norm string `spec:"norm"`
	// GradNorms are the observed norms, each >= 0 (0, NaN and +Inf are dropped),
	// at least one finite and above 0. Give them or grad_norms_file, not both.
	GradNorms []float64 `spec:"grad_norms"`
	// GradNormsFile is a file of norms; Validate reads it into GradNorms and
	// clears it.
	GradNormsFile *string `spec:"grad_norms_file"`
	// TotalSteps is T, >= 2; absent, the number of norms given (which must
	// then be at least 2).
	TotalSteps *int64 `spec:"total_steps"`
	// FilterWidth is σ; default 0.1, in [0, 0.5).
	FilterWidth float64 `spec:"filter_width"`

	table []float64
	total int64
}

const (
	refinedMinGrid = 10000
	refinedMaxGrid = 1 << 20
)

func (r *Refined) Kind() string { return "refined" }

func (r *Refined) Validate() error {
	v := checks{kind: r.Kind()}
	v.rate("peak_lr", r.PeakLR)
	oneOf(&v, "norm", r.Norm, map[string]bool{"l1": true, "l2": true})
	if !(r.FilterWidth >= 0 && r.FilterWidth < 0.5) {
		v.fail("filter_width", r.FilterWidth, "must be in [0, 0.5)")
	}
	if v.err != nil {
		return v.err
	}
	switch {
	case r.GradNormsFile != nil && r.GradNorms != nil:
		return specfield.Errorf(r.Kind(), "grad_norms_file", *r.GradNormsFile, "give grad_norms or grad_norms_file, not both")
	case r.GradNormsFile != nil:
		norms, err := readNorms(*r.GradNormsFile)
		if err != nil {
			return specfield.Errorf(r.Kind(), "grad_norms_file", *r.GradNormsFile, "%v", err)
		}
		r.GradNorms, r.GradNormsFile = norms, nil
	case r.GradNorms == nil:
		return specfield.Errorf(r.Kind(), "grad_norms", nil, "missing: give grad_norms or grad_norms_file")
	}
	for i, g := range r.GradNorms {
		if g < 0 {
			return specfield.Errorf(r.Kind(), fmt.Sprintf("grad_norms[%d]", i), g, "must be >= 0 (0, NaN and +Inf are dropped)")
		}
	}
	clean := cleanNorms(r.GradNorms)
	if len(clean) < 1 {
		return specfield.Errorf(r.Kind(), "grad_norms", fmt.Sprintf("%d values", len(r.GradNorms)),
			"need at least 1 finite norm above 0 (0, NaN and +Inf are dropped)")
	}
	r.total = int64(len(r.GradNorms)) // the run the norms came from
	if r.TotalSteps == nil && r.total < 2 {
		return specfield.Errorf(r.Kind(), "grad_norms", "1 value", "one norm is a 1-step run: give more norms, or total_steps >= 2")
	}
	if r.TotalSteps != nil {
		if *r.TotalSteps < 2 {
			return specfield.Errorf(r.Kind(), "total_steps", *r.TotalSteps, "must be >= 2")
		}
		r.total = *r.TotalSteps
	}
	r.table = refine(clean, gridSize(r.total), r.FilterWidth, r.Norm)
	// On a grid finer than the run the maximum can fall between two steps:
	// rescale so the largest rate a step actually uses is peak_lr.
	if int64(len(r.table)) > r.total {
		top := 0.0
		for n := int64(0); n < r.total-1; n++ {
			top = math.Max(top, r.unit(n))
		}
		if top > 0 {
			for i := range r.table {
				r.table[i] /= top
			}
		}
	}
	return nil
}

func gridSize(total int64) int {
	return int(min(max(total, refinedMinGrid), refinedMaxGrid))
}

func cleanNorms(g []float64) []float64 {
	out := make([]float64, 0, len(g))
	for _, x := range g {
		// 0 is an update whose gradients were all zero: Ĝ⁻² has no value.
		if x > 0 && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	if len(out) > 4 {
		out = out[2 : len(out)-2]
	}
	return out
}

// resample interpolates g linearly onto n evenly spaced points.
func resample(g []float64, n int) []float64 {
	out := make([]float64, n)
	if len(g) == 1 || n == 1 {
		for i := range out {
			out[i] = g[0]
		}
		return out
	}
	for i := range out {
		x := float64(i) * float64(len(g)-1) / float64(n-1)
		j := int(x)
		if j >= len(g)-1 {
			out[i] = g[len(g)-1]
			continue
		}
		f := x - float64(j)
		out[i] = g[j] + (g[j+1]-g[j])*f
	}
	return out
}

func refine(norms []float64, grid int, sigma float64, norm string) []float64 {
	g := resample(norms, grid)
	width := 2*(int(sigma*float64(grid))/2) + 1
	smooth := medianFilter(g, width)
	w := make([]float64, grid)
	for i, x := range smooth {
		if norm == "l1" {
			w[i] = 1 / x
		} else {
			w[i] = 1 / (x * x)
		}
	}
	// s_t = w_t·Σ_{p>t} w_p / w_{T−1}, with a compensated suffix sum so that
	// constant weights give an exactly linear result.
	s := make([]float64, grid)
	var sum, comp float64
	last := w[grid-1]
	for t := grid - 1; t >= 0; t-- {
		s[t] = w[t] * (sum + comp) / last
		// Neumaier summation of w[t] into (sum, comp).
		y := w[t]
		tt := sum + y
		if math.Abs(sum) >= math.Abs(y) {
			comp += (sum - tt) + y
		} else {
			comp += (y - tt) + sum
		}
		sum = tt
	}
	peak := 0.0
	for _, x := range s {
		peak = math.Max(peak, x)
	}
	if peak > 0 {
		for i := range s {
			s[i] /= peak
		}
	}
	return s
}

// medianFilter is a centred running median of odd width with nearest-value
// edges, applied to g extended at the end by a reflection of 2·width
// samples, as the reference does before dropping that tail again.
func medianFilter(g []float64, width int) []float64 {
	n := len(g)
	if width <= 1 || n < 3 {
		return append([]float64(nil), g...)
	}
	pad := 2 * width
	ext := make([]float64, n+pad)
	period := 2 * (n - 1)
	for i := range ext {
		j := i % period
		if j >= n {
			j = period - j
		}
		ext[i] = g[j]
	}
	// Ranks of the extended values, for an order-statistics Fenwick tree.
	L := len(ext)
	order := make([]int, L)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		if ext[order[a]] != ext[order[b]] {
			return ext[order[a]] < ext[order[b]]
		}
		return order[a] < order[b]
	})
	rank := make([]int, L)
	for r, i := range order {
		rank[i] = r
	}
	tree := make([]int, L+1)
	add := func(i, d int) {
		for r := rank[i] + 1; r <= L; r += r & -r {
			tree[r] += d
		}
	}
	kth := func(k int) int { // k-th smallest (1-based) in the window: its rank
		pos, step := 0, 1
		for step*2 <= L {
			step *= 2
		}
		for ; step > 0; step /= 2 {
			if pos+step <= L && tree[pos+step] < k {
				pos += step
				k -= tree[pos]
			}
		}
		return pos
	}
	clamp := func(i int) int { return min(max(i, 0), L-1) }
	h := width / 2
	for i := -h; i <= h; i++ {
		add(clamp(i), 1)
	}
	out := make([]float64, n)
	for i := 0; i < n; i++ {
		out[i] = ext[order[kth(h+1)]]
		add(clamp(i-h), -1)
		add(clamp(i+h+1), 1)
	}
	return out
}

func (r *Refined) LR(n int64) float64 {
	if n >= r.total-1 || n < 0 {
		return 0
	}
	return r.PeakLR * r.unit(n)
}

// unit is the normalized schedule at step n < total−1, interpolating the
// table when its grid differs from the run.
func (r *Refined) unit(n int64) float64 {
	R := len(r.table)
	if int64(R) == r.total {
		return r.table[n]
	}
	x := float64(n) * float64(R-1) / float64(r.total-1)
	j := int(x)
	f := x - float64(j)
	return r.table[j] + (r.table[j+1]-r.table[j])*f
}

func (r *Refined) lrRange() (float64, float64) { return 0, r.PeakLR }
func (r *Refined) floor() float64              { return 0 }
func (r *Refined) Phases() []Phase             { return []Phase{{"refined", 0}, {"end", r.total - 1}} }

func readNorms(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if strings.HasPrefix(text, "{") {
			var obj map[string]any
			if err := json.Unmarshal([]byte(text), &obj); err != nil {
				return nil, fmt.Errorf("line %d: %v", line, err)
			}
			val, ok := obj["grad_norm"]
			if !ok {
				val, ok = obj["norm"]
			}
			x, isNum := val.(float64)
			if !ok || !isNum {
				return nil, fmt.Errorf("line %d: no numeric \"grad_norm\" or \"norm\" key", line)
			}
			out = append(out, x)
			continue
		}
		x, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %q is not a number", line, text)
		}
		out = append(out, x)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
