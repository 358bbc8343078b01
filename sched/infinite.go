package sched

import (
	"fmt"
	"math"
)

// Infinite is the infinite schedule (Ibrahim et al. 2024; Singh et al. 2025):
// warmup, a one-time cooldown to const_lr, a constant phase, and an anneal to
// min_lr. With W, C, K, A the phase lengths:
//
//	n < W:              linear warmup from warmup_start_lr to peak_lr
//	W ≤ n < W+C:        cooldown, m = n − W:
//	    cosine:   const + (peak − const)·½(1 + cos(π m/C))
//	    inv_sqrt: peak + (const − peak)·h(m/C)/h(1),  h(x) = 1/√(1 + αx) − 1
//	W+C ≤ n < W+C+K:    const_lr
//	then, a = n − (W+C+K) < A:
//	    exp:    const·(min/const)^(a/A)      (needs min_lr > 0)
//	    linear: const + (min − const)·a/A
//	    cosine: min + (const − min)·½(1 + cos(π a/A))
//	    1-sqrt: min + (const − min)·(1 − √(a/A))
//	after:              min_lr
//
// Without constant_steps the constant phase never ends: the run holds const_lr
// until an anneal is triggered by a re-plan (whose own shape and floor then
// apply). The exp anneal needs min_lr > 0 whenever it is scheduled. The NeoX code floors every phase
// at min_lr except the inv_sqrt cooldown; here no phase is floored (const_lr
// >= min_lr is required instead, so the floor never binds).
type Infinite struct {
	// PeakLR is the warmup's target and the cooldown's start; required,
	// finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// ConstLR is the rate of the constant phase; required, finite, at least
	// MinLR and at most PeakLR.
	ConstLR float64 `spec:"const_lr,required"`
	// MinLR is the floor the anneal reaches; default 0, at most ConstLR; > 0
	// for an exp anneal with constant_steps set and anneal_steps > 0.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to PeakLR over W = warmup_steps (default none).
	Warmup
	// CooldownSteps is C; default 0 (no cooldown), >= 0.
	CooldownSteps int64 `spec:"cooldown_steps"`
	// CooldownShape is cosine (the default) or inv_sqrt.
	CooldownShape string `spec:"cooldown_shape"`
	// Timescale is α of the inv_sqrt cooldown; default 10, finite, > 0.
	Timescale float64 `spec:"timescale"`
	// ConstantSteps is K, >= 0; absent, the constant phase never ends and no
	// anneal is scheduled.
	ConstantSteps *int64 `spec:"constant_steps"`
	// AnnealSteps is A; default 0, >= 0.
	AnnealSteps int64 `spec:"anneal_steps"`
	// AnnealShape is exp (the default), linear, cosine or 1-sqrt.
	AnnealShape string `spec:"anneal_shape"`

	annealF annealFunc
}

var cooldownShapes = map[string]bool{"cosine": true, "inv_sqrt": true}

func (s *Infinite) Kind() string { return "infinite" }

func (s *Infinite) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.rate("const_lr", s.ConstLR)
	v.rate("min_lr", s.MinLR)
	s.Warmup.check(&v)
	v.steps("cooldown_steps", s.CooldownSteps, 0)
	v.steps("anneal_steps", s.AnnealSteps, 0)
	if s.ConstantSteps != nil {
		v.steps("constant_steps", *s.ConstantSteps, 0)
	}
	oneOf(&v, "cooldown_shape", s.CooldownShape, cooldownShapes)
	oneOf(&v, "anneal_shape", s.AnnealShape, annealShapes)
	if !(s.Timescale > 0) || math.IsInf(s.Timescale, 0) {
		v.fail("timescale", s.Timescale, "must be a finite number > 0")
	}
	if s.ConstLR > s.PeakLR {
		v.fail("const_lr", s.ConstLR, "must be <= peak_lr (%g)", s.PeakLR)
	}
	if s.MinLR > s.ConstLR {
		v.fail("min_lr", s.MinLR, "must be <= const_lr (%g)", s.ConstLR)
	}
	if s.AnnealShape == "exp" && s.ConstantSteps != nil && s.AnnealSteps > 0 && !(s.MinLR > 0) {
		v.fail("min_lr", s.MinLR, "must be > 0 with anneal_shape exp (the anneal is geometric: const·(min/const)^(a/A))")
	}
	if v.err == nil {
		s.annealF, _ = annealShape(s.AnnealShape)
	}
	return v.err
}

