package sched

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Bad specs get an error that names the field and the value.
func TestBadSpecsNameFieldAndValue(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		spec  map[string]any
		field string
		value string
	}{
		{map[string]any{"kind": "warmup_cosine"}, "kind", `"warmup_cosine"`},
		{map[string]any{"kind": "linear", "peak_lr": 1.0}, "total_steps", "missing"},
		{map[string]any{"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10}, "stable_steps", "stable_steps or total_steps"},
		{map[string]any{"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10, "total_steps": 5}, "total_steps", "5"},
		{map[string]any{"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10, "stable_steps": 5, "total_steps": 99}, "total_steps", "99"},
		{map[string]any{"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10, "stable_steps": 5, "decay_shape": "zig"}, "decay_shape", `"zig"`},
		{map[string]any{"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10, "stable_steps": 5, "warmup_shape": "exp"}, "warmup_shape", `"exp"`},
		{map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 2.0}, "const_lr", "2"},
		{map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.6}, "min_lr", "0.6"},
		{map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "constant_steps": 10, "anneal_steps": 10}, "min_lr", "0"},
		{map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "cooldown_shape": "linear"}, "cooldown_shape", `"linear"`},
		{map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": nan}, "const_lr", "NaN"},
		{map[string]any{"kind": "rex", "peak_lr": 1.0, "total_steps": 10, "beta": 0.0}, "beta", "0"},
		{map[string]any{"kind": "rex", "peak_lr": 1.0, "total_steps": 10, "sampling": 0}, "sampling", "0"},
		{map[string]any{"kind": "cosine_power", "peak_lr": 1.0, "total_steps": 10, "exponent_order": 0.5}, "exponent_order", "0.5"},
		{map[string]any{"kind": "polynomial", "peak_lr": 1.0, "total_steps": 10, "power": -1}, "power", "-1"},
		{map[string]any{"kind": "step", "peak_lr": 1.0, "step_size": 0}, "step_size", "0"},
		{map[string]any{"kind": "step", "peak_lr": 1.0, "step_size": 5, "gamma": nan}, "gamma", "NaN"},
		{map[string]any{"kind": "multistep", "peak_lr": 1.0, "milestones": []any{10, 10}}, "milestones[1]", "10"},
		{map[string]any{"kind": "multistep", "peak_lr": 1.0, "milestones": []any{30, 20}}, "milestones[1]", "20"},
		{map[string]any{"kind": "multistep", "peak_lr": 1.0, "milestones": []any{0}}, "milestones[0]", "0"},
		{map[string]any{"kind": "exponential", "peak_lr": 1.0}, "gamma", "missing"},
		{map[string]any{"kind": "exponential", "peak_lr": 1.0, "gamma": 0.9, "min_lr": 2.0}, "min_lr", "peak_lr"},
		{map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 10, "pct_start": 1.5}, "pct_start", "1.5"},
		{map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 10, "pct_start": 0.1}, "pct_start", "empty warmup"},
		{map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 10, "anneal_strategy": "cosine"}, "anneal_strategy", `"cosine"`},
		{map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "mode": "square"}, "mode", `"square"`},
		{map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "step_size_down": 0}, "step_size_down", "0"},
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 10, "cycle_mul": 0.5}, "cycle_mul", "0.5"},
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 10, "cycle_decay": 2}, "cycle_decay", "2"},
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0}, "cycle_steps", "missing"},
		{map[string]any{"kind": "plateau", "peak_lr": 1.0, "factor": 1.0}, "factor", "1"},
		{map[string]any{"kind": "plateau", "peak_lr": 1.0, "mode": "best"}, "mode", `"best"`},
		{map[string]any{"kind": "inv_sqrt", "peak_lr": 1.0, "form": "fairseq"}, "form", `"fairseq"`},
		{map[string]any{"kind": "sequence", "parts": []any{}}, "parts", "[]"},
		{map[string]any{"kind": "sequence", "parts": []any{map[string]any{"schedule": map[string]any{"kind": "constant", "peak_lr": 1.0}},
			map[string]any{"schedule": map[string]any{"kind": "constant", "peak_lr": 1.0}}}}, "parts[0].steps", "missing"},
		{map[string]any{"kind": "sequence", "parts": []any{map[string]any{"steps": 0, "schedule": map[string]any{"kind": "constant", "peak_lr": 1.0}}}}, "parts[0].steps", "0"},
		{map[string]any{"kind": "sequence", "parts": []any{map[string]any{"steps": 5, "schedule": map[string]any{"kind": "constant", "peak_lr": -3.0}}}}, "parts[0].schedule.peak_lr", "-3"},
		{map[string]any{"kind": "stages", "stages": []any{map[string]any{"steps": 10, "schedule": map[string]any{"kind": "cosine", "peak_lr": 1.0, "warmup_steps": 20}}}}, "stages[0].schedule.warmup_steps", "20"},
		{map[string]any{"kind": "stages", "stages": []any{map[string]any{"steps": -1}}}, "stages[0].steps", "-1"},
		{map[string]any{"kind": "constant", "peak_lr": 1.0, "warmup_steps": 3.5}, "warmup_steps", "3.5"},
	}
	for _, c := range cases {
		_, err := ParseConfig(c.spec)
		if err == nil {
			t.Errorf("%v: accepted", c.spec)
			continue
		}
		var fe *specfield.Error
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%v: error %q names field %q, want %q", c.spec, err, fieldOf(err), c.field)
			continue
		}
		if !strings.Contains(err.Error(), c.value) {
			t.Errorf("%v: error %q should contain %q", c.spec, err, c.value)
		}
	}
}

