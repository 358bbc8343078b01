package sched

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/rewarm/rewarm/internal/specfield"
)

// ValueSchedule schedules a scalar hyperparameter (weight decay, momentum):
// start until step begin, then shape from start to end over steps updates,
// then end. Shapes: constant (always start), linear, cosine (½(1 − cos πp)
// rising from start to end, as Megatron's weight-decay increment).
type ValueSchedule struct {
	// Start is the value until step begin; required, finite, >= 0, and below
	// 1 for momentum.
	Start float64 `spec:"start,required"`
	// End is the value from step begin+steps on, in Start's range; absent,
	// the value stays Start. With shape constant it must equal Start.
	End *float64 `spec:"end"`
	// Shape is linear (the default), cosine or constant.
	Shape string `spec:"shape"`
	// Begin is the step the change starts at; default 0, >= 0.
	Begin int64 `spec:"begin"`
	// Steps is the length of the change; default 0, >= 0, and >= 1 when a
	// linear or cosine shape moves from Start to a different End.
	Steps int64 `spec:"steps"`

	momentum bool // values must be below 1 (SGD momentum, Adam's beta1)
}

func (v *ValueSchedule) validate(field string) error {
	c := checks{kind: field}
	check := c.rate
	if v.momentum {
		check = c.momentum
	}
	check("start", v.Start)
	if v.End != nil {
		check("end", *v.End)
	}
	oneOf(&c, "shape", v.Shape, map[string]bool{"constant": true, "linear": true, "cosine": true})
	c.steps("begin", v.Begin, 0)
	c.steps("steps", v.Steps, 0)
	if v.Shape == "constant" && v.End != nil && *v.End != v.Start {
		c.fail("end", *v.End, "shape constant holds start (%g): leave end out, or give a linear or cosine shape", v.Start)
	}
	if v.Shape != "constant" && v.End != nil && *v.End != v.Start && v.Steps < 1 {
		c.fail("steps", v.Steps, "must be >= 1 to move from start to end")
	}
	return c.err
}

// At is the value for update n+1.
func (v *ValueSchedule) At(n int64) float64 {
	if v.Shape == "constant" || v.End == nil || n <= v.Begin {
		return v.Start
	}
	if n >= v.Begin+v.Steps {
		return *v.End
	}
	p := float64(n-v.Begin) / float64(v.Steps)
	if v.Shape == "cosine" {
		p = 0.5 * (1 - math.Cos(math.Pi*p))
	}
	return v.Start + (*v.End-v.Start)*p
}

// Config is a whole session spec: an LR schedule plus optional weight_decay
// and momentum schedules, given as extra keys of the same map.
type Config struct {
	LR          Spec
	WeightDecay *ValueSchedule
	Momentum    *ValueSchedule
}

// ParseConfig decodes a session spec.
func ParseConfig(m map[string]any) (*Config, error) {
	lrMap := make(map[string]any, len(m))
	for k, v := range m {
		if k != "weight_decay" && k != "momentum" {
			lrMap[k] = v
		}
	}
	lr, err := Parse(lrMap)
	if err != nil {
		return nil, err
	}
	cfg := &Config{LR: lr}
	for _, f := range []struct {
		key string
		dst **ValueSchedule
	}{{"weight_decay", &cfg.WeightDecay}, {"momentum", &cfg.Momentum}} {
		raw, ok := m[f.key]
		if !ok || raw == nil {
			continue
		}
		vm, ok := specfield.AsMap(raw)
		if !ok {
			return nil, specfield.Errorf(lr.Kind(), f.key, raw, "must be a mapping {start, end, shape, begin, steps}")
		}
		vs := &ValueSchedule{Shape: "linear", momentum: f.key == "momentum"}
		if err := specfield.Decode(lr.Kind(), vm, vs); err != nil {
			return nil, prefixField(err, f.key)
		}
		if err := vs.validate(lr.Kind()); err != nil {
			return nil, prefixField(err, f.key)
		}
		*f.dst = vs
	}
	if ms, ok := lr.(MomentumSchedule); ok && cfg.Momentum != nil {
		if _, on := ms.Momentum(0); on {
			return nil, specfield.Errorf(lr.Kind(), "momentum", "{...}", "the %s kind already schedules momentum (cycle_momentum); set cycle_momentum: false to use this one", lr.Kind())
		}
	}
	return cfg, nil
}

