package dsnmap

import (
	"sort"

	"github.com/mptund/mptund/checksum"
)

// Piece is a run of subflow payload placed in data-sequence space. When
// DataFIN is set, the peer's DATA_FIN occupies the data-sequence number
// right after Data (DSN + len(Data)).
type Piece struct {
	DSN     DSN
	Data    []byte
	DataFIN bool
}

// DefaultRxMapLimit bounds the mappings one subflow may have pending.
const DefaultRxMapLimit = 64

// RxMap is the receive-side mapping table of one subflow (RFC 8684 §3.3.1).
// Mappings arrive on segments, possibly before the bytes they cover (a
// mapping rides on every segment it covers, and segments may be reordered),
// and are kept until every subflow byte they cover has been delivered in
// subflow order through Deliver. With DSS checksums, a mapping's bytes are
// held back until the whole mapping has arrived and its checksum verified
// (§3.3.1: "the checksum ... is only valid once all the data is received").
//
// The zero value is not usable; call NewRxMap. Not safe for concurrent use.
type RxMap struct {
	pending   []Mapping // sorted by SubflowSeq, non-overlapping
	limit     int
	checksums bool

	next    uint32 // relative subflow seq of the next byte Deliver expects
	started bool

	// The mapping being held for its checksum (checksums only).
	held     []byte
	heldSum  checksum.Sum
	heldFrom uint32 // SubflowSeq of the mapping whose bytes are held

	infinite *Mapping // set once an infinite mapping took effect
}

// NewRxMap returns a table holding at most limit pending mappings (0 means
// DefaultRxMapLimit) that verifies DSS checksums when checksums is set.
func NewRxMap(limit int, checksums bool) *RxMap {
	if limit <= 0 {
		limit = DefaultRxMapLimit
	}
	return &RxMap{limit: limit, checksums: checksums}
}

// Pending returns the number of mappings waiting for their bytes.
func (r *RxMap) Pending() int { return len(r.pending) }

// Infinite reports whether an infinite mapping is in force.
func (r *RxMap) Infinite() bool { return r.infinite != nil }

// Add records a mapping seen on a segment. Repeats of a known mapping are
// no-ops; mappings wholly for bytes already delivered are ignored (they ride
// on retransmissions). A DATA_FIN-only mapping covers no subflow bytes: the
// caller handles it at connection level and Add ignores it. For an infinite
// mapping the caller sets SubflowSeq to the relative sequence number of the
// first payload byte of the segment that carried it; it replaces every
// pending mapping from that point on, and later finite mappings are ignored.
func (r *RxMap) Add(m Mapping) error {
	if m.FINOnly() || r.infinite != nil {
		return nil
	}
	if m.Infinite() {
		mm := m
		r.infinite = &mm
		i := 0
		for i < len(r.pending) && seqLT(r.pending[i].SubflowSeq, m.SubflowSeq) {
			i++
		}
		r.pending = r.pending[:i]
		return nil
	}
	start, end := m.SubflowSeq, m.SubflowSeq+m.PayloadLen()
	if r.started && !seqLT(r.next, end) && m.PayloadLen() > 0 {
		return nil // entirely delivered already
	}
	// Find the insertion point and check neighbours for overlap.
	// pending is sorted and within one 2^31 window, so binary search
	// works; in-order arrival lands at the end.
	i := sort.Search(len(r.pending), func(k int) bool { return !seqLT(r.pending[k].SubflowSeq, start) })
	if i < len(r.pending) && r.pending[i].same(m) {
		return nil
	}
	if i > 0 {
		if r.pending[i-1].same(m) {
			return nil
		}
		p := r.pending[i-1]
		if seqLT(start, p.SubflowSeq+p.PayloadLen()) {
			return ErrMappingConflict
		}
	}
	if i < len(r.pending) && seqLT(r.pending[i].SubflowSeq, end) {
		return ErrMappingConflict
	}
	if m.PayloadLen() == 0 {
		// A mapping that covers no byte and is not a DATA_FIN-only one
		// carries nothing to deliver.
		return nil
	}
	if len(r.pending) >= r.limit {
		return ErrTooManyMappings
	}
	r.pending = append(r.pending, Mapping{})
	copy(r.pending[i+1:], r.pending[i:])
	r.pending[i] = m
	return nil
}

// Deliver places in-order subflow payload starting at relative subflow
// sequence ssn into data-sequence space, calling emit for each piece in
// order. Piece.Data aliases data unless checksums are in use, in which case
// it aliases an internal buffer; either way it is valid only during emit.
//
// Deliver stops at the first error: ErrNoMapping when bytes arrive that no
// mapping covers, ErrChecksum when a mapping completes with a bad checksum
// (none of its bytes are emitted). Bytes before the error have been emitted.
func (r *RxMap) Deliver(ssn uint32, data []byte, emit func(Piece)) error {
	if !r.started {
		r.started = true
		r.next = ssn
	}
	if ssn != r.next {
		// The caller delivers strictly in order; a gap or overlap here
		// is a caller bug, reported as unmapped data.
		return ErrNoMapping
	}
	for len(data) > 0 {
		if r.infinite != nil && len(r.pending) == 0 {
			m := r.infinite
			emit(Piece{DSN: m.DSN.Add(uint64(r.next - m.SubflowSeq)), Data: data})
			r.next += uint32(len(data))
			return nil
		}
		if len(r.pending) == 0 {
			return ErrNoMapping
		}
		m := r.pending[0]
		end := m.SubflowSeq + m.PayloadLen()
		if !seqLT(r.next, end) {
			r.pending = r.pending[1:]
			continue
		}
		if seqLT(r.next, m.SubflowSeq) {
			return ErrNoMapping
		}
		n := uint32(len(data))
		if rem := end - r.next; rem < n {
			n = rem
		}
		off := r.next - m.SubflowSeq
		chunk := data[:n]
		data = data[n:]
		r.next += n
		complete := r.next == end
		if !r.checksums {
			emit(Piece{DSN: m.DSN.Add(uint64(off)), Data: chunk, DataFIN: complete && m.DataFIN})
		} else {
			if off == 0 {
				r.held = r.held[:0]
				r.heldSum = checksum.NewDSS(uint64(m.DSN), m.SubflowSeq, m.Len)
				r.heldFrom = m.SubflowSeq
			} else if r.heldFrom != m.SubflowSeq {
				// Delivery began inside this mapping: its
				// checksum cannot be verified.
				r.pending = r.pending[1:]
				return ErrChecksum
			}
			r.held = append(r.held, chunk...)
			r.heldSum.Add(chunk)
			if complete {
				ok := r.heldSum.Checksum() == m.Checksum
				if !ok {
					r.held = r.held[:0]
					r.pending = r.pending[1:]
					return ErrChecksum
				}
				emit(Piece{DSN: m.DSN, Data: r.held, DataFIN: m.DataFIN})
				r.held = r.held[:0]
			}
		}
		if complete {
			r.pending = r.pending[1:]
		}
	}
	return nil
}
