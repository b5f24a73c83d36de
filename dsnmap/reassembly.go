package dsnmap

import (
	"errors"
)

// ErrDataAfterFIN: data placed beyond the peer's DATA_FIN, or a second
// DATA_FIN at a different place, or a DATA_FIN below data already received
// (a protocol violation, RFC 8684 §3.3.3).
var ErrDataAfterFIN = errors.New("dsnmap: data beyond DATA_FIN")

// ErrBeyondWindow: data placed further beyond the advertised window than
// any rounding of it explains: the peer ignores the window.
var ErrBeyondWindow = errors.New("dsnmap: data far beyond the receive window")

// ErrTooManyRanges: an out-of-order piece would need a run of its own and
// the Reassembler already holds MaxOutOfOrderRanges runs. The piece is
// dropped and counted (ReassemblyStats.RangesRefused). This is not a
// protocol violation: the bytes are not acknowledged at data level (the
// Data ACK does not cover them), so the peer still has them and sends them
// again (RFC 8684 §3.3.6); the caller counts the drop and carries on.
var ErrTooManyRanges = errors.New("dsnmap: too many out-of-order ranges")

// MaxOutOfOrderRanges bounds the disjoint runs of out-of-order bytes a
// Reassembler holds: enough for the holes of a connection with many
// subflows, each with its own losses and the others' data interleaved
// (the subflow TCP receiver keeps 32 per subflow), and small enough that a
// peer mapping one byte per segment costs a bounded amount per piece.
const MaxOutOfOrderRanges = 512

// minSlack is the least overshoot of the window a Reassembler tolerates.
const minSlack = 64 << 10

// minRing is the smallest ring a Reassembler allocates.
const minRing = 64 << 10

// Reassembler is the connection-level receive buffer (RFC 8684 §3.3.4):
// it takes pieces from every subflow, in any order, and yields the byte
// stream in data-sequence order. Its capacity is the connection's receive
// buffer; the receive window it advertises is relative to the next expected
// DSN, which is also the cumulative Data ACK.
//
// Bytes live in one ring indexed by their offset in data-sequence space: a
// piece is copied once, straight to its place, whether it arrives in order
// or not, and Read copies it out once. Out-of-order bytes are tracked as at
// most MaxOutOfOrderRanges runs (a piece that would need one more is
// refused with ErrTooManyRanges). Bytes already received are dropped, the
// first copy winning (§3.3.1: the first data received for a DSN is the data
// delivered). Nothing is allocated per piece: the ring is allocated when
// the first bytes arrive, grows by doubling to what the data needs, and is
// bounded by the limit plus the slack (or, after SetLimit shrank the limit,
// by the edge offered before, until it is read past).
//
// Bytes beyond the window are accepted up to a slack (a quarter of the
// limit, at least 64 KiB) and counted as overshoot: subflows hand over
// payload they have already acknowledged, and the edge they advertised is
// the window rounded up to their window scale (RFC 7323 §2.3) and never
// shrunk (RFC 9293 §3.8.6.2.2), so a little overshoot is legitimate and
// refusing it would lose data for good. The slack is measured from the
// furthest edge ever offered, not from the data it let in, so a peer
// ignoring the window cannot grow the buffer step by step. Beyond it,
// bytes are refused and Insert fails with ErrBeyondWindow, which the
// connection must treat as a protocol violation (reset), never as a silent
// drop. Not safe for concurrent use.
type Reassembler struct {
	start DSN // the DSN of offset 0

	// Offsets from start, unwrapped: readOff <= nxt <= every held byte.
	readOff uint64 // next byte Read returns
	nxt     uint64 // end of the in-order bytes: the Data ACK, DATA_FIN aside
	edge    uint64 // furthest right edge offered: readOff+limit, never lowered

	limit    int
	buf      []byte   // the ring, nil until bytes arrive
	ooo      rangeSet // runs of out-of-order bytes, all beyond nxt
	oooBytes int

	fin     bool // the peer's DATA_FIN position is known
	finOff  uint64
	finDone bool // nxt has reached the DATA_FIN: end of stream

	stats ReassemblyStats
}

// ReassemblyStats counts what happened to inserted bytes.
type ReassemblyStats struct {
	InOrder    uint64 // bytes that extended the in-order stream directly
	OutOfOrder uint64 // bytes queued out of order
	Duplicate  uint64 // bytes already received, dropped
	Overshoot  uint64 // bytes accepted beyond the window, within the slack
	Refused    uint64 // bytes beyond the window and its slack, dropped
	// RangesRefused counts the new bytes of out-of-order pieces refused
	// because they needed a run beyond MaxOutOfOrderRanges (ErrTooManyRanges),
	// and RangesRefusedPieces the pieces.
	RangesRefused       uint64
	RangesRefusedPieces uint64
}

