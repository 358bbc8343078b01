// Package mod plans Mixture-of-Depths token retention: for each decoder
// layer, whether it routes, the fraction R of routable tokens it keeps, and
// the static k a PyTorch routing module executes, one plan per bucket of
// routable-token counts so shapes stay static.
//
// The default schedule is p-MoD's progressive ratio decay (Zhang et al.
// 2024, as released): R_raw(l) = shift + ½cos(π·l/denom), a layer routes iff
// R_raw(l) <= max_ratio, and then R = max(R_raw, min_ratio).
package mod

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Schedule picks the routed layers and their ratios.
type Schedule struct {
	// Kind is prd (the default), shifted_linear, constant, interleave or
	// explicit.
	Kind string `spec:"kind"`
	// Shift is shift in R_raw (prd, shifted_linear); default 0.5, finite, >= 0.
	Shift float64 `spec:"shift"`
	// MaxRatio is the largest R_raw at which a layer routes (prd,
	// shifted_linear); default 0.85, in [0, 1].
	MaxRatio float64 `spec:"max_ratio"`
	// MinRatio is the least R of a routed layer (prd, shifted_linear); default
	// 0.15, in [0, 1], at most MaxRatio.
	MinRatio float64 `spec:"min_ratio"`
	// Denom is denom in R_raw (prd, shifted_linear), finite, > 0; absent,
	// L − 1 (1 when L = 1).
	Denom *float64 `spec:"denom"`
	// Ratio is R of every routed layer (constant; interleave, which routes
	// the odd layers); default 0.5, in [0, 1].
	Ratio float64 `spec:"ratio"`
	// Layers are constant's routed layers, each in [0, L), none twice;
	// give layers or preset.
	Layers []int64 `spec:"layers"`
	// Preset is constant's deep_all (layers 2..L−2) or deep_all_include_last
	// (2..L−1).
	Preset string `spec:"preset"`
	// Ratios are explicit's R by layer, one per layer, each in [0, 1]; a
	// layer routes iff its ratio is below 1.
	Ratios []float64 `spec:"ratios"`
}

// Rounding turns N·R into an integer k. With a multiple m > 1 it aligns k
// (align "k") or T+k (align "t_plus_k") by the same mode (nearest rounds
// the unrounded N·R or T+N·R once, to the nearest multiple); where that would
// take a k > 0 to 0 (or T+k below T), it uses the first multiple above T
// (T = 0 for align "k"). min_k and max_k clamp last, and k never exceeds N.
type Rounding struct {
	// Mode is floor (the default, as p-MoD), nearest or ceil.
	Mode string `spec:"mode"`
	// Precision is float32 (the default: p-MoD's torch arithmetic) or
	// float64.
	Precision string `spec:"precision"`
	// Multiple is m; default 1 (no alignment), 1 to 2^20.
	Multiple int64 `spec:"multiple"`
	// Align is k (the default) or t_plus_k.
	Align string `spec:"align"`
	// MinK is the least k, >= 0; absent, no lower clamp.
	MinK *int64 `spec:"min_k"`
	// MaxK is the largest k, >= 0 and at least MinK; absent, only N bounds k.
	MaxK *int64 `spec:"max_k"`
}

// Spec is a plan request.
type Spec struct {
	// NumLayers is L, the decoder layers; required, 1 to 4096.
	NumLayers int64 `spec:"num_layers,required"`
	// Tokens is N, a routable-token count to plan a bucket for; default 0
	// (none), >= 0. Give tokens, buckets or both.
	Tokens int64 `spec:"tokens"`
	// Buckets are routable-token counts to plan, each >= 1, strictly
	// increasing; tokens joins them, and at most MaxBuckets in all.
	Buckets []int64 `spec:"buckets"`
	// TextTokens is T, the tokens every layer keeps (not routable); default
	// 0, >= 0.
	TextTokens int64 `spec:"text_tokens"`
	// HiddenSize is d of the FLOPs count; default 4096, >= 1.
	HiddenSize int64 `spec:"hidden_size"`
	// FFNSize is m of the FLOPs count; default 11008, >= 1.
	FFNSize int64 `spec:"ffn_size"`
	// Schedule picks the routed layers; default kind prd.
	Schedule Schedule `spec:"schedule"`
	// Rounding turns N·R into k; default floor in float32, unaligned.
	Rounding Rounding `spec:"rounding"`
	// PerSample asks for each routed layer's k at every routable count
	// 0..N (Layer.KByTokens), so a batch that pads samples with fewer
	// routable tokens to the bucket keeps k_b = K(N_b) of each, as p-MoD's
	// per-sample top-k does.
	PerSample bool `spec:"per_sample"`
}

