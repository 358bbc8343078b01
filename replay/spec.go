// Package replay decides which sample indices each rank reads at each step
// of a continual pre-training run: new data mixed with replay of earlier
// data, exact per batch, O(1) memory in the dataset size, and a pure
// function of (spec, step), so resume needs no fast-forward and the global
// batch is the same at any world size.
//
// The pieces, each a small closed form:
//
//   - quotas: per stage, source s gets C_s(T) of the first T·B slots, the
//     cumulative largest-remainder rounding of B·Σ_{t<T} p_s(t);
//   - order: each source is read through a stream of per-epoch keyed Feistel
//     permutations (Perm), continued across stages;
//   - replay: "seen" draws come from the stream positions consumed before
//     the stage, through a fresh keyed permutation of them;
//   - layout: the B slots of a global batch are shuffled with a keyed
//     permutation, then sliced by rank (or dealt per source with
//     stratified).
package replay

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/rewarm/rewarm/internal/specfield"
)

// Replay modes for a source that an earlier stage already used.
const (
	// Seen draws only the samples consumed by earlier stages.
	Seen = "seen"
	// All continues the source's own stream over the whole source (unseen
	// samples first, then the next epochs).
	All = "all"
)

// Limits a spec must keep.
const (
	// MaxGlobalBatch is the largest global batch: one request carries a
	// whole global batch (world size 1) at most.
	MaxGlobalBatch = 1 << 20
	// MaxStageSamples bounds global_batch_size x steps per stage, so every
	// count and stream position of a stage stays far inside int64.
	MaxStageSamples = 1 << 48
)

// Source is one dataset, in torch ConcatDataset order.
type Source struct {
	// Name names the source in mixtures and replay mappings; required, not
	// empty, unique.
	Name string `spec:"name,required"`
	// Size is the number of samples; required, >= 1, with all sources
	// together below 2^63.
	Size int64 `spec:"size,required"`
}

// Stage is a run of steps with one mixture. A proportion is a number, or
// {start, end} for a linear change from the first step (start) to the last
// (end). Replay is "seen" or "all" for every earlier-used source, or a
// mapping from source name to mode.
type Stage struct {
	// Name labels the stage; optional. It changes no sample and is left out
	// of the spec hash.
	Name string `spec:"name"`
	// Steps is the stage's length; required, >= 1, and at most
	// MaxStageSamples/global_batch_size.
	Steps int64 `spec:"steps,required"`
	// Mixture maps source names to proportions (finite, >= 0; >= 1/B at both
	// ends if over two sources are used); required, sums to 1 unless normalize.
	Mixture map[string]any `spec:"mixture,required"`
	// Replay overrides the spec's replay mode for this stage; absent, the
	// spec's.
	Replay any `spec:"replay"`
}

// Spec is a replay sampler spec.
type Spec struct {
	// Sources are the datasets, their samples numbered in this order;
	// required, at least one.
	Sources []Source `spec:"sources,required"`
	// GlobalBatchSize is B; required, 1 to MaxGlobalBatch.
	GlobalBatchSize int64 `spec:"global_batch_size,required"`
	// Seed keys every permutation; default 0, any value.
	Seed int64 `spec:"seed"`
	// Stages are the stages in order; required, at least one.
	Stages []Stage `spec:"stages,required"`
	// Replay is the mode, Seen or All, of each stage without its own; Parse's
	// default is Seen.
	Replay string `spec:"replay"`
	// Stratified deals each rank an even share (floor or ceil) of every
	// source's slots, instead of slicing one shuffled batch; default false.
	Stratified bool `spec:"stratified"`
	// Normalize rescales each stage's proportions to sum to 1; default false
	// (they must sum to 1 within 1e-9).
	Normalize bool `spec:"normalize"`
}

func fail(field string, value any, format string, args ...any) error {
	return specfield.Errorf("replay", field, value, format, args...)
}

// proportion is p(t) = start + (end − start)·t/(L − 1) over a stage of L steps.
type proportion struct{ start, end float64 }

// stagePlan is a validated stage.
type stagePlan struct {
	name  string
	begin int64 // first global step
	steps int64
	// active lists the sources with a non-zero proportion somewhere in the
	// stage, ascending; the slices below follow it, so a stage holds state
	// for the sources it mixes, not for every source.
	active []int
	props  []proportion // normalised
	given  []proportion // as written, before normalising (for messages)
	exact  exactMix     // the mixture in integers, for the quotas
	mode   []string     // "new", Seen or All
	fresh0 []int64      // stream position at the stage start
	counts []int64      // samples over the whole stage
	// dealt0 counts the draws of the first active source in the earlier
	// stratified stages with two sources: the deal goes on from there.
	dealt0  int64
	seenLen []int64 // for Seen sources: positions available (= fresh0)
}

// Parse validates a spec map and returns a Sampler.
func Parse(m map[string]any) (*Sampler, error) {
	spec := Spec{Replay: Seen}
	if err := specfield.Decode("replay", m, &spec); err != nil {
		return nil, err
	}
	return New(spec)
}

