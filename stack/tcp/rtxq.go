package tcp

import "gvisor.dev/gvisor/pkg/tcpip"

// The retransmission queue is the sender's scoreboard: one record per
// segment sent and not yet cumulatively acknowledged, in sequence order,
// with its last transmission time and what is known of it (SACKed, deemed
// lost, sent again). RACK (RFC 8985) needs the transmission time of every
// segment; loss marking, D-SACK accounting (RFC 2883) and undo (RFC 3522)
// need to know which segments were sent more than once. It is Linux's
// retransmission queue with its TCPCB_* marks, without the packets: the
// bytes stay in the send buffer.
//
// Records never overlap and cover [SND.UNA, SND.NXT) exactly (our FIN
// counts as one byte of the record that carries it). A record is what went
// out as one segment, or one segment's worth of a TSO super-segment; it is
// split when only part of it is SACKed, acknowledged or can be sent again.

// Record flags.
const (
	// segSACKed: the peer reported the record in a SACK block (RFC 2018).
	segSACKed uint8 = 1 << iota
	// segLost: deemed lost (RACK, NewReno, RTO) or sent beyond a retreated
	// right edge: to be sent again.
	segLost
	// segRetrans: sent again since it was marked lost, so in flight again
	// (Linux's TCPCB_SACKED_RETRANS).
	segRetrans
	// segEverRetrans: sent more than once (Linux's TCPCB_EVER_RETRANS).
	segEverRetrans
	// segBeyond: marked lost because it was sent beyond a right edge that
	// retreated (see retreat), not because of congestion.
	segBeyond
)

// txSeg is one record of the retransmission queue.
type txSeg struct {
	start, end uint64              // send offsets [start, end)
	xmit       tcpip.MonotonicTime // last transmission
	first      tcpip.MonotonicTime // first transmission
	flags      uint8
	// skip, for a SACKed record, is a number of records from this one on
	// known to be SACKed (at least 1): scans jump over SACKed runs. Zero
	// when unknown.
	skip uint32
	// Delivery rate estimation (rate.go), at the last transmission: bytes
	// delivered, when they last grew, the start of the send interval, and
	// whether the sender was application-limited.
	appLimited  bool
	delivered   uint64
	deliveredAt tcpip.MonotonicTime
	firstSentAt tcpip.MonotonicTime
}

func (s *txSeg) size() uint64 { return s.end - s.start }

// inFlight reports whether a record with flags f counts in the pipe
// (RFC 6675 §4 SetPipe; Linux's packets_out - sacked_out - lost_out +
// retrans_out): not SACKed, and not lost unless sent again since.
func inFlight(f uint8) bool {
	return f&segSACKed == 0 && (f&segLost == 0 || f&segRetrans != 0)
}

// lostUnsent reports whether a record with flags f waits to be sent again.
func lostUnsent(f uint8) bool {
	return f&(segSACKed|segLost|segRetrans) == segLost
}

// rtxQueue is the deque of records with byte counters kept as flags change,
// so that the pipe is known without a walk. It is bounded by the send
// buffer: each record holds at least one byte of it.
type rtxQueue struct {
	s    []txSeg
	head int

	sacked     uint64 // bytes SACKed
	sackedSegs int    // records SACKed
	inflight   uint64 // bytes in flight (inFlight)
	lost       uint64 // bytes lost and not sent again (lostUnsent)
	retransN   int    // records sent again and still in flight (segRetrans)
}

func (q *rtxQueue) live() []txSeg { return q.s[q.head:] }
func (q *rtxQueue) n() int        { return len(q.s) - q.head }
func (q *rtxQueue) at(i int) *txSeg {
	return &q.s[q.head+i]
}

// last returns the most recent record, or nil.
func (q *rtxQueue) last() *txSeg {
	if q.n() == 0 {
		return nil
	}
	return &q.s[len(q.s)-1]
}

// push appends a record for bytes [start, end) sent at now.
func (q *rtxQueue) push(start, end uint64, now tcpip.MonotonicTime) {
	if q.head > 0 && len(q.s) == cap(q.s) && q.head >= len(q.s)/2 {
		k := copy(q.s, q.s[q.head:])
		clear(q.s[k:])
		q.s = q.s[:k]
		q.head = 0
	}
	q.s = append(q.s, txSeg{start: start, end: end, xmit: now, first: now})
	q.inflight += end - start
}

// count adds (sign 1) or removes (sign -1) a record's bytes from the
// counters its flags put it in.
func (q *rtxQueue) count(r *txSeg, sign int) {
	n := r.size()
	add := func(c *uint64) {
		if sign > 0 {
			*c += n
		} else {
			*c -= n
		}
	}
	f := r.flags
	if f&segSACKed != 0 {
		add(&q.sacked)
		q.sackedSegs += sign
	}
	if inFlight(f) {
		add(&q.inflight)
	}
	if lostUnsent(f) {
		add(&q.lost)
	}
	if f&segRetrans != 0 && f&segSACKed == 0 {
		q.retransN += sign
	}
}

// setFlags changes record i's flags, keeping the counters.
func (q *rtxQueue) setFlags(i int, f uint8) {
	r := q.at(i)
	if r.flags == f {
		return
	}
	q.count(r, -1)
	r.flags = f
	q.count(r, 1)
}

// search returns the index of the first record whose end is above off
// (the record holding off, if any), or n().
func (q *rtxQueue) search(off uint64) int {
	l := q.live()
	lo, hi := 0, len(l)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l[m].end <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// split cuts record i at offset at (start < at < end) into two records
// with the same flags and transmission time; the counters do not change.
// Splits are rare (partial SACKs and acknowledgments, a smaller MSS, a
// right edge or chunk boundary inside a record) and cost a copy of the
// records above.
func (q *rtxQueue) split(i int, at uint64) {
	r := *q.at(i)
	if at <= r.start || at >= r.end {
		return
	}
	j := q.head + i
	q.s = append(q.s, txSeg{})
	copy(q.s[j+2:], q.s[j+1:])
	q.s[j].end = at
	q.s[j+1] = r
	q.s[j+1].start, q.s[j+1].skip = at, 0
	// SACKed-run hints may now span a record that is not SACKed.
	for k := q.head; k < len(q.s); k++ {
		q.s[k].skip = 0
	}
}

// popTo removes the records below off, cutting the one that holds it, and
// calls fn with each removed record (or removed part) before it goes.
func (q *rtxQueue) popTo(off uint64, fn func(r *txSeg)) {
	for q.n() > 0 {
		r := q.at(0)
		if r.start >= off {
			return
		}
		if r.end > off {
			part := *r
			part.end = off
			q.count(r, -1)
			fn(&part)
			r.start = off
			r.skip = 0
			q.count(r, 1)
			return
		}
		fn(r)
		q.count(r, -1)
		q.s[q.head] = txSeg{}
		q.head++
	}
	q.s, q.head = q.s[:0], 0
}

// nextUnSACKed returns the index of the first record at or after i that is
// not SACKed (or n()), jumping over SACKed runs and remembering them.
func (q *rtxQueue) nextUnSACKed(i int) int {
	n := q.n()
	start := i
	for i < n {
		r := q.at(i)
		if r.flags&segSACKed == 0 {
			break
		}
		if r.skip > 0 {
			i += int(r.skip)
		} else {
			i++
		}
	}
	if i > n {
		i = n
	}
	if i-start > 1 {
		q.at(start).skip = uint32(i - start)
	}
	return i
}

// reset forgets every record (the connection closed).
func (q *rtxQueue) reset() {
	*q = rtxQueue{s: q.s[:0]}
}