// NewReassembler expects the first byte at start (the peer's IDSN+1) and
// buffers at most limit bytes (plus the slack). No memory is allocated for
// bytes until some arrive.
func NewReassembler(start DSN, limit int) *Reassembler {
	limit = max(limit, 0)
	return &Reassembler{start: start, limit: limit, edge: uint64(limit), ooo: rangeSet{max: MaxOutOfOrderRanges}}
}

// Next is the next DSN expected in order: the cumulative Data ACK to send.
// Once the DATA_FIN is reached it counts the DATA_FIN's DSN too.
func (r *Reassembler) Next() DSN {
	if r.finDone {
		return r.start.Add(r.nxt + 1)
	}
	return r.start.Add(r.nxt)
}

// Window is the receive window to advertise, in bytes from Next.
func (r *Reassembler) Window() int { return max(r.limit-r.Readable(), 0) }

// Readable is the number of in-order bytes waiting to be read.
func (r *Reassembler) Readable() int { return int(r.nxt - r.readOff) }

// OutOfOrder is the number of bytes queued out of order.
func (r *Reassembler) OutOfOrder() int { return r.oooBytes }

// EOF reports whether the DATA_FIN has been reached and every byte before it
// read.
func (r *Reassembler) EOF() bool { return r.finDone && r.readOff == r.nxt }

// FINReceived reports whether the in-order stream has reached the DATA_FIN.
func (r *Reassembler) FINReceived() bool { return r.finDone }

// Stats returns the byte counters.
func (r *Reassembler) Stats() ReassemblyStats { return r.stats }

// slack is how far beyond the edge bytes are still accepted.
func (r *Reassembler) slack() uint64 { return uint64(max(r.limit/4, minSlack)) }

// bound is the most ring the Reassembler may need: the bytes from readOff
// up to the edge offered, and the slack.
func (r *Reassembler) bound() uint64 { return max(uint64(r.limit), r.edge-r.readOff) + r.slack() }

// SetLimit changes the buffer capacity (receive-buffer auto-tuning). It may
// grow or shrink; bytes already held are kept, and the right edge already
// offered stays acceptable (a window is never taken back, RFC 9293
// §3.8.6.2.2). A shrunk ring is released once it holds nothing.
func (r *Reassembler) SetLimit(n int) {
	r.limit = max(n, 0)
	r.edge = max(r.edge, r.readOff+uint64(r.limit))
	r.releaseIfIdle()
}

// releaseIfIdle drops a ring larger than the bound that holds nothing, so
// that memory follows a shrunk limit.
func (r *Reassembler) releaseIfIdle() {
	if r.buf != nil && uint64(len(r.buf)) > r.bound() && r.readOff == r.nxt && r.ooo.empty() {
		r.buf = nil
	}
}

// Insert places a piece. A DATA_FIN flag marks DSN+len(Data) as the end of
// the stream. It returns the number of bytes newly accepted.
//
// Errors: ErrDataAfterFIN for data beyond the DATA_FIN or a DATA_FIN moved
// (nothing is placed); ErrBeyondWindow when bytes lie beyond the window and
// its slack (those bytes are dropped, the rest placed); ErrTooManyRanges
// when the piece needed an out-of-order run beyond MaxOutOfOrderRanges
// (nothing is placed; a counted drop, see ErrTooManyRanges). The first two
// are protocol violations.
func (r *Reassembler) Insert(p Piece) (int, error) {
	end := p.DSN.Add(uint64(len(p.Data)))
	if p.DataFIN {
		if err := r.SetFIN(end); err != nil {
			return 0, err
		}
	}
	if r.fin && r.start.Add(r.finOff).LessThan(end) {
		return 0, ErrDataAfterFIN
	}
	data := p.Data
	if len(data) == 0 {
		return 0, nil // a DATA_FIN alone, or nothing
	}
	// Where the piece starts relative to the in-order end. A piece from
	// before it (half the DSN space or less) is a duplicate.
	rel := int64(p.DSN - r.start.Add(r.nxt))
	if rel < 0 {
		skip := uint64(-rel)
		if skip >= uint64(len(data)) {
			r.stats.Duplicate += uint64(len(data))
			return 0, nil
		}
		r.stats.Duplicate += skip
		data, rel = data[skip:], 0
	}
	off := r.nxt + uint64(rel)
	right := r.edge + r.slack()
	if off >= right {
		r.stats.Refused += uint64(len(data))
		return 0, ErrBeyondWindow
	}
	var refused error
	if room := right - off; uint64(len(data)) > room {
		r.stats.Refused += uint64(len(data)) - room
		data = data[:room]
		refused = ErrBeyondWindow
	}
	if len(data) == 0 {
		return 0, refused
	}
	n, err := r.store(off, data)
	if err != nil {
		if refused != nil {
			return 0, refused // the violation takes precedence
		}
		return 0, err
	}
	if e := off + uint64(len(data)); e > r.edge {
		r.stats.Overshoot += e - max(off, r.edge)
	}
	r.advanceFIN()
	return n, refused
}

