package sched

import "math"

// Cosine is linear warmup followed by half-cosine decay:
//
//	n < W:       warmup_start_lr + (peak_lr − warmup_start_lr)·n/W
//	W ≤ n ≤ T:   min_lr + (peak_lr − min_lr)·½(1 + cos(π·(n−W)/(T−W)))
//	n > T:       min_lr
//
// with W = warmup_steps and T = total_steps. Update W+1 is the first to use
// peak_lr and update T+1 is the first to use min_lr (LR(T) = min_lr). With
// W == T there is no decay phase: LR(T) = peak_lr and every later update uses
// min_lr.
type Cosine struct {
	PeakLR        float64 `spec:"peak_lr,required"`
	MinLR         float64 `spec:"min_lr"`
	WarmupSteps   int64   `spec:"warmup_steps"`
	WarmupStartLR float64 `spec:"warmup_start_lr"`
	TotalSteps    int64   `spec:"total_steps,required"`
}

// Kind implements Spec.
func (c *Cosine) Kind() string { return "cosine" }

// Validate implements Spec.
func (c *Cosine) Validate() error {
	v := checks{kind: c.Kind()}
	v.rate("peak_lr", c.PeakLR)
	v.rate("min_lr", c.MinLR)
	v.rate("warmup_start_lr", c.WarmupStartLR)
	v.steps("warmup_steps", c.WarmupSteps, 0)
	v.steps("total_steps", c.TotalSteps, 1)
	if c.WarmupSteps > c.TotalSteps {
		v.fail("warmup_steps", c.WarmupSteps, "must be <= total_steps (%d)", c.TotalSteps)
	}
	if c.MinLR > c.PeakLR {
		v.fail("min_lr", c.MinLR, "must be <= peak_lr (%g)", c.PeakLR)
	}
	return v.err
}

// LR implements Schedule.
func (c *Cosine) LR(n int64) float64 {
	w, t := c.WarmupSteps, c.TotalSteps
	switch {
	case n < w:
		return c.WarmupStartLR + (c.PeakLR-c.WarmupStartLR)*float64(n)/float64(w)
	case n > t:
		return c.MinLR
	case t == w:
		return c.PeakLR
	}
	progress := float64(n-w) / float64(t-w)
	return c.MinLR + (c.PeakLR-c.MinLR)*0.5*(1+math.Cos(math.Pi*progress))
}
