// Package sched holds rewarm's learning-rate schedules as pure functions.
//
// A schedule maps n, the number of optimizer updates already applied, to the
// learning rate that update n+1 uses. Nothing else is state: resuming at step
// n only needs the spec and n, the way optax schedules only need the count.
//
// Specs arrive as loosely typed maps (JSON, YAML, or a protobuf Struct) with a
// "kind" key; Parse picks the kind, decodes the fields strictly and validates
// them, so every error names the field and the value at fault.
//
// # Sessions and re-plans
//
// A training run's whole schedule is a Plan: the Config it was wrapped with
// (ParseConfig: the rate's spec, plus optional weight_decay and momentum
// schedules), the re-plans made since, and the metrics reported. Plan.LR(n)
// is again a pure function of these and n, so a restarted process rebuilds
// the same rates from the same lists (NewPlan).
//
// Plan.Replan changes the future and never the past. Each re-plan takes
// effect from update At+1 and must come at or after the previous one:
//
//   - extend (OpExtend) moves the end of the run to Total updates. In
//     continuous mode the rate at At is kept and the rest of the decay is
//     stretched to reach the floor at Total; in proportional mode the fraction
//     of the run done is kept and the schedule is rebuilt for the rest, so the
//     rate may jump.
//   - anneal (OpAnneal) branches off whatever runs: from the rate at At to
//     MinLR (by default the floor of the stage in force) over Steps updates,
//     in Shape.
//   - new_stage (OpNewStage) starts another schedule (Spec) at At, in its own
//     time, counting its updates from 0: a re-warm for a new stage of data.
//
// Plan.Report feeds a metric to a plateau schedule. Plan.GroupLR maps the
// base rate to each optimizer param group's rate.
package sched

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Schedule is a learning-rate schedule: LR(n) is the learning rate used by
// update n+1, for n >= 0 updates already applied.
type Schedule interface {
	LR(n int64) float64
}

// Spec is a decoded and validated schedule of one kind.
type Spec interface {
	Schedule
	// Kind is the name the spec is registered under, for example "cosine".
	Kind() string
	// Validate checks the fields and prepares what LR needs, filling
	// defaults and derived fields (WSD's stable steps, say). Parse calls it
	// after decoding; a Spec built by hand must pass it before LR is called.
	Validate() error
}

// Phase names a part of a schedule starting at a step, for previews.
type Phase struct {
	Name  string
	Start int64
}

// kinds maps each spec kind to a constructor of its value with defaults
// filled in. New kinds are added here and nowhere else: the dispatcher and
// the transports only see maps.
var kinds = map[string]func() Spec{
	"constant":     func() Spec { return &Constant{} },
	"cosine":       func() Spec { return &Cosine{} },
	"linear":       func() Spec { return &Linear{} },
	"polynomial":   func() Spec { return &Polynomial{Power: 1} },
	"rex":          func() Spec { return &Rex{Beta: 0.5, Sampling: 1} },
	"cosine_power": func() Spec { return &CosinePower{ExponentOrder: 10} },
	"wsd": func() Spec {
		return &WSD{WarmupShape: "linear", DecayShape: "1-sqrt", Power: 0.5, ExpRate: 0.5}
	},
	"infinite": func() Spec {
		return &Infinite{CooldownShape: "cosine", Timescale: 10, AnnealShape: "exp"}
	},
	"inv_sqrt":    func() Spec { return &InvSqrt{Form: "hf"} },
	"step":        func() Spec { return &Step{Gamma: 0.1} },
	"multistep":   func() Spec { return &MultiStep{Gamma: 0.1} },
	"exponential": func() Spec { return &Exponential{} },
	"onecycle": func() Spec {
		return &OneCycle{PctStart: 0.3, AnnealStrategy: "cos", DivFactor: 25, FinalDivFactor: 1e4,
			CycleMomentum: true, BaseMomentum: 0.85, MaxMomentum: 0.95}
	},
	"cyclic": func() Spec {
		return &Cyclic{StepSizeUp: 2000, Mode: "triangular", Gamma: 1, CycleMomentum: true,
			BaseMomentum: 0.8, MaxMomentum: 0.9}
	},
	"sgdr": func() Spec { return &SGDR{CycleMul: 1, CycleDecay: 1, KDecay: 1} },
	"plateau": func() Spec {
		return &Plateau{Mode: "min", Factor: 0.1, Patience: 10, Threshold: 1e-4, ThresholdMode: "rel", Eps: 1e-8}
	},
	"refined":  func() Spec { return &Refined{Norm: "l2", FilterWidth: 0.1} },
	"sequence": func() Spec { return &Sequence{} },
	"stages":   func() Spec { return &Stages{} },
}

