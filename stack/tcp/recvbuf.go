package tcp

// recvBuffer is the receive side's byte store: a ring indexed by sequence
// offset (relative to the IRS, first data byte 1). In-order bytes wait there
// for Read; out-of-order bytes are written straight to their final place and
// tracked in ooo, so reassembly never copies twice and never allocates
// (RFC 9293 §3.10.7.4 "segment text" processing; the SACK blocks of
// RFC 2018 come from ooo).
type recvBuffer struct {
	buf     []byte
	readOff uint64 // next offset Read returns
	nxt     uint64 // RCV.NXT as an offset: end of the contiguous data
	ooo     rangeSet
}

func (r *recvBuffer) init(size int) {
	r.buf = make([]byte, size)
	r.readOff, r.nxt = 1, 1
	r.ooo = newRangeSet(maxOOORanges)
}

// readable is the number of in-order bytes not yet read.
func (r *recvBuffer) readable() int { return int(r.nxt - r.readOff) }

// limit is the first offset that does not fit in the buffer.
func (r *recvBuffer) limit() uint64 { return r.readOff + uint64(len(r.buf)) }

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
	n := uint64(len(r.buf))
	i := off % n
	k := copy(r.buf[i:], p)
	copy(r.buf, p[k:])
}

// peek returns up to two slices holding the readable bytes starting at
// readOff, at most max bytes.
func (r *recvBuffer) peek(max int) (a, b []byte) {
	n := min(r.readable(), max)
	if n == 0 {
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

// grow enlarges the ring to size bytes, preserving its contents (receive
// buffer auto-tuning). Out-of-order bytes are kept: every offset in
// [readOff, limit) is copied.
func (r *recvBuffer) grow(size int) {
	if size <= len(r.buf) {
		return
	}
	nb := make([]byte, size)
	old := uint64(len(r.buf))
	for off := r.readOff; off < r.readOff+old; {
		i := off % old
		run := min(old-i, r.readOff+old-off)
		j := off % uint64(size)
		// Copy run bytes from old[i:] to nb at j, wrapping in nb.
		src := r.buf[i : i+run]
		k := copy(nb[j:], src)
		copy(nb, src[k:])
		off += run
	}
	r.buf = nb
}
