package dsnmap

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestEntryTreeAgainstModel drives the tree and a sorted slice with random
// inserts, removals and queries.
func TestEntryTreeAgainstModel(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 1))
		tr := newEntryTree()
		var model []rxEntry // sorted by start
		overlaps := func(e rxEntry) bool {
			for _, o := range model {
				if o.start < e.end() && e.start < o.end() {
					return true
				}
			}
			return false
		}
		for step := range 3000 {
			switch op := rng.IntN(10); {
			case op < 5:
				e := rxEntry{start: uint64(rng.IntN(5000)), n: uint64(1 + rng.IntN(20))}
				if overlaps(e) {
					continue
				}
				tr.insert(e)
				i, _ := slices.BinarySearchFunc(model, e.start, func(o rxEntry, k uint64) int { return int(o.start) - int(k) })
				model = slices.Insert(model, i, e)
			case op < 7 && len(model) > 0:
				k := rng.IntN(len(model))
				tr.remove(model[k].start)
				model = slices.Delete(model, k, k+1)
			case op == 7 && rng.IntN(20) == 0:
				from := uint64(rng.IntN(5000))
				tr.removeFrom(from)
				model = slices.DeleteFunc(model, func(o rxEntry) bool { return o.start >= from })
			default:
				x := uint64(rng.IntN(5100))
				wantAfter, wantBefore := -1, -1
				for k, o := range model {
					if wantAfter < 0 && o.end() > x {
						wantAfter = k
					}
					if o.start < x {
						wantBefore = k
					}
				}
				check := func(what string, got int32, want int) {
					t.Helper()
					if (want < 0) != (got == nilNode) || (want >= 0 && tr.at(got).start != model[want].start) {
						t.Fatalf("seed %d step %d: %s(%d) wrong", seed, step, what, x)
					}
				}
				check("endAfter", tr.endAfter(x), wantAfter)
				check("startBefore", tr.startBefore(x), wantBefore)
				if wantAfter >= 0 {
					want := wantAfter + 1
					if want == len(model) {
						want = -1
					}
					check("next", tr.next(tr.endAfter(x)), want)
				}
			}
			if tr.len() != len(model) {
				t.Fatalf("seed %d step %d: len %d, model %d", seed, step, tr.len(), len(model))
			}
			if len(model) > 0 && (tr.at(tr.first()).start != model[0].start || tr.at(tr.last()).start != model[len(model)-1].start) {
				t.Fatalf("seed %d step %d: first/last wrong", seed, step)
			}
		}
		// In-order walk.
		var got []uint64
		for i := tr.first(); i != nilNode; i = tr.next(i) {
			got = append(got, tr.at(i).start)
		}
		var want []uint64
		for _, o := range model {
			want = append(want, o.start)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: walk %v, want %v", seed, got, want)
		}
		if len(tr.nodes) > 2*len(model)+600 {
			// Nodes are recycled: the pool stays near the most held at once.
			t.Logf("seed %d: pool %d for %d entries", seed, len(tr.nodes), len(model))
		}
	}
}