func prefixField(err error, prefix string) error {
	var fe *specfield.Error
	if errors.As(err, &fe) {
		out := *fe
		out.Field = prefix + "." + fe.Field
		return &out
	}
	return err
}

// Canonical renders the config with every default filled in.
func (c *Config) Canonical() map[string]any {
	m := Canonical(c.LR)
	if c.WeightDecay != nil {
		m["weight_decay"] = specfield.Encode(c.WeightDecay)
	}
	if c.Momentum != nil {
		m["momentum"] = specfield.Encode(c.Momentum)
	}
	return m
}

// Replan operations.
const (
	OpExtend   = "extend"
	OpAnneal   = "anneal"
	OpNewStage = "new_stage"
)

// Replan is one live change to a session's schedule, effective from update
// At+1 (after At updates were applied). Its errors name the wire's fields:
// At is at_step, Total total_steps, Spec schedule (new_stage's spec).
type Replan struct {
	Op    string         `msgpack:"op"`
	At    int64          `msgpack:"at"`
	Total int64          `msgpack:"total,omitempty"`
	Mode  string         `msgpack:"mode,omitempty"`
	Steps int64          `msgpack:"steps,omitempty"`
	Shape string         `msgpack:"shape,omitempty"`
	MinLR *float64       `msgpack:"min_lr,omitempty"`
	Spec  map[string]any `msgpack:"spec,omitempty"`
}

// Plan is a session's schedule: the config, the re-plans applied to it in
// order, and the metrics reported to it. The rates are a pure function of
// these and n. The fields are for reading: build a Plan with NewPlan and
// change it with Replan and Report (which rebuild what LR uses).
type Plan struct {
	Config  *Config
	Replans []Replan
	Reports []Report

	lr     Schedule
	phases []Phase
	// The plateau pieces of lr, each with the step its local time starts
	// at, so that a report can extend them in place.
	runs []offsetRun
	// applied counts the re-plans applied by builds, so a test can check
	// that a restore applies each once.
	applied int
}

type offsetRun struct {
	run    *plateauRun
	offset int64
}

// NewPlan builds a plan, validating every re-plan and report.
func NewPlan(cfg *Config, replans []Replan, reports []Report) (*Plan, error) {
	p := &Plan{Config: cfg}
	p.Reports = append(p.Reports, reports...)
	// Checked and then built once: applying them one by one rebuilt the
	// chain for each, cubic in their number.
	p.Replans = make([]Replan, 0, len(replans))
	for _, r := range replans {
		if err := r.Check(); err != nil {
			return nil, err
		}
		if n := len(p.Replans); n > 0 && r.At < p.Replans[n-1].At {
			return nil, replanErr("at_step", r.At, "must be >= the previous re-plan's step (%d)", p.Replans[n-1].At)
		}
		p.Replans = append(p.Replans, r)
	}
	if err := p.build(nil); err != nil {
		return nil, err
	}
	return p, nil
}

// Replan validates r and appends it. On error the plan is unchanged.
func (p *Plan) Replan(r Replan) error {
	if err := r.Check(); err != nil {
		return err
	}
	if n := len(p.Replans); n > 0 && r.At < p.Replans[n-1].At {
		return replanErr("at_step", r.At, "must be >= the previous re-plan's step (%d)", p.Replans[n-1].At)
	}
	return p.build(&r)
}

