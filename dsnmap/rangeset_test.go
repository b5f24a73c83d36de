package dsnmap

import (
	"math/rand/v2"
	"testing"
)

// TestRangeSetAgainstBitmap drives a rangeSet and a bitmap with random
// additions and queries, and checks the set's invariants (sorted, disjoint,
// non-adjacent, bounded).
func TestRangeSetAgainstBitmap(t *testing.T) {
	const size = 400
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 3))
		rs := rangeSet{max: 1 + rng.IntN(12)}
		var bits [size]bool
		for step := range 500 {
			a := uint64(rng.IntN(size))
			b := a + uint64(rng.IntN(min(30, size-int(a)))+1)
			var cov uint64
			var gaps uint64
			for x := a; x < b; x++ {
				if bits[x] {
					cov++
				}
			}
			rs.gaps(a, b, func(ga, gb uint64) {
				for x := ga; x < gb; x++ {
					if bits[x] {
						t.Fatalf("seed %d step %d: gap [%d,%d) covers held byte %d", seed, step, ga, gb, x)
					}
				}
				gaps += gb - ga
			})
			if got := rs.covered(a, b); got != cov || gaps != b-a-cov {
				t.Fatalf("seed %d step %d: covered(%d,%d) = %d, gaps %d, want %d", seed, step, a, b, got, gaps, cov)
			}
			can := rs.canAdd(a, b)
			before := rs.len()
			ok := rs.add(a, b)
			if ok != can {
				t.Fatalf("seed %d step %d: canAdd %v, add %v", seed, step, can, ok)
			}
			if ok {
				for x := a; x < b; x++ {
					bits[x] = true
				}
			} else if rs.len() != before {
				t.Fatal("refused add changed the set")
			}
			// Invariants, and agreement with the bitmap.
			if rs.len() > rs.max {
				t.Fatalf("%d spans, max %d", rs.len(), rs.max)
			}
			var model [size]bool
			for i, sp := range rs.s {
				if sp.start >= sp.end || (i > 0 && rs.s[i-1].end >= sp.start) {
					t.Fatalf("seed %d step %d: bad spans %v", seed, step, rs.s)
				}
				for x := sp.start; x < sp.end; x++ {
					model[x] = true
				}
			}
			if model != bits {
				t.Fatalf("seed %d step %d: spans %v disagree with the bitmap", seed, step, rs.s)
			}
			if rng.IntN(10) == 0 && !rs.empty() {
				sp := rs.first()
				rs.dropFirst()
				for x := sp.start; x < sp.end; x++ {
					bits[x] = false
				}
			}
		}
	}
}
