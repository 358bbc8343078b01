package sched

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

type pt struct {
	n    int64
	want float64
}

func checkPoints(t *testing.T, name string, spec map[string]any, pts []pt) {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatalf("%s: Parse: %v", name, err)
	}
	for _, p := range pts {
		if got := s.LR(p.n); math.Abs(got-p.want) > 1e-12*math.Max(1, math.Abs(p.want)) {
			t.Errorf("%s: LR(%d) = %.15g, want %.15g", name, p.n, got, p.want)
		}
	}
}

var (
	sqrtHalf = math.Sqrt(0.5)
)

// Every expected value below is worked out by hand from the formula in the
// kind's documentation (or the peer's), at and around each phase boundary.
func TestKindsAtPhaseBoundaries(t *testing.T) {
	cases := []struct {
		name string
		spec map[string]any
		pts  []pt
	}{
		{"linear", map[string]any{"kind": "linear", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "total_steps": 110},
			[]pt{{0, 0}, {5, 0.5}, {9, 0.9}, {10, 1}, {60, 0.55}, {109, 0.109}, {110, 0.1}, {111, 0.1}}},
		{"polynomial power 2", map[string]any{"kind": "polynomial", "peak_lr": 1.0, "power": 2, "total_steps": 100},
			[]pt{{0, 1}, {50, 0.25}, {75, 0.0625}, {100, 0}, {200, 0}}},
		{"rex", map[string]any{"kind": "rex", "peak_lr": 1.0, "total_steps": 100},
			[]pt{{0, 1}, {50, 0.5 / 0.75}, {100, 0}, {101, 0}}},
		{"rex beta 0.9", map[string]any{"kind": "rex", "peak_lr": 1.0, "beta": 0.9, "total_steps": 100},
			[]pt{{50, 0.5 / 0.95}}},
		{"rex sampled every 10", map[string]any{"kind": "rex", "peak_lr": 1.0, "min_lr": 0.1, "sampling": 10, "warmup_steps": 5, "total_steps": 105},
			[]pt{{5, 1}, {14, 1}, {55, 0.1 + 0.9*0.5/0.75}, {64, 0.1 + 0.9*0.5/0.75}, {105, 0.1}}},
		{"cosine_power", map[string]any{"kind": "cosine_power", "peak_lr": 1.0, "total_steps": 100},
			[]pt{{0, 1}, {50, (math.Sqrt(10) - 1) / 9}, {100, 0}}},
		{"cosine_power order 1 is cosine", map[string]any{"kind": "cosine_power", "peak_lr": 1.0, "exponent_order": 1, "total_steps": 100},
			[]pt{{25, 0.5 * (1 + sqrtHalf)}, {50, 0.5}}},
		{"constant with warmup", map[string]any{"kind": "constant", "peak_lr": 2.0, "warmup_steps": 4},
			[]pt{{0, 0}, {2, 1}, {4, 2}, {1 << 40, 2}}},
		{"wsd linear", map[string]any{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "stable_steps": 80,
			"decay_steps": 10, "decay_shape": "linear"},
			[]pt{{0, 0}, {5, 0.5}, {10, 1}, {89, 1}, {90, 1}, {95, 0.55}, {99, 0.19}, {100, 0.1}, {5000, 0.1}}},
		{"wsd from total_steps, 1-sqrt", map[string]any{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10,
			"total_steps": 100, "decay_steps": 10},
			[]pt{{95, 0.1 + 0.9*(1-sqrtHalf)}, {100, 0.1}}},
		{"wsd cosine decay", map[string]any{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "stable_steps": 90, "decay_steps": 10, "decay_shape": "cosine"},
			[]pt{{90, 1}, {95, 0.55}, {100, 0.1}}},
		{"wsd exp decay (Megatron r=0.5)", map[string]any{"kind": "wsd", "peak_lr": 1.0, "stable_steps": 0, "decay_steps": 10, "decay_shape": "exp"},
			[]pt{{0, 1}, {5, 2*sqrtHalf - 1}, {10, 0}}},
		{"wsd power 2", map[string]any{"kind": "wsd", "peak_lr": 1.0, "stable_steps": 0, "decay_steps": 10, "decay_shape": "power", "power": 2},
			[]pt{{5, 0.75}}},
		{"wsd cosine warmup", map[string]any{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 10, "warmup_shape": "cosine", "stable_steps": 1, "decay_steps": 1},
			[]pt{{5, 0.5}, {10, 1}}},
		{"wsd 1-sqrt warmup", map[string]any{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 10, "warmup_shape": "1-sqrt", "stable_steps": 1, "decay_steps": 1},
			[]pt{{5, 1 - sqrtHalf}}},
		{"infinite cosine/exp", map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05,
			"warmup_steps": 10, "cooldown_steps": 20, "constant_steps": 30, "anneal_steps": 40},
			[]pt{{0, 0}, {5, 0.5}, {10, 1}, {20, 0.75}, {30, 0.5}, {59, 0.5}, {60, 0.5}, {80, 0.5 * math.Sqrt(0.1)}, {100, 0.05}, {1000, 0.05}}},
		{"infinite inv_sqrt cooldown", map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "cooldown_steps": 20,
			"cooldown_shape": "inv_sqrt", "timescale": 10},
			[]pt{{0, 1}, {10, 1 - 0.5*(1/math.Sqrt(6)-1)/(1/math.Sqrt(11)-1)}, {20, 0.5}, {1 << 40, 0.5}}},
		{"infinite linear anneal", map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05,
			"constant_steps": 10, "anneal_steps": 40, "anneal_shape": "linear"},
			[]pt{{10, 0.5}, {30, 0.275}, {50, 0.05}}},
		{"infinite cosine anneal", map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05,
			"constant_steps": 10, "anneal_steps": 40, "anneal_shape": "cosine"},
			[]pt{{30, 0.275}}},
		{"infinite 1-sqrt anneal", map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05,
			"constant_steps": 10, "anneal_steps": 40, "anneal_shape": "1-sqrt"},
			[]pt{{30, 0.05 + 0.45*(1-sqrtHalf)}}},
		{"inv_sqrt hf", map[string]any{"kind": "inv_sqrt", "peak_lr": 1.0, "warmup_steps": 100},
			[]pt{{50, 0.5}, {100, 1}, {400, 0.5}, {1000, 1 / math.Sqrt(10)}}},
		{"inv_sqrt hf without warmup", map[string]any{"kind": "inv_sqrt", "peak_lr": 1.0},
			[]pt{{0, 1}, {30000, 0.5}}},
		{"inv_sqrt megatron", map[string]any{"kind": "inv_sqrt", "form": "megatron", "peak_lr": 1.0, "warmup_steps": 100,
			"min_lr": 0.3, "total_steps": 1000},
			[]pt{{100, 1}, {400, 0.5}, {1000, 1 / math.Sqrt(10)}, {1001, 0.3}}}, // past total_steps: min_lr
		// Megatron floors the curve at min_lr before the end: √(100/n) < 0.3
		// from n = 1112 (100/0.09 = 1111.1).
		{"inv_sqrt megatron floor", map[string]any{"kind": "inv_sqrt", "form": "megatron", "peak_lr": 1.0, "warmup_steps": 100,
			"min_lr": 0.3, "total_steps": 1200},
			[]pt{{1100, math.Sqrt(100.0 / 1100)}, {1111, math.Sqrt(100.0 / 1111)}, {1112, 0.3}, {1200, 0.3}}},
		{"step", map[string]any{"kind": "step", "peak_lr": 1.0, "step_size": 10, "gamma": 0.5},
			[]pt{{0, 1}, {9, 1}, {10, 0.5}, {25, 0.25}}},
		{"multistep", map[string]any{"kind": "multistep", "peak_lr": 1.0, "milestones": []any{10, 30}},
			[]pt{{9, 1}, {10, 0.1}, {29, 0.1}, {30, 0.01}}},
		{"exponential", map[string]any{"kind": "exponential", "peak_lr": 1.0, "gamma": 0.9, "min_lr": 0.5},
			[]pt{{0, 1}, {2, 0.81}, {10, 0.5}}},
		{"onecycle linear", map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 100, "anneal_strategy": "linear"},
			[]pt{{0, 0.04}, {29, 1}, {64, (1 + 4e-6) / 2}, {99, 4e-6}, {150, 4e-6}}},
		{"onecycle three-phase", map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 100, "anneal_strategy": "linear",
			"three_phase": true},
			[]pt{{0, 0.04}, {29, 1}, {58, 0.04}, {99, 4e-6}}},
		{"cyclic triangular", map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "step_size_up": 10},
			[]pt{{0, 0.1}, {5, 0.55}, {10, 1}, {15, 0.55}, {20, 0.1}, {30, 1}}},
		{"cyclic triangular2", map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "step_size_up": 10, "mode": "triangular2"},
			[]pt{{10, 1}, {30, 0.55}, {50, 0.325}}},
		{"cyclic exp_range", map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "step_size_up": 10, "mode": "exp_range", "gamma": 0.99},
			[]pt{{10, 0.1 + 0.9*math.Pow(0.99, 10)}}},
		{"cyclic asymmetric", map[string]any{"kind": "cyclic", "min_lr": 0.0, "peak_lr": 1.0, "step_size_up": 5, "step_size_down": 15},
			[]pt{{5, 1}, {10, 2.0 / 3}, {20, 0}}},
		{"sgdr T_mult 2", map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 10, "cycle_mul": 2},
			[]pt{{0, 1}, {5, 0.5}, {9, 0.5 * (1 + math.Cos(math.Pi*0.9))}, {10, 1}, {20, 0.5}, {30, 1}, {70, 1}}},
		{"sgdr decay and limit", map[string]any{"kind": "sgdr", "peak_lr": 1.0, "min_lr": 0.1, "cycle_steps": 10, "cycle_decay": 0.5, "cycle_limit": 2},
			[]pt{{10, 0.5}, {15, 0.1 + 0.5*0.4}, {20, 0.1}, {1000, 0.1}}},
		{"sgdr k_decay 2", map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 10, "k_decay": 2},
			[]pt{{5, 0.5 * (1 + sqrtHalf)}}},
		{"sgdr warmup prefix", map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 10, "warmup_steps": 5},
			[]pt{{0, 0}, {5, 1}, {10, 0.5}, {15, 1}}},
		{"sequence", map[string]any{"kind": "sequence", "parts": []any{
			map[string]any{"steps": 10, "schedule": map[string]any{"kind": "constant", "peak_lr": 1.0}},
			map[string]any{"steps": 20, "schedule": map[string]any{"kind": "linear", "peak_lr": 1.0, "total_steps": 20}},
			map[string]any{"schedule": map[string]any{"kind": "constant", "peak_lr": 0.1}},
		}}, []pt{{9, 1}, {10, 1}, {20, 0.5}, {29, 0.05}, {30, 0.1}, {1 << 40, 0.1}}},
		{"stages (repeated cosine)", map[string]any{"kind": "stages",
			"defaults": map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10},
			"stages":   []any{map[string]any{"steps": 100}, map[string]any{"steps": 50, "schedule": map[string]any{"peak_lr": 0.5}}}},
			[]pt{{10, 1}, {55, 0.55}, {99, 0.1 + 0.45*(1+math.Cos(math.Pi*89/90))}, {100, 0}, {105, 0.25}, {110, 0.5},
				{149, 0.1 + 0.2*(1+math.Cos(math.Pi*39/40))}, {150, 0.1}, {1000, 0.1}}},
		{"stages (infinite, jump back to const)", map[string]any{"kind": "stages",
			"defaults": map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05, "anneal_steps": 10, "anneal_shape": "linear"},
			"stages": []any{
				map[string]any{"steps": 50, "schedule": map[string]any{"warmup_steps": 10, "cooldown_steps": 10, "constant_steps": 20}},
				map[string]any{"steps": 40, "schedule": map[string]any{"constant_steps": 30}},
			}},
			[]pt{{10, 1}, {20, 0.5}, {40, 0.5}, {45, 0.275}, {49, 0.095}, {50, 0.5}, {79, 0.5}, {85, 0.275}, {90, 0.05}}},
	}
	for _, c := range cases {
		checkPoints(t, c.name, c.spec, c.pts)
	}
}

