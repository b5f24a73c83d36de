package ring

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestAgainstSlice drives a Buffer and a plain slice model with random
// writes, reads, peeks and discards, across growth and wrap-around.
func TestAgainstSlice(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		limit := 1 + rng.IntN(300<<10)
		b := New(limit)
		var model []byte
		src := make([]byte, 100<<10)
		for i := range src {
			src[i] = byte(i * 7)
		}
		pos := 0
		for step := 0; step < 2000; step++ {
			switch rng.IntN(4) {
			case 0:
				k := rng.IntN(len(src) - pos%len(src))
				p := src[pos%len(src):][:k]
				n := b.Write(p)
				if want := min(k, limit-len(model)); n != want {
					t.Fatalf("seed %d: Write(%d) = %d, want %d", seed, k, n, want)
				}
				model = append(model, p[:n]...)
				pos += n
			case 1:
				p := make([]byte, rng.IntN(90<<10))
				n := b.Read(p)
				if n != min(len(p), len(model)) || !bytes.Equal(p[:n], model[:n]) {
					t.Fatalf("seed %d: Read mismatch", seed)
				}
				model = model[n:]
			case 2:
				if len(model) == 0 {
					continue
				}
				off := rng.IntN(len(model))
				n := rng.IntN(len(model) - off + 1)
				x, y := b.Peek(off, n)
				if got := append(append([]byte{}, x...), y...); !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("seed %d: Peek(%d,%d) mismatch", seed, off, n)
				}
			case 3:
				n := rng.IntN(len(model) + 10)
				b.Discard(n)
				model = model[min(n, len(model)):]
			}
			if b.Len() != len(model) || b.Free() != limit-len(model) {
				t.Fatalf("seed %d: Len %d Free %d, model %d", seed, b.Len(), b.Free(), len(model))
			}
		}
		if len(b.buf) > max(limit, minGrow) {
			t.Fatalf("seed %d: backing array %d exceeds bound %d", seed, len(b.buf), limit)
		}
	}
}

func TestWriteReadNoAlloc(t *testing.T) {
	b := New(1 << 20)
	p := make([]byte, 1500)
	q := make([]byte, 1500)
	b.Write(make([]byte, 1<<20-1000)) // grow once
	b.Discard(1 << 20)
	if n := testing.AllocsPerRun(1000, func() { b.Write(p); b.Read(q) }); n != 0 {
		t.Fatalf("%v allocations per write/read", n)
	}
}
