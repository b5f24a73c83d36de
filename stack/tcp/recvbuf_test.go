package tcp

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
)

// TestRecvBufferHold: in-order segments are held by reference unless
// out-of-order data waits beyond them; held views and ring bytes
// interleave, and reads return them in sequence order; held references
// end with the read.
func TestRecvBufferHold(t *testing.T) {
	var r recvBuffer
	r.init(64 << 10)
	pat := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	var want []byte
	a := buffer.NewViewWithData(pat(3000, 1))
	if !r.holdable(1, 3000, a) {
		t.Fatal("in-order segment into an empty buffer not holdable")
	}
	r.hold(a)
	a.Release() // the packet goes away; the held reference stays
	want = append(want, pat(3000, 1)...)
	if r.nxt != 3001 || r.heldBytes != 3000 || r.readable() != 3000 || r.ringBytes() != 0 {
		t.Fatalf("after hold: nxt %d held %d readable %d ring %d", r.nxt, r.heldBytes, r.readable(), r.ringBytes())
	}

	// Out of order: into the ring; the hole then filled by copy.
	if r.holdable(4001, 1000, buffer.NewViewWithData(pat(1000, 2))) {
		t.Fatal("out-of-order segment holdable")
	}
	r.store(4001, pat(1000, 3))
	if r.holdable(3001, 1000, buffer.NewViewWithData(pat(1000, 4))) {
		t.Fatal("segment holdable while out-of-order data waits")
	}
	if adv, _ := r.store(3001, pat(1000, 4)); adv != 2000 {
		t.Fatalf("hole fill advanced %d", adv)
	}
	want = append(want, pat(1000, 4)...)
	want = append(want, pat(1000, 3)...)
	c := buffer.NewViewWithData(pat(500, 5))
	if !r.holdable(5001, 500, c) {
		t.Fatal("in-order segment not holdable after ring data")
	}
	r.hold(c)
	c.Release()
	want = append(want, pat(500, 5)...)
	if r.ringBytes() != 2000 || r.heldBytes != 3500 {
		t.Fatalf("ring %d held %d", r.ringBytes(), r.heldBytes)
	}

	got := make([]byte, 0, len(want))
	p := make([]byte, 1700) // reads straddle the held view and the ring
	for r.readable() > 0 {
		n := r.read(p)
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d in order", len(got), len(want))
	}
	if len(r.held) != 0 || r.heldBytes != 0 || r.heldCap != 0 {
		t.Fatalf("%d held views (%d bytes, %d pinned) left after reading everything", len(r.held), r.heldBytes, r.heldCap)
	}

	// Empty again: holdable, unless the view is mostly slack or the
	// segment overruns the window.
	// Pinned memory is bounded by twice the buffer: 100 bytes in a 64
	// KiB chunk twice, not three times.
	for i := range 3 {
		big := buffer.NewViewSize(buffer.MaxChunkSize)
		big.CapLength(100)
		if ok := r.holdable(r.nxt, 100, big); ok != (i < 2) {
			t.Fatalf("small segment in a large chunk %d: holdable %v", i, ok)
		}
		if i < 2 {
			r.hold(big)
		}
		big.Release()
	}
	r.releaseHeld()
	if len(r.held) != 0 || r.readable() != 0 || r.heldCap != 0 {
		t.Fatalf("releaseHeld left %d views, %d readable bytes", len(r.held), r.readable())
	}

	// The window bounds what is held, and so does maxHeld.
	var w recvBuffer
	w.init(8192)
	w.hold(buffer.NewViewWithData(pat(8000, 8)))
	if w.holdable(w.nxt, 500, buffer.NewViewWithData(pat(500, 9))) {
		t.Fatal("segment beyond the window holdable")
	}
	var m recvBuffer
	m.init(1 << 20)
	for range maxHeld {
		m.hold(buffer.NewViewWithData(pat(10, 10)))
	}
	if m.holdable(m.nxt, 10, buffer.NewViewWithData(pat(10, 11))) {
		t.Fatalf("held view %d accepted", maxHeld+1)
	}
	m.releaseHeld()
}

// TestRecvBufferGrow: growing keeps the ring's unread in-order bytes and
// its out-of-order bytes (also where they wrap around the old ring), and
// drops a ring that keeps nothing, to allocate it at the new size later.
func TestRecvBufferGrow(t *testing.T) {
	var r recvBuffer
	r.init(1000)
	stream := make([]byte, 5000)
	for i := range stream {
		stream[i] = byte(i*13 + i/256)
	}
	seg := func(from, to uint64) []byte { return stream[from-1 : to-1] }
	// Advance to offset 801 so that later data wraps the 1000-byte ring.
	r.store(1, seg(1, 801))
	p := make([]byte, 800)
	r.read(p)
	r.store(801, seg(801, 1301))   // in order, wraps, unread
	r.store(1401, seg(1401, 1601)) // out of order, beyond the wrap
	r.grow(4000)
	if r.size != 4000 || len(r.buf) != 4000 {
		t.Fatalf("size %d ring %d after grow", r.size, len(r.buf))
	}
	if adv, _ := r.store(1301, seg(1301, 1401)); adv != 300 {
		t.Fatalf("hole fill advanced %d", adv)
	}
	got := make([]byte, 800)
	n := r.read(got)
	if !bytes.Equal(got[:n], seg(801, 1601)) {
		t.Fatalf("read %d bytes, not offsets 801-1600", n)
	}

	// Nothing left in the ring: growing drops it.
	r.grow(8000)
	if r.buf != nil || r.size != 8000 || r.limit() != r.readOff+8000 {
		t.Fatalf("empty ring kept (%d bytes), size %d", len(r.buf), r.size)
	}
	r.store(1601, seg(1601, 2601))
	if n := r.read(got); !bytes.Equal(got[:n], seg(1601, 1601+uint64(n))) || len(r.buf) != 8000 {
		t.Fatalf("after reallocation: read %d bytes, ring %d", n, len(r.buf))
	}
}
