package replay

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
)

// Sampler produces the global batch (or one rank's slice of it) at any step.
// It is immutable and safe for concurrent use.
type Sampler struct {
	spec    Spec
	stages  []stagePlan
	offsets []int64
	total   int64
	hash    string
}

// Hash identifies the spec; a checkpoint's (hash, step) is its whole state.
func (s *Sampler) Hash() string { return s.hash }

// TotalSteps is the number of steps over all stages.
func (s *Sampler) TotalSteps() int64 { return s.total }

// BatchSize is the global batch size.
func (s *Sampler) BatchSize() int64 { return s.spec.GlobalBatchSize }

// Sources lists the sources in ConcatDataset order.
func (s *Sampler) Sources() []Source { return append([]Source(nil), s.spec.Sources...) }

// Offsets are the first global id of each source (ConcatDataset order).
func (s *Sampler) Offsets() []int64 { return append([]int64(nil), s.offsets...) }

// Stratified reports whether ranks get per-source balanced slices.
func (s *Sampler) Stratified() bool { return s.spec.Stratified }

// ErrStep reports a step outside the plan.
var ErrStep = errors.New("step outside the plan")

func (s *Sampler) stage(step int64) (*stagePlan, int64, error) {
	if step < 0 || step >= s.total {
		return nil, 0, fmt.Errorf("%w: step %d, the stages cover 0..%d", ErrStep, step, s.total-1)
	}
	k := sort.Search(len(s.stages), func(i int) bool { return s.stages[i].begin > step }) - 1
	return &s.stages[k], step - s.stages[k].begin, nil
}

// Quotas returns the number of samples each source gets in the global batch
// of step.
func (s *Sampler) Quotas(step int64) ([]int64, error) {
	sp, t, err := s.stage(step)
	if err != nil {
		return nil, err
	}
	n := len(sp.active)
	a, b := make([]int64, n), make([]int64, n)
	quotasAt(sp, s.spec.GlobalBatchSize, t, a)
	quotasAt(sp, s.spec.GlobalBatchSize, t+1, b)
	out := make([]int64, len(s.spec.Sources))
	for i, src := range sp.active {
		if out[src] = b[i] - a[i]; out[src] < 0 {
			return nil, fmt.Errorf("replay: internal error: source %q's quota at step %d is %d", s.spec.Sources[src].Name, step, out[src])
		}
	}
	return out, nil
}

// key folds parts into a 64-bit key.
func key(parts ...uint64) uint64 {
	k := uint64(0x243f6a8885a308d3)
	for _, p := range parts {
		k = splitmix64(k ^ p)
	}
	return k
}

const (
	saltStream = iota + 1
	saltReplay
	saltLayout
	saltRank
)

// Each source is read through a stream: stream position pos is element
// pos mod n of the permutation of epoch pos / n. Epochs are independent, so a
// sample read near the end of one epoch can come back early in the next.
func (s *Sampler) streamPerm(src int, epoch uint64) Perm {
	return NewPerm(uint64(s.spec.Sources[src].Size), key(uint64(s.spec.Seed), saltStream, uint64(src), epoch))
}

// run is one source's share of one global batch: draws lo .. lo+q−1 of the
// stage, with the divisions done once per batch instead of once per index.
type run struct {
	n    uint64
	seen bool
	// fresh draws: draw lo+j is element off0+j of epoch e0's permutation
	// (spilling into the next epochs).
	e0, off0 uint64
	perms    [2]Perm
	// seen draws: draw lo+j is element m0+j of replay pass r0's
	// permutation of the M seen positions.
	m, r0, m0 uint64
	sigmas    [2]Perm
	have      [2]bool
	stage     uint64
	// the stream permutation last used by a seen draw
	seenEpoch uint64
	seenPerm  Perm
}

// newRun starts the run of sp.active[i] in stage k from its draw lo.
func (s *Sampler) newRun(sp *stagePlan, k, i int, lo int64) run {
	r := run{n: uint64(s.spec.Sources[sp.active[i]].Size), stage: uint64(k)}
	if sp.mode[i] == Seen {
		r.seen, r.m = true, uint64(sp.seenLen[i])
		r.r0, r.m0 = uint64(lo)/r.m, uint64(lo)%r.m
		return r
	}
	base := uint64(sp.fresh0[i] + lo)
	r.e0, r.off0 = base/r.n, base%r.n
	return r
}

// fresh maps a stream position relative to (e0, 0) to a sample.
func (s *Sampler) fresh(r *run, src int, off uint64) uint64 {
	if off < r.n {
		if !r.have[0] {
			r.perms[0], r.have[0] = s.streamPerm(src, r.e0), true
		}
		return r.perms[0].At(off)
	}
	if off < 2*r.n {
		if !r.have[1] {
			r.perms[1], r.have[1] = s.streamPerm(src, r.e0+1), true
		}
		return r.perms[1].At(off - r.n)
	}
	p := s.streamPerm(src, r.e0+off/r.n) // a source smaller than its quota
	return p.At(off % r.n)
}

// sample is the source's j-th draw of this batch.
func (s *Sampler) sample(r *run, src int, j uint64) uint64 {
	if !r.seen {
		return s.fresh(r, src, r.off0+j)
	}
	// Replay only what was seen: pass r of the M seen stream positions goes
	// through its own permutation, so every seen sample comes back once per pass.
	m, pass := r.m0+j, r.r0
	if m >= r.m {
		pass += m / r.m
		m %= r.m
	}
	var pos uint64
	if i := pass - r.r0; i > 1 {
		sig := NewPerm(r.m, key(uint64(s.spec.Seed), saltReplay, r.stage, uint64(src), pass))
		pos = sig.At(m)
	} else {
		if r.sigmas[i].n == 0 {
			r.sigmas[i] = NewPerm(r.m, key(uint64(s.spec.Seed), saltReplay, r.stage, uint64(src), pass))
		}
		pos = r.sigmas[i].At(m)
	}
	e := uint64(0)
	if pos >= r.n {
		e, pos = pos/r.n, pos%r.n
	}
	if r.seenPerm.n == 0 || r.seenEpoch != e {
		r.seenPerm, r.seenEpoch = s.streamPerm(src, e), e
	}
	return r.seenPerm.At(pos)
}