// Check validates r's own fields, whatever schedule it will apply to, and
// fills its defaults (mode, shape, the canonical stage spec).
func (r *Replan) Check() error {
	if r.At < 0 {
		return replanErr("at_step", r.At, "must be >= 0")
	}
	switch r.Op {
	case OpExtend:
		if r.Mode == "" {
			r.Mode = ExtendContinuous
		}
		if r.Mode != ExtendContinuous && r.Mode != ExtendProportional {
			return replanErr("mode", r.Mode, "must be %q or %q", ExtendContinuous, ExtendProportional)
		}
		if r.Total == 0 {
			return replanErr("total_steps", r.Total, "missing: extend needs the new total, in updates")
		}
	case OpAnneal:
		if r.Shape == "" {
			r.Shape = "cosine"
		}
		if !annealShapes[r.Shape] {
			return replanErr("shape", r.Shape, "must be one of: 1-sqrt, cosine, exp, linear")
		}
		if r.Steps < 1 {
			return replanErr("steps", r.Steps, "must be >= 1")
		}
		if r.Steps > math.MaxInt64-r.At {
			return replanErr("steps", r.Steps, "the anneal would end past step 2^63 (it starts at %d)", r.At)
		}
		if r.MinLR != nil && (math.IsNaN(*r.MinLR) || math.IsInf(*r.MinLR, 0) || *r.MinLR < 0) {
			return replanErr("min_lr", *r.MinLR, "must be a finite number >= 0")
		}
	case OpNewStage:
		if r.Spec == nil {
			return replanErr("schedule", nil, "missing: new_stage needs the stage's schedule spec")
		}
		for _, k := range []string{"weight_decay", "momentum"} {
			if v, ok := r.Spec[k]; ok {
				return specfield.Errorf("new_stage", "schedule."+k, v, "a new stage changes the rate only; the %s schedule follows the spec the run was wrapped with", k)
			}
		}
		spec, err := parseNested("new_stage", "schedule", r.Spec)
		if err != nil {
			return err
		}
		r.Spec = Canonical(spec)
	default:
		return replanErr("op", r.Op, "must be %q, %q or %q", OpExtend, OpAnneal, OpNewStage)
	}
	return nil
}

func replanErr(field string, value any, format string, args ...any) error {
	return specfield.Errorf("replan", field, value, format, args...)
}

// Report records a metric observed after step updates. Only plateau pieces
// use metrics. On error the plan is unchanged.
func (p *Plan) Report(r Report) error {
	if n := len(p.Reports); n > 0 && r.Step < p.Reports[n-1].Step {
		return specfield.Errorf("report", "step", r.Step, "must be >= the previous report's step (%d)", p.Reports[n-1].Step)
	}
	if r.Step < 0 {
		return specfield.Errorf("report", "step", r.Step, "must be >= 0")
	}
	if !p.usesMetrics() {
		return specfield.Errorf("report", "metric", r.Metric, "this schedule does not use metrics: only a plateau schedule, or a new_stage into one, takes reports (a plateau part of a sequence or stages gets none)")
	}
	if p.reportsOnlyExtend(r.Step) {
		p.Reports = append(p.Reports, r)
		for _, o := range p.runs {
			o.run.add(Report{Step: r.Step - o.offset, Metric: r.Metric})
		}
		return nil
	}
	p.Reports = append(p.Reports, r)
	if err := p.build(nil); err != nil {
		p.Reports = p.Reports[:len(p.Reports)-1]
		return err
	}
	return nil
}

// reportsOnlyExtend reports whether a report at step can be applied by
// extending each plateau piece's replay instead of rebuilding the chain. A
// report at step s changes rates from s on, so every re-plan made before s
// (an anneal's starting rate, a stage's start) stays as built, and each
// plateau piece, starting at or before s, takes the report as its latest.
func (p *Plan) reportsOnlyExtend(step int64) bool {
	for _, r := range p.Replans {
		if r.At >= step {
			return false
		}
	}
	return true
}

func (p *Plan) usesMetrics() bool {
	if _, ok := p.Config.LR.(*Plateau); ok {
		return true
	}
	for _, r := range p.Replans {
		if r.Op == OpNewStage && r.Spec["kind"] == "plateau" {
			return true
		}
	}
	return false
}