func TestMomentumSchedules(t *testing.T) {
	oc, _ := Parse(map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 100, "anneal_strategy": "linear"})
	for _, p := range []pt{{0, 0.95}, {29, 0.85}, {64, 0.9}, {99, 0.95}} {
		if m, ok := oc.(MomentumSchedule).Momentum(p.n); !ok || math.Abs(m-p.want) > 1e-12 {
			t.Errorf("onecycle momentum(%d) = %v, want %v", p.n, m, p.want)
		}
	}
	cy, _ := Parse(map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "step_size_up": 10})
	for _, p := range []pt{{0, 0.9}, {5, 0.85}, {10, 0.8}, {20, 0.9}} {
		if m, ok := cy.(MomentumSchedule).Momentum(p.n); !ok || math.Abs(m-p.want) > 1e-12 {
			t.Errorf("cyclic momentum(%d) = %v, want %v", p.n, m, p.want)
		}
	}
	off, _ := Parse(map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 100, "cycle_momentum": false})
	if _, ok := off.(MomentumSchedule).Momentum(3); ok {
		t.Error("cycle_momentum false still schedules momentum")
	}
}

func TestWeightDecayAndMomentumConfig(t *testing.T) {
	cfg, err := ParseConfig(map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100,
		"weight_decay": map[string]any{"start": 0.0, "end": 0.1, "steps": 100},
		"momentum":     map[string]any{"start": 0.85, "end": 0.95, "shape": "cosine", "begin": 10, "steps": 20}})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPlan(cfg, nil, nil)
	for _, c := range []struct {
		n      int64
		wd, mo float64
	}{{0, 0, 0.85}, {10, 0.01, 0.85}, {20, 0.02, 0.9}, {30, 0.03, 0.95}, {100, 0.1, 0.95}, {500, 0.1, 0.95}} {
		wd, ok1 := p.WeightDecay(c.n)
		mo, ok2 := p.Momentum(c.n)
		if !ok1 || !ok2 || math.Abs(wd-c.wd) > 1e-12 || math.Abs(mo-c.mo) > 1e-12 {
			t.Errorf("n=%d: wd %v mo %v, want %v %v", c.n, wd, mo, c.wd, c.mo)
		}
	}
	if _, err := ParseConfig(map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 10,
		"momentum": map[string]any{"start": 0.9}}); err == nil {
		t.Error("two momentum schedules accepted")
	}
	if _, err := ParseConfig(map[string]any{"kind": "constant", "peak_lr": 1.0,
		"weight_decay": map[string]any{"start": -1.0}}); err == nil || !containsAll(err.Error(), "weight_decay.start", "-1") {
		t.Errorf("bad weight decay: %v", err)
	}
}