// New validates a spec and returns a Sampler. Unlike Parse it fills no
// defaults: set Replay (Seen or All) yourself.
func New(spec Spec) (*Sampler, error) {
	if len(spec.Sources) == 0 {
		return nil, fail("sources", "[]", "give at least one source")
	}
	index := map[string]int{}
	var offsets []int64
	var total int64
	for i, src := range spec.Sources {
		f := fmt.Sprintf("sources[%d]", i)
		if src.Name == "" {
			return nil, fail(f+".name", src.Name, "must not be empty")
		}
		if _, dup := index[src.Name]; dup {
			return nil, fail(f+".name", src.Name, "duplicate source name")
		}
		if src.Size <= 0 {
			return nil, fail(f+".size", src.Size, "source %q must hold at least one sample", src.Name)
		}
		if total > math.MaxInt64-src.Size {
			return nil, fail(f+".size", src.Size, "the sources together exceed 2^63 samples")
		}
		index[src.Name] = i
		offsets = append(offsets, total)
		total += src.Size
	}
	if spec.GlobalBatchSize < 1 || spec.GlobalBatchSize > MaxGlobalBatch {
		return nil, fail("global_batch_size", spec.GlobalBatchSize, "must be between 1 and %d", MaxGlobalBatch)
	}
	if spec.Replay != Seen && spec.Replay != All {
		return nil, fail("replay", spec.Replay, "must be %q or %q", Seen, All)
	}
	if len(spec.Stages) == 0 {
		return nil, fail("stages", "[]", "give at least one stage")
	}
	K := len(spec.Sources)
	B := spec.GlobalBatchSize
	fresh := make([]int64, K) // stream position per source
	used := make([]bool, K)
	var dealt int64 // see stagePlan.dealt0
	var begin int64
	stages := make([]stagePlan, len(spec.Stages))
	for k, st := range spec.Stages {
		f := fmt.Sprintf("stages[%d]", k)
		if st.Steps < 1 {
			return nil, fail(f+".steps", st.Steps, "must be >= 1")
		}
		if begin > math.MaxInt64/2-st.Steps {
			return nil, fail(f+".steps", st.Steps, "too many steps in total")
		}
		if st.Steps > MaxStageSamples/B {
			return nil, fail(f+".steps", st.Steps, "global_batch_size %d x steps must be <= 2^48 (at most %d steps), so the stage's counts stay bounded",
				B, MaxStageSamples/B)
		}
		sp := stagePlan{name: st.Name, begin: begin, steps: st.Steps}
		if sp.name == "" {
			sp.name = fmt.Sprintf("stage %d", k)
		}
		if err := parseMixture(&sp, st.Mixture, index, f, spec.Normalize, spec.Sources); err != nil {
			return nil, err
		}
		modes, err := parseModes(st.Replay, spec.Replay, index, f)
		if err != nil {
			return nil, err
		}
		n := len(sp.active)
		sp.mode, sp.fresh0, sp.seenLen = make([]string, n), make([]int64, n), make([]int64, n)
		for i, s := range sp.active {
			sp.fresh0[i] = fresh[s]
			mode, explicit := modes(s)
			switch {
			case !used[s] && !(explicit && mode == Seen):
				sp.mode[i] = "new"
			default:
				sp.mode[i] = mode
			}
			if sp.mode[i] == Seen {
				if fresh[s] == 0 {
					// Name the setting that asked for "seen": the stage's own
					// entry for this source, the stage's mode, or the spec's.
					field := "replay"
					if _, one := st.Replay.(string); explicit {
						field = f + ".replay." + spec.Sources[s].Name
					} else if one {
						field = f + ".replay"
					}
					return nil, fail(field, "seen",
						"replay of %q draws only samples consumed earlier, and no earlier stage read any", spec.Sources[s].Name)
				}
				sp.seenLen[i] = fresh[s]
			}
		}
		if K > 2 && len(sp.active) > 2 {
			// Cumulative largest remainder can hand a source less than one
			// sample per batch back a slot; refuse rather than yield -1.
			for i, s := range sp.active {
				// The tolerance forgives the ulps of normalising by the sum
				// (0.34 + 0.56 + 0.1 sums to 1 + 2^-52, leaving c·10 just under
				// 1). A source short of one per batch by δ < 1/n never gives
				// a slot back: largest remainder cannot round up a remainder
				// below δ (the others, each under 1, would sum to less than r).
				if lo := math.Min(sp.props[i].start, sp.props[i].end); lo*float64(B) < 1-1e-14 {
					return nil, fail(f+".mixture."+spec.Sources[s].Name, math.Min(sp.given[i].start, sp.given[i].end),
						"with more than two sources each needs at least one sample per global batch (global_batch_size·p >= 1, here %g); "+
							"raise global_batch_size or group the small sources", lo*float64(B))
				}
			}
		}
		sp.counts = make([]int64, n)
		quotasAt(&sp, B, sp.steps, sp.counts)
		sp.dealt0 = dealt
		if n == 2 {
			dealt += sp.counts[0]
		}
		for i, s := range sp.active {
			// A source whose share rounded to no sample at all is still
			// unread: a later stage reads it fresh.
			used[s] = used[s] || sp.counts[i] > 0
			if sp.mode[i] != Seen {
				fresh[s] += sp.counts[i]
			}
		}
		stages[k] = sp
		begin += st.Steps
	}
	// Stage names label stages and change no sample: a checkpoint resumes
	// under a renamed stage.
	hashed := spec
	hashed.Stages = slices.Clone(spec.Stages)
	for i := range hashed.Stages {
		hashed.Stages[i].Name = ""
	}
	canon, _ := json.Marshal(specfield.Encode(&hashed))
	sum := sha256.Sum256(canon)
	return &Sampler{spec: spec, stages: stages, offsets: offsets, total: begin, hash: hex.EncodeToString(sum[:8])}, nil
}

