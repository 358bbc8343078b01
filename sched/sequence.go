package sched

import (
	"errors"
	"fmt"
	"sort"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Part is one piece of a Sequence: a schedule run in its own local time for
// Steps updates (the last part may leave Steps out and run on).
type Part struct {
	// Steps is the part's length in updates, >= 1; required on every part
	// but the last, which runs on whether or not it is given.
	Steps *int64 `spec:"steps"`
	// Schedule is the part's spec, with its kind; required. Validate
	// replaces it with its canonical form.
	Schedule map[string]any `spec:"schedule,required"`
}

// Sequence joins schedules at step boundaries, optax's join_schedules: part
// i starts at the sum of the earlier parts' steps and is evaluated at
// n − start. After the last boundary the last part runs on.
type Sequence struct {
	// Parts are the pieces in order; required, at least one.
	Parts []Part `spec:"parts,required"`

	starts []int64
	specs  []Spec
}

func (s *Sequence) Kind() string { return "sequence" }

func (s *Sequence) Validate() error {
	if len(s.Parts) == 0 {
		return specfield.Errorf(s.Kind(), "parts", "[]", "must hold at least one part")
	}
	s.starts, s.specs = nil, nil
	var start int64
	for i := range s.Parts {
		p := &s.Parts[i]
		prefix := fmt.Sprintf("parts[%d]", i)
		if p.Steps == nil && i < len(s.Parts)-1 {
			return specfield.Errorf(s.Kind(), prefix+".steps", nil, "missing required field (only the last part may run on)")
		}
		if p.Steps != nil && *p.Steps < 1 {
			return specfield.Errorf(s.Kind(), prefix+".steps", *p.Steps, "must be >= 1")
		}
		spec, err := parseNested(s.Kind(), prefix+".schedule", p.Schedule)
		if err != nil {
			return err
		}
		p.Schedule = Canonical(spec)
		s.starts = append(s.starts, start)
		s.specs = append(s.specs, spec)
		if p.Steps != nil {
			start += *p.Steps
		}
	}
	return nil
}

func (s *Sequence) index(n int64) int {
	return sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > n }) - 1
}

func (s *Sequence) LR(n int64) float64 {
	i := s.index(n)
	return s.specs[i].LR(n - s.starts[i])
}

func (s *Sequence) lrRange() (float64, float64) { return partsRange(s.specs) }
func (s *Sequence) floor() float64              { return floorOf(s.specs[len(s.specs)-1]) }
func (s *Sequence) Phases() []Phase             { return partsPhases(s.starts, s.specs, "part") }

// Stage is one continual pre-training stage: Steps updates of a schedule.
type Stage struct {
	// Name labels the stage's phases; default "stage i", counting from 0.
	Name string `spec:"name"`
	// Steps is the stage's length in updates; required, >= 1.
	Steps int64 `spec:"steps,required"`
	// Schedule holds the stage's own fields, laid over the defaults; it may
	// be left out. Validate replaces it with the canonical merged spec.
	Schedule map[string]any `spec:"schedule"`
}

// Stages is a multi-stage continual pre-training schedule. Each stage's
// schedule is its own fields laid over defaults; when the resulting kind has
// a total_steps field and it is absent, it is the stage's length. Examples:
// repeated cosine (Gupta et al. 2023) is defaults {kind: cosine, peak_lr,
// min_lr, warmup_steps}; Singh et al.'s infinite variant gives every stage an
// infinite schedule whose later stages have no warmup or cooldown, so each
// jumps back to const_lr and anneals before its end. After the last stage
// its schedule runs on.
type Stages struct {
	// Defaults are the fields every stage's schedule starts from; optional.
	// Validate merges them into each stage and clears them.
	Defaults map[string]any `spec:"defaults"`
	// Stages are the stages in order; required, at least one.
	Stages []Stage `spec:"stages,required"`

	seq Sequence
}

func (s *Stages) Kind() string { return "stages" }