// withReports applies the reports made at or after offset to a plateau
// piece, in its local time, and records the piece in runs.
func (p *Plan) withReports(s Spec, offset int64, runs *[]offsetRun) Schedule {
	pl, ok := s.(*Plateau)
	if !ok {
		return s
	}
	var local []Report
	for _, r := range p.Reports {
		if r.Step >= offset {
			local = append(local, Report{Step: r.Step - offset, Metric: r.Metric})
		}
	}
	run := pl.withReports(local)
	*runs = append(*runs, offsetRun{run: run, offset: offset})
	return run
}

// build recomputes the schedule chain, with extra appended to the re-plans
// when it is not nil; on success extra is recorded.
func (p *Plan) build(extra *Replan) error {
	replans := p.Replans
	if extra != nil {
		replans = append(append([]Replan(nil), p.Replans...), *extra)
	}
	var runs []offsetRun
	cur := p.withReports(p.Config.LR, 0, &runs)
	var active Schedule = p.Config.LR
	var offset int64
	// The floor of the stage in force: an anneal's default target.
	stageFloor := floorOf(p.Config.LR)
	// Kept in step order: every re-plan's phases start at or after its
	// step, and the steps never go back, so each one only cuts the tail.
	phases := append([]Phase(nil), phasesOf(p.Config.LR)...)
	sort.SliceStable(phases, func(a, b int) bool { return phases[a].Start < phases[b].Start })
	for i, r := range replans {
		p.applied++
		var (
			next      Schedule
			nextOff   int64
			newPhases []Phase
		)
		switch r.Op {
		case OpExtend:
			ext, ok := active.(extender)
			if !ok {
				return replanErr("op", r.Op, "the active schedule (%s) has no horizon to extend; kinds with one: cosine, linear, polynomial, rex, cosine_power, wsd, infinite with constant_steps", describe(active))
			}
			// total_steps counts updates, as at_step does; a stage runs in its own time.
			s, err := ext.extend(r.At-offset, r.Total-offset, r.Mode)
			if err != nil {
				return specfield.Errorf("replan", "total_steps", r.Total, "%v", shiftExtendError(err, offset))
			}
			next, nextOff = s, offset
			newPhases = []Phase{{fmt.Sprintf("extend to %d", r.Total), r.At}}
		case OpAnneal:
			v0 := cur.LR(r.At)
			// By default the stage's own floor, or the current rate if an
			// earlier anneal already went below it.
			floor := min(stageFloor, v0)
			if r.MinLR != nil {
				floor = *r.MinLR
			}
			if r.Shape == "exp" && !(floor > 0) {
				if r.MinLR == nil {
					return replanErr("min_lr", floor, "must be > 0 for an exp anneal (it is geometric: v0·(min/v0)^p); the default, the stage's floor or the current rate, is 0, so give min_lr")
				}
				return replanErr("min_lr", floor, "must be > 0 for an exp anneal (it is geometric: v0·(min/v0)^p)")
			}
			if floor > v0 {
				return replanErr("min_lr", floor, "is above the rate at step %d (%g): an anneal must not raise the rate", r.At, v0)
			}
			f, _ := annealShape(r.Shape)
			next = &anneal{at: r.At, steps: r.Steps, v0: v0, floor: floor, f: f}
			newPhases = []Phase{{"anneal (" + r.Shape + ")", r.At}, {"floor", r.At + r.Steps}}
		case OpNewStage:
			spec, err := Parse(r.Spec)
			if err != nil {
				return prefixField(err, "spec")
			}
			next, nextOff = p.withReports(spec, r.At, &runs), r.At
			newPhases = []Phase{{fmt.Sprintf("stage %d", i+1), r.At}}
			for _, ph := range phasesOf(spec) {
				if ph.Start > 0 {
					newPhases = append(newPhases, Phase{ph.Name, ph.Start + r.At})
				}
			}
			sort.SliceStable(newPhases, func(a, b int) bool { return newPhases[a].Start < newPhases[b].Start })
			active = spec
			stageFloor = floorOf(spec)
		}
		if r.Op != OpNewStage {
			active = next
		}
		cur = &splice{prev: cur, next: next, at: r.At, offset: nextOff}
		offset = nextOff
		cut := sort.Search(len(phases), func(k int) bool { return phases[k].Start >= r.At })
		phases = append(phases[:cut], newPhases...)
	}
	p.lr, p.phases, p.runs = cur, phases, runs
	if extra != nil {
		p.Replans = replans
	}
	return nil
}

