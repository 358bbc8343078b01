package sched

import "math"

// MomentumSchedule is implemented by kinds that also schedule momentum (or
// Adam's beta1): the value for update n+1, and whether it is scheduled.
type MomentumSchedule interface {
	Momentum(n int64) (float64, bool)
}

// OneCycle is torch's OneCycleLR. The initial rate is peak_lr/div_factor and
// the final one initial/final_div_factor. Two-phase: up to peak_lr at step
// pct_start·T − 1, down to the final rate at T − 1. Three-phase: up, back
// down to the initial rate at 2·pct_start·T − 2, then to the final rate at
// T − 1. Momentum moves inversely between base_momentum and max_momentum.
// torch raises past T; here later updates keep the final values.
type OneCycle struct {
	// PeakLR is the top rate (torch's max_lr); required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// TotalSteps is T; required, >= 1.
	TotalSteps int64 `spec:"total_steps,required"`
	// PctStart is the fraction of T spent rising; default 0.3, in [0, 1],
	// and pct_start·T must not be 1.
	PctStart float64 `spec:"pct_start"`
	// AnnealStrategy is cos (the default) or linear.
	AnnealStrategy string `spec:"anneal_strategy"`
	// DivFactor sets the initial rate; default 25, finite, > 0.
	DivFactor float64 `spec:"div_factor"`
	// FinalDivFactor sets the final rate; default 1e4, finite, > 0.
	FinalDivFactor float64 `spec:"final_div_factor"`
	// ThreePhase selects the three-phase form; default false.
	ThreePhase bool `spec:"three_phase"`
	// CycleMomentum schedules momentum as well; default true.
	CycleMomentum bool `spec:"cycle_momentum"`
	// BaseMomentum is the momentum at peak_lr; default 0.85, in [0, 1).
	BaseMomentum float64 `spec:"base_momentum"`
	// MaxMomentum is the momentum at the initial and final rates; default
	// 0.95, in [0, 1).
	MaxMomentum float64 `spec:"max_momentum"`

	phases []cyclePhase
}

type cyclePhase struct {
	end              float64
	startLR, endLR   float64
	startMom, endMom float64
}

func (o *OneCycle) Kind() string { return "onecycle" }

func (o *OneCycle) Validate() error {
	v := checks{kind: o.Kind()}
	v.rate("peak_lr", o.PeakLR)
	v.steps("total_steps", o.TotalSteps, 1)
	if !(o.PctStart >= 0 && o.PctStart <= 1) {
		v.fail("pct_start", o.PctStart, "must be in [0, 1]")
	}
	oneOf(&v, "anneal_strategy", o.AnnealStrategy, map[string]bool{"cos": true, "linear": true})
	v.positive("div_factor", o.DivFactor)
	v.positive("final_div_factor", o.FinalDivFactor)
	v.momentum("base_momentum", o.BaseMomentum)
	v.momentum("max_momentum", o.MaxMomentum)
	if v.err == nil && o.PctStart*float64(o.TotalSteps) == 1 {
		// torch's first phase ends at pct_start·T − 1 = 0, and step 0 divides 0 by 0.
		v.fail("pct_start", o.PctStart, "makes pct_start·total_steps = 1, an empty warmup phase (torch divides by zero there); use 0 or at least 2/total_steps")
	}
	if v.err != nil {
		return v.err
	}
	T := float64(o.TotalSteps)
	initial := o.PeakLR / o.DivFactor
	final := initial / o.FinalDivFactor
	if o.ThreePhase {
		o.phases = []cyclePhase{
			{o.PctStart*T - 1, initial, o.PeakLR, o.MaxMomentum, o.BaseMomentum},
			{2*o.PctStart*T - 2, o.PeakLR, initial, o.BaseMomentum, o.MaxMomentum},
			{T - 1, initial, final, o.MaxMomentum, o.MaxMomentum},
		}
	} else {
		o.phases = []cyclePhase{
			{o.PctStart*T - 1, initial, o.PeakLR, o.MaxMomentum, o.BaseMomentum},
			{T - 1, o.PeakLR, final, o.BaseMomentum, o.MaxMomentum},
		}
	}
	return nil
}