// MaxBuckets bounds the buckets of one plan.
const MaxBuckets = 256

// MaxPerSampleEntries bounds a per-sample plan's tables, which hold one k
// per routable count 0..N for every routed layer of every bucket.
const MaxPerSampleEntries = 1 << 23

// Layer is one decoder layer of a plan.
type Layer struct {
	Index int64
	Route bool
	// Ratio is the fraction of routable tokens the layer keeps (1 when dense).
	Ratio float64
	// K is the number of routable tokens kept (N when dense).
	K int64
	// KVCapacity is the prompt KV entries the layer stores: text + kept.
	KVCapacity int64
	// KByTokens[n] is the k of a sample with n valid routable tokens, by the
	// same rounding (so KByTokens[N] = K and it never decreases). Only for
	// routed layers of a per_sample plan.
	KByTokens []int32
}

// Summary aggregates a plan.
type Summary struct {
	// MeanRatio is the mean of Ratio over layers (dense layers count 1).
	MeanRatio float64
	// KVRatio is Σ_l KVCapacity / (L·(T+N)): the prompt KV cache against dense.
	KVRatio float64
	// FLOPs counts the prefill with F(n) = 2n(4d² + 3d·m) + 4n²d per layer
	// (n tokens entering it, 2 FLOPs per MAC, Q/K/V/O projections, a
	// three-matrix SwiGLU MLP, QKᵀ and AV); router, norms, embeddings and the
	// LM head are not counted.
	FLOPsDense, FLOPsMoD, FLOPsRatio float64
}

// Bucket is the plan for one routable-token count N.
type Bucket struct {
	Tokens  int64
	Layers  []Layer
	Summary Summary
}

// Plan holds one bucket per routable-token count.
type Plan struct {
	Spec    Spec
	Buckets []Bucket
}

func fail(field string, value any, format string, args ...any) error {
	return specfield.Errorf("mod", field, value, format, args...)
}

// Defaults fill a Spec before decoding.
func Defaults() Spec {
	return Spec{
		HiddenSize: 4096, FFNSize: 11008,
		Schedule: Schedule{Kind: "prd", Shift: 0.5, MaxRatio: 0.85, MinRatio: 0.15, Ratio: 0.5},
		Rounding: Rounding{Mode: "floor", Precision: "float32", Multiple: 1, Align: "k"},
	}
}

// kindFields lists the schedule fields (besides kind) each schedule kind
// uses; a spec that gives any other one is refused rather than silently
// planned without it.
var kindFields = map[string][]string{
	"prd":            {"shift", "max_ratio", "min_ratio", "denom"},
	"shifted_linear": {"shift", "max_ratio", "min_ratio", "denom"},
	"constant":       {"ratio", "layers", "preset"},
	"interleave":     {"ratio"},
	"explicit":       {"ratios"},
}

// checkKindField refuses a schedule field that kind does not use. An
// unknown kind passes here: validate names it.
func checkKindField(kind, field string, value any) error {
	uses, ok := kindFields[kind]
	if !ok || slices.Contains(uses, field) {
		return nil
	}
	return fail("schedule."+field, value, "schedule kind %q does not use %s (its fields: kind, %s)",
		kind, field, strings.Join(uses, ", "))
}