func TestGroupRemap(t *testing.T) {
	cfg, _ := ParseConfig(map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100})
	p, _ := NewPlan(cfg, nil, nil)
	lo, hi := 0.01, 0.5
	g := Group{Multiplier: 1, MinLR: &lo, PeakLR: &hi}
	for _, n := range []int64{0, 50, 100} {
		v := p.LR(n)
		want := 0.01 + (v-0.1)*(0.49/0.9)
		if got := p.GroupLR(v, g); math.Abs(got-want) > 1e-15 {
			t.Errorf("remap at %d: %v, want %v", n, got, want)
		}
	}
	if got := p.GroupLR(p.LR(0), g); math.Abs(got-0.5) > 1e-15 {
		t.Errorf("group peak: %v", got)
	}
	if got := p.GroupLR(p.LR(100), g); math.Abs(got-0.01) > 1e-15 {
		t.Errorf("group floor: %v", got)
	}
	if got := p.GroupLR(0.4, Group{Multiplier: 0.5}); got != 0.2 {
		t.Errorf("multiplier: %v", got)
	}
	// Below the schedule's min_lr (a warmup from 0, a lower stage, an anneal
	// under the floor) the rate maps in proportion onto [0, group min]:
	// (0, 0), (0.1, 0.01), never negative.
	for _, c := range []struct{ v, want float64 }{{0, 0}, {0.05, 0.005}, {0.1, 0.01}} {
		if got := p.GroupLR(c.v, g); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("below the floor: GroupLR(%v) = %v, want %v", c.v, got, c.want)
		}
	}
	// One end given: the other is the schedule's.
	only := Group{Multiplier: 1, PeakLR: &hi}
	if glo, ghi := p.GroupRange(only); glo != 0.1 || ghi != 0.5 {
		t.Errorf("GroupRange = %v, %v; want 0.1, 0.5", glo, ghi)
	}
}

