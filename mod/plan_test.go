package mod

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rewarm/rewarm/internal/specfield"
)

func plan(t testing.TB, m map[string]any) *Plan {
	t.Helper()
	p, err := Parse(m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ks(b Bucket) []int64 {
	out := make([]int64, len(b.Layers))
	for i, l := range b.Layers {
		out[i] = l.K
	}
	return out
}

func rep(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// The reference's test vectors for the released p-MoD schedule (L=32,
// shift 0.5, max 0.85, min 0.15, floor rounding): the k table and means of
// shared/reference/mod.md §1.3, worked out there from p-MoD's formula.
func TestPMoDTestVectors(t *testing.T) {
	p := plan(t, map[string]any{"num_layers": 32, "buckets": []any{576, 2880}})
	want := map[int64][]int64{
		576: append(append(rep(576, 8), 486, 464, 440, 414, 388, 360, 331, 302, 273, 244, 215, 187, 161, 135, 111, 89), rep(86, 8)...),
		2880: append(append(rep(2880, 8), 2432, 2321, 2201, 2074, 1940, 1800, 1658, 1512, 1367, 1221, 1079, 939, 805, 678, 558, 447),
			rep(432, 8)...),
	}
	frac := map[int64]float64{576: 0.536892, 2880: 0.537413}
	for _, b := range p.Buckets {
		got := ks(b)
		for i := range got {
			if got[i] != want[b.Tokens][i] {
				t.Fatalf("N=%d layer %d: k = %d, want %d (all: %v)", b.Tokens, i, got[i], want[b.Tokens][i], got)
			}
		}
		for i, l := range b.Layers {
			if l.Route != (i >= 8) {
				t.Errorf("N=%d: layer %d route = %v", b.Tokens, i, l.Route)
			}
		}
		if math.Abs(b.Summary.MeanRatio-0.5375) > 1e-12 {
			t.Errorf("N=%d: mean ratio %v, want 0.5375", b.Tokens, b.Summary.MeanRatio)
		}
		// KV (no text tokens) is Σk/(L·N): the reference's 0.536892 / 0.537413, within
		// 0.15 points of p-MoD's reported 53.8 %.
		if math.Abs(b.Summary.KVRatio-frac[b.Tokens]) > 1e-6 || math.Abs(b.Summary.KVRatio-0.538) > 0.0015 {
			t.Errorf("N=%d: KV ratio %v", b.Tokens, b.Summary.KVRatio)
		}
	}
}

// The 7B FLOPs, counted as Summary documents. 55 text tokens reproduce the
// reported dense LLaVA-1.5-7B prefill (8.38 TFLOPs) exactly; with the same
// count p-MoD's LLaVA-1.5 figure (4.92) and LLaVA-NeXT ratio (55.6 %) come
// out within 5 %, the tolerance the reference states for this analytic count.
func TestFLOPsAgainstReportedFigures(t *testing.T) {
	v15 := plan(t, map[string]any{"num_layers": 32, "tokens": 576, "text_tokens": 55}).Buckets[0].Summary
	if got := v15.FLOPsDense / 1e12; math.Abs(got-8.38)/8.38 > 0.005 {
		t.Errorf("LLaVA-1.5-7B dense prefill: %.3f TFLOPs, reported 8.38", got)
	}
	if got := v15.FLOPsMoD / 1e12; math.Abs(got-4.92)/4.92 > 0.05 {
		t.Errorf("p-MoD-LLaVA-1.5-7B: %.3f TFLOPs, reported 4.92", got)
	}
	next := plan(t, map[string]any{"num_layers": 32, "tokens": 2880, "text_tokens": 55}).Buckets[0].Summary
	if math.Abs(next.FLOPsRatio-0.556)/0.556 > 0.05 {
		t.Errorf("p-MoD-LLaVA-NeXT-7B FLOPs ratio %.4f, reported 0.556", next.FLOPsRatio)
	}
	t.Logf("LLaVA-1.5: %.2f -> %.2f TFLOPs (reported 8.38 -> 4.92); LLaVA-NeXT ratio %.4f (reported 0.556)",
		v15.FLOPsDense/1e12, v15.FLOPsMoD/1e12, next.FLOPsRatio)
}

// p-MoD computes trunc(N·R) in float32 (an int tensor times a Python float);
// the float32 and float64 products differ at N = 2365 and 4730, layer 10.
func TestFloat32VersusFloat64Boundary(t *testing.T) {
	for _, c := range []struct {
		n        int64
		f32, f64 int64
	}{{2365, 1808, 1807}, {4730, 3616, 3615}} {
		p32 := plan(t, map[string]any{"num_layers": 32, "tokens": c.n})
		p64 := plan(t, map[string]any{"num_layers": 32, "tokens": c.n, "rounding": map[string]any{"precision": "float64"}})
		if k := p32.Buckets[0].Layers[10].K; k != c.f32 {
			t.Errorf("N=%d float32: k = %d, want %d", c.n, k, c.f32)
		}
		if k := p64.Buckets[0].Layers[10].K; k != c.f64 {
			t.Errorf("N=%d float64: k = %d, want %d", c.n, k, c.f64)
		}
	}
	// Elsewhere in 1..4999 the two agree.
	for n := int64(1); n < 5000; n++ {
		if n == 2365 || n == 4730 {
			continue
		}
		a := plan(t, map[string]any{"num_layers": 32, "tokens": n})
		b := plan(t, map[string]any{"num_layers": 32, "tokens": n, "rounding": map[string]any{"precision": "float64"}})
		for l := range a.Buckets[0].Layers {
			if a.Buckets[0].Layers[l].K != b.Buckets[0].Layers[l].K {
				t.Fatalf("N=%d layer %d: float32 %d vs float64 %d", n, l, a.Buckets[0].Layers[l].K, b.Buckets[0].Layers[l].K)
			}
		}
	}
}

func TestScheduleKinds(t *testing.T) {
	cases := []struct {
		sched  map[string]any
		routed []int64
		ratio  float64
	}{
		{map[string]any{"kind": "interleave", "ratio": 0.125}, []int64{1, 3, 5, 7}, 0.125},
		{map[string]any{"kind": "constant", "ratio": 0.25, "preset": "deep_all"}, []int64{2, 3, 4, 5, 6}, 0.25},
		{map[string]any{"kind": "constant", "ratio": 0.25, "preset": "deep_all_include_last"}, []int64{2, 3, 4, 5, 6, 7}, 0.25},
		{map[string]any{"kind": "constant", "ratio": 0.5, "layers": []any{0, 7}}, []int64{0, 7}, 0.5},
		{map[string]any{"kind": "explicit", "ratios": []any{1, 0.5, 1, 0.5, 1, 0.5, 1, 0.5}}, []int64{1, 3, 5, 7}, 0.5},
	}
	for _, c := range cases {
		p := plan(t, map[string]any{"num_layers": 8, "tokens": 64, "schedule": c.sched})
		var routed []int64
		for _, l := range p.Buckets[0].Layers {
			if l.Route {
				routed = append(routed, l.Index)
				if l.Ratio != c.ratio || l.K != int64(math.Floor(64*c.ratio)) {
					t.Errorf("%v: layer %d ratio %v k %d", c.sched, l.Index, l.Ratio, l.K)
				}
			}
		}
		if !slices.Equal(routed, c.routed) {
			t.Errorf("%v: routed %v, want %v", c.sched, routed, c.routed)
		}
	}
	// shifted_linear: shift + 0.5 − l/denom.
	p := plan(t, map[string]any{"num_layers": 11, "tokens": 100, "schedule": map[string]any{"kind": "shifted_linear"}})
	for _, l := range p.Buckets[0].Layers {
		raw := 1 - float64(l.Index)/10
		wantRoute := raw <= 0.85
		if l.Route != wantRoute || (wantRoute && math.Abs(l.Ratio-math.Max(raw, 0.15)) > 1e-12) {
			t.Errorf("shifted_linear layer %d: %+v", l.Index, l)
		}
	}
	// denom 31 on a 40-layer model: the cosine climbs back up after layer 31.
	d := plan(t, map[string]any{"num_layers": 40, "tokens": 100, "schedule": map[string]any{"denom": 31}})
	if !d.Buckets[0].Layers[25].Route || d.Buckets[0].Layers[39].Ratio <= d.Buckets[0].Layers[31].Ratio {
		t.Error("denom 31 should be honoured on L=40")
	}
}

func TestPlanProperties(t *testing.T) {
	for _, L := range []int{12, 24, 32, 48} {
		for _, n := range []int{1, 7, 64, 576, 1000, 2880} {
			for _, mode := range []string{"floor", "nearest", "ceil"} {
				for _, m := range []int{1, 8, 64, 128} {
					for _, align := range []string{"k", "t_plus_k"} {
						p := plan(t, map[string]any{"num_layers": L, "tokens": n, "text_tokens": 37,
							"rounding": map[string]any{"mode": mode, "multiple": m, "align": align}})
						prev := int64(math.MaxInt64)
						for _, l := range p.Buckets[0].Layers {
							if l.K < 0 || l.K > int64(n) {
								t.Fatalf("k=%d outside [0, %d]", l.K, n)
							}
							if !l.Route {
								continue
							}
							if l.K > prev {
								t.Fatalf("L=%d n=%d %s m=%d: k rises at layer %d (%d > %d)", L, n, mode, m, l.Index, l.K, prev)
							}
							prev = l.K
							if l.K == 0 && l.Ratio*float64(n) >= 1.001 {
								t.Fatalf("L=%d n=%d %s m=%d %s: layer %d keeps none of its %.1f", L, n, mode, m, align, l.Index, l.Ratio*float64(n))
							}
							v := l.K
							if align == "t_plus_k" {
								v += 37
							}
							if m > 1 && l.K < int64(n) && v%int64(m) != 0 {
								t.Fatalf("L=%d n=%d %s m=%d %s: k=%d not aligned", L, n, mode, m, align, l.K)
							}
							// nearest: the multiple nearest the unrounded T+N·R (where
							// neither N nor the keep-some fallback decided it).
							base := v - l.K
							if mode == "nearest" && m > 1 && l.K < int64(n) && v-int64(m) > base {
								if d := math.Abs(float64(v) - (float64(base) + l.Ratio*float64(n))); d > float64(m)/2+1e-3 {
									t.Fatalf("L=%d n=%d m=%d %s: layer %d k=%d lies %.2f from T+N·R", L, n, m, align, l.Index, l.K, d)
								}
							}
						}
					}
				}
			}
		}
	}
	// min_k / max_k clamp.
	p := plan(t, map[string]any{"num_layers": 32, "tokens": 576, "rounding": map[string]any{"min_k": 100, "max_k": 400}})
	for _, l := range p.Buckets[0].Layers {
		if l.Route && (l.K < 100 || l.K > 400) {
			t.Fatalf("clamp: %+v", l)
		}
	}
}

// Aligning T+k down must not fall below T (which would drop every routable
// token and leave T+k unaligned): it takes the first multiple at or above T.
func TestTextPlusKAlignmentNeverBelowText(t *testing.T) {
	for _, c := range []struct {
		mode       string
		n, text, m int64
		ratio      float64
		want       int64
	}{
		{"floor", 100, 100, 64, 0.15, 28}, // 115 floors to 64 < 100: 128
		{"floor", 100, 100, 64, 0.28, 28}, // 128 exactly
		{"floor", 100, 100, 64, 0.9, 28},  // 190 floors to 128
		{"nearest", 40, 70, 64, 0.05, 40}, // 72 rounds to 64 < 70: 128, clamped to N
		{"floor", 576, 64, 64, 0.15, 64},  // 150 floors to 128: k 64
		{"ceil", 576, 64, 64, 0.15, 128},  // 150 rounds up to 192
		{"floor", 576, 55, 128, 0.15, 73}, // 141 floors to 128
		{"floor", 576, 55, 128, 0.05, 73}, // 83 floors to 0 < 55: 128
		{"floor", 576, 64, 64, 0.05, 64},  // 92 floors to 64 = T, no routable token left: 128
		{"floor", 576, 64, 64, 0, 0},      // a layer that keeps none stays at T
	} {
		r := Rounding{Mode: c.mode, Precision: "float64", Multiple: c.m, Align: "t_plus_k"}
		if got := r.K(c.n, c.ratio, c.text); got != c.want {
			t.Errorf("%+v: k = %d, want %d", c, got, c.want)
		}
	}
}

// A per-sample plan's table holds, for every routable count n, the k a
// bucket of exactly n would get; for p-MoD's rounding that is
// trunc(float32(n)·float32(R)), worked out here directly.
func TestPerSampleTables(t *testing.T) {
	p := plan(t, map[string]any{"num_layers": 32, "buckets": []any{576, 2880}, "per_sample": true})
	for _, b := range p.Buckets {
		for _, l := range b.Layers {
			if !l.Route {
				if l.KByTokens != nil {
					t.Fatalf("dense layer %d has a table", l.Index)
				}
				continue
			}
			if len(l.KByTokens) != int(b.Tokens)+1 || int64(l.KByTokens[b.Tokens]) != l.K {
				t.Fatalf("N=%d layer %d: table of %d ending %d, want %d ending k=%d",
					b.Tokens, l.Index, len(l.KByTokens), l.KByTokens[len(l.KByTokens)-1], b.Tokens+1, l.K)
			}
			for n, k := range l.KByTokens {
				want := int32(math.Trunc(float64(float32(n) * float32(l.Ratio))))
				if k != want {
					t.Fatalf("N=%d layer %d n=%d: k_b = %d, want %d", b.Tokens, l.Index, n, k, want)
				}
			}
		}
	}
	// With alignment the table still never decreases and ends at k.
	p = plan(t, map[string]any{"num_layers": 12, "tokens": 300, "text_tokens": 37, "per_sample": true,
		"rounding": map[string]any{"multiple": 64, "align": "t_plus_k", "min_k": 3}})
	for _, l := range p.Buckets[0].Layers {
		for n := 1; n < len(l.KByTokens); n++ {
			if l.KByTokens[n] < l.KByTokens[n-1] || l.KByTokens[n] > int32(n) {
				t.Fatalf("layer %d: table not monotone or above n at %d: %v", l.Index, n, l.KByTokens[n-1:n+1])
			}
		}
	}
	if plan(t, map[string]any{"num_layers": 32, "tokens": 576}).Buckets[0].Layers[20].KByTokens != nil {
		t.Error("tables without per_sample")
	}
}

func TestBuckets(t *testing.T) {
	p := plan(t, map[string]any{"num_layers": 4, "buckets": []any{128, 256, 512}, "tokens": 256})
	if len(p.Buckets) != 3 {
		t.Fatalf("%d buckets", len(p.Buckets))
	}
	for _, c := range []struct{ n, want int64 }{{1, 128}, {128, 128}, {129, 256}, {500, 512}} {
		b, err := p.For(c.n)
		if err != nil || b.Tokens != c.want {
			t.Errorf("For(%d) = %v %v", c.n, b, err)
		}
	}
	if _, err := p.For(513); err == nil {
		t.Error("no error past the largest bucket")
	}
}

func manyBuckets(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestMaxBucketsCountsTokens(t *testing.T) {
	p, err := Parse(map[string]any{"num_layers": 4, "buckets": manyBuckets(MaxBuckets), "tokens": 7})
	if err != nil {
		t.Fatalf("tokens among the buckets: %v", err)
	}
	if len(p.Buckets) != MaxBuckets {
		t.Fatalf("%d buckets, want %d", len(p.Buckets), MaxBuckets)
	}
}

func TestBadPlanSpecs(t *testing.T) {
	cases := []struct {
		m     map[string]any
		field string
	}{
		{map[string]any{"tokens": 10}, "num_layers"},
		{map[string]any{"num_layers": 0, "tokens": 10}, "num_layers"},
		{map[string]any{"num_layers": 4}, "tokens"},
		{map[string]any{"num_layers": 4, "buckets": []any{64, 32}}, "buckets[1]"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"kind": "zigzag"}}, "schedule.kind"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"max_ratio": math.NaN()}}, "schedule.max_ratio"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"kind": "explicit", "ratios": []any{1}}}, "schedule.ratios"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"kind": "constant", "layers": []any{9}}}, "schedule.layers[0]"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"kind": "constant", "layers": []any{1, 2, 1}}}, "schedule.layers[2]"},
		{map[string]any{"num_layers": 8, "tokens": 8, "schedule": map[string]any{"kind": "constant", "layers": []any{1}, "preset": "deep_all"}}, "schedule.preset"},
		{map[string]any{"num_layers": 4, "tokens": 8, "rounding": map[string]any{"multiple": 0}}, "rounding.multiple"},
		{map[string]any{"num_layers": 4, "tokens": 8, "rounding": map[string]any{"mode": "round"}}, "rounding.mode"},
		{map[string]any{"num_layers": 4, "tokens": 8, "rounding": map[string]any{"align": "t"}}, "rounding.align"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"denom": 0}}, "schedule.denom"},
		{map[string]any{"num_layers": 4, "tokens": 8, "typo": 1}, "typo"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"min_ratio": 2}}, "schedule.min_ratio"},
		{map[string]any{"num_layers": 4, "tokens": 8, "schedule": map[string]any{"max_ratio": 1.5}}, "schedule.max_ratio"},
		{map[string]any{"num_layers": 4, "tokens": 8, "ffn_size": 0}, "ffn_size"},
		{map[string]any{"num_layers": 4, "tokens": 8, "rounding": map[string]any{"max_k": -3}}, "rounding.max_k"},
		{map[string]any{"num_layers": 4096, "tokens": 1 << 17, "per_sample": true}, "per_sample"},
		// 2048 routed layers x 2^53 counts is 2^64: the product must not wrap to 0.
		{map[string]any{"num_layers": 4096, "tokens": 1<<53 - 1, "per_sample": true, "schedule": map[string]any{"kind": "interleave"}}, "per_sample"},
		// 4096 x 2^52 wraps too, and the sum of 256 buckets near 2^44 is 2^52.
		{map[string]any{"num_layers": 4096, "buckets": nearBuckets(1<<44, 256), "per_sample": true, "schedule": map[string]any{"kind": "explicit", "ratios": halves(4096)}}, "per_sample"},
		{map[string]any{"num_layers": 4, "tokens": 8, "rounding": map[string]any{"multiple": 1<<20 + 1}}, "rounding.multiple"},
		{map[string]any{"num_layers": 4, "buckets": manyBuckets(MaxBuckets + 1)}, "buckets"},
		// tokens adds a bucket of its own when it is not among them.
		{map[string]any{"num_layers": 4, "buckets": manyBuckets(MaxBuckets), "tokens": MaxBuckets + 1}, "tokens"},
	}
	for _, c := range cases {
		_, err := Parse(c.m)
		var fe *specfield.Error
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%v: got %v, want field %q", c.m, err, c.field)
		}
		if err != nil && !strings.Contains(err.Error(), c.field) {
			t.Errorf("message %q does not name %q", err, c.field)
		}
	}
}