func (o *OneCycle) anneal(start, end, pct float64) float64 {
	if o.AnnealStrategy == "linear" {
		return (end-start)*pct + start
	}
	return end + (start-end)/2*(math.Cos(math.Pi*pct)+1)
}

// eval follows torch's phase search: the first phase whose end is >= n (or
// the last), with pct = (n − start)/(end − start).
func (o *OneCycle) eval(n int64) (lr, mom float64) {
	if n > o.TotalSteps-1 {
		n = o.TotalSteps - 1
	}
	x := float64(n)
	start := 0.0
	for i, ph := range o.phases {
		if x <= ph.end || i == len(o.phases)-1 {
			pct := (x - start) / (ph.end - start)
			return o.anneal(ph.startLR, ph.endLR, pct), o.anneal(ph.startMom, ph.endMom, pct)
		}
		start = ph.end
	}
	return 0, 0
}

func (o *OneCycle) LR(n int64) float64 { lr, _ := o.eval(n); return lr }
func (o *OneCycle) Momentum(n int64) (float64, bool) {
	if !o.CycleMomentum {
		return 0, false
	}
	_, m := o.eval(n)
	return m, true
}
func (o *OneCycle) lrRange() (float64, float64) {
	return o.PeakLR / o.DivFactor / o.FinalDivFactor, o.PeakLR
}
func (o *OneCycle) floor() float64 { lo, _ := o.lrRange(); return lo }
func (o *OneCycle) Phases() []Phase {
	ph := []Phase{{"up", 0}}
	names := []string{"down", "anneal"}
	for i := 0; i < len(o.phases)-1; i++ {
		ph = append(ph, Phase{names[i], int64(math.Floor(o.phases[i].end)) + 1})
	}
	return ph
}

// Cyclic is torch's CyclicLR (Smith's CLR): a triangle between min_lr and
// peak_lr with step_size_up rising and step_size_down falling updates.
// mode triangular keeps the amplitude, triangular2 halves it every cycle,
// exp_range scales it by gamma^n. Momentum moves inversely between
// base_momentum and max_momentum when cycle_momentum is set.
type Cyclic struct {
	// MinLR is the low end of the triangle (torch's base_lr); required,
	// finite, >= 0.
	MinLR float64 `spec:"min_lr,required"`
	// PeakLR is the high end (torch's max_lr); required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// StepSizeUp is the number of rising updates per cycle; default 2000, >= 1.
	StepSizeUp int64 `spec:"step_size_up"`
	// StepSizeDown is the number of falling updates, >= 1; absent, step_size_up.
	StepSizeDown *int64 `spec:"step_size_down"`
	// Mode is triangular (the default), triangular2 or exp_range.
	Mode string `spec:"mode"`
	// Gamma is exp_range's factor per update; default 1, finite, > 0.
	Gamma float64 `spec:"gamma"`
	// CycleMomentum schedules momentum as well; default true.
	CycleMomentum bool `spec:"cycle_momentum"`
	// BaseMomentum is the momentum at peak_lr; default 0.8, in [0, 1).
	BaseMomentum float64 `spec:"base_momentum"`
	// MaxMomentum is the momentum at min_lr; default 0.9, in [0, 1).
	MaxMomentum float64 `spec:"max_momentum"`
}

func (c *Cyclic) Kind() string { return "cyclic" }
func (c *Cyclic) Validate() error {
	v := checks{kind: c.Kind()}
	v.rate("min_lr", c.MinLR)
	v.rate("peak_lr", c.PeakLR)
	v.steps("step_size_up", c.StepSizeUp, 1)
	if c.StepSizeDown != nil {
		v.steps("step_size_down", *c.StepSizeDown, 1)
	}
	oneOf(&v, "mode", c.Mode, map[string]bool{"triangular": true, "triangular2": true, "exp_range": true})
	v.positive("gamma", c.Gamma)
	v.momentum("base_momentum", c.BaseMomentum)
	v.momentum("max_momentum", c.MaxMomentum)
	return v.err
}

