package replay

import (
	"math"
	"math/big"
	"slices"
)

// exactMix is a stage's mixture in integers, so that the quotas are exact.
//
// Every float64 weight is an integer times a power of two, so with one
// common power the start weights are integers a_s summing to A, and the end
// weights e_s summing to E. Normalising each end by its own sum, the
// proportion at step t of L is p_s(t) = a_s/A + (e_s/E − a_s/A)·t/(L−1), and
// the cumulative target after T steps is
//
//	x_s(T) = B·Σ_{t<T} p_s(t) = B·T·(α_s·(2L−1−T) + β_s·(T−1)) / den
//
// with α_s = a_s·E, β_s = e_s·A and den = 2(L−1)·A·E (for L = 1,
// x_s(T) = B·T·α_s / (A·E)). All targets share den, so their fractional
// parts compare as integer remainders, ties are true ties, and they sum to
// exactly B·T. Float64 targets did not: a target held still by a proportion
// of 0 could round up at one step and down at the next.
type exactMix struct {
	alpha, beta []big.Int // by position in active
	den         big.Int
	steps       int64
}

// newExactMix writes raw (the active sources' weights as given, before
// normalising) for a stage of steps.
func newExactMix(raw []proportion, steps int64) exactMix {
	m := exactMix{alpha: make([]big.Int, len(raw)), beta: make([]big.Int, len(raw)), steps: steps}
	// The common power: the smallest exponent among the non-zero weights.
	low := math.MaxInt
	for _, p := range raw {
		for _, v := range []float64{p.start, p.end} {
			if v > 0 {
				_, e := mantissa(v)
				low = min(low, e)
			}
		}
	}
	whole := func(v float64) *big.Int {
		if v == 0 {
			return new(big.Int)
		}
		mant, e := mantissa(v)
		return new(big.Int).Lsh(new(big.Int).SetUint64(mant), uint(e-low))
	}
	a, e := make([]*big.Int, len(raw)), make([]*big.Int, len(raw))
	var sumA, sumE big.Int
	for i, p := range raw {
		a[i], e[i] = whole(p.start), whole(p.end)
		sumA.Add(&sumA, a[i])
		sumE.Add(&sumE, e[i])
	}
	for i := range raw {
		m.alpha[i].Mul(a[i], &sumE)
		m.beta[i].Mul(e[i], &sumA)
	}
	m.den.Mul(&sumA, &sumE)
	if steps > 1 {
		m.den.Mul(&m.den, big.NewInt(2*(steps-1)))
	}
	return m
}

// mantissa writes v > 0 as mant·2^exp with an integer mant.
func mantissa(v float64) (uint64, int) {
	f, e := math.Frexp(v)
	return uint64(math.Ldexp(f, 53)), e - 53
}

// quotasAt writes C_s(T) for each active source s (out follows
// sp.active), the slots s holds among the first T·B of the stage: the cumulative targets x_s(T) rounded by largest remainder
// (ties to the earlier source), so Σ_s C_s(T) = T·B and
// floor(x_s) <= C_s(T) <= ceil(x_s).
//
// C_s never decreases in T, so no quota is negative: with two sources C_s
// is x_s rounded half up (or the rest of T·B), and x_s grows; with more,
// each source gains at least one sample per step (Parse refuses less), and
// C_s(T) <= floor(x_s)+1 <= floor(x_s+1) <= C_s(T+1).
func quotasAt(sp *stagePlan, B, T int64, out []int64) {
	for i := range out {
		out[i] = 0
	}
	m := &sp.exact
	n := len(sp.active)
	if T == 0 || n == 0 {
		return
	}
	var (
		rbuf [8]big.Int
		ibuf [8]int
	)
	rem, idx := rbuf[:0], ibuf[:0]
	if n > len(rbuf) {
		rem, idx = make([]big.Int, 0, n), make([]int, 0, n)
	}
	rem, idx = rem[:n], idx[:n]
	var c1, c2 int64 = 1, 0
	if m.steps > 1 {
		c1, c2 = 2*m.steps-1-T, T-1
	}
	var num, tmp, q big.Int
	bt := big.NewInt(B * T)
	k1, k2 := big.NewInt(c1), big.NewInt(c2)
	var given int64
	for i := range sp.active {
		num.Mul(&m.alpha[i], k1)
		tmp.Mul(&m.beta[i], k2)
		num.Add(&num, &tmp)
		num.Mul(&num, bt)
		q.QuoRem(&num, &m.den, &rem[i])
		out[i] = q.Int64()
		given += out[i]
		idx[i] = i
	}
	// The remainders sum to (T·B − given)·den exactly, so 0 <= r < n.
	r := B*T - given
	if r == 0 {
		return
	}
	// Largest remainders first, the earlier source first on a tie.
	slices.SortStableFunc(idx, func(a, b int) int { return rem[b].Cmp(&rem[a]) })
	for i := int64(0); i < r && i < int64(n); i++ {
		out[idx[i]]++
	}
}
