package sched

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func plan(t *testing.T, spec map[string]any, replans ...Replan) *Plan {
	t.Helper()
	cfg, err := ParseConfig(spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(cfg, replans, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func rel(a, b float64) float64 { return math.Abs(a-b) / math.Max(math.Abs(b), 1e-300) }

var cosine1000 = map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 1000}

func TestExtendContinuous(t *testing.T) {
	for _, spec := range []map[string]any{
		cosine1000,
		{"kind": "linear", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 1000},
		{"kind": "polynomial", "peak_lr": 1.0, "min_lr": 0.1, "power": 2, "total_steps": 1000},
		{"kind": "rex", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 1000},
		{"kind": "cosine_power", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 1000},
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 1000, "decay_steps": 400, "decay_shape": "linear"},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.1, "cooldown_steps": 100, "constant_steps": 500, "anneal_steps": 400},
	} {
		for _, at := range []int64{50, 500, 700, 999} {
			base := plan(t, spec)
			p := plan(t, spec, Replan{Op: OpExtend, At: at, Total: 3000})
			for n := int64(0); n < at; n++ {
				if p.LR(n) != base.LR(n) {
					t.Fatalf("%s at %d: history changed at %d", spec["kind"], at, n)
				}
			}
			if r := rel(p.LR(at), base.LR(at)); r > 1e-12 {
				t.Errorf("%s at %d: LR jumps by %g relative (%v -> %v)", spec["kind"], at, r, base.LR(at), p.LR(at))
			}
			if got := p.LR(3000); math.Abs(got-0.1) > 1e-12 {
				t.Errorf("%s at %d: LR(new total) = %v, want min_lr 0.1", spec["kind"], at, got)
			}
			if got := p.LR(5000); got != 0.1 {
				t.Errorf("%s at %d: after the new total LR = %v", spec["kind"], at, got)
			}
			if p.LR(2000) <= 0.1 {
				t.Errorf("%s at %d: the decay did not stretch (LR(2000) = %v)", spec["kind"], at, p.LR(2000))
			}
			// Extending again keeps going continuously.
			q := plan(t, spec, Replan{Op: OpExtend, At: at, Total: 3000}, Replan{Op: OpExtend, At: 2000, Total: 4000})
			if r := rel(q.LR(2000), p.LR(2000)); r > 1e-12 {
				t.Errorf("%s: second extend jumps by %g", spec["kind"], r)
			}
		}
	}
}

// A continuous extend that shortens the run keeps the rate too: a WSD still
// at peak, or an infinite schedule still constant, whose new total leaves no
// room for a whole decay falls from the current rate to min_lr at the total.
func TestExtendContinuousShortening(t *testing.T) {
	for _, spec := range []map[string]any{
		cosine1000,
		{"kind": "linear", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 1000},
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 1000, "decay_steps": 400, "decay_shape": "linear"},
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 1000, "decay_steps": 400},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.1, "cooldown_steps": 100, "constant_steps": 500, "anneal_steps": 400},
	} {
		for _, at := range []int64{500, 650} {
			base := plan(t, spec)
			p := plan(t, spec, Replan{Op: OpExtend, At: at, Total: 700})
			if r := rel(p.LR(at), base.LR(at)); r > 1e-12 {
				t.Errorf("%v at %d: LR jumps (%v -> %v)", spec, at, base.LR(at), p.LR(at))
			}
			for n := at + 1; n <= 700; n++ {
				if p.LR(n) > p.LR(n-1) {
					t.Fatalf("%v at %d: LR rises at %d (%v -> %v)", spec, at, n, p.LR(n-1), p.LR(n))
				}
			}
			if got := p.LR(699); got <= 0.1 {
				t.Errorf("%v at %d: LR(699) = %v, already at the floor", spec, at, got)
			}
			if got := p.LR(700); math.Abs(got-0.1) > 1e-12 {
				t.Errorf("%v at %d: LR(700) = %v, want min_lr", spec, at, got)
			}
		}
	}
}