func (c *Cyclic) eval(n int64) (factor, scale float64) {
	up := float64(c.StepSizeUp)
	down := up
	if c.StepSizeDown != nil {
		down = float64(*c.StepSizeDown)
	}
	total := up + down
	ratio := up / total
	e := float64(n)
	cycle := math.Floor(1 + e/total)
	x := 1 + e/total - cycle
	if x <= ratio {
		factor = x / ratio
	} else {
		factor = (x - 1) / (ratio - 1)
	}
	switch c.Mode {
	case "triangular2":
		scale = 1 / math.Pow(2, cycle-1)
	case "exp_range":
		scale = math.Pow(c.Gamma, e)
	default:
		scale = 1
	}
	return factor, scale
}

func (c *Cyclic) LR(n int64) float64 {
	f, s := c.eval(n)
	return c.MinLR + (c.PeakLR-c.MinLR)*f*s
}
func (c *Cyclic) Momentum(n int64) (float64, bool) {
	if !c.CycleMomentum {
		return 0, false
	}
	f, s := c.eval(n)
	return c.MaxMomentum - (c.MaxMomentum-c.BaseMomentum)*f*s, true
}
func (c *Cyclic) lrRange() (float64, float64) { return c.MinLR, c.PeakLR }
func (c *Cyclic) floor() float64              { return c.MinLR }
func (c *Cyclic) Phases() []Phase             { return []Phase{{"cycle", 0}} }

// SGDR is cosine annealing with warm restarts in timm's general form:
// cycle i lasts cycle_steps·cycle_mul^i updates and peaks at
// peak_lr·cycle_decay^i, with
//
//	lr = min + ½(peak_i − min)(1 + cos(π·t_cur^k / T_i^k)),  k = k_decay
//
// After cycle_limit cycles (0: unlimited) the rate stays at min_lr. A warmup
// runs before the first cycle. torch's CosineAnnealingWarmRestarts(T_0,
// T_mult, eta_min) is {cycle_steps: T_0, cycle_mul: T_mult, min_lr: eta_min}.
type SGDR struct {
	// PeakLR is the first cycle's peak; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// MinLR is the floor; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to PeakLR over warmup_steps (default none).
	Warmup
	// CycleSteps is the first cycle's length; required, >= 1.
	CycleSteps int64 `spec:"cycle_steps,required"`
	// CycleMul multiplies each cycle's length; default 1, finite, >= 1.
	CycleMul float64 `spec:"cycle_mul"`
	// CycleDecay multiplies each cycle's peak; default 1, in (0, 1].
	CycleDecay float64 `spec:"cycle_decay"`
	// CycleLimit is the number of cycles; default 0 (unlimited), >= 0.
	CycleLimit int64 `spec:"cycle_limit"`
	// KDecay is k; default 1, finite, > 0.
	KDecay float64 `spec:"k_decay"`
}

func (s *SGDR) Kind() string { return "sgdr" }
func (s *SGDR) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.rate("min_lr", s.MinLR)
	s.Warmup.check(&v)
	v.steps("cycle_steps", s.CycleSteps, 1)
	if !(s.CycleMul >= 1) || math.IsInf(s.CycleMul, 0) {
		v.fail("cycle_mul", s.CycleMul, "must be a finite number >= 1")
	}
	if !(s.CycleDecay > 0 && s.CycleDecay <= 1) {
		v.fail("cycle_decay", s.CycleDecay, "must be in (0, 1]")
	}
	v.steps("cycle_limit", s.CycleLimit, 0)
	v.positive("k_decay", s.KDecay)
	if s.MinLR > s.PeakLR {
		v.fail("min_lr", s.MinLR, "must be <= peak_lr (%g)", s.PeakLR)
	}
	return v.err
}