// store copies data, at offset off >= nxt and within the bound, into the
// ring where no byte is held yet, and records it as in order or out of
// order. It returns the bytes newly stored.
func (r *Reassembler) store(off uint64, data []byte) (int, error) {
	end := off + uint64(len(data))
	if off > r.nxt && !r.ooo.canAdd(off, end) {
		fresh := uint64(len(data)) - r.ooo.covered(off, end)
		if fresh == 0 {
			r.stats.Duplicate += uint64(len(data))
			return 0, nil
		}
		r.stats.RangesRefused += fresh
		r.stats.RangesRefusedPieces++
		return 0, ErrTooManyRanges
	}
	r.reserve(end)
	n := 0
	r.ooo.gaps(off, end, func(a, b uint64) {
		r.copyIn(a, data[a-off:b-off])
		n += int(b - a)
	})
	r.stats.Duplicate += uint64(len(data) - n)
	if off > r.nxt {
		r.ooo.add(off, end)
		r.oooBytes += n
		r.stats.OutOfOrder += uint64(n)
		return n, nil
	}
	r.nxt = end
	r.stats.InOrder += uint64(n)
	// Runs the piece reached, or that now continue it, join the stream.
	for !r.ooo.empty() && r.ooo.first().start <= r.nxt {
		sp := r.ooo.first()
		r.oooBytes -= int(sp.end - sp.start)
		r.nxt = max(r.nxt, sp.end)
		r.ooo.dropFirst()
	}
	return n, nil
}

// reserve makes the ring hold offsets up to end (exclusive), growing it by
// doubling within the bound and moving the bytes it holds.
func (r *Reassembler) reserve(end uint64) {
	need := end - r.readOff
	if uint64(len(r.buf)) >= need {
		return
	}
	size := max(uint64(len(r.buf))*2, minRing)
	for size < need {
		size *= 2
	}
	size = max(min(size, r.bound()), need)
	old := r.buf
	r.buf = make([]byte, size)
	if old == nil {
		return
	}
	moveRing(old, r.buf, r.readOff, r.nxt)
	for _, sp := range r.ooo.s {
		moveRing(old, r.buf, sp.start, sp.end)
	}
}

// copyIn writes p at offset off of the ring.
func (r *Reassembler) copyIn(off uint64, p []byte) {
	i := off % uint64(len(r.buf))
	k := copy(r.buf[i:], p)
	copy(r.buf, p[k:])
}

// moveRing copies the bytes at offsets [from, to) from ring old to ring nb,
// each indexed by offset modulo its length.
func moveRing(old, nb []byte, from, to uint64) {
	ol, nl := uint64(len(old)), uint64(len(nb))
	for off := from; off < to; {
		i, j := off%ol, off%nl
		run := min(ol-i, nl-j, to-off)
		copy(nb[j:j+run], old[i:i+run])
		off += run
	}
}

// SetFIN records that the peer's DATA_FIN occupies dsn (RFC 8684 §3.3.3).
// Reporting the same position again, from a bare DATA_FIN or from a
// mapping's piece, in any order, is fine. ErrDataAfterFIN reports a
// different position than a known one, or a DATA_FIN below data already
// received in order or queued out of order.
func (r *Reassembler) SetFIN(dsn DSN) error {
	if r.fin {
		if r.start.Add(r.finOff) != dsn {
			return ErrDataAfterFIN
		}
		return nil
	}
	rel := int64(dsn - r.start.Add(r.nxt))
	if rel < 0 {
		return ErrDataAfterFIN
	}
	off := r.nxt + uint64(rel)
	if !r.ooo.empty() && r.ooo.last().end > off {
		return ErrDataAfterFIN
	}
	r.fin, r.finOff = true, off
	r.advanceFIN()
	return nil
}

func (r *Reassembler) advanceFIN() {
	if r.fin && !r.finDone && r.nxt == r.finOff {
		r.finDone = true
	}
}

// Read copies in-order bytes into p and returns how many.
func (r *Reassembler) Read(p []byte) int {
	n := int(min(uint64(len(p)), r.nxt-r.readOff))
	if n == 0 {
		return 0
	}
	i := int(r.readOff % uint64(len(r.buf)))
	k := copy(p[:n], r.buf[i:])
	copy(p[k:n], r.buf)
	r.readOff += uint64(n)
	r.edge = max(r.edge, r.readOff+uint64(r.limit))
	r.releaseIfIdle()
	return n
}
