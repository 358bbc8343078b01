package sched

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rewarm/rewarm/internal/specfield"
)

func mustParse(t *testing.T, m map[string]any) Spec {
	t.Helper()
	s, err := Parse(m)
	if err != nil {
		t.Fatalf("Parse(%v): %v", m, err)
	}
	return s
}

// Values below are worked out by hand from the closed form with
// peak=1, min=0.1, warmup_start=0.2, W=10, T=110 (decay length 100).
func TestCosinePhaseBoundaries(t *testing.T) {
	s := mustParse(t, map[string]any{
		"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1,
		"warmup_steps": 10, "warmup_start_lr": 0.2, "total_steps": 110,
	})
	r2 := math.Sqrt2 / 2
	cases := []struct {
		n    int64
		want float64
	}{
		{0, 0.2},                // first update uses warmup_start_lr
		{5, 0.6},                // 0.2 + 0.8*5/10
		{9, 0.92},               // last warmup update: 0.2 + 0.8*0.9
		{10, 1.0},               // n == W: peak
		{35, 0.1 + 0.45*(1+r2)}, // progress 1/4: cos(π/4)
		{60, 0.55},              // progress 1/2: cos(π/2) = 0
		{85, 0.1 + 0.45*(1-r2)}, // progress 3/4
		{109, 0.1 + 0.45*(1+math.Cos(math.Pi*0.99))},
		{110, 0.1}, // n == T: min_lr reached
		{111, 0.1}, // n > T: held at min_lr
		{1 << 40, 0.1},
	}
	for _, c := range cases {
		if got := s.LR(c.n); math.Abs(got-c.want) > 1e-15*math.Max(1, math.Abs(c.want)) {
			t.Errorf("LR(%d) = %.17g, want %.17g", c.n, got, c.want)
		}
	}
}

func TestCosineNoWarmupAndDegenerate(t *testing.T) {
	s := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 2.0, "total_steps": 4})
	want := []float64{2, 1 + math.Sqrt2/2, 1, 1 - math.Sqrt2/2, 0, 0}
	for n, w := range want {
		if got := s.LR(int64(n)); math.Abs(got-w) > 1e-15 {
			t.Errorf("no warmup: LR(%d) = %v, want %v", n, got, w)
		}
	}
	// W == T: no decay phase; peak at W, min afterwards.
	d := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.5, "warmup_steps": 4, "total_steps": 4})
	for n, w := range []float64{0, 0.25, 0.5, 0.75, 1, 0.5, 0.5} {
		if got := d.LR(int64(n)); math.Abs(got-w) > 1e-15 {
			t.Errorf("W==T: LR(%d) = %v, want %v", n, got, w)
		}
	}
}

func TestCosineProperties(t *testing.T) {
	s := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 50, "total_steps": 1000})
	for n := int64(1); n < 1200; n++ {
		prev, cur := s.LR(n-1), s.LR(n)
		if n <= 50 && cur < prev {
			t.Fatalf("warmup not increasing at %d: %v < %v", n, cur, prev)
		}
		if n > 50 && cur > prev {
			t.Fatalf("decay not monotone at %d: %v > %v", n, cur, prev)
		}
		if n >= 50 && (cur < 3e-5-1e-18 || cur > 3e-4+1e-18) {
			t.Fatalf("LR(%d) = %v outside [min, peak]", n, cur)
		}
	}
}

func TestParseErrorsNameFieldAndValue(t *testing.T) {
	base := func(kv ...any) map[string]any {
		m := map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name  string
		spec  map[string]any
		field string
		text  string // must appear in the message
	}{
		{"missing kind", map[string]any{"peak_lr": 1.0}, "kind", "missing"},
		{"unknown kind", map[string]any{"kind": "cosin"}, "kind", `"cosin"`},
		{"kind not string", map[string]any{"kind": 3.0}, "kind", "3"},
		{"negative peak", base("peak_lr", -1.0), "peak_lr", "-1"},
		{"NaN min", base("min_lr", math.NaN()), "min_lr", "NaN"},
		{"inf start", base("warmup_start_lr", math.Inf(1)), "warmup_start_lr", "+Inf"},
		{"negative warmup", base("warmup_steps", -5), "warmup_steps", "-5"},
		{"zero total", base("total_steps", 0), "total_steps", "0"},
		{"warmup > total", base("warmup_steps", 101), "warmup_steps", "101"},
		{"min > peak", base("min_lr", 2.0), "min_lr", "2"},
		{"unknown field", base("warmup", 10), "warmup", "unknown field"},
		{"fractional steps", base("total_steps", 10.5), "total_steps", "10.5"},
		{"NaN steps", base("total_steps", math.NaN()), "total_steps", "NaN"},
		{"string rate", base("peak_lr", "3e-4"), "peak_lr", `"3e-4"`},
		{"missing total", map[string]any{"kind": "cosine", "peak_lr": 1.0}, "total_steps", "missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.spec)
			if err == nil {
				t.Fatalf("Parse(%v) succeeded, want an error", c.spec)
			}
			var fe *specfield.Error
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is %T, want *specfield.Error", err, err)
			}
			if fe.Field != c.field {
				t.Errorf("field = %q, want %q (%v)", fe.Field, c.field, err)
			}
			if !strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("message %q should name %q and contain %q", err, c.field, c.text)
			}
		})
	}
}

func TestCanonicalFillsDefaultsAndDiff(t *testing.T) {
	a := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100})
	b := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100, "min_lr": 0.0, "warmup_steps": 0})
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("explicit defaults should not differ: %v", d)
	}
	c := mustParse(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 200})
	d := Diff(a, c)
	if len(d) != 1 || !strings.HasPrefix(d[0], "total_steps: 100 -> 200") {
		t.Fatalf("Diff = %v", d)
	}
	m := Canonical(a)
	for _, k := range []string{"kind", "peak_lr", "min_lr", "warmup_steps", "warmup_start_lr", "total_steps"} {
		if _, ok := m[k]; !ok {
			t.Errorf("canonical form lacks %q: %v", k, m)
		}
	}
	// The canonical form parses back to the same schedule.
	if d := Diff(a, mustParse(t, m)); len(d) != 0 {
		t.Fatalf("round trip differs: %v", d)
	}
}