// cycle locates local step t: cycle index, position in it, its length and
// its peak. Integer multipliers are walked exactly, so restarts land on the
// same updates as torch's integer bookkeeping; the walk also multiplies the
// peak down, which costs less than a math.Pow per call.
func (s *SGDR) cycle(t int64) (i int64, tcur, ti, peak float64) {
	if s.CycleMul == 1 {
		i = t / s.CycleSteps
		peak = s.PeakLR
		if s.CycleDecay != 1 {
			peak *= math.Pow(s.CycleDecay, float64(i))
		}
		return i, float64(t - i*s.CycleSteps), float64(s.CycleSteps), peak
	}
	start, length := 0.0, float64(s.CycleSteps)
	peak = s.PeakLR
	x := float64(t)
	for x >= start+length {
		start += length
		length *= s.CycleMul
		peak *= s.CycleDecay
		i++
	}
	return i, x - start, length, peak
}

func (s *SGDR) LR(n int64) float64 {
	if v, ok := s.at(n, s.PeakLR); ok {
		return v
	}
	i, tcur, ti, peak := s.cycle(n - s.WarmupSteps)
	if s.CycleLimit > 0 && i >= s.CycleLimit {
		return s.MinLR
	}
	frac := tcur / ti
	if s.KDecay != 1 {
		frac = math.Pow(tcur, s.KDecay) / math.Pow(ti, s.KDecay)
	}
	return s.MinLR + 0.5*(peak-s.MinLR)*(1+math.Cos(math.Pi*frac))
}
func (s *SGDR) lrRange() (float64, float64) { return s.MinLR, s.PeakLR }
func (s *SGDR) floor() float64              { return s.MinLR }
func (s *SGDR) Phases() []Phase {
	ph := warmupPhases(s.WarmupSteps, "cycle 0")
	start, length := float64(s.WarmupSteps), float64(s.CycleSteps)
	for i := int64(1); i < 8 && (s.CycleLimit == 0 || i <= s.CycleLimit); i++ {
		start += length
		length *= s.CycleMul
		if !(start <= phaseHorizon) { // a restart no run reaches, or +Inf
			return ph
		}
		name := "restart"
		if i == s.CycleLimit { // the cycles are over: min_lr from here
			name = "floor"
		}
		ph = append(ph, Phase{name, int64(math.Ceil(start))})
	}
	if s.CycleLimit >= 8 { // the restarts listed stop at 7; the floor still shows
		if end, ok := s.cyclesEnd(); ok {
			ph = append(ph, Phase{"floor", end})
		}
	}
	return ph
}

// phaseHorizon bounds the phase starts listed: no run comes near it, and a
// float beyond it may not convert to int64.
const phaseHorizon = 1 << 62

// cyclesEnd is the first update after the last cycle, where the rate holds
// min_lr, or false when that lies past phaseHorizon. Equal cycles end by
// integer arithmetic, as cycle counts them; growing ones are walked as cycle
// walks them, up to a million of them, and past that summed in closed form
// (cycle_mul within 1e-5 of 1 and a limit above a million: the sum may then
// differ from the walk's in its last bit).
func (s *SGDR) cyclesEnd() (int64, bool) {
	w, c, k := s.WarmupSteps, s.CycleSteps, s.CycleLimit
	if s.CycleMul == 1 {
		if k > (phaseHorizon-w)/c {
			return 0, false
		}
		return w + k*c, true
	}
	var total float64
	if k <= 1<<20 {
		length := float64(c)
		for i := int64(0); i < k && total <= phaseHorizon; i++ {
			total += length
			length *= s.CycleMul
		}
	} else {
		total = float64(c) * math.Expm1(float64(k)*math.Log1p(s.CycleMul-1)) / (s.CycleMul - 1)
	}
	end := float64(w) + total
	if !(end <= phaseHorizon) {
		return 0, false
	}
	return int64(math.Ceil(end)), true
}
