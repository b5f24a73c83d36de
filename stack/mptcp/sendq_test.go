package mptcp

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestSendQueueModel drives a sendQueue against a byte-slice model: every
// byte handed out by Next comes in order exactly once (Unhand gives bytes
// back to be handed again), handed views keep their bytes after the queue
// discards or appends, and Len/Free stay exact.
func TestSendQueueModel(t *testing.T) {
	for seed := uint64(0); seed < 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		limit := 1 + rng.IntN(200<<10)
		q := newSendQueue(limit)
		var stream []byte // every byte written, in order
		acked, handed := 0, 0
		var held [][]byte // copies of what handed views showed, checked later
		var views []func() []byte
		for step := 0; step < 500; step++ {
			switch rng.IntN(4) {
			case 0:
				p := make([]byte, rng.IntN(40<<10))
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				n := q.Write(p, 1+rng.IntN(65535))
				if want := min(len(p), limit-(len(stream)-acked)); n != want {
					t.Fatalf("seed %d: Write %d = %d, want %d", seed, len(p), n, want)
				}
				stream = append(stream, p[:n]...)
			case 1:
				v := q.Next(1 + rng.IntN(70000))
				if v == nil {
					if handed != len(stream) {
						t.Fatalf("seed %d: Next nil with %d unsent", seed, len(stream)-handed)
					}
					continue
				}
				got := v.AsSlice()
				if !bytes.Equal(got, stream[handed:handed+len(got)]) {
					t.Fatalf("seed %d: Next returned the wrong bytes at %d", seed, handed)
				}
				if rng.IntN(5) == 0 {
					q.Unhand(len(got))
					v.Release()
					continue
				}
				handed += len(got)
				held = append(held, append([]byte{}, got...))
				vv := v
				views = append(views, func() []byte { return vv.AsSlice() })
			case 2:
				n := rng.IntN(handed - acked + 1)
				q.Discard(n)
				acked += n
			case 3:
				// Handed views are unaffected by anything the queue did.
				for i, f := range views {
					if !bytes.Equal(f(), held[i]) {
						t.Fatalf("seed %d: handed view %d changed", seed, i)
					}
				}
			}
			if q.Len() != len(stream)-acked || q.Free() != limit-q.Len() {
				t.Fatalf("seed %d: Len %d Free %d, model %d", seed, q.Len(), q.Free(), len(stream)-acked)
			}
		}
		q.Release()
	}
}
