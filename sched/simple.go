package sched

import (
	"math"
	"sort"
)

// Constant holds peak_lr after an optional linear warmup (HF "constant" and
// "constant_with_warmup").
type Constant struct {
	// PeakLR is the rate held; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// Warmup rises to PeakLR over warmup_steps (default none).
	Warmup
}

func (c *Constant) Kind() string { return "constant" }
func (c *Constant) Validate() error {
	v := checks{kind: c.Kind()}
	v.rate("peak_lr", c.PeakLR)
	c.Warmup.check(&v)
	return v.err
}
func (c *Constant) LR(n int64) float64 {
	if v, ok := c.at(n, c.PeakLR); ok {
		return v
	}
	return c.PeakLR
}
func (c *Constant) lrRange() (float64, float64) { return 0, c.PeakLR }
func (c *Constant) Phases() []Phase             { return warmupPhases(c.WarmupSteps, "constant") }

func warmupPhases(w int64, main string) []Phase {
	if w > 0 {
		return []Phase{{"warmup", 0}, {main, w}}
	}
	return []Phase{{main, 0}}
}

// Step multiplies peak_lr by gamma every step_size updates:
// peak·γ^⌊n/step_size⌋, as torch's StepLR(step_size, gamma).
type Step struct {
	// PeakLR is the rate of the first step_size updates; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// StepSize is the number of updates between multiplications; required, >= 1.
	StepSize int64 `spec:"step_size,required"`
	// Gamma is γ; default 0.1, finite, > 0.
	Gamma float64 `spec:"gamma"`
}

func (s *Step) Kind() string { return "step" }
func (s *Step) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.steps("step_size", s.StepSize, 1)
	v.positive("gamma", s.Gamma)
	return v.err
}
func (s *Step) LR(n int64) float64          { return scaled(s.PeakLR, math.Pow(s.Gamma, float64(n/s.StepSize))) }
func (s *Step) lrRange() (float64, float64) { return 0, s.PeakLR }
func (s *Step) Phases() []Phase             { return []Phase{{"step", 0}} }

// MultiStep multiplies peak_lr by gamma at each milestone:
// peak·γ^(number of milestones <= n), as torch's MultiStepLR.
type MultiStep struct {
	// PeakLR is the rate before the first milestone; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// Milestones are the steps n from which one more γ applies; required,
	// each >= 1, strictly increasing.
	Milestones []int64 `spec:"milestones,required"`
	// Gamma is γ; default 0.1, finite, > 0.
	Gamma float64 `spec:"gamma"`
}

func (s *MultiStep) Kind() string { return "multistep" }
func (s *MultiStep) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.positive("gamma", s.Gamma)
	v.increasing("milestones", s.Milestones, 1)
	return v.err
}
func (s *MultiStep) LR(n int64) float64 {
	k := sort.Search(len(s.Milestones), func(i int) bool { return s.Milestones[i] > n })
	return scaled(s.PeakLR, math.Pow(s.Gamma, float64(k)))
}

// scaled is peak·factor, with a zero peak staying 0 where a growing factor
// (gamma > 1) has overflowed to +Inf (0·Inf is NaN). A positive peak then
// gives +Inf, which the dispatcher never hands to an optimizer.
func scaled(peak, factor float64) float64 {
	if peak == 0 {
		return 0
	}
	return peak * factor
}
func (s *MultiStep) lrRange() (float64, float64) { return 0, s.PeakLR }
func (s *MultiStep) Phases() []Phase {
	ph := []Phase{{"start", 0}}
	for _, m := range s.Milestones {
		ph = append(ph, Phase{"milestone", m})
	}
	return ph
}

// Exponential is peak_lr·γ^n (torch's ExponentialLR), floored at min_lr.
type Exponential struct {
	// PeakLR is the rate of the first update; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// Gamma is γ; required, finite, > 0.
	Gamma float64 `spec:"gamma,required"`
	// MinLR is the floor; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`

	logGamma float64
}