func (s *Stages) Validate() error {
	if len(s.Stages) == 0 {
		return specfield.Errorf(s.Kind(), "stages", "[]", "must hold at least one stage")
	}
	parts := make([]Part, len(s.Stages))
	for i := range s.Stages {
		st := &s.Stages[i]
		prefix := fmt.Sprintf("stages[%d]", i)
		if st.Steps < 1 {
			return specfield.Errorf(s.Kind(), prefix+".steps", st.Steps, "must be >= 1")
		}
		m := map[string]any{}
		for k, v := range s.Defaults {
			m[k] = v
		}
		for k, v := range st.Schedule {
			m[k] = v
		}
		if stageLengthIsHorizon(m) {
			m["total_steps"] = st.Steps
		}
		spec, err := parseNested(s.Kind(), prefix+".schedule", m)
		if err != nil {
			return err
		}
		st.Schedule = Canonical(spec)
		steps := st.Steps
		parts[i] = Part{Steps: &steps, Schedule: st.Schedule}
	}
	s.Defaults = nil
	s.seq = Sequence{Parts: parts}
	return s.seq.Validate()
}

// stageLengthIsHorizon reports whether a stage's schedule m takes the stage's
// length as its total_steps: when it has that field and leaves it out, except
// where total_steps is not the horizon (inv_sqrt's optional cut-off) or is
// already fixed by other fields (a wsd with stable_steps).
func stageLengthIsHorizon(m map[string]any) bool {
	kind, _ := m["kind"].(string)
	mk, ok := kinds[kind]
	if !ok || !hasField(mk(), "total_steps") || kind == "inv_sqrt" {
		return false
	}
	if _, set := m["total_steps"]; set {
		return false
	}
	_, stable := m["stable_steps"]
	return !(kind == "wsd" && stable)
}

func (s *Stages) LR(n int64) float64          { return s.seq.LR(n) }
func (s *Stages) lrRange() (float64, float64) { return s.seq.lrRange() }
func (s *Stages) floor() float64              { return s.seq.floor() }
func (s *Stages) Phases() []Phase {
	var out []Phase
	for i, st := range s.Stages {
		name := st.Name
		if name == "" {
			name = fmt.Sprintf("stage %d", i)
		}
		for _, ph := range partPhases(s.seq.starts, i, s.seq.specs[i]) {
			label := ph.Name
			if ph.Start == 0 {
				label = name + ": " + ph.Name
			}
			out = append(out, Phase{label, s.seq.starts[i] + ph.Start})
		}
	}
	return out
}

// parseNested parses a spec inside another, prefixing error fields with path.
func parseNested(kind, path string, m map[string]any) (Spec, error) {
	spec, err := Parse(m)
	if err != nil {
		var fe *specfield.Error
		if errors.As(err, &fe) {
			inner := fe.Kind
			if inner == "" {
				inner = "spec"
			}
			return nil, &specfield.Error{Kind: kind, Field: path + "." + fe.Field, Value: fe.Value,
				Reason: fe.Reason + " (in the " + inner + " schedule)"}
		}
		return nil, fmt.Errorf("%s: %s: %w", kind, path, err)
	}
	return spec, nil
}

func partsRange(specs []Spec) (float64, float64) {
	lo, hi := 0.0, 0.0
	for i, s := range specs {
		a, b := rangeOf(s)
		if i == 0 || a < lo {
			lo = a
		}
		if b > hi {
			hi = b
		}
	}
	return lo, hi
}

// partPhases is part i's phases, without those that would start at or after
// the part's end (a decay's floor when the next part takes over first).
func partPhases(starts []int64, i int, sp Spec) []Phase {
	all := phasesOf(sp)
	if i+1 >= len(starts) {
		return all
	}
	var out []Phase
	for _, ph := range all {
		if ph.Start < starts[i+1]-starts[i] {
			out = append(out, ph)
		}
	}
	return out
}

func partsPhases(starts []int64, specs []Spec, name string) []Phase {
	var out []Phase
	for i, sp := range specs {
		for _, ph := range partPhases(starts, i, sp) {
			label := ph.Name
			if ph.Start == 0 {
				label = fmt.Sprintf("%s %d: %s", name, i, ph.Name)
			}
			out = append(out, Phase{label, starts[i] + ph.Start})
		}
	}
	return out
}