func hasField(s Spec, name string) bool {
	for _, f := range specfield.Fields(reflect.TypeOf(s)) {
		if f == name {
			return true
		}
	}
	return false
}

// ranger is implemented by kinds with a reference [min, peak] range, which
// per-group absolute min_lr / peak_lr remap.
type ranger interface{ lrRange() (float64, float64) }

// floorer is implemented by kinds with a floor rate (min_lr), the default
// target of a triggered anneal.
type floorer interface{ floor() float64 }

// phaser is implemented by kinds that can name their phases.
type phaser interface{ Phases() []Phase }

func rangeOf(s Schedule) (float64, float64) {
	if r, ok := s.(ranger); ok {
		return r.lrRange()
	}
	return 0, s.LR(0)
}

func floorOf(s Schedule) float64 {
	if f, ok := s.(floorer); ok {
		return f.floor()
	}
	return 0
}

func phasesOf(s Schedule) []Phase {
	if p, ok := s.(phaser); ok {
		return p.Phases()
	}
	return []Phase{{"schedule", 0}}
}

// Kinds lists the registered schedule kinds, sorted.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Parse decodes and validates a spec map. The map must carry "kind".
func Parse(m map[string]any) (Spec, error) {
	raw, ok := m["kind"]
	if !ok {
		return nil, &specfield.Error{Field: "kind", Reason: fmt.Sprintf("missing required field (one of: %s)", strings.Join(Kinds(), ", "))}
	}
	name, ok := raw.(string)
	if !ok {
		return nil, &specfield.Error{Field: "kind", Value: raw, Reason: "not a string"}
	}
	mk, ok := kinds[name]
	if !ok {
		return nil, &specfield.Error{Field: "kind", Value: name, Reason: fmt.Sprintf("unknown schedule kind (one of: %s)", strings.Join(Kinds(), ", "))}
	}
	s := mk()
	if err := specfield.Decode(name, m, s, "kind"); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Canonical renders a spec as a map with every field present (defaults filled
// in), so two specs that differ only in the defaults they spell out compare
// equal. Specs whose different fields give the same rates (inv_sqrt's
// timescale 0 and one equal to warmup_steps, say) still differ.
func Canonical(s Spec) map[string]any {
	m := specfield.Encode(s)
	m["kind"] = s.Kind()
	return m
}

// Diff lists the fields whose values differ between two specs, as
// "field: a -> b" strings, sorted. An empty result means the same schedule.
func Diff(a, b Spec) []string {
	ma, mb := Canonical(a), Canonical(b)
	keys := map[string]bool{}
	for k := range ma {
		keys[k] = true
	}
	for k := range mb {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		va, vb := ma[k], mb[k]
		if !reflect.DeepEqual(va, vb) {
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, show(va), show(vb)))
		}
	}
	sort.Strings(out)
	return out
}

func show(v any) string {
	if v == nil {
		return "(absent)"
	}
	return specfield.FormatValue(v)
}

// checks is a small accumulator for field validation: the first failure wins.
type checks struct {
	kind string
	err  error
}

func (c *checks) fail(field string, value any, format string, args ...any) {
	if c.err == nil {
		c.err = specfield.Errorf(c.kind, field, value, format, args...)
	}
}

// rate requires a finite, non-negative learning rate.
func (c *checks) rate(field string, v float64) {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		c.fail(field, v, "must be a finite number")
	case v < 0:
		c.fail(field, v, "must be >= 0")
	}
}

// momentum requires a momentum (or Adam beta1) in [0, 1).
func (c *checks) momentum(field string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v >= 1 {
		c.fail(field, v, "must be a finite number in [0, 1) (a momentum, or Adam's beta1)")
	}
}

// steps requires a step count >= min.
func (c *checks) steps(field string, v, min int64) {
	if v < min {
		c.fail(field, v, "must be >= %d", min)
	}
}

// positive requires a finite number > 0.
func (c *checks) positive(field string, v float64) {
	if !(v > 0) || math.IsInf(v, 0) {
		c.fail(field, v, "must be a finite number > 0")
	}
}

// increasing requires strictly increasing steps, each >= min.
func (c *checks) increasing(field string, v []int64, min int64) {
	for i, x := range v {
		if x < min {
			c.fail(fmt.Sprintf("%s[%d]", field, i), x, "must be >= %d", min)
		}
		if i > 0 && x <= v[i-1] {
			c.fail(fmt.Sprintf("%s[%d]", field, i), x, "must be greater than the previous entry (%d): boundaries must increase", v[i-1])
		}
	}
}