// A schedule with min_lr = peak_lr (flat after its warmup) has no range to
// map: the group's rate is v · group peak / peak, so the warmup climbs to the
// group's peak and holds it, with no jump where the warmup ends.
func TestGroupRemapFlatRange(t *testing.T) {
	cfg, err := ParseConfig(map[string]any{"kind": "cosine", "peak_lr": 0.2, "min_lr": 0.2, "warmup_steps": 10, "total_steps": 100})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPlan(cfg, nil, nil)
	lo, hi := 0.01, 0.05
	g := Group{Multiplier: 1, MinLR: &lo, PeakLR: &hi}
	for _, c := range []struct {
		n    int64
		want float64 // 0.05 · LR(n)/0.2, with LR(n) = 0.2·n/10 in the warmup
	}{{0, 0}, {5, 0.025}, {9, 0.045}, {10, 0.05}, {11, 0.05}, {100, 0.05}} {
		if got := p.GroupLR(p.LR(c.n), g); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("GroupLR(LR(%d)) = %v, want %v", c.n, got, c.want)
		}
	}
	zero, _ := ParseConfig(map[string]any{"kind": "cosine", "peak_lr": 0.0, "min_lr": 0.0, "total_steps": 100})
	pz, _ := NewPlan(zero, nil, nil)
	if got := pz.GroupLR(0, g); got != 0 {
		t.Errorf("a zero schedule gives the group %v", got)
	}
	// A later stage's rate on a zero schedule is not lost.
	if got := pz.GroupLR(1e-3, g); got != 1e-3 {
		t.Errorf("a later stage's 1e-3 on a zero schedule gives the group %v", got)
	}
}

