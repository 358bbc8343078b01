package sched

import "math"

// Decay is the frame shared by the warmup-then-decay kinds (Cosine, Linear,
// Polynomial, Rex, CosinePower), which embed it: linear warmup for n < W, then
//
//	min_lr + (peak_lr − min_lr)·g(p),  p = (n − W)/(T − W),  W ≤ n ≤ T
//
// with a kind-specific profile g falling from g(0)=1 to g(1)=0, and min_lr for
// n > T. Update W+1 is the first at peak_lr and LR(T) = min_lr: update T+1 is
// the first at the floor. With W == T there is no decay phase: LR(T) = peak_lr.
type Decay struct {
	// PeakLR is the rate at the top of the decay; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// MinLR is the floor, reached at update T+1; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to PeakLR over warmup_steps (default none), at most T.
	Warmup
	// TotalSteps is T, the warmup included; required, >= 1.
	TotalSteps int64 `spec:"total_steps,required"`
}

func (d *Decay) check(c *checks) {
	c.rate("peak_lr", d.PeakLR)
	c.rate("min_lr", d.MinLR)
	d.Warmup.check(c)
	c.steps("total_steps", d.TotalSteps, 1)
	if d.WarmupSteps > d.TotalSteps {
		c.fail("warmup_steps", d.WarmupSteps, "must be <= total_steps (%d)", d.TotalSteps)
	}
	if d.MinLR > d.PeakLR {
		c.fail("min_lr", d.MinLR, "must be <= peak_lr (%g)", d.PeakLR)
	}
}

func (d *Decay) base() *Decay                { return d }
func (d *Decay) lrRange() (float64, float64) { return d.MinLR, d.PeakLR }
func (d *Decay) floor() float64              { return d.MinLR }
func (d *Decay) Phases() []Phase {
	ph := []Phase{}
	if d.WarmupSteps > 0 {
		ph = append(ph, Phase{"warmup", 0})
	}
	// The floor starts at the first n whose rate is min_lr: T, as WSD's and
	// the infinite schedule's do (T+1 when W == T, where LR(T) is the peak).
	floor := d.TotalSteps
	if d.WarmupSteps == d.TotalSteps {
		floor++
	}
	return append(ph, Phase{"decay", d.WarmupSteps}, Phase{"floor", floor})
}

// decayer is a kind built on decay.
type decayer interface {
	Spec
	base() *Decay
	Phases() []Phase
	profile(p float64) float64
	withTotal(total int64) decayer
}

func decayLR(k decayer, n int64) float64 {
	d := k.base()
	if v, ok := d.at(n, d.PeakLR); ok {
		return v
	}
	switch {
	case n > d.TotalSteps:
		return d.MinLR
	case d.TotalSteps == d.WarmupSteps:
		return d.PeakLR
	}
	p := float64(n-d.WarmupSteps) / float64(d.TotalSteps-d.WarmupSteps)
	return d.MinLR + (d.PeakLR-d.MinLR)*k.profile(p)
}

// extendDecay lengthens a decay kind at local step at; see Extend.
func extendDecay(k decayer, at, total int64, mode string) (Schedule, error) {
	d := k.base()
	if err := checkExtend(at, total, d.WarmupSteps); err != nil {
		return nil, err
	}
	if mode == ExtendProportional {
		return proportional(k, func(t int64) phased { return k.withTotal(t) }, at, d.TotalSteps, total, d.WarmupSteps)
	}
	next := k.withTotal(total)
	if at <= d.WarmupSteps || at > d.TotalSteps {
		// Before the decay starts the new horizon changes nothing yet; past
		// the old horizon the rate already sits at min_lr and stays there.
		if at > d.TotalSteps {
			return constant(d.MinLR), nil
		}
		return next, nil
	}
	p0 := float64(at-d.WarmupSteps) / float64(d.TotalSteps-d.WarmupSteps)
	return &reanchored{at: at, end: total, p0: p0, floorLR: d.MinLR,
		value: func(p float64) float64 { return d.MinLR + (d.PeakLR-d.MinLR)*k.profile(p) }}, nil
}

// Cosine is linear warmup then half-cosine decay: g(p) = ½(1 + cos πp).
// torch's CosineAnnealingLR(T_max=T, eta_min=m) is {peak_lr: base, min_lr: m,
// total_steps: T} with no warmup, over its first T updates.
type Cosine struct{ Decay }

func (c *Cosine) Kind() string              { return "cosine" }
func (c *Cosine) Validate() error           { v := checks{kind: c.Kind()}; c.check(&v); return v.err }
func (c *Cosine) profile(p float64) float64 { return 0.5 * (1 + math.Cos(math.Pi*p)) }
func (c *Cosine) LR(n int64) float64        { return decayLR(c, n) }
func (c *Cosine) withTotal(t int64) decayer { x := *c; x.TotalSteps = t; return &x }
func (c *Cosine) extend(at, total int64, mode string) (Schedule, error) {
	return extendDecay(c, at, total, mode)
}

// Linear is linear warmup then linear decay: g(p) = 1 − p. torch's
// LinearLR(start_factor=1, end_factor=e, total_iters=T) is {peak_lr: base,
// min_lr: e·base, total_steps: T}; a rising LinearLR is a warmup with
// min_lr = peak_lr.
type Linear struct{ Decay }

func (c *Linear) Kind() string              { return "linear" }
func (c *Linear) Validate() error           { v := checks{kind: c.Kind()}; c.check(&v); return v.err }
func (c *Linear) profile(p float64) float64 { return 1 - p }
func (c *Linear) LR(n int64) float64        { return decayLR(c, n) }
func (c *Linear) withTotal(t int64) decayer { x := *c; x.TotalSteps = t; return &x }
func (c *Linear) extend(at, total int64, mode string) (Schedule, error) {
	return extendDecay(c, at, total, mode)
}