func parseMixture(sp *stagePlan, mix map[string]any, index map[string]int, f string, normalize bool, sources []Source) error {
	if len(mix) == 0 {
		return fail(f+".mixture", "{}", "give at least one source proportion")
	}
	names := make([]string, 0, len(mix))
	for name := range mix {
		names = append(names, name)
	}
	sort.Strings(names)
	type entry struct {
		src int
		p   proportion
	}
	entries := make([]entry, 0, len(names))
	var sumStart, sumEnd float64
	for _, name := range names {
		field := f + ".mixture." + name
		s, ok := index[name]
		if !ok {
			known := make([]string, len(sources))
			for i, src := range sources {
				known[i] = src.Name
			}
			return fail(field, name, "unknown source (sources: %s)", strings.Join(known, ", "))
		}
		var p proportion
		if v, ok := specfield.AsMap(mix[name]); ok {
			var lin struct {
				Start float64 `spec:"start,required"`
				End   float64 `spec:"end,required"`
			}
			if err := specfield.Decode("replay", v, &lin); err != nil {
				return prefix(err, field)
			}
			p = proportion{lin.Start, lin.End}
		} else {
			v := mix[name]
			var one struct {
				P float64 `spec:"p"`
			}
			if err := specfield.Decode("replay", map[string]any{"p": v}, &one); err != nil {
				return fail(field, v, "must be a number or {start, end}")
			}
			p = proportion{one.P, one.P}
		}
		for _, x := range []float64{p.start, p.end} {
			if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
				return fail(field, x, "proportion of %q must be a finite number >= 0", name)
			}
		}
		entries = append(entries, entry{s, p})
		sumStart += p.start
		sumEnd += p.end
	}
	for _, sum := range []float64{sumStart, sumEnd} {
		if math.IsInf(sum, 0) {
			return fail(f+".mixture", fmt.Sprintf("sum %g", sum), "the weights overflow when summed; give smaller ones")
		}
		if math.Abs(sum-1) > 1e-9 && !normalize {
			return fail(f+".mixture", fmt.Sprintf("sum %g", sum),
				"proportions must sum to 1 (at the stage's first and last step); set normalize: true to rescale them")
		}
		if sum <= 0 {
			return fail(f+".mixture", fmt.Sprintf("sum %g", sum), "proportions sum to 0")
		}
	}
	sort.Slice(entries, func(a, b int) bool { return entries[a].src < entries[b].src })
	var raw []proportion
	for _, e := range entries {
		// By the normalised weight: one that rounds to 0 beside the others
		// (1e-300 beside 1e30) mixes nothing.
		if p := (proportion{e.p.start / sumStart, e.p.end / sumEnd}); p.start > 0 || p.end > 0 {
			sp.active = append(sp.active, e.src)
			sp.props = append(sp.props, p)
			raw = append(raw, e.p)
		}
	}
	sp.given = raw
	sp.exact = newExactMix(raw, sp.steps)
	return nil
}

func prefix(err error, field string) error {
	if fe, ok := err.(*specfield.Error); ok {
		out := *fe
		out.Field = field + "." + fe.Field
		return &out
	}
	return err
}

// parseModes returns each source's replay mode in a stage, and whether the
// stage named it explicitly.
func parseModes(raw any, def string, index map[string]int, f string) (func(int) (string, bool), error) {
	switch v := raw.(type) {
	case nil:
		return func(int) (string, bool) { return def, false }, nil
	case string:
		if v != Seen && v != All {
			return nil, fail(f+".replay", v, "must be %q or %q, or a mapping from source to mode", Seen, All)
		}
		return func(int) (string, bool) { return v, false }, nil
	}
	m, ok := specfield.AsMap(raw)
	if !ok {
		return nil, fail(f+".replay", raw, "must be %q or %q, or a mapping from source to mode", Seen, All)
	}
	modes := map[int]string{}
	// In sorted order, so the first bad entry named is the same every time.
	for _, name := range slices.Sorted(maps.Keys(m)) {
		val := m[name]
		s, ok := index[name]
		if !ok {
			return nil, fail(f+".replay."+name, name, "unknown source")
		}
		mode, _ := val.(string)
		if mode != Seen && mode != All {
			return nil, fail(f+".replay."+name, val, "must be %q or %q", Seen, All)
		}
		modes[s] = mode
	}
	return func(s int) (string, bool) {
		if m, ok := modes[s]; ok {
			return m, true
		}
		return def, false
	}, nil
}