func TestMomentumRange(t *testing.T) {
	for _, c := range []struct {
		spec  map[string]any
		field string
	}{
		{map[string]any{"kind": "constant", "peak_lr": 1.0, "momentum": map[string]any{"start": 1.5}}, "momentum.start"},
		{map[string]any{"kind": "constant", "peak_lr": 1.0, "momentum": map[string]any{"start": 0.9, "end": 1.0, "steps": 5}}, "momentum.end"},
		{map[string]any{"kind": "onecycle", "peak_lr": 1.0, "total_steps": 10, "max_momentum": 1.2}, "max_momentum"},
		{map[string]any{"kind": "cyclic", "min_lr": 0.1, "peak_lr": 1.0, "base_momentum": 1.0}, "base_momentum"},
	} {
		_, err := ParseConfig(c.spec)
		if err == nil || !containsAll(err.Error(), c.field, "[0, 1)") {
			t.Errorf("%v: %v, want an error naming %s", c.spec, err, c.field)
		}
	}
	// shape constant holds start: an end that differs is refused, not ignored.
	_, err := ParseConfig(map[string]any{"kind": "constant", "peak_lr": 1.0,
		"momentum": map[string]any{"start": 0.45, "end": 0.475, "shape": "constant", "steps": 1}})
	if err == nil || !containsAll(err.Error(), `"momentum.end" = 0.475`, "shape constant holds start") {
		t.Errorf("constant shape with another end: %v", err)
	}
	// Weight decay has no such bound.
	if _, err := ParseConfig(map[string]any{"kind": "constant", "peak_lr": 1.0, "weight_decay": map[string]any{"start": 1.5}}); err != nil {
		t.Errorf("weight decay 1.5: %v", err)
	}
}

func TestPlateauReplaysReports(t *testing.T) {
	cfg, _ := ParseConfig(map[string]any{"kind": "plateau", "peak_lr": 1.0, "patience": 2, "factor": 0.5, "threshold": 0.0,
		"cooldown": 1, "min_lr": 0.2})
	p, _ := NewPlan(cfg, nil, nil)
	for i, m := range []float64{1, 1, 1, 1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6} {
		if err := p.Report(Report{Step: int64(10 * (i + 1)), Metric: m}); err != nil {
			t.Fatal(err)
		}
	}
	// Traced by hand with torch's rules: best=1 at 10; 20, 30, 40 are bad (3 > patience 2), so
	// 0.5 from step 40 and one cooldown report (50, an improvement anyway); 60, 70, 80 bad ->
	// 0.25 at 80; 90 is the cooldown; 100, 110, 120 bad -> max(0.125, min_lr) = 0.2 at 120.
	for _, c := range []pt{{39, 1}, {40, 0.5}, {79, 0.5}, {80, 0.25}, {119, 0.25}, {120, 0.2}, {1000, 0.2}} {
		if got := p.LR(c.n); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("LR(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	if err := p.Report(Report{Step: 5, Metric: 1}); err == nil {
		t.Error("a report going back in time was accepted")
	}
	cos, _ := ParseConfig(map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 10})
	q, _ := NewPlan(cos, nil, nil)
	if err := q.Report(Report{Step: 1, Metric: 1}); err == nil || !containsAll(err.Error(), "metric", "plateau") {
		t.Errorf("report to a schedule without plateau: %v", err)
	}
}

