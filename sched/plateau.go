package sched

import (
	"math"
	"sort"
)

// Report is a metric observed after Step updates were applied.
type Report struct {
	Step   int64   `msgpack:"step"`
	Metric float64 `msgpack:"metric"`
}

// Plateau is torch's ReduceLROnPlateau driven by reported metrics: after
// more than patience reports without improvement (by threshold, relative or
// absolute), the rate is multiplied by factor (never below min_lr), then
// cooldown reports are ignored. A report at step s changes the rate of
// update s+1 onwards, so the rate stays a pure function of the reports and
// n. A NaN metric never counts as an improvement, as in torch.
type Plateau struct {
	// PeakLR is the rate before any reduction; required, finite, >= 0.
	PeakLR float64 `spec:"peak_lr,required"`
	// MinLR is the floor of the reductions; default 0, at most PeakLR.
	MinLR float64 `spec:"min_lr"`
	// Warmup rises to the current rate over warmup_steps (default none).
	Warmup
	// Mode is min (the default: lower metrics are better) or max.
	Mode string `spec:"mode"`
	// Factor multiplies the rate at each reduction; default 0.1, in (0, 1).
	Factor float64 `spec:"factor"`
	// Patience is the number of reports without improvement that are
	// tolerated; default 10, >= 0.
	Patience int64 `spec:"patience"`
	// Threshold is the margin by which a metric must beat the best to count
	// as an improvement; default 1e-4, finite, >= 0.
	Threshold float64 `spec:"threshold"`
	// ThresholdMode is rel (the default: relative to the best metric) or abs.
	ThresholdMode string `spec:"threshold_mode"`
	// Cooldown is the number of reports ignored after a reduction; default 0,
	// >= 0.
	Cooldown int64 `spec:"cooldown"`
	// Eps skips a reduction of eps or less; default 1e-8, finite, >= 0.
	Eps float64 `spec:"eps"`

	unreported Schedule
}

func (p *Plateau) Kind() string { return "plateau" }
func (p *Plateau) Validate() error {
	v := checks{kind: p.Kind()}
	v.rate("peak_lr", p.PeakLR)
	v.rate("min_lr", p.MinLR)
	p.Warmup.check(&v)
	oneOf(&v, "mode", p.Mode, map[string]bool{"min": true, "max": true})
	oneOf(&v, "threshold_mode", p.ThresholdMode, map[string]bool{"rel": true, "abs": true})
	if !(p.Factor > 0 && p.Factor < 1) {
		v.fail("factor", p.Factor, "must be in (0, 1)")
	}
	v.steps("patience", p.Patience, 0)
	v.steps("cooldown", p.Cooldown, 0)
	v.rate("threshold", p.Threshold)
	v.rate("eps", p.Eps)
	if p.MinLR > p.PeakLR {
		v.fail("min_lr", p.MinLR, "must be <= peak_lr (%g)", p.PeakLR)
	}
	p.unreported = p.withReports(nil)
	return v.err
}

// LR without reports: the warmup, then peak_lr.
func (p *Plateau) LR(n int64) float64 { return p.unreported.LR(n) }

func (p *Plateau) lrRange() (float64, float64) { return p.MinLR, p.PeakLR }
func (p *Plateau) floor() float64              { return p.MinLR }
func (p *Plateau) Phases() []Phase             { return warmupPhases(p.WarmupSteps, "plateau") }

func (p *Plateau) better(a, best float64) bool {
	switch {
	case p.Mode == "min" && p.ThresholdMode == "rel":
		return a < best*(1-p.Threshold)
	case p.Mode == "min":
		return a < best-p.Threshold
	case p.ThresholdMode == "rel":
		return a > best*(1+p.Threshold)
	}
	return a > best+p.Threshold
}

// withReports replays the reports (in order) and returns the resulting
// piecewise-constant schedule.
func (p *Plateau) withReports(reports []Report) *plateauRun {
	r := &plateauRun{p: p, from: []int64{0}, lrs: []float64{p.PeakLR}, best: math.Inf(1)}
	if p.Mode == "max" {
		r.best = math.Inf(-1)
	}
	for _, rep := range reports {
		r.add(rep)
	}
	return r
}

// plateauRun is a plateau replayed over its reports so far: the rate's
// change points, and torch's counters, so that one more report costs O(1).
type plateauRun struct {
	p    *Plateau
	from []int64
	lrs  []float64

	best      float64
	bad, cool int64
}

// add replays one more report, made at or after every earlier one.
func (r *plateauRun) add(rep Report) {
	p := r.p
	if p.better(rep.Metric, r.best) {
		r.best, r.bad = rep.Metric, 0
	} else {
		r.bad++
	}
	if r.cool > 0 {
		r.cool--
		r.bad = 0
	}
	if r.bad > p.Patience {
		lr := r.lrs[len(r.lrs)-1]
		if next := math.Max(lr*p.Factor, p.MinLR); lr-next > p.Eps {
			r.from = append(r.from, rep.Step)
			r.lrs = append(r.lrs, next)
		}
		r.cool, r.bad = p.Cooldown, 0
	}
}

func (r *plateauRun) LR(n int64) float64 {
	i := sort.Search(len(r.from), func(i int) bool { return r.from[i] > n }) - 1
	lr := r.lrs[i]
	if v, ok := r.p.at(n, lr); ok {
		return v
	}
	return lr
}