func (s *Infinite) h(x float64) float64 { return 1/math.Sqrt(1+s.Timescale*x) - 1 }

// annealStart is the first step of the anneal, or -1 when the constant phase
// is open-ended.
func (s *Infinite) annealStart() int64 {
	if s.ConstantSteps == nil {
		return -1
	}
	return s.WarmupSteps + s.CooldownSteps + *s.ConstantSteps
}

func (s *Infinite) LR(n int64) float64 {
	if v, ok := s.at(n, s.PeakLR); ok {
		return v
	}
	m := n - s.WarmupSteps
	if m < s.CooldownSteps {
		x := float64(m) / float64(s.CooldownSteps)
		if s.CooldownShape == "inv_sqrt" {
			return s.PeakLR + (s.ConstLR-s.PeakLR)*s.h(x)/s.h(1)
		}
		return s.ConstLR + (s.PeakLR-s.ConstLR)*0.5*(1+math.Cos(math.Pi*x))
	}
	a0 := s.annealStart()
	if a0 < 0 || n < a0 {
		return s.ConstLR
	}
	if a := n - a0; a < s.AnnealSteps {
		return s.annealF(s.ConstLR, s.MinLR, float64(a)/float64(s.AnnealSteps))
	}
	return s.MinLR
}

func (s *Infinite) lrRange() (float64, float64) { return s.MinLR, s.PeakLR }
func (s *Infinite) floor() float64              { return s.MinLR }

func (s *Infinite) Phases() []Phase {
	ph := []Phase{}
	if s.WarmupSteps > 0 {
		ph = append(ph, Phase{"warmup", 0})
	}
	if s.CooldownSteps > 0 {
		ph = append(ph, Phase{"cooldown", s.WarmupSteps})
	}
	ph = append(ph, Phase{"constant", s.WarmupSteps + s.CooldownSteps})
	if a0 := s.annealStart(); a0 >= 0 {
		ph = append(ph, Phase{"anneal", a0}, Phase{"floor", a0 + s.AnnealSteps})
	}
	return ph
}

// extend moves the end of a bounded infinite schedule by lengthening its
// constant phase (or stretching an anneal already under way).
func (s *Infinite) extend(at, total int64, mode string) (Schedule, error) {
	a0 := s.annealStart()
	if a0 < 0 {
		return nil, fmt.Errorf("extend: this infinite schedule has no constant_steps, so no end to move; trigger an anneal instead")
	}
	if err := checkExtend(at, total, s.WarmupSteps+s.CooldownSteps+s.AnnealSteps); err != nil {
		return nil, err
	}
	next := *s
	k := total - s.WarmupSteps - s.CooldownSteps - s.AnnealSteps
	next.ConstantSteps = &k
	end := a0 + s.AnnealSteps
	switch {
	case mode == ExtendProportional:
		return proportional(s, func(t int64) phased {
			h := *s
			k := t - s.WarmupSteps - s.CooldownSteps - s.AnnealSteps
			h.ConstantSteps = &k
			return &h
		}, at, end, total, s.WarmupSteps+s.CooldownSteps+s.AnnealSteps)
	case at < end && at <= min(a0, next.annealStart()):
		// (An anneal of no length starts and ends at the end: from there on
		// the run is at its floor, below.)
		return &next, nil
	case at >= end:
		return constant(s.MinLR), nil
	}
	// Inside the anneal, or still constant with a total too close for a
	// whole anneal: anneal from the rate at the re-plan step to the total.
	p0 := max(0, float64(at-a0)/float64(s.AnnealSteps))
	return &reanchored{at: at, end: total, p0: p0, floorLR: s.MinLR,
		value: func(p float64) float64 { return s.annealF(s.ConstLR, s.MinLR, p) }}, nil
}