func (s *Exponential) Kind() string { return "exponential" }
func (s *Exponential) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.rate("min_lr", s.MinLR)
	v.positive("gamma", s.Gamma)
	if s.MinLR > s.PeakLR {
		v.fail("min_lr", s.MinLR, "must be <= peak_lr (%g)", s.PeakLR)
	}
	s.logGamma = math.Log(s.Gamma)
	return v.err
}

// LR is max(peak_lr·γ^n, min_lr).
func (s *Exponential) LR(n int64) float64 {
	// exp(n·ln γ): math.Pow costs ~100 ns for large n, and the two differ
	// by a few ulps.
	return math.Max(scaled(s.PeakLR, math.Exp(float64(n)*s.logGamma)), s.MinLR)
}
func (s *Exponential) lrRange() (float64, float64) { return s.MinLR, s.PeakLR }
func (s *Exponential) floor() float64              { return s.MinLR }
func (s *Exponential) Phases() []Phase             { return []Phase{{"decay", 0}} }

// InvSqrt is inverse-square-root decay after a linear warmup, in one of two
// published forms:
//
//	hf:       peak / √((n + τ − W)/τ),  τ = timescale (default W, or 10,000 when W = 0)
//	megatron: peak·√max(W,1) / √max(n,1)
//
// Both are floored at min_lr; with total_steps = T set, LR(n) = min_lr for
// n > T, so update T+2 is the first at min_lr (Megatron's lr_decay_steps).
type InvSqrt struct {
	// PeakLR is the rate at the end of the warmup; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// MinLR is the floor; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to PeakLR over W = warmup_steps (default none).
	Warmup
	// Form is hf (the default) or megatron.
	Form string `spec:"form"`
	// Timescale is τ of the hf form; default 0 (τ = W, or 10,000 when W = 0),
	// finite, >= 0. The megatron form ignores it.
	Timescale float64 `spec:"timescale"`
	// TotalSteps, when set, puts every LR(n) with n > total_steps at MinLR;
	// absent, no cut-off. At least warmup_steps.
	TotalSteps *int64 `spec:"total_steps"`
}

func (s *InvSqrt) Kind() string { return "inv_sqrt" }
func (s *InvSqrt) Validate() error {
	v := checks{kind: s.Kind()}
	v.rate("peak_lr", s.PeakLR)
	v.rate("min_lr", s.MinLR)
	s.Warmup.check(&v)
	oneOf(&v, "form", s.Form, map[string]bool{"hf": true, "megatron": true})
	if math.IsNaN(s.Timescale) || math.IsInf(s.Timescale, 0) || s.Timescale < 0 {
		v.fail("timescale", s.Timescale, "must be a finite number >= 0 (0: the default)")
	}
	if s.TotalSteps != nil && *s.TotalSteps < s.WarmupSteps {
		v.fail("total_steps", *s.TotalSteps, "must be >= warmup_steps (%d)", s.WarmupSteps)
	}
	if s.MinLR > s.PeakLR {
		v.fail("min_lr", s.MinLR, "must be <= peak_lr (%g)", s.PeakLR)
	}
	return v.err
}
func (s *InvSqrt) tau() float64 {
	switch {
	case s.Timescale > 0:
		return s.Timescale
	case s.WarmupSteps > 0:
		return float64(s.WarmupSteps)
	}
	return 10000
}
func (s *InvSqrt) LR(n int64) float64 {
	if v, ok := s.at(n, s.PeakLR); ok {
		return v
	}
	if s.TotalSteps != nil && n > *s.TotalSteps {
		return s.MinLR
	}
	var v float64
	if s.Form == "megatron" {
		v = s.PeakLR * math.Sqrt(float64(max(s.WarmupSteps, 1))) / math.Sqrt(float64(max(n, 1)))
	} else {
		tau := s.tau()
		v = s.PeakLR / math.Sqrt((float64(n-s.WarmupSteps)+tau)/tau)
	}
	return math.Max(v, s.MinLR)
}
func (s *InvSqrt) lrRange() (float64, float64) { return s.MinLR, s.PeakLR }
func (s *InvSqrt) floor() float64              { return s.MinLR }
func (s *InvSqrt) Phases() []Phase             { return warmupPhases(s.WarmupSteps, "inv_sqrt") }
