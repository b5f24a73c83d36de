package tcp

import "gvisor.dev/gvisor/pkg/buffer"

// recvBuffer is the receive side's byte store: a ring indexed by sequence
// offset (relative to the IRS, first data byte 1). In-order bytes wait there
// for Read; out-of-order bytes are written straight to their final place and
// tracked in ooo, so reassembly never copies twice and never allocates
// (RFC 9293 §3.10.7.4 "segment text" processing; the SACK blocks of
// RFC 2018 come from ooo).
//
// In-order segments may instead be kept in their own memory (held:
// references to the packets' views, see Segment.PayloadView), so that
// their bytes are copied once, by Read, rather than into the ring and out
// again. Held segments and ring bytes interleave in sequence order: a held
// view covers [off, off+Size()), the ring every other unread offset, and
// Read takes from whichever holds readOff. Either way the bytes count
// against the same window.
type recvBuffer struct {
	// size is the buffer's capacity, what the window may cover. The ring
	// buf has that length once allocated; it is allocated when something
	// has to be copied into it, so that a receiver whose data is all held
	// never allocates one.
	size    int
	buf     []byte
	readOff uint64 // next offset Read returns
	nxt     uint64 // RCV.NXT as an offset: end of the contiguous data
	ooo     rangeSet

	held      []heldView // in offset order
	heldHead  int        // index of the first live held view
	heldBytes int        // bytes in the live held views
	heldCap   int        // memory they pin: their chunks' capacity
}

// heldView is in-order data kept by reference.
type heldView struct {
	v   *buffer.View
	off uint64 // offset of v's first byte
	cap int    // v's capacity when held
}

// maxHeld bounds the held views; beyond it segments are copied.
const maxHeld = 1024

// holdable reports whether in-order data of n bytes at off, whose packet
// memory is v, may be held rather than copied: it is the next in-order
// data with nothing out of order beyond, it fits the window whole, and the
// memory pinned by held views stays within twice the buffer size (a view
// pins its whole chunk, and a small segment may sit in a large one).
func (r *recvBuffer) holdable(off uint64, n int, v *buffer.View) bool {
	return v != nil && n > 0 && off == r.nxt && r.ooo.empty() &&
		off+uint64(n) <= r.limit() && len(r.held)-r.heldHead < maxHeld &&
		v.Size() == n && r.heldCap+v.Capacity() <= 2*r.size
}

// hold keeps a reference to v, in-order data at RCV.NXT (see holdable).
func (r *recvBuffer) hold(v *buffer.View) {
	if r.heldHead > 0 && len(r.held) == cap(r.held) {
		k := copy(r.held, r.held[r.heldHead:])
		clear(r.held[k:])
		r.held, r.heldHead = r.held[:k], 0
	}
	h := heldView{v: v.Clone(), off: r.nxt, cap: v.Capacity()}
	r.held = append(r.held, h)
	r.heldBytes += v.Size()
	r.heldCap += h.cap
	r.nxt += uint64(v.Size())
}

// read copies readable bytes into p, in sequence order from held views
// and the ring, and consumes them.
func (r *recvBuffer) read(p []byte) int {
	n := 0
	for n < len(p) && r.readOff < r.nxt {
		if r.heldHead < len(r.held) && r.held[r.heldHead].off == r.readOff {
			h := &r.held[r.heldHead]
			k := copy(p[n:], h.v.AsSlice())
			n += k
			r.readOff += uint64(k)
			r.heldBytes -= k
			if k < h.v.Size() {
				h.v.TrimFront(k)
				h.off += uint64(k)
				break
			}
			h.v.Release()
			r.heldCap -= h.cap
			*h = heldView{}
			r.heldHead++
			continue
		}
		// Ring bytes up to the next held view.
		end := r.nxt
		if r.heldHead < len(r.held) {
			end = r.held[r.heldHead].off
		}
		a, b := r.peek(int(min(end-r.readOff, uint64(len(p)-n))))
		k := copy(p[n:], a)
		k += copy(p[n+k:], b)
		r.consume(k)
		n += k
	}
	if r.heldHead == len(r.held) {
		r.held, r.heldHead = r.held[:0], 0
	}
	return n
}

// releaseHeld drops the held views and everything unread (nobody will
// read it).
func (r *recvBuffer) releaseHeld() {
	for i := r.heldHead; i < len(r.held); i++ {
		r.held[i].v.Release()
		r.held[i] = heldView{}
	}
	r.held, r.heldHead, r.heldBytes, r.heldCap = r.held[:0], 0, 0, 0
	r.readOff = r.nxt
}