// Parse decodes and builds a plan. It refuses schedule fields that the
// chosen kind does not use, such as ratios with prd.
func Parse(m map[string]any) (*Plan, error) {
	spec := Defaults()
	if err := specfield.Decode("mod", m, &spec); err != nil {
		return nil, err
	}
	if sm, ok := specfield.AsMap(m["schedule"]); ok {
		keys := make([]string, 0, len(sm))
		for k := range sm {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "kind" {
				continue
			}
			if err := checkKindField(spec.Schedule.Kind, k, sm[k]); err != nil {
				return nil, err
			}
		}
	}
	return New(spec)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func (s *Spec) validate() error {
	L := s.NumLayers
	if L < 1 || L > 4096 {
		return fail("num_layers", L, "must be between 1 and 4096")
	}
	if s.Tokens < 0 {
		return fail("tokens", s.Tokens, "must be >= 0")
	}
	if s.Tokens == 0 && len(s.Buckets) == 0 {
		return fail("tokens", nil, "missing (or 0): give tokens, the routable-token count N, or buckets")
	}
	if len(s.Buckets) > MaxBuckets {
		return fail("buckets", fmt.Sprintf("%d values", len(s.Buckets)), "at most %d buckets (each is a compiled graph)", MaxBuckets)
	}
	for i, b := range s.Buckets {
		if b < 1 || (i > 0 && b <= s.Buckets[i-1]) {
			return fail(fmt.Sprintf("buckets[%d]", i), b, "buckets must be positive and increasing")
		}
	}
	if n := len(s.Buckets); s.Tokens > 0 && n == MaxBuckets && !slices.Contains(s.Buckets, s.Tokens) {
		return fail("tokens", s.Tokens, "would be bucket %d: at most %d buckets (each is a compiled graph)", n+1, MaxBuckets)
	}
	if s.TextTokens < 0 {
		return fail("text_tokens", s.TextTokens, "must be >= 0")
	}
	if s.HiddenSize < 1 {
		return fail("hidden_size", s.HiddenSize, "must be >= 1")
	}
	if s.FFNSize < 1 {
		return fail("ffn_size", s.FFNSize, "must be >= 1")
	}
	sc := &s.Schedule
	for _, f := range []struct {
		name string
		v    float64
	}{{"schedule.shift", sc.Shift}, {"schedule.max_ratio", sc.MaxRatio}, {"schedule.min_ratio", sc.MinRatio}, {"schedule.ratio", sc.Ratio}} {
		if !finite(f.v) || f.v < 0 {
			return fail(f.name, f.v, "must be a finite number >= 0")
		}
		if f.name != "schedule.shift" && f.v > 1 {
			return fail(f.name, f.v, "must be <= 1 (a fraction of the routable tokens)")
		}
	}
	if sc.Denom != nil && (!finite(*sc.Denom) || *sc.Denom <= 0) {
		return fail("schedule.denom", *sc.Denom, "must be a finite number > 0")
	}
	// The fields whose presence a Spec shows (the float ones always hold a
	// value, their defaults): Parse checks every field given in the map.
	var denom any
	if sc.Denom != nil {
		denom = *sc.Denom
	}
	for _, f := range []struct {
		name  string
		given bool
		value any
	}{{"denom", sc.Denom != nil, denom}, {"layers", sc.Layers != nil, sc.Layers},
		{"preset", sc.Preset != "", sc.Preset}, {"ratios", sc.Ratios != nil, sc.Ratios}} {
		if f.given {
			if err := checkKindField(sc.Kind, f.name, f.value); err != nil {
				return err
			}
		}
	}
	switch sc.Kind {
	case "prd", "shifted_linear":
		if sc.MinRatio > sc.MaxRatio {
			return fail("schedule.min_ratio", sc.MinRatio, "must be <= max_ratio (%s): a routed layer's ratio is at least min_ratio, and it routes only when its raw ratio is <= max_ratio",
				specfield.FormatValue(sc.MaxRatio))
		}
	case "interleave":
	case "constant":
		if sc.Layers == nil && sc.Preset == "" {
			return fail("schedule.layers", nil, "constant needs layers (a list) or preset (deep_all, deep_all_include_last)")
		}
		if sc.Layers != nil && sc.Preset != "" {
			return fail("schedule.preset", sc.Preset, "give layers or preset, not both")
		}
		if sc.Preset != "" && sc.Preset != "deep_all" && sc.Preset != "deep_all_include_last" {
			return fail("schedule.preset", sc.Preset, "must be deep_all or deep_all_include_last")
		}
		seen := map[int64]bool{}
		for i, l := range sc.Layers {
			if l < 0 || l >= L {
				return fail(fmt.Sprintf("schedule.layers[%d]", i), l, "must be a layer index in [0, %d)", L)
			}
			if seen[l] {
				return fail(fmt.Sprintf("schedule.layers[%d]", i), l, "layer %d is listed twice", l)
			}
			seen[l] = true
		}
	case "explicit":
		if int64(len(sc.Ratios)) != L {
			return fail("schedule.ratios", fmt.Sprintf("%d values", len(sc.Ratios)), "give one ratio per layer (%d)", L)
		}
		for i, r := range sc.Ratios {
			if !finite(r) || r < 0 || r > 1 {
				return fail(fmt.Sprintf("schedule.ratios[%d]", i), r, "must be in [0, 1]")
			}
		}
	default:
		return fail("schedule.kind", sc.Kind, "must be one of: prd, shifted_linear, constant, interleave, explicit")
	}
	rd := &s.Rounding
	switch rd.Mode {
	case "floor", "nearest", "ceil":
	default:
		return fail("rounding.mode", rd.Mode, "must be floor, nearest or ceil")
	}
	if rd.Precision != "float32" && rd.Precision != "float64" {
		return fail("rounding.precision", rd.Precision, "must be float32 or float64")
	}
	if rd.Multiple < 1 || rd.Multiple > 1<<20 {
		return fail("rounding.multiple", rd.Multiple, "must be between 1 and 2^20 (1, 8, 64 and 128 are the useful ones)")
	}
	if rd.Align != "k" && rd.Align != "t_plus_k" {
		return fail("rounding.align", rd.Align, "must be k or t_plus_k")
	}
	if rd.MinK != nil && *rd.MinK < 0 {
		return fail("rounding.min_k", *rd.MinK, "must be >= 0")
	}
	if rd.MaxK != nil && *rd.MaxK < 0 {
		return fail("rounding.max_k", *rd.MaxK, "must be >= 0")
	}
	if rd.MaxK != nil && rd.MinK != nil && *rd.MaxK < *rd.MinK {
		return fail("rounding.max_k", *rd.MaxK, "must be >= min_k (%d)", *rd.MinK)
	}
	return nil
}

// ratios returns each layer's routing decision and ratio.
func (s *Spec) ratios() ([]bool, []float64) {
	L := s.NumLayers
	sc := s.Schedule
	denom := float64(L - 1)
	if sc.Denom != nil {
		denom = *sc.Denom
	}
	if denom == 0 {
		denom = 1
	}
	route := make([]bool, L)
	ratio := make([]float64, L)
	for l := int64(0); l < L; l++ {
		ratio[l] = 1
		switch sc.Kind {
		case "prd", "shifted_linear":
			raw := sc.Shift + 0.5*math.Cos(math.Pi*float64(l)/denom)
			if sc.Kind == "shifted_linear" {
				raw = sc.Shift + 0.5 - float64(l)/denom
			}
			if raw <= sc.MaxRatio {
				route[l], ratio[l] = true, math.Max(raw, sc.MinRatio)
			}
		case "interleave":
			if l%2 == 1 {
				route[l], ratio[l] = true, sc.Ratio
			}
		case "explicit":
			if sc.Ratios[l] < 1 {
				route[l], ratio[l] = true, sc.Ratios[l]
			}
		}
	}
	if sc.Kind == "constant" {
		layers := sc.Layers
		switch sc.Preset {
		case "deep_all":
			for l := int64(2); l <= L-2; l++ {
				layers = append(layers, l)
			}
		case "deep_all_include_last":
			for l := int64(2); l <= L-1; l++ {
				layers = append(layers, l)
			}
		}
		for _, l := range layers {
			route[l], ratio[l] = true, sc.Ratio
		}
	}
	return route, ratio
}

// K is the number of routable tokens a layer with ratio keeps out of n.
func (r *Rounding) K(n int64, ratio float64, text int64) int64 {
	var x float64
	if r.Precision == "float32" {
		// p-MoD multiplies an integer tensor by a Python float: torch
		// computes it in float32.
		x = float64(float32(n) * float32(ratio))
	} else {
		x = float64(n) * ratio
	}
	var k int64
	switch r.Mode {
	case "nearest":
		k = int64(math.Floor(x + 0.5))
	case "ceil":
		k = int64(math.Ceil(x))
	default:
		k = int64(math.Floor(x))
	}
	if m := r.Multiple; m > 1 {
		base := int64(0)
		if r.Align == "t_plus_k" {
			base = text
		}
		v := base + k
		switch r.Mode {
		case "nearest":
			// From the unrounded product: rounding to an integer first
			// could move a value just below half way onto it (95.6 → 96,
			// half way between 64 and 128) and pick the farther multiple.
			v = int64(math.Floor((float64(base)+x)/float64(m)+0.5)) * m
		case "ceil":
			v = (v + m - 1) / m * m
		default:
			v = v / m * m
		}
		if v < base || (k > 0 && v == base) {
			// Rounding down to T (or below it, which also leaves T+k
			// unaligned) would drop every routable token of a layer that
			// keeps some: take the first multiple above T instead (at or
			// above it for a layer that keeps none).
			v = (base + m - 1) / m * m
			if k > 0 && v == base {
				v += m
			}
		}
		k = v - base
	}
	if r.MinK != nil {
		k = max(k, *r.MinK)
	}
	if r.MaxK != nil {
		k = min(k, *r.MaxK)
	}
	return min(max(k, 0), n)
}

// LayerFLOPs is F(n) = 2n(4d² + 3d·m) + 4n²d.
func LayerFLOPs(n, d, m int64) float64 {
	N, D, M := float64(n), float64(d), float64(m)
	return 2*N*(4*D*D+3*D*M) + 4*N*N*D
}

// New validates a spec and builds its plan. Start the spec from Defaults()
// (hidden and FFN sizes, rounding, schedule), as Parse does: a zero Spec is
// refused field by field.
func New(spec Spec) (*Plan, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	buckets := append([]int64(nil), spec.Buckets...)
	if spec.Tokens > 0 {
		buckets = append(buckets, spec.Tokens)
		sort.Slice(buckets, func(a, b int) bool { return buckets[a] < buckets[b] })
		buckets = dedup(buckets)
	}
	route, ratio := spec.ratios()
	if spec.PerSample {
		var routed, counts int64
		for _, r := range route {
			if r {
				routed++
			}
		}
		// Summed and compared without overflow: tokens reach 2^53.
		var over bool
		for _, n := range buckets {
			counts += n + 1
			if counts > MaxPerSampleEntries {
				over = true
				break
			}
		}
		if over || (routed > 0 && counts > MaxPerSampleEntries/routed) {
			return nil, fail("per_sample", true, "the tables of k per routable count would hold %d routed layers x %s counts, over the limit of %d entries; plan without per_sample",
				routed, countText(counts, over), MaxPerSampleEntries)
		}
	}
	p := &Plan{Spec: spec}
	T := spec.TextTokens
	for _, n := range buckets {
		b := Bucket{Tokens: n}
		var sumR, kv, fd, fm float64
		for l := int64(0); l < spec.NumLayers; l++ {
			k := n
			if route[l] {
				k = spec.Rounding.K(n, ratio[l], T)
			}
			layer := Layer{Index: l, Route: route[l], Ratio: ratio[l], K: k, KVCapacity: T + k}
			if route[l] && spec.PerSample {
				layer.KByTokens = make([]int32, n+1)
				for i := range layer.KByTokens {
					layer.KByTokens[i] = int32(spec.Rounding.K(int64(i), ratio[l], T))
				}
			}
			b.Layers = append(b.Layers, layer)
			sumR += ratio[l]
			kv += float64(T + k)
			fd += LayerFLOPs(T+n, spec.HiddenSize, spec.FFNSize)
			fm += LayerFLOPs(T+k, spec.HiddenSize, spec.FFNSize)
		}
		L := float64(spec.NumLayers)
		b.Summary = Summary{MeanRatio: sumR / L, KVRatio: kv / (L * float64(T+n)),
			FLOPsDense: fd, FLOPsMoD: fm, FLOPsRatio: fm / fd}
		p.Buckets = append(p.Buckets, b)
	}
	return p, nil
}

func dedup(xs []int64) []int64 {
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// For returns the bucket for n routable tokens: the smallest bucket >= n.
func (p *Plan) For(n int64) (*Bucket, error) {
	for i := range p.Buckets {
		if p.Buckets[i].Tokens >= n {
			return &p.Buckets[i], nil
		}
	}
	return nil, fail("tokens", n, "exceeds the largest bucket (%d)", p.Buckets[len(p.Buckets)-1].Tokens)
}

// countText prints a count, or a lower bound when summing stopped early.
func countText(n int64, partial bool) string {
	if partial {
		return fmt.Sprintf("over %d", n)
	}
	return strconv.FormatInt(n, 10)
}
