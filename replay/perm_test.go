package replay

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func checkBijection(t *testing.T, n, key uint64) {
	t.Helper()
	seen := make([]uint64, (n+63)/64)
	p := NewPerm(n, key)
	for i := uint64(0); i < n; i++ {
		v := p.At(i)
		if v >= n {
			t.Fatalf("n=%d: At(%d) = %d out of range", n, i, v)
		}
		if seen[v/64]&(1<<(v%64)) != 0 {
			t.Fatalf("n=%d key=%d: %d appears twice", n, key, v)
		}
		seen[v/64] |= 1 << (v % 64)
	}
}

// Exhaustive bijectivity at the sizes where other shuffles broke.
func TestPermIsABijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1<<16 - 1, 1 << 16, 1<<16 + 1, 1<<20 + 1} {
		for _, key := range []uint64{0, 1, 0xdeadbeef} {
			checkBijection(t, n, key)
		}
	}
}

func TestPermLargeSizes(t *testing.T) {
	sizes := []uint64{1<<22 + 1, 3000007, 1<<24 - 3}
	if !testing.Short() {
		sizes = append(sizes, 1<<26+1, 100000007)
	}
	for _, n := range sizes {
		checkBijection(t, n, 42)
	}
}

func TestPermDependsOnKey(t *testing.T) {
	a, b := NewPerm(1000, 1), NewPerm(1000, 2)
	same := 0
	for i := uint64(0); i < 1000; i++ {
		if a.At(i) == b.At(i) {
			same++
		}
	}
	if same > 10 {
		t.Fatalf("two keys agree on %d of 1000 positions", same)
	}
}

// Statistical quality: the permuted index should be uncorrelated with the
// position (Spearman's rank correlation, which for a permutation is the
// Pearson correlation of position and value), and consecutive outputs
// should not be close to each other.
func TestPermQuality(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for _, n := range []uint64{1000, 65537, 1 << 20} {
		for trial := 0; trial < 5; trial++ {
			p := NewPerm(n, rng.Uint64())
			var sxy, sx, sy, sxx, syy float64
			near := 0
			prev := p.At(0)
			for i := uint64(0); i < n; i++ {
				x, y := float64(i), float64(p.At(i))
				sx, sy, sxy, sxx, syy = sx+x, sy+y, sxy+x*y, sxx+x*x, syy+y*y
				if i > 0 {
					if d := math.Abs(float64(p.At(i)) - float64(prev)); d < float64(n)/1000 {
						near++
					}
					prev = p.At(i)
				}
			}
			N := float64(n)
			rho := (N*sxy - sx*sy) / math.Sqrt((N*sxx-sx*sx)*(N*syy-sy*sy))
			// Under independence rho ~ N(0, 1/n); 5 sigma.
			if math.Abs(rho) > 5/math.Sqrt(N) {
				t.Errorf("n=%d: rank correlation %.5f exceeds %.5f", n, rho, 5/math.Sqrt(N))
			}
			// Neighbours within n/1000 of each other: expected ~0.2% of pairs.
			if frac := float64(near) / N; frac > 0.004 {
				t.Errorf("n=%d: %.4f of consecutive outputs are close", n, frac)
			}
		}
	}
}

// The cycle walk stays short: fewer than two encryptions per index on average.
func TestPermWalkLength(t *testing.T) {
	for _, n := range []uint64{1<<20 + 1, 3 << 20} {
		p := NewPerm(n, 5)
		total := 0
		for i := uint64(0); i < 100000; i++ {
			x := p.encrypt(i)
			total++
			for x >= n {
				x = p.encrypt(x)
				total++
			}
		}
		if avg := float64(total) / 100000; avg > 2.1 {
			t.Errorf("n=%d: %.2f encryptions per index", n, avg)
		}
	}
}

func TestPermSortedOutputIsIdentity(t *testing.T) {
	p := NewPerm(1000, 3)
	out := make([]int, 1000)
	for i := range out {
		out[i] = int(p.At(uint64(i)))
	}
	sort.Ints(out)
	for i, v := range out {
		if v != i {
			t.Fatal("not a permutation")
		}
	}
}

func BenchmarkPerm(b *testing.B) {
	p := NewPerm(1<<33+12345, 99)
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink += p.At(uint64(i))
	}
	_ = sink
}

func BenchmarkPermTypical(b *testing.B) {
	p := NewPerm(1000000000, 99)
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink += p.At(uint64(i))
	}
	_ = sink
}