func FuzzPlanSpec(f *testing.F) {
	f.Add([]byte(`{"num_layers": 32, "tokens": 576}`))
	f.Add([]byte(`{"num_layers": 8, "buckets": [16, 64], "schedule": {"kind": "interleave", "ratio": 0.3}, "rounding": {"multiple": 8, "align": "t_plus_k"}, "text_tokens": 5}`))
	f.Add([]byte(`{"num_layers": 3, "tokens": 5, "schedule": {"kind": "explicit", "ratios": [1, 0.2, 0]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Longer specs explore nothing new, and the fuzzer spends its time
		// growing and minimising them (a 140 KB one took a minute).
		if len(data) > 8<<10 {
			return
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			return
		}
		p, err := Parse(m)
		if err != nil {
			return
		}
		for _, b := range p.Buckets {
			if len(b.Layers) != int(p.Spec.NumLayers) {
				t.Fatal("layer count")
			}
			for _, l := range b.Layers {
				if l.K < 0 || l.K > b.Tokens {
					t.Fatalf("k = %d outside [0, %d]", l.K, b.Tokens)
				}
			}
			if math.IsNaN(b.Summary.FLOPsRatio) || b.Summary.FLOPsRatio > 1+1e-12 {
				t.Fatalf("FLOPs ratio %v", b.Summary.FLOPsRatio)
			}
		}
	})
}

// Each rounding mode, worked out by hand from its definition: x = N·R, then
// floor / round half up / ceil, then (with a multiple m aligning k) the
// same rounding of k to a multiple of m.
func TestRoundingModes(t *testing.T) {
	for _, c := range []struct {
		n     int64
		ratio float64
		m     int64
		want  map[string]int64 // by mode
	}{
		{10, 0.24, 1, map[string]int64{"floor": 2, "nearest": 2, "ceil": 3}},        // 2.4
		{10, 0.25, 1, map[string]int64{"floor": 2, "nearest": 3, "ceil": 3}},        // 2.5: half goes up
		{10, 0.26, 1, map[string]int64{"floor": 2, "nearest": 3, "ceil": 3}},        // 2.6
		{100, 0.96, 1, map[string]int64{"floor": 96, "nearest": 96, "ceil": 96}},    // exact
		{576, 0.15, 8, map[string]int64{"floor": 80, "nearest": 88, "ceil": 88}},    // 86.4: 86 -> 80/88, 87 -> 88
		{576, 0.15, 64, map[string]int64{"floor": 64, "nearest": 64, "ceil": 128}},  // 86 is nearer 64 than 128
		{100, 0.96, 64, map[string]int64{"floor": 64, "nearest": 100, "ceil": 100}}, // 96 is half way: 128, capped at N
		{576, 0.17, 64, map[string]int64{"floor": 64, "nearest": 128, "ceil": 128}}, // 97.92: past half way
		{200, 0.478, 64, map[string]int64{"floor": 64, "nearest": 64, "ceil": 128}}, // 95.6: nearer 64 (96 would be half way)
		// A k > 0 rounded to 0 would drop every routable token: the first multiple instead.
		{576, 0.15, 128, map[string]int64{"floor": 128, "nearest": 128, "ceil": 128}}, // 86 -> 0 -> 128
		{10, 0.05, 8, map[string]int64{"floor": 0, "nearest": 8, "ceil": 8}},          // 0.5: floor keeps none
	} {
		for mode, want := range c.want {
			r := Rounding{Mode: mode, Precision: "float64", Multiple: c.m, Align: "k"}
			if got := r.K(c.n, c.ratio, 0); got != want {
				t.Errorf("N=%d R=%v m=%d %s: k = %d, want %d", c.n, c.ratio, c.m, mode, got, want)
			}
		}
	}
	// Through the planner: every routed layer of an L=32 plan, each mode
	// against its formula (no multiple).
	for _, mode := range []string{"floor", "nearest", "ceil"} {
		p := plan(t, map[string]any{"num_layers": 32, "tokens": 577, "rounding": map[string]any{"mode": mode, "precision": "float64"}})
		for _, l := range p.Buckets[0].Layers {
			if !l.Route {
				continue
			}
			x := 577 * l.Ratio
			want := map[string]float64{"floor": math.Floor(x), "nearest": math.Floor(x + 0.5), "ceil": math.Ceil(x)}[mode]
			if float64(l.K) != want {
				t.Errorf("%s layer %d: k = %d, want %v (N·R = %v)", mode, l.Index, l.K, want, x)
			}
		}
	}
}

// A layer whose raw ratio equals max_ratio exactly routes: "routes iff
// R_raw <= max_ratio".
func TestMaxRatioBoundaryRoutes(t *testing.T) {
	// shifted_linear on L=21: R_raw(3) = 0.5 + 0.5 - 3/20, exactly 0.85 in float64.
	if raw := 0.5 + 0.5 - 3.0/20; raw != 0.85 {
		t.Fatalf("precondition: R_raw(3) = %v", raw)
	}
	p := plan(t, map[string]any{"num_layers": 21, "tokens": 100, "schedule": map[string]any{"kind": "shifted_linear"}})
	if l := p.Buckets[0].Layers[3]; !l.Route || l.Ratio != 0.85 {
		t.Errorf("layer 3 at R_raw = max_ratio: %+v", l)
	}
	if l := p.Buckets[0].Layers[2]; l.Route {
		t.Errorf("layer 2 (R_raw 0.9): %+v", l)
	}
}

// With text tokens, each layer's KV capacity is T + k (T + N when dense),
// and the summary's KV ratio is Σ(T + k) / (L·(T + N)).
func TestKVCapacityCountsText(t *testing.T) {
	const T, N, L = 55, 576, 32
	p := plan(t, map[string]any{"num_layers": L, "tokens": N, "text_tokens": T})
	var sum float64
	for _, l := range p.Buckets[0].Layers {
		want := int64(T + N)
		if l.Route {
			want = T + l.K
			if l.K >= N {
				t.Fatalf("routed layer %d keeps all %d tokens", l.Index, N)
			}
		}
		if l.KVCapacity != want {
			t.Errorf("layer %d: kv_capacity %d, want %d", l.Index, l.KVCapacity, want)
		}
		sum += float64(want)
	}
	if got, want := p.Buckets[0].Summary.KVRatio, sum/(L*(T+N)); math.Abs(got-want) > 1e-12 {
		t.Errorf("KV ratio %v, want %v", got, want)
	}
}

// A schedule field that the chosen kind does not use is refused, naming the
// field and the kind, rather than planned without it.
func TestScheduleFieldOfAnotherKind(t *testing.T) {
	ratios := []any{0.1, 0.2, 0.3, 0.4}
	for _, c := range []struct {
		schedule map[string]any
		field    string
		kind     string
	}{
		{map[string]any{"kind": "prd", "ratios": ratios}, "schedule.ratios", `"prd"`},
		{map[string]any{"ratios": ratios}, "schedule.ratios", `"prd"`}, // prd is the default kind
		{map[string]any{"kind": "prd", "ratio": 0.3}, "schedule.ratio", `"prd"`},
		{map[string]any{"kind": "prd", "layers": []any{1, 2}}, "schedule.layers", `"prd"`},
		{map[string]any{"kind": "shifted_linear", "preset": "deep_all"}, "schedule.preset", `"shifted_linear"`},
		{map[string]any{"kind": "explicit", "ratios": ratios, "shift": 0.4}, "schedule.shift", `"explicit"`},
		{map[string]any{"kind": "explicit", "ratios": ratios, "denom": 3}, "schedule.denom", `"explicit"`},
		{map[string]any{"kind": "constant", "preset": "deep_all", "ratios": ratios}, "schedule.ratios", `"constant"`},
		{map[string]any{"kind": "constant", "preset": "deep_all", "max_ratio": 0.5}, "schedule.max_ratio", `"constant"`},
		{map[string]any{"kind": "interleave", "layers": []any{1}}, "schedule.layers", `"interleave"`},
		{map[string]any{"kind": "interleave", "min_ratio": 0.1}, "schedule.min_ratio", `"interleave"`},
	} {
		_, err := Parse(map[string]any{"num_layers": 4, "tokens": 8, "schedule": c.schedule})
		var fe *specfield.Error
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%v: got %v, want field %q", c.schedule, err, c.field)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.kind) || !strings.Contains(msg, "does not use") {
			t.Errorf("%v: message %q does not name kind %s", c.schedule, msg, c.kind)
		}
	}
	// Each kind with every field it uses is accepted.
	for _, s := range []map[string]any{
		{"kind": "prd", "shift": 0.5, "max_ratio": 0.85, "min_ratio": 0.15, "denom": 3},
		{"kind": "shifted_linear", "shift": 0.5, "max_ratio": 0.85, "min_ratio": 0.15, "denom": 3},
		{"kind": "constant", "ratio": 0.5, "layers": []any{1}},
		{"kind": "constant", "ratio": 0.5, "preset": "deep_all"},
		{"kind": "interleave", "ratio": 0.5},
		{"kind": "explicit", "ratios": ratios},
	} {
		if _, err := Parse(map[string]any{"num_layers": 4, "tokens": 8, "schedule": s}); err != nil {
			t.Errorf("%v: %v", s, err)
		}
	}
	// New sees which of the list and pointer fields were given.
	spec := Defaults()
	spec.NumLayers, spec.Tokens, spec.Schedule.Ratios = 4, 8, []float64{0.1, 0.2, 0.3, 0.4}
	if _, err := New(spec); err == nil || !strings.Contains(err.Error(), `"schedule.ratios"`) {
		t.Errorf("New with ratios on prd: %v", err)
	}
}

// Every schedule field belongs to at least one kind, so adding a field
// without listing it in kindFields cannot make it refused everywhere.
func TestEveryScheduleFieldHasAKind(t *testing.T) {
	for _, f := range specfield.Fields(reflect.TypeOf(Schedule{})) {
		if f == "kind" {
			continue
		}
		used := false
		for _, fields := range kindFields {
			used = used || slices.Contains(fields, f)
		}
		if !used {
			t.Errorf("schedule field %q is used by no kind", f)
		}
	}
}

// prd and shifted_linear refuse min_ratio > max_ratio: a routed layer's
// ratio, max(R_raw, min_ratio), would exceed the max_ratio it routes under.
func TestMinRatioAboveMaxRatio(t *testing.T) {
	for _, c := range []struct {
		schedule map[string]any
		ok       bool
	}{
		{map[string]any{"kind": "prd", "min_ratio": 0.6, "max_ratio": 0.5}, false},
		{map[string]any{"kind": "shifted_linear", "min_ratio": 0.6, "max_ratio": 0.5}, false},
		{map[string]any{"max_ratio": 0.1}, false}, // against the default min_ratio 0.15
		{map[string]any{"kind": "prd", "min_ratio": 0.5, "max_ratio": 0.5}, true},
		{map[string]any{"kind": "shifted_linear", "min_ratio": 0.2, "max_ratio": 0.9}, true},
	} {
		_, err := Parse(map[string]any{"num_layers": 4, "tokens": 8, "schedule": c.schedule})
		if c.ok {
			if err != nil {
				t.Errorf("%v: %v", c.schedule, err)
			}
			continue
		}
		var fe *specfield.Error
		if !errors.As(err, &fe) || fe.Field != "schedule.min_ratio" || !strings.Contains(err.Error(), "max_ratio") {
			t.Errorf("%v: got %v, want schedule.min_ratio refused against max_ratio", c.schedule, err)
		}
	}
}

// nearBuckets returns n increasing buckets just below from.
func nearBuckets(from int64, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = from - int64(n-i)
	}
	return out
}

// halves returns n ratios of 0.5: every layer routes.
func halves(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = 0.5
	}
	return out
}