// Polynomial decays as g(p) = (1 − p)^power (HF "polynomial" with lr_end =
// min_lr). torch's PolynomialLR(total_iters=T, power=a) is {peak_lr: base,
// total_steps: T, power: a}.
type Polynomial struct {
	Decay
	// Power is the exponent of g; default 1 (linear decay), finite, > 0.
	Power float64 `spec:"power"`
}

func (c *Polynomial) Kind() string { return "polynomial" }
func (c *Polynomial) Validate() error {
	v := checks{kind: c.Kind()}
	c.check(&v)
	if !(c.Power > 0) || math.IsInf(c.Power, 0) {
		v.fail("power", c.Power, "must be a finite number > 0")
	}
	return v.err
}
func (c *Polynomial) profile(p float64) float64 { return math.Pow(1-p, c.Power) }
func (c *Polynomial) LR(n int64) float64        { return decayLR(c, n) }
func (c *Polynomial) withTotal(t int64) decayer { x := *c; x.TotalSteps = t; return &x }
func (c *Polynomial) extend(at, total int64, mode string) (Schedule, error) {
	return extendDecay(c, at, total, mode)
}

// Rex is the REX profile (Chen et al. 2022) in init2winit's generalized
// form g(p) = (1 − p)/(1 − p·(1 − β)); β = 0.5 (the default) is the paper's
// (1 − p)/(1 − p/2). With sampling = k the rate is re-sampled from the
// profile every k updates of the decay phase and held in between; LR(T) is
// still min_lr, so the last block may be shorter than k.
type Rex struct {
	Decay
	// Beta is β; default 0.5, in (0, 1].
	Beta float64 `spec:"beta"`
	// Sampling is k, the updates each sampled rate is held for; default 1
	// (every update), >= 1.
	Sampling int64 `spec:"sampling"`
}

func (c *Rex) Kind() string { return "rex" }
func (c *Rex) Validate() error {
	v := checks{kind: c.Kind()}
	c.check(&v)
	if !(c.Beta > 0 && c.Beta <= 1) {
		v.fail("beta", c.Beta, "must be in (0, 1]")
	}
	v.steps("sampling", c.Sampling, 1)
	return v.err
}
func (c *Rex) profile(p float64) float64 { return (1 - p) / (1 - p*(1-c.Beta)) }
func (c *Rex) LR(n int64) float64 {
	return decayLR(c, c.sampled(n))
}

// sampled is the step whose profile value update n+1 holds.
func (c *Rex) sampled(n int64) int64 {
	if w := c.WarmupSteps; c.Sampling > 1 && n > w && n < c.TotalSteps {
		return w + (n-w)/c.Sampling*c.Sampling
	}
	return n
}

func (c *Rex) withTotal(t int64) decayer { x := *c; x.TotalSteps = t; return &x }

// extend keeps the sampling: a continuous extend holds the rate of the
// block running at the re-plan step and re-samples every `sampling` updates
// from there.
func (c *Rex) extend(at, total int64, mode string) (Schedule, error) {
	if mode == ExtendProportional || c.Sampling <= 1 {
		return extendDecay(c, at, total, mode)
	}
	if err := checkExtend(at, total, c.WarmupSteps); err != nil {
		return nil, err
	}
	// Anchor the stretched profile at the start of the running block, so its
	// held rate carries over, then re-sample from at.
	s, err := extendDecay(c, c.sampled(at), total, mode)
	if r, ok := s.(*reanchored); ok {
		r.at, r.every = at, c.Sampling
	}
	return s, err
}

// CosinePower is sharpDARTS' cosine power annealing in closed form:
// g(p) = (e^c − 1)/(e − 1) with c = ½(1 + cos πp) and e = exponent_order > 1;
// e = 1 is plain cosine. sharpDARTS normalizes over the evaluated array of
// epochs (so its curve starts at epoch 1); this closed form is the
// continuous-time curve it approximates.
type CosinePower struct {
	Decay
	// ExponentOrder is e; default 10, finite, >= 1.
	ExponentOrder float64 `spec:"exponent_order"`

	logOrder float64
}

func (c *CosinePower) Kind() string { return "cosine_power" }
func (c *CosinePower) Validate() error {
	v := checks{kind: c.Kind()}
	c.check(&v)
	if !(c.ExponentOrder >= 1) || math.IsInf(c.ExponentOrder, 0) {
		v.fail("exponent_order", c.ExponentOrder, "must be a finite number >= 1")
	}
	c.logOrder = math.Log(c.ExponentOrder)
	return v.err
}
func (c *CosinePower) profile(p float64) float64 {
	cc := 0.5 * (1 + math.Cos(math.Pi*p))
	if c.ExponentOrder == 1 || cc == 1 || cc == 0 {
		// The ends are exact: expm1(log e)/(e−1) can round a ulp off 1, and
		// a rate past peak_lr would fall outside a group's mapped range.
		return cc
	}
	return math.Min(1, math.Expm1(cc*c.logOrder)/(c.ExponentOrder-1))
}
func (c *CosinePower) LR(n int64) float64        { return decayLR(c, n) }
func (c *CosinePower) withTotal(t int64) decayer { x := *c; x.TotalSteps = t; return &x }
func (c *CosinePower) extend(at, total int64, mode string) (Schedule, error) {
	return extendDecay(c, at, total, mode)
}