func (r *recvBuffer) init(size int) {
	r.size = size
	r.readOff, r.nxt = 1, 1
	r.ooo = newRangeSet(maxOOORanges)
}

// ring returns the ring, allocating it if need be.
func (r *recvBuffer) ring() []byte {
	if r.buf == nil {
		r.buf = make([]byte, r.size)
	}
	return r.buf
}

// ringBytes is the number of unread in-order bytes kept in the ring.
func (r *recvBuffer) ringBytes() int { return r.readable() - r.heldBytes }

// readable is the number of in-order bytes not yet read.
func (r *recvBuffer) readable() int { return int(r.nxt - r.readOff) }

// limit is the first offset that does not fit in the buffer.
func (r *recvBuffer) limit() uint64 { return r.readOff + uint64(r.size) }

// store copies p (starting at offset off) into the ring, clipped to the
// buffer. It returns the number of bytes newly made contiguous (RCV.NXT
// advance) and whether anything was stored out of order; ok is false when
// the ooo list is full and the data was dropped.
func (r *recvBuffer) store(off uint64, p []byte) (advanced uint64, ok bool) {
	if off < r.nxt {
		skip := r.nxt - off
		if skip >= uint64(len(p)) {
			return 0, true
		}
		p = p[skip:]
		off = r.nxt
	}
	if lim := r.limit(); off+uint64(len(p)) > lim {
		if off >= lim {
			return 0, true
		}
		p = p[:lim-off]
	}
	if len(p) == 0 {
		return 0, true
	}
	end := off + uint64(len(p))
	if off > r.nxt {
		if !r.ooo.add(off, end) {
			return 0, false
		}
	}
	r.copyIn(off, p)
	if off == r.nxt {
		r.nxt = end
		// Absorb out-of-order spans that are now contiguous.
		for !r.ooo.empty() && r.ooo.first().start <= r.nxt {
			r.nxt = max(r.nxt, r.ooo.first().end)
			r.ooo.trimBelow(r.nxt)
		}
		return r.nxt - off, true
	}
	return 0, true
}

func (r *recvBuffer) copyIn(off uint64, p []byte) {
	buf := r.ring()
	i := off % uint64(len(buf))
	k := copy(buf[i:], p)
	copy(buf, p[k:])
}

// peek returns up to two slices holding the readable bytes starting at
// readOff, at most max bytes, from the ring: they must be ring bytes, not
// held ones (read takes care of that; the Receiver path never holds).
func (r *recvBuffer) peek(max int) (a, b []byte) {
	n := min(r.readable(), max)
	if n == 0 || r.buf == nil {
		return nil, nil
	}
	size := uint64(len(r.buf))
	i := int(r.readOff % size)
	if i+n <= len(r.buf) {
		return r.buf[i : i+n], nil
	}
	return r.buf[i:], r.buf[:n-(len(r.buf)-i)]
}

// consume marks n readable bytes as read.
func (r *recvBuffer) consume(n int) { r.readOff += uint64(n) }

// grow enlarges the buffer to size bytes (receive buffer auto-tuning),
// keeping the bytes in the ring: the in-order ones not yet read and the
// out-of-order ones. A ring holding none of them is dropped, to be
// allocated at the new size when next needed.
func (r *recvBuffer) grow(size int) {
	if size <= r.size {
		return
	}
	old := r.buf
	r.size = size
	if old == nil {
		return
	}
	if r.ringBytes() == 0 && r.ooo.empty() {
		r.buf = nil
		return
	}
	r.buf = make([]byte, size)
	// The unread range may mix held and ring bytes; copying the held
	// ranges' stale ring bytes along does no harm.
	moveRing(old, r.buf, r.readOff, r.nxt)
	for _, sp := range r.ooo.spans() {
		moveRing(old, r.buf, sp.start, sp.end)
	}
}

// moveRing copies the bytes of offsets [from, to) from ring old to ring
// nb, each indexed by offset modulo its length.
func moveRing(old, nb []byte, from, to uint64) {
	ol, nl := uint64(len(old)), uint64(len(nb))
	for off := from; off < to; {
		i, j := off%ol, off%nl
		run := min(ol-i, nl-j, to-off)
		copy(nb[j:j+run], old[i:i+run])
		off += run
	}
}
