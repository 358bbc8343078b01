package sched

import "math"

// WSD is warmup–stable–decay (MiniCPM; HF get_wsd_schedule): a warmup of
// shape warmup_shape from warmup_start_lr to peak_lr over W updates, peak_lr
// for S updates, then a decay of shape decay_shape to min_lr over D updates:
//
//	n < W:            start + (peak − start)·rise(n/W)
//	W ≤ n < W+S:      peak
//	W+S ≤ n < W+S+D:  min + (peak − min)·fall((n − W − S)/D)
//	n ≥ W+S+D:        min
//
// Give stable_steps, or total_steps (then S = total_steps − W − D). The exp
// decay is (r^p − r)/(1 − r) with r = exp_rate (0.5 gives Megatron's
// 2·0.5^p − 1); power is 1 − p^power.
type WSD struct {
	// PeakLR is the rate of the stable phase; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// MinLR is the floor, reached at update W+S+D+1; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to PeakLR over W = warmup_steps (default none), in
	// WarmupShape.
	Warmup
	// WarmupShape is rise; default linear, one of linear, cosine, 1-sqrt.
	WarmupShape string `spec:"warmup_shape"`
	// StableSteps is S, >= 0; absent, total_steps − W − D. Validate fills it.
	StableSteps *int64 `spec:"stable_steps"`
	// DecaySteps is D; required, >= 0.
	DecaySteps int64 `spec:"decay_steps,required"`
	// TotalSteps is W+S+D, so at least W+D; give it or stable_steps (or both,
	// if they agree). Validate fills it.
	TotalSteps *int64 `spec:"total_steps"`
	// DecayShape is fall; default 1-sqrt, one of linear, cosine, 1-sqrt,
	// square, power, exp.
	DecayShape string `spec:"decay_shape"`
	// Power is the exponent of decay_shape power; default 0.5, finite, > 0.
	Power float64 `spec:"power"`
	// ExpRate is r of decay_shape exp; default 0.5, in (0, 1).
	ExpRate float64 `spec:"exp_rate"`

	rise func(float64) float64
	fall func(p, param float64) float64
}

func (w *WSD) Kind() string { return "wsd" }

func (w *WSD) Validate() error {
	v := checks{kind: w.Kind()}
	v.rate("peak_lr", w.PeakLR)
	v.rate("min_lr", w.MinLR)
	w.Warmup.check(&v)
	v.steps("decay_steps", w.DecaySteps, 0)
	oneOf(&v, "warmup_shape", w.WarmupShape, riseShapes)
	oneOf(&v, "decay_shape", w.DecayShape, decayShapes)
	if w.MinLR > w.PeakLR {
		v.fail("min_lr", w.MinLR, "must be <= peak_lr (%g)", w.PeakLR)
	}
	if !(w.Power > 0) || math.IsInf(w.Power, 0) {
		v.fail("power", w.Power, "must be a finite number > 0")
	}
	if !(w.ExpRate > 0 && w.ExpRate < 1) {
		v.fail("exp_rate", w.ExpRate, "must be in (0, 1)")
	}
	switch {
	case w.StableSteps == nil && w.TotalSteps == nil:
		v.fail("stable_steps", nil, "give stable_steps or total_steps")
	case w.StableSteps != nil:
		v.steps("stable_steps", *w.StableSteps, 0)
		if w.TotalSteps != nil && *w.TotalSteps != w.WarmupSteps+*w.StableSteps+w.DecaySteps {
			v.fail("total_steps", *w.TotalSteps, "must equal warmup_steps + stable_steps + decay_steps (%d), or be left out",
				w.WarmupSteps+*w.StableSteps+w.DecaySteps)
		}
	default:
		if s := *w.TotalSteps - w.WarmupSteps - w.DecaySteps; s < 0 {
			v.fail("total_steps", *w.TotalSteps, "must be >= warmup_steps + decay_steps (%d)", w.WarmupSteps+w.DecaySteps)
		}
	}
	if v.err == nil {
		s := w.stable()
		w.StableSteps = &s
		t := w.WarmupSteps + s + w.DecaySteps
		w.TotalSteps = &t
		w.rise = riseShapes[w.WarmupShape]
		w.fall = decayShapes[w.DecayShape]
	}
	return v.err
}

func (w *WSD) stable() int64 {
	if w.StableSteps != nil {
		return *w.StableSteps
	}
	return *w.TotalSteps - w.WarmupSteps - w.DecaySteps
}

func (w *WSD) param() float64 {
	if w.DecayShape == "exp" {
		return w.ExpRate
	}
	return w.Power
}

func (w *WSD) LR(n int64) float64 {
	W, S, D := w.WarmupSteps, *w.StableSteps, w.DecaySteps
	switch {
	case n < W:
		return w.WarmupStartLR + (w.PeakLR-w.WarmupStartLR)*w.rise(float64(n)/float64(W))
	case n < W+S:
		return w.PeakLR
	case n < W+S+D:
		return w.MinLR + (w.PeakLR-w.MinLR)*w.fall(float64(n-W-S)/float64(D), w.param())
	}
	return w.MinLR
}

func (w *WSD) lrRange() (float64, float64) { return w.MinLR, w.PeakLR }
func (w *WSD) floor() float64              { return w.MinLR }

func (w *WSD) Phases() []Phase {
	ph := []Phase{}
	if w.WarmupSteps > 0 {
		ph = append(ph, Phase{"warmup", 0})
	}
	return append(ph, Phase{"stable", w.WarmupSteps}, Phase{"decay", w.WarmupSteps + *w.StableSteps},
		Phase{"floor", *w.TotalSteps})
}

// extend moves the end of the run: before the decay it lengthens the stable
// phase (the rate stays at peak); inside the decay it stretches the rest of
// it (continuous) or keeps the completed fraction (proportional).
func (w *WSD) extend(at, total int64, mode string) (Schedule, error) {
	if err := checkExtend(at, total, w.WarmupSteps+w.DecaySteps); err != nil {
		return nil, err
	}
	next := *w
	s := total - w.WarmupSteps - w.DecaySteps
	next.StableSteps, next.TotalSteps = &s, &total
	decayStart := w.WarmupSteps + *w.StableSteps
	switch {
	case mode == ExtendProportional:
		return proportional(w, func(t int64) phased {
			h := *w
			s := t - w.WarmupSteps - w.DecaySteps
			h.StableSteps, h.TotalSteps = &s, &t
			return &h
		}, at, *w.TotalSteps, total, w.WarmupSteps+w.DecaySteps)
	case at < *w.TotalSteps && at <= min(decayStart, s+w.WarmupSteps):
		// (A decay of no length starts and ends at the total: from there on
		// the run is at its floor, below.)
		return &next, nil
	case at >= *w.TotalSteps:
		return constant(w.MinLR), nil
	}
	// Inside the decay, or still at peak with a total too close for a whole
	// decay: fall from the rate at the re-plan step to min_lr at the total.
	p0 := max(0, float64(at-decayStart)/float64(w.DecaySteps))
	return &reanchored{at: at, end: total, p0: p0, floorLR: w.MinLR,
		value: func(p float64) float64 { return w.MinLR + (w.PeakLR-w.MinLR)*w.fall(p, w.param()) }}, nil
}