// TestRxMapDataFINPosition: the DATA_FIN a mapping announces is known when
// the mapping arrives, also for a copy of delivered bytes, and a second
// position is a conflict.
func TestRxMapDataFINPosition(t *testing.T) {
	sub := subflowStream(pattern(100, 1))
	for _, csum := range []bool{false, true} {
		r := NewRxMap(0, csum)
		if _, ok := r.DataFIN(); ok {
			t.Fatal("DATA_FIN known before any mapping")
		}
		// Plain mapping delivered, then its FIN-added copy re-sent with a
		// retransmission: no piece carries the DATA_FIN, DataFIN does.
		if err := r.Add(sub.mapping(500, 1, 40, false)); err != nil {
			t.Fatal(err)
		}
		var fins int
		if err := r.Deliver(1, sub.bytes(1, 40), func(p Piece) {
			if p.DataFIN {
				fins++
			}
		}); err != nil || fins != 0 {
			t.Fatalf("deliver: %v, %d FIN pieces", err, fins)
		}
		if err := r.Add(sub.mapping(500, 1, 40, true)); err != nil {
			t.Fatalf("checksums=%v: FIN-added copy of delivered bytes: %v", csum, err)
		}
		if fin, ok := r.DataFIN(); !ok || fin != 540 {
			t.Fatalf("checksums=%v: DataFIN() = %d, %v; want 540", csum, fin, ok)
		}
		// A bare DATA_FIN at the same place is fine (with any subflow
		// sequence number), elsewhere it is a conflict, and so is data
		// beyond it.
		for _, ssn := range []uint32{0, 41} {
			m := Mapping{DSN: 540, SubflowSeq: ssn, Len: 1, DataFIN: true}
			if !m.FINOnly() || r.Add(m) != nil {
				t.Fatalf("bare DATA_FIN at ssn %d refused", ssn)
			}
		}
		if err := r.Add(Mapping{DSN: 541, Len: 1, DataFIN: true}); !errors.Is(err, ErrMappingConflict) {
			t.Fatalf("second DATA_FIN position: %v", err)
		}
		if err := r.Add(sub.mapping(540, 41, 10, false)); !errors.Is(err, ErrMappingConflict) {
			t.Fatalf("data at the DATA_FIN: %v", err)
		}
		if fin, _ := r.DataFIN(); fin != 540 {
			t.Fatalf("DataFIN moved to %d", fin)
		}
	}
	// Known as soon as the mapping arrives, before its bytes.
	r := NewRxMap(0, true)
	if err := r.Add(sub.mapping(7, 1, 60, true)); err != nil {
		t.Fatal(err)
	}
	if fin, ok := r.DataFIN(); !ok || fin != 67 {
		t.Fatalf("DataFIN() = %d, %v before delivery; want 67", fin, ok)
	}
}

// TestRxMapOneByteMappings: a peer mapping every byte on its own, in a
// random order, with DSN gaps so that nothing merges: every byte still
// arrives at its DSN, and the table holds at most its limit.
func TestRxMapOneByteMappings(t *testing.T) {
	const n = 20000
	sub := subflowStream(pattern(n+1, 2))
	for _, csum := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(3, 4))
		r := NewRxMap(n, csum)
		order := rng.Perm(n)
		for _, k := range order {
			if err := r.Add(sub.mapping(DSN(2*k), uint32(1+k), 1, false)); err != nil {
				t.Fatal(err)
			}
		}
		if r.Pending() != n {
			t.Fatalf("pending %d, want %d", r.Pending(), n)
		}
		if err := r.Add(sub.mapping(DSN(2*n), uint32(1+n), 1, false)); !errors.Is(err, ErrTooManyMappings) {
			t.Fatalf("mapping beyond the limit: %v", err)
		}
		next := 0
		err := r.Deliver(1, sub.bytes(1, n), func(p Piece) {
			if len(p.Data) != 1 || p.DSN != DSN(2*next) || p.Data[0] != sub[next] {
				t.Fatalf("piece %d: %+v", next, p)
			}
			next++
		})
		if err != nil || next != n || r.Pending() != 0 {
			t.Fatalf("checksums=%v: %v after %d pieces, %d pending", csum, err, next, r.Pending())
		}
	}
}

// BenchmarkRxMapOneByteMappings adds n one-byte mappings in random order
// and delivers them: the cost per mapping stays flat as n grows (no
// quadratic insertion).
func BenchmarkRxMapOneByteMappings(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, csum := range []bool{false, true} {
			name := map[bool]string{false: "plain", true: "checksums"}[csum]
			b.Run(name+"/n="+itoa(n), func(b *testing.B) {
				sub := subflowStream(pattern(n, 2))
				maps := make([]Mapping, n)
				for k, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
					maps[k] = sub.mapping(DSN(2*i), uint32(1+i), 1, false)
				}
				b.ResetTimer()
				for range b.N {
					r := NewRxMap(n, csum)
					for _, m := range maps {
						if err := r.Add(m); err != nil {
							b.Fatal(err)
						}
					}
					if err := r.Deliver(1, sub.bytes(1, n), func(Piece) {}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/mapping")
			})
		}
	}
}

func itoa(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return itoa(n/1000) + "k"
	case n < 10:
		return string(rune('0' + n))
	default:
		return itoa(n/10) + string(rune('0'+n%10))
	}
}