func TestMonotoneAndContinuous(t *testing.T) {
	specs := []map[string]any{
		{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 50, "total_steps": 1000},
		{"kind": "linear", "peak_lr": 1.0, "warmup_steps": 50, "total_steps": 1000},
		{"kind": "polynomial", "peak_lr": 1.0, "power": 3, "warmup_steps": 50, "total_steps": 1000},
		{"kind": "rex", "peak_lr": 1.0, "warmup_steps": 50, "total_steps": 1000},
		{"kind": "cosine_power", "peak_lr": 1.0, "min_lr": 0.01, "warmup_steps": 50, "total_steps": 1000},
		{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 50, "total_steps": 1000, "decay_steps": 200, "decay_shape": "cosine"},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.3, "min_lr": 0.01, "warmup_steps": 50, "cooldown_steps": 200,
			"constant_steps": 300, "anneal_steps": 200},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.3, "min_lr": 0.01, "warmup_steps": 50, "cooldown_steps": 200,
			"cooldown_shape": "inv_sqrt", "constant_steps": 300, "anneal_steps": 200, "anneal_shape": "1-sqrt"},
		{"kind": "inv_sqrt", "peak_lr": 1.0, "warmup_steps": 50},
		{"kind": "inv_sqrt", "peak_lr": 1.0, "warmup_steps": 50, "form": "megatron"},
	}
	for _, m := range specs {
		s, err := Parse(m)
		if err != nil {
			t.Fatal(err)
		}
		prev := s.LR(0)
		for n := int64(1); n < 1200; n++ {
			cur := s.LR(n)
			if n <= 50 && cur < prev {
				t.Fatalf("%v: warmup falls at %d", m, n)
			}
			if n > 50 && cur > prev+1e-15 {
				t.Fatalf("%v: rises at %d: %v > %v", m, n, cur, prev)
			}
			// Continuity: no step moves by more than a few per mille of peak.
			if math.Abs(cur-prev) > 0.025 {
				t.Fatalf("%v: jumps at %d: %v -> %v", m, n, prev, cur)
			}
			prev = cur
		}
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !contains(s, p) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestStagesFillTotalStepsOnlyWhereItIsTheHorizon(t *testing.T) {
	// A wsd stage with stable_steps is complete without total_steps.
	wsd := mustParse(t, map[string]any{"kind": "stages", "stages": []any{
		map[string]any{"steps": 100, "schedule": map[string]any{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 10, "stable_steps": 50, "decay_steps": 20}},
		map[string]any{"steps": 100, "schedule": map[string]any{"kind": "constant", "peak_lr": 0.5}},
	}})
	if got := wsd.LR(59); got != 1.0 {
		t.Errorf("wsd stage LR(59) = %v, want the stable 1.0", got)
	}
	if got := wsd.LR(80); got != 0 {
		t.Errorf("wsd stage LR(80) = %v, want min_lr 0 after 10+50+20 updates", got)
	}
	// A last inv_sqrt stage runs on past the stage's length: no cut-off.
	inv := mustParse(t, map[string]any{"kind": "stages", "stages": []any{
		map[string]any{"steps": 100, "schedule": map[string]any{"kind": "inv_sqrt", "peak_lr": 1.0, "warmup_steps": 10}},
	}})
	if got, want := inv.LR(1000), 1/math.Sqrt(1000.0/10-1+1); math.Abs(got-want) > 1e-15 {
		// hf form, timescale = W: peak/√((n+τ−W)/τ) = 1/√(n/10)
		t.Errorf("inv_sqrt stage LR(1000) = %v, want %v", got, 1/math.Sqrt(100.0))
	}
	// A cosine stage still takes the stage length as its horizon.
	cos := mustParse(t, map[string]any{"kind": "stages", "stages": []any{
		map[string]any{"steps": 100, "schedule": map[string]any{"kind": "cosine", "peak_lr": 1.0}},
	}})
	if got := cos.LR(50); math.Abs(got-0.5) > 1e-15 {
		t.Errorf("cosine stage LR(50) = %v, want 0.5", got)
	}
}

func TestStagePhasesEndAtTheStage(t *testing.T) {
	s := mustParse(t, map[string]any{"kind": "stages", "defaults": map[string]any{"kind": "cosine", "peak_lr": 1.0, "warmup_steps": 10},
		"stages": []any{map[string]any{"name": "A", "steps": 100}, map[string]any{"name": "B", "steps": 100}}})
	phases := phasesOf(s)
	for _, ph := range phases {
		if ph.Start == 101 {
			t.Errorf("stage A's floor label at %d lies inside stage B: %v", ph.Start, phases)
		}
	}
	if len(phases) != 2+3 {
		t.Errorf("phases %v: want warmup, decay for A and warmup, decay, floor for B", phases)
	}
}

// A report extends the plateau pieces in place when every re-plan is earlier;
// otherwise the chain is rebuilt. Either way the plan must equal one built
// from scratch over the same re-plans and reports.
func TestPlateauReportsIncrementalEqualsRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	plateau := map[string]any{"kind": "plateau", "peak_lr": 1.0, "min_lr": 0.01, "patience": 1, "factor": 0.5,
		"cooldown": 1, "warmup_steps": 5}
	for trial := 0; trial < 200; trial++ {
		cfg, err := ParseConfig(plateau)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := NewPlan(cfg, nil, nil)
		step, replanAt := int64(0), int64(0)
		for i := 0; i < 60; i++ {
			step += rng.Int64N(20)
			if rng.IntN(10) == 0 {
				// A re-plan, sometimes ahead of the next reports.
				at := max(replanAt, step+rng.Int64N(60)-20)
				var r Replan
				if rng.IntN(2) == 0 {
					r = Replan{Op: OpNewStage, At: at, Spec: plateau}
				} else {
					r = Replan{Op: OpAnneal, At: at, Steps: 50, Shape: "linear"}
				}
				if p.Replan(r) == nil {
					replanAt = at
				}
				continue
			}
			rep := Report{Step: step, Metric: float64(rng.IntN(5))}
			if rng.IntN(4) == 0 {
				rep.Step = max(step, replanAt) // a report at a re-plan's step
				step = rep.Step
			}
			if err := p.Report(rep); err != nil {
				// Refused (an anneal would start below its floor): the plan is unchanged.
				continue
			}
		}
		q, err := NewPlan(cfg, p.Replans, p.Reports)
		if err != nil {
			t.Fatalf("trial %d: rebuild: %v", trial, err)
		}
		for n := int64(0); n <= step+100; n++ {
			if a, b := p.LR(n), q.LR(n); a != b {
				t.Fatalf("trial %d: LR(%d) incremental %v, rebuilt %v (%d re-plans, %d reports)",
					trial, n, a, b, len(p.Replans), len(p.Reports))
			}
		}
	}
}