func fieldOf(err error) string {
	var fe *specfield.Error
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// Every kind parses from its own canonical form to the same schedule.
func TestCanonicalRoundTripAllKinds(t *testing.T) {
	for name, spec := range benchSpecs {
		s, err := Parse(spec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := Parse(Canonical(s))
		if err != nil {
			t.Fatalf("%s: canonical form does not parse: %v", name, err)
		}
		for _, n := range []int64{0, 1, 17, 100, 999, 5000} {
			if s.LR(n) != back.LR(n) {
				t.Fatalf("%s: LR(%d) differs after a round trip", name, n)
			}
		}
		if d := Diff(s, back); len(d) != 0 {
			t.Errorf("%s: diff after round trip: %v", name, d)
		}
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, spec := range benchSpecs {
		b, _ := json.Marshal(spec)
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"nope"}`))
	f.Add([]byte(`{"kind":"cosine","peak_lr":[1],"total_steps":{}}`))
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
		if _, isRefined := m["grad_norms_file"]; isRefined {
			return // no file access from the fuzzer
		}
		if norms, ok := m["grad_norms"].([]any); ok && len(norms) > 1<<12 {
			return
		}
		cfg, err := ParseConfig(m)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		p, err := NewPlan(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		// A growing schedule (gamma > 1, documented) may overflow to +Inf,
		// which the dispatcher refuses to send; nothing may give NaN or < 0.
		grows := hasGrowingGamma(m)
		for _, n := range []int64{0, 1, 2, 10, 1000, 1 << 20} {
			if v := p.LR(n); math.IsNaN(v) || (math.IsInf(v, 0) && !(grows && v > 0)) || v < 0 {
				t.Fatalf("LR(%d) = %v for %s", n, v, data)
			}
		}
	})
}

// hasGrowingGamma reports a "gamma" above 1 anywhere in a spec (a part of a
// sequence or stages included).
func hasGrowingGamma(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if g, ok := e.(float64); ok && k == "gamma" && g > 1 {
				return true
			}
			if hasGrowingGamma(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasGrowingGamma(e) {
				return true
			}
		}
	}
	return false
}