func describe(s Schedule) string {
	if k, ok := s.(Spec); ok {
		return "kind " + k.Kind()
	}
	switch s.(type) {
	case *anneal:
		return "an anneal"
	case constant:
		return "the floor after the horizon"
	}
	return "a re-planned piece"
}

// LR is the base learning rate of update n+1.
func (p *Plan) LR(n int64) float64 { return p.lr.LR(n) }

// Phases lists the named phases, re-plans included, in step order.
func (p *Plan) Phases() []Phase { return append([]Phase(nil), p.phases...) }

// Momentum is the momentum (or beta1) of update n+1, when scheduled. It
// follows Config: re-plans change only the rate.
func (p *Plan) Momentum(n int64) (float64, bool) {
	if ms, ok := p.Config.LR.(MomentumSchedule); ok {
		if v, on := ms.Momentum(n); on {
			return v, true
		}
	}
	if p.Config.Momentum != nil {
		return p.Config.Momentum.At(n), true
	}
	return 0, false
}

// WeightDecay is the weight decay of update n+1, when scheduled.
func (p *Plan) WeightDecay(n int64) (float64, bool) {
	if p.Config.WeightDecay != nil {
		return p.Config.WeightDecay.At(n), true
	}
	return 0, false
}

// Group describes one optimizer param group: a multiplier on the rate,
// optional absolute min_lr / peak_lr that remap the schedule's [min, peak]
// range affinely, and a multiplier on the weight decay.
type Group struct {
	// Multiplier scales the group's rate: 1 leaves it, 0 zeroes it (there is
	// no default here; the wire's and Python's default is 1).
	Multiplier float64
	MinLR      *float64
	PeakLR     *float64
	// WDMult scales Plan.WeightDecay for the group; sched does not apply it,
	// its caller does (the dispatcher multiplies).
	WDMult float64
}

// GroupRange is the group's absolute [min, peak]: its own ends where set,
// the wrapped schedule's otherwise.
func (p *Plan) GroupRange(g Group) (lo, hi float64) {
	return g.ends(rangeOf(p.Config.LR))
}

// ends is the group's [min, peak] given the schedule's.
func (g Group) ends(lo, hi float64) (float64, float64) {
	if g.MinLR != nil {
		lo = *g.MinLR
	}
	if g.PeakLR != nil {
		hi = *g.PeakLR
	}
	return lo, hi
}

// GroupLR maps the base rate v to a group's rate. With an absolute range the
// schedule's [min_lr, peak_lr] maps affinely onto the group's; a rate below
// min_lr (a warmup from 0, a lower later stage, an anneal under the floor)
// maps in proportion onto [0, group min], so a group's rate never goes
// negative and 0 stays 0. A schedule whose min_lr equals its peak_lr has no
// range to map: its rate scales by group peak / peak, so a warmup still ends
// at the group's peak without a jump.
func (p *Plan) GroupLR(v float64, g Group) float64 {
	if g.MinLR == nil && g.PeakLR == nil {
		return g.Multiplier * v
	}
	lo, hi := rangeOf(p.Config.LR)
	glo, ghi := g.ends(lo, hi)
	switch {
	case hi == lo:
		if hi == 0 { // nothing to scale by; a later stage's rate passes through
			return g.Multiplier * v
		}
		return g.Multiplier * ghi * (v / hi)
	case v < lo:
		return g.Multiplier * glo * (v / lo)
	}
	return g.Multiplier * (glo + (v-lo)*(ghi-glo)/(hi-lo))
}
