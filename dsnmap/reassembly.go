package dsnmap

import (
	"errors"
	"math"

	"github.com/mptund/mptund/internal/ring"
)

// ErrDataAfterFIN: data placed beyond the peer's DATA_FIN, or a second
// DATA_FIN at a different place (a protocol violation).
var ErrDataAfterFIN = errors.New("dsnmap: data beyond DATA_FIN")

// ErrBeyondWindow: data placed further beyond the advertised window than
// any rounding of it explains: the peer ignores the window.
var ErrBeyondWindow = errors.New("dsnmap: data far beyond the receive window")

// minSlack is the least overshoot of the window a Reassembler tolerates.
const minSlack = 64 << 10

// Reassembler is the connection-level receive buffer (RFC 8684 §3.3.4):
// it takes pieces from every subflow, in any order, and yields the byte
// stream in data-sequence order. Its capacity is the connection's receive
// buffer; the receive window it advertises is relative to the next expected
// DSN, which is also the cumulative Data ACK.
//
// Pieces are copied in. Duplicate and overlapping bytes are dropped.
//
// Bytes beyond the window are accepted up to a slack (a quarter of the
// limit, at least 64 KiB) and counted as overshoot: subflows hand over
// payload they have already acknowledged, and the edge they advertised is
// the window rounded up to their window scale (RFC 7323 §2.3) and never
// shrunk (RFC 9293 §3.8.6.2.2), so a little overshoot is legitimate and
// refusing it would lose data for good. Beyond the slack, bytes are refused
// and Insert fails with ErrBeyondWindow, which the connection must treat as
// a protocol violation (reset), never as a silent drop. Not safe for
// concurrent use.
type Reassembler struct {
	next  DSN // next DSN expected: the Data ACK
	limit int // bytes buffered at most (ready + out of order)

	ready      *ring.Buffer // in order, not yet read
	readyBytes int

	ooo      []oooSeg // sorted by DSN, non-overlapping, none adjacent to next
	oooBytes int

	fin     bool // the peer's DATA_FIN position is known
	finDSN  DSN
	finDone bool // next has passed the DATA_FIN: end of stream

	stats ReassemblyStats
}

// ReassemblyStats counts what happened to inserted bytes.
type ReassemblyStats struct {
	InOrder    uint64 // bytes that extended the in-order stream directly
	OutOfOrder uint64 // bytes queued out of order
	Duplicate  uint64 // bytes already received, dropped
	Overshoot  uint64 // bytes accepted beyond the window, within the slack
	Refused    uint64 // bytes beyond the window and its slack, dropped
}

type oooSeg struct {
	dsn  DSN
	data []byte
}

func (s oooSeg) end() DSN { return s.dsn.Add(uint64(len(s.data))) }

// NewReassembler expects the first byte at start (the peer's IDSN+1) and
// buffers at most limit bytes.
func NewReassembler(start DSN, limit int) *Reassembler {
	// The ring is not bounded by limit: the window accounting is (the
	// in-order bytes never exceed it), and SetLimit may move it.
	return &Reassembler{next: start, limit: limit, ready: ring.New(math.MaxInt)}
}

// Next is the next DSN expected in order: the cumulative Data ACK to send.
func (r *Reassembler) Next() DSN { return r.next }

// Window is the receive window to advertise, in bytes from Next.
func (r *Reassembler) Window() int {
	w := r.limit - r.readyBytes
	if w < 0 {
		return 0
	}
	return w
}

// Readable is the number of in-order bytes waiting to be read.
func (r *Reassembler) Readable() int { return r.readyBytes }

// OutOfOrder is the number of bytes queued out of order.
func (r *Reassembler) OutOfOrder() int { return r.oooBytes }

// EOF reports whether the DATA_FIN has been reached and every byte before it
// read.
func (r *Reassembler) EOF() bool { return r.finDone && r.readyBytes == 0 }

// FINReceived reports whether the in-order stream has reached the DATA_FIN.
func (r *Reassembler) FINReceived() bool { return r.finDone }

// Stats returns the byte counters.
func (r *Reassembler) Stats() ReassemblyStats { return r.stats }

// SetLimit changes the buffer capacity (receive-buffer auto-tuning).
func (r *Reassembler) SetLimit(n int) { r.limit = n }