// A decay starts at exactly peak_lr and never passes it: the per-group range
// mapping divides by peak_lr and checks the result against 1.
func TestDecayNeverAbovePeak(t *testing.T) {
	var specs []map[string]any
	for _, e := range []float64{2, 3, 7, 10, 13.5, 100, 1e6} {
		specs = append(specs, map[string]any{"kind": "cosine_power", "peak_lr": 1.0, "total_steps": 10, "exponent_order": e},
			map[string]any{"kind": "cosine_power", "peak_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 7, "total_steps": 1000, "exponent_order": e})
	}
	for _, kind := range []string{"cosine", "linear", "polynomial", "rex"} {
		specs = append(specs, map[string]any{"kind": kind, "peak_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 7, "total_steps": 1000})
	}
	for _, m := range specs {
		s, err := Parse(m)
		if err != nil {
			t.Fatal(err)
		}
		peak := m["peak_lr"].(float64)
		w, _ := m["warmup_steps"].(int)
		if got := s.LR(int64(w)); got != peak {
			t.Errorf("%v: LR(%d) = %v, want peak_lr %v exactly", m, w, got, peak)
		}
		for n := int64(0); n < 1100; n++ {
			if got := s.LR(n); got > peak {
				t.Fatalf("%v: LR(%d) = %v above peak_lr %v", m, n, got, peak)
			}
		}
	}
}

// Every kind's floor phase starts at the first n whose rate is min_lr, so the
// same run length gives the same floor label whatever the kind (cosine put it
// one step later than wsd and infinite).
func TestFloorPhaseStartsAtTheFirstFloorRate(t *testing.T) {
	for _, m := range []map[string]any{
		{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "total_steps": 100},
		{"kind": "linear", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100},
		{"kind": "polynomial", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100, "power": 2.0},
		{"kind": "rex", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100},
		{"kind": "cosine_power", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100},
		{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 100},
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "stable_steps": 40, "decay_steps": 50},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.1, "cooldown_steps": 20, "constant_steps": 30, "anneal_steps": 50},
		// SGDR holds min_lr after its last cycle (it labelled that a restart).
		{"kind": "sgdr", "peak_lr": 1.0, "min_lr": 0.1, "cycle_steps": 10, "cycle_limit": 1},
		{"kind": "sgdr", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 5, "cycle_steps": 10, "cycle_mul": 1.5, "cycle_limit": 3},
		{"kind": "sgdr", "peak_lr": 1.0, "min_lr": 0.1, "cycle_steps": 10, "cycle_limit": 8},
		{"kind": "sgdr", "peak_lr": 1.0, "min_lr": 0.1, "cycle_steps": 3, "cycle_mul": 1.2, "cycle_limit": 12},
	} {
		s := mustParse(t, m)
		// The first n from which every rate is min_lr (a warmup from 0 passes
		// through it on the way up).
		first := int64(0)
		for n := int64(0); n < 300; n++ {
			if s.LR(n) != 0.1 {
				first = n + 1
			}
		}
		var floor int64 = -1
		for _, ph := range phasesOf(s) {
			if ph.Name == "floor" {
				floor = ph.Start
			}
		}
		if floor != first {
			t.Errorf("%v: floor phase at %d, first rate at min_lr at %d", m, floor, first)
		}
	}
}

// SGDR's phases list at most seven restarts and then the floor; a cycle limit
// far beyond any run must neither walk every cycle nor wrap the floor's step
// negative. A floor past 2^62 updates is never reached and is not listed.
func TestSGDRPhasesWithHugeCycleLimits(t *testing.T) {
	for _, c := range []struct {
		spec  map[string]any
		floor int64 // -1: none listed
	}{
		// 10^12 cycles of 1000: the floor at 5 + 10^15 (a walk of 10^12 cycles took minutes)
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "warmup_steps": 5, "cycle_steps": 1000, "cycle_limit": 1_000_000_000_000}, 5 + 1_000_000_000_000_000},
		// 1000·(2^70−1) updates: beyond int64
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1000, "cycle_mul": 2.0, "cycle_limit": 70}, -1},
		// 1000·(2^40−1): walked, as LR walks it
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1000, "cycle_mul": 2.0, "cycle_limit": 40}, 1000 * (1<<40 - 1)},
		// a multiplier a hair above 1 and 2^53 cycles: ends past 2^62
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1, "cycle_mul": 1.000000001, "cycle_limit": 1 << 53}, -1},
		// the same multiplier, 2·10^6 cycles: summed in closed form, ⌈1e9·(1.000000001^(2e6) − 1)⌉ = ⌈2002001.33⌉
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1, "cycle_mul": 1.000000001, "cycle_limit": 2_000_000}, 2_002_002},
		// mul 1e300 overflows to +Inf in the first restarts
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1, "cycle_mul": 1e300, "cycle_limit": 5}, -1},
		// cycle_steps·cycle_limit overflows int64
		{map[string]any{"kind": "sgdr", "peak_lr": 1.0, "cycle_steps": 1 << 40, "cycle_limit": 1 << 40}, -1},
	} {
		s := mustParse(t, c.spec)
		done := make(chan []Phase, 1)
		go func() { done <- phasesOf(s) }()
		var phases []Phase
		select {
		case phases = <-done:
		case <-time.After(time.Minute): // a hang, not a timing bound: the fixed code takes microseconds
			t.Fatalf("%v: Phases did not return", c.spec)
		}
		var floor int64 = -1
		last := int64(-1)
		for _, ph := range phases {
			if ph.Start < last {
				t.Errorf("%v: phase %q starts at %d, before the previous one (%d): %v", c.spec, ph.Name, ph.Start, last, phases)
			}
			last = ph.Start
			if ph.Name == "floor" {
				floor = ph.Start
			}
		}
		if floor != c.floor {
			t.Errorf("%v: floor at %d, want %d (%v)", c.spec, floor, c.floor, phases)
		}
		// The floor is where LR's own walk leaves the last cycle.
		if sg := s.(*SGDR); floor > 0 {
			if i, _, _, _ := sg.cycle(floor - 1 - sg.WarmupSteps); i != sg.CycleLimit-1 || s.LR(floor) != 0 {
				t.Errorf("%v: update %d is in cycle %d, want the last (%d); LR(%d) = %v", c.spec, floor-1, i, sg.CycleLimit-1, floor, s.LR(floor))
			}
		}
	}
}