// REX with sampling holds each block's rate; a continuous extend keeps the
// running block's rate and re-samples every `sampling` updates from there.
func TestExtendRexSampled(t *testing.T) {
	spec := map[string]any{"kind": "rex", "peak_lr": 1.0, "min_lr": 0.1, "sampling": 10, "total_steps": 100}
	profile := func(p float64) float64 { return 0.1 + 0.9*(1-p)/(1-p/2) }
	const at, total = 45, 200
	p := plan(t, spec, Replan{Op: OpExtend, At: at, Total: total})
	base := plan(t, spec)
	if got, want := p.LR(at), base.LR(at); rel(got, want) > 1e-12 || rel(want, profile(0.4)) > 1e-12 {
		t.Fatalf("LR(%d) = %v, base %v, want the held block's %v", at, got, want, profile(0.4))
	}
	// The block value at 45 (p = 0.4) stretched over [45, 200): blocks of
	// 10 updates starting at 45.
	for n := int64(at); n < total; n++ {
		k := at + (n-at)/10*10
		want := profile(0.4 + 0.6*float64(k-at)/float64(total-at))
		if r := rel(p.LR(n), want); r > 1e-12 {
			t.Fatalf("LR(%d) = %v, want %v", n, p.LR(n), want)
		}
	}
	if p.LR(total) != 0.1 {
		t.Errorf("LR(total) = %v, want min_lr", p.LR(total))
	}
}

func TestRexSampledReachesFloorAtTotal(t *testing.T) {
	// Blocks start at 0, 3, 6, 9: 3 does not divide 10, so the last block
	// is one update long, and LR(T) is min_lr.
	p := plan(t, map[string]any{"kind": "rex", "peak_lr": 1.0, "min_lr": 0.1, "sampling": 3, "total_steps": 10})
	profile := func(p float64) float64 { return 0.1 + 0.9*(1-p)/(1-p/2) }
	want := []float64{profile(0.6), profile(0.6), profile(0.6), profile(0.9), 0.1, 0.1}
	for i, w := range want {
		if n := int64(6 + i); rel(p.LR(n), w) > 1e-12 {
			t.Errorf("LR(%d) = %v, want %v", n, p.LR(n), w)
		}
	}
}

func TestExtendBeforeDecayEqualsLongerRun(t *testing.T) {
	p := plan(t, cosine1000, Replan{Op: OpExtend, At: 50, Total: 3000})
	long := plan(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 3000})
	for n := int64(0); n < 3100; n += 7 {
		if p.LR(n) != long.LR(n) {
			t.Fatalf("at %d: %v vs %v", n, p.LR(n), long.LR(n))
		}
	}
}