// rng is a wyrand stream: one 128-bit multiply per value.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(uint64(*r), uint64(*r)^0xe7037ed1a0b428db)
	return hi ^ lo
}

// below returns a value in [0, n) (Lemire's multiply-shift; the bias is at
// most n/2^64).
func (r *rng) below(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// shuffle applies a keyed Fisher–Yates shuffle.
func shuffle(k uint64, xs []int32) {
	r := rng(k)
	for i := len(xs) - 1; i > 0; i-- {
		j := r.below(uint64(i + 1))
		xs[i], xs[j] = xs[j], xs[i]
	}
}

// shuffledRange returns a keyed random permutation of 0 .. n−1 (inside-out
// Fisher–Yates: it fills and shuffles in one pass).
func shuffledRange(k uint64, n int64) []int32 {
	xs := make([]int32, n)
	r := rng(k)
	for i := int64(0); i < n; i++ {
		j := r.below(uint64(i + 1))
		xs[i] = xs[j]
		xs[j] = int32(i)
	}
	return xs
}

// Batch writes rank's slice of the global batch of step into out, which
// must hold global_batch_size/world ids. With world = 1 it is the global
// batch. Ids are in ConcatDataset order.
func (s *Sampler) Batch(step int64, rank, world int, out []int64) error {
	B := s.spec.GlobalBatchSize
	if world < 1 || B%int64(world) != 0 {
		return fail("world_size", world, "global_batch_size %d must be divisible by the world size", B)
	}
	if rank < 0 || rank >= world {
		return fail("rank", rank, "must be in [0, %d)", world)
	}
	per := B / int64(world)
	if int64(len(out)) != per {
		return fmt.Errorf("replay: out holds %d ids, the slice has %d", len(out), per)
	}
	sp, t, err := s.stage(step)
	if err != nil {
		return err
	}
	k := sort.Search(len(s.stages), func(i int) bool { return s.stages[i].begin > step }) - 1
	// Everything below runs over the stage's active sources, by position.
	n := len(sp.active)
	var bufA, bufB [64]int64
	var bufS [65]int64
	lo, hi, starts := bufA[:0], bufB[:0], bufS[:0]
	if n > 64 {
		lo, hi, starts = make([]int64, n), make([]int64, n), make([]int64, n+1)
	} else {
		lo, hi, starts = bufA[:n], bufB[:n], bufS[:n+1]
	}
	quotasAt(sp, B, t, lo)
	quotasAt(sp, B, t+1, hi)
	// The batch in source-major order: slot g belongs to the source whose
	// range [start_i, start_i + q_i) holds it, as its (lo_i + g − start_i)-th draw.
	for i := 0; i < n; i++ {
		if hi[i] < lo[i] {
			return fmt.Errorf("replay: internal error: source %q's quota at step %d is %d", s.spec.Sources[sp.active[i]].Name, step, hi[i]-lo[i])
		}
		starts[i+1] = starts[i] + hi[i] - lo[i]
	}
	seed := uint64(s.spec.Seed)
	var mine []int32
	if s.spec.Stratified {
		// Deal the source-major list round robin, slot g to rank g − o mod
		// world: each rank gets floor or ceil of q_s/world from every source;
		// then shuffle within the rank. The rotation o keeps the ⌈q/R⌉
		// remainders from piling on the same ranks. With two sources it
		// continues the first one's deal from the previous step and stage
		// (its d-th draw goes to rank d mod world), so each rank's running
		// count of it, and so of the other, stays within one of every other
		// rank's whatever the quotas do; otherwise it moves one rank per step.
		R := int64(world)
		o := step % R
		if n == 2 {
			o = ((starts[0]-lo[0]-sp.dealt0%R)%R + R) % R
		}
		mine = make([]int32, 0, per)
		for g := (int64(rank) + o) % R; g < B; g += R {
			mine = append(mine, int32(g))
		}
		shuffle(key(seed, saltRank, uint64(step), uint64(rank), uint64(world)), mine)
	} else {
		// One keyed shuffle of the whole batch, then contiguous slices: the
		// global batch is the same at any world size.
		slots := shuffledRange(key(seed, saltLayout, uint64(step)), B)
		mine = slots[int64(rank)*per : int64(rank+1)*per]
	}
	var rbuf [16]run
	var made [16]bool
	runs, have := rbuf[:0], made[:0]
	if n > len(rbuf) {
		runs, have = make([]run, n), make([]bool, n)
	} else {
		runs, have = rbuf[:n], made[:n]
	}
	if starts[n] != B {
		return fmt.Errorf("replay: internal error: the quotas of step %d sum to %d, not the batch size %d", step, starts[n], B)
	}
	for j, g32 := range mine {
		g := int64(g32)
		i := 0
		for g >= starts[i+1] {
			i++
		}
		if !have[i] {
			runs[i] = s.newRun(sp, k, i, lo[i])
			have[i] = true
		}
		src := sp.active[i]
		out[j] = s.offsets[src] + int64(s.sample(&runs[i], src, uint64(g-starts[i])))
	}
	return nil
}
