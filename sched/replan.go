package sched

import (
	"errors"
	"fmt"
	"math"
)

// Extend modes.
const (
	// ExtendContinuous keeps the rate at the re-plan step and stretches the
	// rest of the decay so it reaches min_lr at the new total.
	ExtendContinuous = "continuous"
	// ExtendProportional keeps the completed fraction of the schedule and
	// still ends at the new total: at re-plan step a of old total T the run
	// enters the schedule rebuilt for the horizon that leaves T'−a steps for
	// the rest, at fraction a/T (the rate may jump).
	ExtendProportional = "proportional"
)

// extender is implemented by kinds with a horizon that can be moved. at is
// the local step the change takes effect at (updates applied); the result is
// used for local steps >= at.
type extender interface {
	extend(at, total int64, mode string) (Schedule, error)
}

// extendError is a refused extend, in the local time of the piece that
// refused it; the plan moves it to update counts before reporting it.
type extendError struct {
	total, bound int64
	minTotal     bool // bound is the smallest total, not the re-plan step
}

func (e *extendError) Error() string {
	if e.minTotal {
		return fmt.Sprintf("extend: total_steps = %d must be >= %d (the end of the phases before the decay)", e.total, e.bound)
	}
	return fmt.Sprintf("extend: total_steps = %d must be greater than the re-plan step %d", e.total, e.bound)
}

func checkExtend(at, total, minTotal int64) error {
	if total <= at {
		return &extendError{total: total, bound: at}
	}
	if total < minTotal {
		return &extendError{total: total, bound: minTotal, minTotal: true}
	}
	return nil
}

// shiftExtendError moves an extendError from local time by delta updates.
func shiftExtendError(err error, delta int64) error {
	var e *extendError
	if errors.As(err, &e) {
		return &extendError{total: e.total + delta, bound: e.bound + delta, minTotal: e.minTotal}
	}
	return err
}

// constant is a flat schedule.
type constant float64

func (c constant) LR(int64) float64 { return float64(c) }

// reanchored continues a decay from progress p0 at step at to progress 1 at
// step end, then holds floorLR. value maps progress to a rate.
type reanchored struct {
	at, end int64
	p0      float64
	floorLR float64
	value   func(p float64) float64
	every   int64 // > 1: re-sample every `every` updates from at (REX sampling)
}

func (r *reanchored) LR(n int64) float64 {
	if n >= r.end {
		return r.floorLR
	}
	if n <= r.at {
		return r.value(r.p0)
	}
	if r.every > 1 {
		n = r.at + (n-r.at)/r.every*r.every
	}
	return r.value(r.p0 + (1-r.p0)*float64(n-r.at)/float64(r.end-r.at))
}

func (r *reanchored) floor() float64 { return r.floorLR }

func (r *reanchored) extend(at, total int64, mode string) (Schedule, error) {
	if mode != ExtendContinuous {
		return nil, fmt.Errorf("extend: mode %q after a previous extend is not supported; use %q", mode, ExtendContinuous)
	}
	if err := checkExtend(at, total, 0); err != nil {
		return nil, err
	}
	if at >= r.end {
		return constant(r.floorLR), nil
	}
	p := r.p0
	if held := r.at + (at-r.at)/max(r.every, 1)*max(r.every, 1); held > r.at {
		p = r.p0 + (1-r.p0)*float64(held-r.at)/float64(r.end-r.at)
	}
	return &reanchored{at: at, end: total, p0: p, floorLR: r.floorLR, value: r.value, every: r.every}, nil
}

// proportional keeps the completed fraction at the re-plan step and still
// ends at the new total: from step at on, the run follows the same schedule
// built for horizon H = T·(T'−at)/(T−at), shifted so that step at sits at
// fraction at/T of it and step T' at its end. build makes the schedule for a
// horizon; minTotal is the smallest horizon the kind accepts. The fraction
// is of all steps, so with phases of fixed length (warmup, a WSD decay) the
// position can land in another phase than the run is in; that is refused.
func proportional(old phased, build func(total int64) phased, at, oldTotal, newTotal, minTotal int64) (Schedule, error) {
	switch {
	case at >= oldTotal: // the old run is over: the fraction done stays 1
		return &shifted{s: build(newTotal), shift: newTotal - at}, nil
	case at <= 0: // nothing done yet: the new schedule as it stands
		return build(newTotal), nil
	}
	h := float64(oldTotal) * float64(newTotal-at) / float64(oldTotal-at)
	if h >= 1<<62 {
		return nil, fmt.Errorf("extend: a proportional extend here needs the schedule rebuilt for %.3g steps, more than 2^62; use mode %q", h, ExtendContinuous)
	}
	horizon := int64(math.Round(h))
	if horizon < minTotal {
		return nil, fmt.Errorf("extend: a proportional extend here squeezes the remaining %.0f%% of the run into %d steps, "+
			"which needs the schedule rebuilt for %d steps, fewer than the %d its fixed phases take; use mode %q",
			100*float64(oldTotal-at)/float64(oldTotal), newTotal-at, horizon, minTotal, ExtendContinuous)
	}
	next, shift := build(horizon), horizon-newTotal
	if from, to := phaseAt(old, at), phaseAt(next, max(at+shift, 0)); from != to {
		return nil, fmt.Errorf("extend: a proportional extend here keeps %.0f%% of the run done, which in the schedule "+
			"rebuilt for %d steps lies in its %s phase, while the run is in its %s phase (the rate would jump "+
			"between phases); use mode %q", 100*float64(at)/float64(oldTotal), horizon, to, from, ExtendContinuous)
	}
	return &shifted{s: next, shift: shift}, nil
}

// phased is a schedule that names its phases.
type phased interface {
	Schedule
	Phases() []Phase
}

// phaseAt names the phase step n falls in.
func phaseAt(s phased, n int64) string {
	name := ""
	for _, p := range s.Phases() {
		if p.Start > n {
			break
		}
		name = p.Name
	}
	return name
}

type shifted struct {
	s     Schedule
	shift int64
}

func (s *shifted) LR(n int64) float64 { return s.s.LR(n + s.shift) }

// extend extends the schedule the proportional extend produced, in its own
// time (shift updates ahead), so a run can be extended again.
func (s *shifted) extend(at, total int64, mode string) (Schedule, error) {
	if mode != ExtendContinuous {
		return nil, fmt.Errorf("extend: mode %q after a previous extend is not supported; use %q", mode, ExtendContinuous)
	}
	if err := checkExtend(at, total, 0); err != nil {
		return nil, err
	}
	ext, ok := s.s.(extender)
	if !ok {
		return nil, fmt.Errorf("extend: the extended schedule cannot be extended again")
	}
	next, err := ext.extend(at+s.shift, total+s.shift, mode)
	if err != nil {
		return nil, shiftExtendError(err, -s.shift)
	}
	return &shifted{s: next, shift: s.shift}, nil
}

// splice is prev before step at and next from at on, next evaluated at
// n − offset (its local time).
type splice struct {
	prev       Schedule
	next       Schedule
	at, offset int64
}

func (s *splice) LR(n int64) float64 {
	if n < s.at {
		return s.prev.LR(n)
	}
	return s.next.LR(n - s.offset)
}

// anneal falls from v0 at step at to floor over steps updates with shape,
// then holds floor.
type anneal struct {
	at, steps int64
	v0, floor float64
	f         annealFunc
}

func (a *anneal) LR(n int64) float64 {
	k := n - a.at
	if k >= a.steps {
		return a.floor
	}
	if k <= 0 {
		return a.v0
	}
	return a.f(a.v0, a.floor, float64(k)/float64(a.steps))
}