func TestExtendProportional(t *testing.T) {
	p := plan(t, cosine1000, Replan{Op: OpExtend, At: 400, Total: 2000, Mode: ExtendProportional})
	// 40% done at step 400, and the run must end at 2000: the remaining 60%
	// of a cosine of horizon H is spread over 1600 steps, so 0.6·H = 1600,
	// H = 2666.67 -> 2667, and step 400 is step 2667−1600 = 1067 of it.
	long := plan(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 2667})
	for k := int64(0); k <= 1700; k += 13 {
		if p.LR(400+k) != long.LR(1067+k) {
			t.Fatalf("k=%d: %v vs %v", k, p.LR(400+k), long.LR(1067+k))
		}
	}
	if p.LR(1999) <= 0.1 || p.LR(2000) != 0.1 {
		t.Errorf("LR(1999) = %v, LR(2000) = %v: the run must reach min_lr exactly at the new total", p.LR(1999), p.LR(2000))
	}
	// Shortening keeps the fraction too: 40% done, 500 steps left for the
	// other 60%, so H = 833.33 -> 833, and step 400 is step 333 of it.
	short := plan(t, cosine1000, Replan{Op: OpExtend, At: 400, Total: 900, Mode: ExtendProportional})
	h := plan(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 833})
	for k := int64(0); k <= 520; k++ {
		if short.LR(400+k) != h.LR(333+k) {
			t.Fatalf("shortened, k=%d: %v vs %v", k, short.LR(400+k), h.LR(333+k))
		}
	}
	// 100 steps for the other 60% would rebuild it for 167 steps, where
	// 40% done (step 67) is back inside the 100-step warmup.
	err0 := plan(t, cosine1000).Replan(Replan{Op: OpExtend, At: 400, Total: 500, Mode: ExtendProportional})
	if err0 == nil || !strings.Contains(err0.Error(), "lies in its warmup phase, while the run is in its decay phase") {
		t.Errorf("squeezed into the warmup: %v", err0)
	}
	// Any move between phases is refused the same way, as is a horizon past 2^62.
	inf := map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05, "warmup_steps": 100,
		"cooldown_steps": 100, "constant_steps": 600, "anneal_steps": 200}
	wsd1000 := map[string]any{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 100, "total_steps": 1000, "decay_steps": 200}
	for _, c := range []struct {
		spec      map[string]any
		at, total int64
		want      string
	}{
		{inf, 250, 600, "in its cooldown phase, while the run is in its constant phase"},   // H = 466.7: 250 -> 117
		{inf, 950, 2000, "in its constant phase, while the run is in its anneal phase"},    // H = 21000: 950 -> 19950 < 20800
		{wsd1000, 900, 2000, "in its stable phase, while the run is in its decay phase"},   // H = 11000: 900 -> 9900 < 10800
		{cosine1000, 50, 2000, "in its decay phase, while the run is in its warmup phase"}, // H = 2052.6: 50 -> 103
		{cosine1000, 999, 1 << 62, "needs the schedule rebuilt for 4.61e+21 steps, more than 2^62"},
	} {
		err := plan(t, c.spec).Replan(Replan{Op: OpExtend, At: c.at, Total: c.total, Mode: ExtendProportional})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `use mode "continuous"`) {
			t.Errorf("%v at %d to %d: %v", c.spec["kind"], c.at, c.total, err)
		}
	}
	// Nothing done yet: the new schedule as it stands, whatever its size.
	z := plan(t, cosine1000, Replan{Op: OpExtend, At: 0, Total: 1<<52 + 12345, Mode: ExtendProportional})
	zw := plan(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 100, "total_steps": 1<<52 + 12345})
	for _, n := range []int64{0, 50, 100, 1 << 40, 1<<52 + 12345} {
		if z.LR(n) != zw.LR(n) {
			t.Errorf("proportional from step 0, LR(%d) = %v, want %v", n, z.LR(n), zw.LR(n))
		}
	}
	// Inside one phase it goes ahead: a WSD extended from its stable phase stays at peak.
	w := plan(t, wsd1000, Replan{Op: OpExtend, At: 300, Total: 2000, Mode: ExtendProportional})
	if w.LR(300) != 1 || w.LR(1799) != 1 || w.LR(2000) != 0 {
		t.Errorf("wsd from stable: LR(300) %v, LR(1799) %v, LR(2000) %v", w.LR(300), w.LR(1799), w.LR(2000))
	}
	// A WSD's decay has a fixed length: it cannot be squeezed below it.
	wsd := plan(t, map[string]any{"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 100, "total_steps": 1000, "decay_steps": 200})
	err := wsd.Replan(Replan{Op: OpExtend, At: 850, Total: 860, Mode: ExtendProportional})
	if err == nil || !strings.Contains(err.Error(), "squeezes the remaining 15% of the run into 10 steps") ||
		!strings.Contains(err.Error(), `use mode "continuous"`) {
		t.Errorf("squeezed WSD: %v", err)
	}
}

func TestAnnealFromAnyKind(t *testing.T) {
	inf := map[string]any{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.05, "cooldown_steps": 100}
	p := plan(t, inf, Replan{Op: OpAnneal, At: 700, Steps: 100, Shape: "exp"})
	for _, c := range []pt{{699, 0.5}, {700, 0.5}, {750, 0.5 * math.Sqrt(0.1)}, {800, 0.05}, {10000, 0.05}} {
		if got := p.LR(c.n); rel(got, c.want) > 1e-12 {
			t.Errorf("infinite anneal LR(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	// A cosine anneal branched off a cosine decay, to an explicit floor.
	lo := 0.0
	q := plan(t, cosine1000, Replan{Op: OpAnneal, At: 400, Steps: 200, Shape: "linear", MinLR: &lo})
	v0 := plan(t, cosine1000).LR(400)
	for _, c := range []pt{{400, v0}, {500, v0 / 2}, {600, 0}, {900, 0}} {
		if got := q.LR(c.n); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine anneal LR(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	// WSD: anneal out of the stable phase.
	w := plan(t, map[string]any{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "stable_steps": 10000, "decay_steps": 10},
		Replan{Op: OpAnneal, At: 300, Steps: 100, Shape: "1-sqrt"})
	if got := w.LR(325); rel(got, 0.1+0.9*0.5) > 1e-12 {
		t.Errorf("wsd anneal: %v", got)
	}
}

func TestNewStage(t *testing.T) {
	stage := map[string]any{"kind": "cosine", "peak_lr": 0.5, "min_lr": 0.05, "warmup_steps": 10, "total_steps": 200}
	p := plan(t, cosine1000, Replan{Op: OpNewStage, At: 1000, Spec: stage})
	s, _ := Parse(stage)
	for k := int64(0); k < 400; k++ {
		if p.LR(1000+k) != s.LR(k) {
			t.Fatalf("stage local step %d: %v vs %v", k, p.LR(1000+k), s.LR(k))
		}
	}
	// Extending inside the stage: total_steps counts updates, as at_step does
	// (the stage of 200 steps from update 1000 now ends at update 1400).
	q := plan(t, cosine1000, Replan{Op: OpNewStage, At: 1000, Spec: stage}, Replan{Op: OpExtend, At: 1100, Total: 1400})
	if r := rel(q.LR(1100), p.LR(1100)); r > 1e-12 {
		t.Errorf("extend in stage jumps: %g", r)
	}
	if got := q.LR(1399); got <= 0.05 || got > p.LR(1100) {
		t.Errorf("stage still decaying before its new end: LR(1399) = %v", got)
	}
	if got := q.LR(1400); math.Abs(got-0.05) > 1e-12 {
		t.Errorf("stage end after extend: %v", got)
	}
	// Refusals name the update counts the caller gave, not the stage's.
	r := plan(t, cosine1000, Replan{Op: OpNewStage, At: 1000, Spec: stage})
	for _, c := range []struct {
		at, total int64
		want      string
	}{{1100, 1090, "total_steps = 1090 must be greater than the re-plan step 1100"},
		{1005, 1008, "total_steps = 1008 must be >= 1010 (the end of the phases before the decay)"}} {
		err := r.Replan(Replan{Op: OpExtend, At: c.at, Total: c.total})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("extend at %d to %d: %v, want %q", c.at, c.total, err, c.want)
		}
	}
	ph := q.Phases()
	names := make([]string, len(ph))
	for i, x := range ph {
		names[i] = x.Name
	}
	if !strings.Contains(strings.Join(names, ","), "stage 1") || !strings.Contains(strings.Join(names, ","), "extend to 1400") {
		t.Errorf("phases %v", names)
	}
}

func TestReplanErrors(t *testing.T) {
	cfg, _ := ParseConfig(cosine1000)
	zero := 0.0
	cases := []struct {
		pre   []Replan
		r     Replan
		field string
	}{
		{nil, Replan{Op: "rewind", At: 5}, "op"},
		{nil, Replan{Op: OpExtend, At: 5, Total: 3}, "total_steps"},
		{nil, Replan{Op: OpExtend, At: 5, Total: 3000, Mode: "sideways"}, "mode"},
		{nil, Replan{Op: OpAnneal, At: 5, Steps: 0}, "steps"},
		{nil, Replan{Op: OpAnneal, At: 500, Steps: 10, Shape: "exp", MinLR: &zero}, "min_lr"},
		{nil, Replan{Op: OpAnneal, At: 500, Steps: 10, Shape: "zigzag"}, "shape"},
		{nil, Replan{Op: OpNewStage, At: 5, Spec: map[string]any{"kind": "cosine", "peak_lr": -1.0, "total_steps": 10}}, "schedule.peak_lr"},
		{nil, Replan{Op: OpNewStage, At: 5}, "schedule"},
		{[]Replan{{Op: OpAnneal, At: 500, Steps: 10}}, Replan{Op: OpAnneal, At: 400, Steps: 10}, "at_step"},
		{[]Replan{{Op: OpAnneal, At: 500, Steps: 10}}, Replan{Op: OpExtend, At: 600, Total: 3000}, "op"},
		{nil, Replan{Op: OpAnneal, At: -1, Steps: 10}, "at_step"},
		{nil, Replan{Op: OpAnneal, At: 10, Steps: math.MaxInt64}, "steps"}, // its end would wrap negative
	}
	for i, c := range cases {
		p, err := NewPlan(cfg, c.pre, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := p.LR(700)
		err = p.Replan(c.r)
		if err == nil || !strings.Contains(err.Error(), `"`+c.field+`"`) {
			t.Errorf("case %d: error %v should name %q", i, err, c.field)
		}
		if len(p.Replans) != len(c.pre) || p.LR(700) != before {
			t.Errorf("case %d: a refused re-plan changed the plan", i)
		}
	}
	step, _ := ParseConfig(map[string]any{"kind": "step", "peak_lr": 1.0, "step_size": 10})
	p, _ := NewPlan(step, nil, nil)
	if err := p.Replan(Replan{Op: OpExtend, At: 5, Total: 100}); err == nil || !strings.Contains(err.Error(), "no horizon") {
		t.Errorf("extend on step: %v", err)
	}
}

// An anneal with no min_lr goes to the stage's own floor, whatever pieces
// earlier re-plans left running (an anneal, a proportional extend).
func TestAnnealDefaultFloorAfterReplans(t *testing.T) {
	for name, replans := range map[string][]Replan{
		"after an anneal":             {{Op: OpAnneal, At: 200, Steps: 100, MinLR: ptr(0.5)}},
		"after a proportional extend": {{Op: OpExtend, At: 200, Total: 2000, Mode: ExtendProportional}},
		"after a continuous extend":   {{Op: OpExtend, At: 200, Total: 2000}},
	} {
		for _, shape := range []string{"cosine", "exp"} {
			p := plan(t, cosine1000, append(replans, Replan{Op: OpAnneal, At: 400, Steps: 50, Shape: shape})...)
			if got := p.LR(450); math.Abs(got-0.1) > 1e-12 {
				t.Errorf("%s, %s anneal: LR(450) = %v, want the cosine's min_lr 0.1", name, shape, got)
			}
		}
	}
	// Below the floor already: the default holds the current rate.
	p := plan(t, cosine1000, Replan{Op: OpAnneal, At: 200, Steps: 10, MinLR: ptr(0.05)},
		Replan{Op: OpAnneal, At: 300, Steps: 10})
	if got := p.LR(320); got != 0.05 {
		t.Errorf("second anneal below the floor: %v, want 0.05", got)
	}
	// A new stage brings its own floor.
	stage := map[string]any{"kind": "cosine", "peak_lr": 0.5, "min_lr": 0.02, "total_steps": 300}
	q := plan(t, cosine1000, Replan{Op: OpNewStage, At: 1000, Spec: stage}, Replan{Op: OpAnneal, At: 1100, Steps: 10})
	if got := q.LR(1110); math.Abs(got-0.02) > 1e-12 {
		t.Errorf("anneal in a new stage: %v, want the stage's 0.02", got)
	}
}

// A run extended proportionally can be extended again, continuously.
func TestExtendAfterProportional(t *testing.T) {
	p := plan(t, cosine1000, Replan{Op: OpExtend, At: 500, Total: 2000, Mode: ExtendProportional})
	q := plan(t, cosine1000, Replan{Op: OpExtend, At: 500, Total: 2000, Mode: ExtendProportional},
		Replan{Op: OpExtend, At: 800, Total: 3000})
	if r := rel(q.LR(800), p.LR(800)); r > 1e-12 {
		t.Errorf("second extend jumps: %v -> %v", p.LR(800), q.LR(800))
	}
	if got := q.LR(3000); math.Abs(got-0.1) > 1e-12 {
		t.Errorf("LR(3000) = %v, want min_lr", got)
	}
	if q.LR(2500) <= 0.1 {
		t.Errorf("LR(2500) = %v: the decay did not stretch to 3000", q.LR(2500))
	}
	err := p.Replan(Replan{Op: OpExtend, At: 800, Total: 3000, Mode: ExtendProportional})
	if err == nil || !strings.Contains(err.Error(), `mode "proportional" after a previous extend is not supported`) {
		t.Errorf("proportional twice: %v", err)
	}
	if err := p.Replan(Replan{Op: OpExtend, At: 800, Total: 700}); err == nil ||
		!strings.Contains(err.Error(), "total_steps = 700 must be greater than the re-plan step 800") {
		t.Errorf("short extend after proportional: %v", err)
	}
}

func ptr(v float64) *float64 { return &v }

func TestReplanFieldMessages(t *testing.T) {
	p := plan(t, cosine1000)
	for _, c := range []struct {
		r    Replan
		want string
	}{
		{Replan{Op: OpExtend, At: 10}, `field "total_steps" = 0: missing: extend needs the new total, in updates`},
		{Replan{Op: OpNewStage, At: 10, Spec: map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100,
			"weight_decay": map[string]any{"start": 0.1}}},
			`field "schedule.weight_decay" = {"start":0.1}: a new stage changes the rate only`},
	} {
		if err := p.Replan(c.r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.want)
		}
	}
	// An exp anneal with no min_lr on a schedule that decays to 0.
	q := plan(t, map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100})
	for _, c := range []struct {
		r    Replan
		want string
	}{
		{Replan{Op: OpAnneal, At: 10, Steps: 5, Shape: "exp"}, "the default, the stage's floor or the current rate, is 0, so give min_lr"},
	} {
		if err := q.Replan(c.r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.want)
		}
	}
}

// A restore applies each re-plan once. NewPlan re-applied them one by one,
// rebuilding the whole chain (and refiltering every phase) each time: a
// session with 2000 anneals took two minutes to restore, past the 30 s a
// launch waits for the sidecar. The plan it builds at once is the one built
// a re-plan at a time.
func TestNewPlanAppliesEachReplanOnce(t *testing.T) {
	cfg, _ := ParseConfig(cosine1000)
	var rs []Replan
	for i := 0; i < 300; i++ {
		switch i % 3 {
		case 0:
			rs = append(rs, Replan{Op: OpAnneal, At: int64(100 + 10*i), Steps: 5, Shape: "linear"})
		case 1:
			rs = append(rs, Replan{Op: OpNewStage, At: int64(100 + 10*i), Spec: map[string]any{"kind": "cosine", "peak_lr": 0.5, "min_lr": 0.01, "warmup_steps": 2, "total_steps": 8}})
		default:
			rs = append(rs, Replan{Op: OpExtend, At: int64(100 + 10*i), Total: int64(120 + 10*i)})
		}
	}
	p, err := NewPlan(cfg, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.applied != len(rs) {
		t.Fatalf("%d re-plans restored with %d applications", len(rs), p.applied)
	}
	one, _ := NewPlan(cfg, nil, nil)
	for _, r := range rs {
		if err := one.Replan(r); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(p.Phases(), one.Phases()) || !reflect.DeepEqual(p.Replans, one.Replans) {
		t.Fatalf("phases or re-plans differ:\n%v\n%v", p.Phases(), one.Phases())
	}
	for n := int64(0); n < 3200; n++ {
		if a, b := p.LR(n), one.LR(n); a != b {
			t.Fatalf("LR(%d): %v at once, %v one by one", n, a, b)
		}
	}
	rs[7].At = 5
	if _, err := NewPlan(cfg, rs, nil); err == nil || !strings.Contains(err.Error(), `"at_step" = 5`) {
		t.Fatalf("an out-of-order re-plan: %v", err)
	}
}

// A continuous extend at every step, up to and past the end, keeps the rate
// at its step and ends at min_lr, also where the decay has no length: a wsd
// with decay_steps 0 (or an infinite schedule with anneal_steps 0) extended
// at exactly total_steps went back to peak_lr (const_lr) until the new total,
// after the run had reached its floor.
func TestExtendAtEveryStepKeepsTheRate(t *testing.T) {
	for _, spec := range []map[string]any{
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 2, "total_steps": 12, "decay_steps": 0},
		{"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 2, "total_steps": 12, "decay_steps": 4},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.1, "warmup_steps": 1, "cooldown_steps": 2, "constant_steps": 3},
		{"kind": "infinite", "peak_lr": 1.0, "const_lr": 0.5, "min_lr": 0.1, "warmup_steps": 1, "cooldown_steps": 2, "constant_steps": 3, "anneal_steps": 3},
		{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 2, "total_steps": 12},
	} {
		base := plan(t, spec)
		for at := int64(0); at <= 16; at++ {
			for total := at + 1; total <= 30; total++ {
				p, err := NewPlan(base.Config, []Replan{{Op: OpExtend, At: at, Total: total}}, nil)
				if err != nil {
					continue // a total the kind refuses (inside its warmup, say)
				}
				if r := rel(p.LR(at), base.LR(at)); r > 1e-12 {
					t.Fatalf("%s %v, extend at %d to %d: LR(%d) %v -> %v", spec["kind"], spec, at, total, at, base.LR(at), p.LR(at))
				}
				// From update total+2 on (LR(total) is the peak when the
				// warmup fills the run, as in HF's).
				for n := max(at, total+1); n < total+4; n++ {
					if got := p.LR(n); math.Abs(got-0.1) > 1e-12 {
						t.Fatalf("%s %v, extend at %d to %d: LR(%d) = %v after the new total", spec["kind"], spec, at, total, n, got)
					}
				}
			}
		}
	}
}
