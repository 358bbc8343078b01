package replay

import "math/bits"

// rounds of the Feistel network. With a one-multiply round function, four
// rounds fail the rank-correlation test in perm_test.go at n = 2^20 and six
// pass it; encrypt is unrolled for six.
const rounds = 6

// Perm is a keyed pseudo-random permutation of [0, n) in O(1) memory: an
// alternating (unbalanced) Feistel network on exactly w = bits.Len64(n−1)
// bits, restricted to [0, n) by cycle walking (re-encrypt until the value is
// below n; the domain is < 2n, so fewer than two encryptions on average).
// The width uses n−1, not log2(n): for n = 2^k+1 it needs k+1 bits, the
// case where grain's and TensorFlow's shuffles lose a value.
type Perm struct {
	n      uint64
	a, b   uint   // widths of the two halves, a + b = w, a >= b
	sa, sb uint   // 64 − a, 64 − b: the shifts that keep a or b top bits
	maskB  uint64 // 2^b − 1
	keys   [rounds]uint64
}

// splitmix64 is the finalizer of SplitMix64, used to derive keys.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// NewPerm returns the permutation of [0, n) selected by key.
func NewPerm(n, key uint64) Perm {
	p := Perm{n: n}
	if n > 1 {
		w := uint(bits.Len64(n - 1))
		p.a, p.b = (w+1)/2, w/2
		p.sa, p.sb, p.maskB = 64-p.a, 64-p.b, 1<<p.b-1
	}
	k := key
	for i := range p.keys {
		k = splitmix64(k + uint64(i))
		p.keys[i] = k
	}
	return p
}

// Len is n.
func (p *Perm) Len() uint64 { return p.n }

const mul = 0x9e3779b97f4a7c15

// encrypt runs the network, unrolled: each round is (hi, lo) -> (lo, hi ^
// F(lo)) with F(v) the top bits of (v ^ key)·mul (the high bits of a product
// depend on every bit of the input). The half widths alternate a, b, so the
// shifts alternate sa, sb.
func (p *Perm) encrypt(x uint64) uint64 {
	k := &p.keys
	hi, lo := x>>p.b, x&p.maskB
	hi, lo = lo, hi^((lo^k[0])*mul)>>p.sa
	hi, lo = lo, hi^((lo^k[1])*mul)>>p.sb
	hi, lo = lo, hi^((lo^k[2])*mul)>>p.sa
	hi, lo = lo, hi^((lo^k[3])*mul)>>p.sb
	hi, lo = lo, hi^((lo^k[4])*mul)>>p.sa
	hi, lo = lo, hi^((lo^k[5])*mul)>>p.sb
	return hi<<p.b | lo
}

// At maps position i < n to its element. Positions >= n are a caller error;
// At reduces them modulo n rather than loop.
func (p *Perm) At(i uint64) uint64 {
	switch {
	case p.n <= 1:
		return 0
	case p.b == 0: // n == 2: a keyed swap
		return (i ^ p.keys[0]) & 1
	}
	if i >= p.n {
		i %= p.n
	}
	x := p.encrypt(i)
	for x >= p.n {
		x = p.encrypt(x)
	}
	return x
}