// Insert places a piece. A DATA_FIN flag marks DSN+len(Data) as the end of
// the stream. It returns the number of bytes newly accepted.
func (r *Reassembler) Insert(p Piece) (int, error) {
	end := p.DSN.Add(uint64(len(p.Data)))
	if p.DataFIN {
		if err := r.SetFIN(end); err != nil {
			return 0, err
		}
	}
	if r.fin && r.finDSN.LessThan(end) {
		return 0, ErrDataAfterFIN
	}
	data, dsn := p.Data, p.DSN
	// Trim what was already received.
	if dsn.LessThan(r.next) {
		skip := dsn.Size(r.next)
		if skip >= uint64(len(data)) {
			r.stats.Duplicate += uint64(len(data))
			r.advanceFIN()
			return 0, nil
		}
		r.stats.Duplicate += skip
		data, dsn = data[skip:], r.next
	}
	// Count what lies beyond the window; refuse what lies beyond the
	// slack too.
	var refused error
	edge := r.next.Add(uint64(r.Window()))
	right := edge.Add(uint64(max(r.limit/4, minSlack)))
	if !dsn.LessThan(right) {
		r.stats.Refused += uint64(len(data))
		return 0, ErrBeyondWindow
	}
	if room := dsn.Size(right); uint64(len(data)) > room {
		r.stats.Refused += uint64(len(data)) - room
		data = data[:room]
		refused = ErrBeyondWindow
	}
	if end := dsn.Add(uint64(len(data))); edge.LessThan(end) {
		from := dsn
		if from.LessThan(edge) {
			from = edge
		}
		r.stats.Overshoot += from.Size(end)
	}
	var n int
	if dsn == r.next && len(r.ooo) == 0 {
		n = r.appendReady(data)
		r.stats.InOrder += uint64(n)
	} else if dsn == r.next {
		// Queue it with the out-of-order segments so overlap with them
		// is trimmed once, then move the now-contiguous run to ready.
		n = r.insertOOO(dsn, data)
		r.stats.InOrder += uint64(n)
		r.drainOOO()
	} else {
		n = r.insertOOO(dsn, data)
		r.stats.OutOfOrder += uint64(n)
	}
	r.advanceFIN()
	return n, refused
}

// SetFIN records that the peer's DATA_FIN occupies dsn.
func (r *Reassembler) SetFIN(dsn DSN) error {
	if r.fin {
		if r.finDSN != dsn {
			return ErrDataAfterFIN
		}
		return nil
	}
	if dsn.LessThan(r.next) || (len(r.ooo) > 0 && dsn.LessThan(r.ooo[len(r.ooo)-1].end())) {
		return ErrDataAfterFIN
	}
	r.fin, r.finDSN = true, dsn
	r.advanceFIN()
	return nil
}

func (r *Reassembler) advanceFIN() {
	if r.fin && !r.finDone && r.next == r.finDSN {
		r.finDone = true
		r.next = r.next.Add(1) // the DATA_FIN takes one DSN
	}
}

// appendReady copies data onto the in-order queue and advances next.
func (r *Reassembler) appendReady(data []byte) int {
	if len(data) == 0 {
		return 0
	}
	n := r.ready.Write(data)
	r.readyBytes += n
	r.next = r.next.Add(uint64(n))
	return n
}

// insertOOO queues data at dsn (> next), dropping overlap with queued
// segments, and returns the bytes newly queued.
func (r *Reassembler) insertOOO(dsn DSN, data []byte) int {
	added := 0
	i := 0
	for len(data) > 0 {
		for i < len(r.ooo) && !dsn.LessThan(r.ooo[i].end()) {
			i++
		}
		if i < len(r.ooo) && !dsn.LessThan(r.ooo[i].dsn) {
			// dsn lies inside segment i: skip the overlap.
			skip := dsn.Size(r.ooo[i].end())
			if skip >= uint64(len(data)) {
				r.stats.Duplicate += uint64(len(data))
				return added
			}
			r.stats.Duplicate += skip
			data, dsn = data[skip:], r.ooo[i].end()
			continue
		}
		// dsn falls in the gap before segment i (or after all).
		n := uint64(len(data))
		if i < len(r.ooo) {
			if gap := dsn.Size(r.ooo[i].dsn); gap < n {
				n = gap
			}
		}
		buf := make([]byte, n)
		copy(buf, data[:n])
		r.ooo = append(r.ooo, oooSeg{})
		copy(r.ooo[i+1:], r.ooo[i:])
		r.ooo[i] = oooSeg{dsn: dsn, data: buf}
		r.oooBytes += int(n)
		added += int(n)
		data, dsn = data[n:], dsn.Add(n)
		i++
	}
	return added
}

// drainOOO moves queued segments that now continue the stream to ready.
func (r *Reassembler) drainOOO() {
	k := 0
	for k < len(r.ooo) && r.ooo[k].dsn == r.next {
		s := r.ooo[k]
		r.appendReady(s.data)
		r.oooBytes -= len(s.data)
		k++
	}
	if k > 0 {
		r.ooo = append(r.ooo[:0], r.ooo[k:]...)
	}
}

// Read copies in-order bytes into p and returns how many.
func (r *Reassembler) Read(p []byte) int {
	n := r.ready.Read(p)
	r.readyBytes -= n
	return n
}
