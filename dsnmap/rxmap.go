package dsnmap

import (
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

// rxHistory is how many delivered entries an RxMap remembers, to tell a
// mapping re-sent for delivered bytes (ignored) from one that maps them
// elsewhere (ErrStaleMapping). Older delivered bytes cannot be judged;
// mappings for them are ignored.
const rxHistory = 8

// maxCoverWalk bounds the pending mappings one Add examines when checksums
// are in use: a mapping overlapping more of them has boundaries no sender
// re-sends, and checking it further would let a peer spend our CPU on every
// segment. Such a mapping is ignored like any other unverifiable one.
const maxCoverWalk = 16

// RxMapStats counts the mappings an RxMap accepted without installing them
// and the ones it ignored. A mapping counted here was legitimate (see
// RxMap.Add); true conflicts are errors, not counts.
type RxMapStats struct {
	// Repeated: with checksums, a copy of a pending mapping (same bytes,
	// same DSN). Without checksums pending mappings merge, and copies
	// count as Covered.
	Repeated uint64
	// FINAdded: a copy of a pending mapping with the DATA_FIN added
	// (data-level length one larger), whose DATA_FIN the pending mapping
	// now carries.
	FINAdded uint64
	// Covered: a consistent mapping with other boundaries whose bytes
	// pending (or delivered) mappings already map.
	Covered uint64
	// Extended: without checksums, a consistent mapping overlapping
	// pending or delivered bytes that also mapped bytes nothing mapped yet
	// (merged with its neighbours).
	Extended uint64
	// Unverifiable: with checksums, a consistent mapping that partly
	// overlaps others (or delivered bytes) with other boundaries, so its
	// checksum cannot be verified as a unit; ignored.
	Unverifiable uint64
	// Stale: a mapping for bytes already delivered, consistent with what
	// they were mapped to (or too old to tell), ignored.
	Stale uint64
}

// RxMap is the receive-side mapping table of one subflow (RFC 8684
// §3.3.1). Mappings arrive on segments, possibly before the bytes they
// cover (a mapping rides on every segment it covers, and segments may be
// reordered), and are kept until every subflow byte they cover has been
// delivered in subflow order through Deliver. With DSS checksums, a
// mapping's bytes are held back until the whole mapping has arrived and its
// checksum verified (§3.3.1: "the checksum ... is only valid once all the
// data is received").
//
// A mapping is fixed once declared (§3.3.1), but a sender may declare it
// again, and not always identically: Linux re-sends the last mapping with
// the DATA_FIN added (data-level length one larger, hence another checksum)
// when its DATA_FIN left before the last data; a retransmission may be
// split or merged differently; a middlebox may split segments. Add accepts
// every copy consistent with what it knows (each subflow byte keeps its
// DSN, the DATA_FIN keeps its place) and reports only true conflicts.
//
// Cost: pending mappings are kept in an ordered tree, so Add and Deliver
// cost O(log n) in the pending mappings (at most the limit) whatever order
// mappings come in; without checksums, consistent adjacent mappings merge,
// so a peer mapping one byte per segment keeps the table small. Memory is
// bounded by the limit.
//
// The zero value is not usable; call NewRxMap. Not safe for concurrent
// use.
type RxMap struct {
	limit     int
	checksums bool
	tree      entryTree

	// Subflow positions are unwrapped to 64 bits around next (or, before
	// the first Deliver, around the first sequence number seen).
	next    uint64 // position of the next byte Deliver expects
	started bool
	ref     uint64
	haveRef bool

	// The mapping being held for its checksum (checksums only).
	held     []byte
	heldSum  checksum.Sum
	heldFrom uint64
	holding  bool

	hist    [rxHistory]rxEntry // recently delivered entries
	histN   int
	histPos int

	finKnown bool // a mapping announced the DATA_FIN at finDSN
	finDSN   DSN
	mapped   bool // maxEnd is set
	maxEnd   DSN  // highest DSN after a byte mapped by an accepted mapping

	infinite *Mapping // set once an infinite mapping took effect
	infStart uint64

	stats RxMapStats
}

// NewRxMap returns a table holding at most limit pending mappings (0 means
// DefaultRxMapLimit) that verifies DSS checksums when checksums is set.
func NewRxMap(limit int, checksums bool) *RxMap {
	if limit <= 0 {
		limit = DefaultRxMapLimit
	}
	return &RxMap{limit: limit, checksums: checksums, tree: newEntryTree()}
}

// Pending returns the number of mappings waiting for their bytes (without
// checksums, consistent adjacent mappings count as one).
func (r *RxMap) Pending() int { return r.tree.len() }

// Infinite reports whether an infinite mapping is in force.
func (r *RxMap) Infinite() bool { return r.infinite != nil }

// Stats returns the counters of mappings accepted as copies or ignored.
func (r *RxMap) Stats() RxMapStats { return r.stats }

// DataFIN returns the DSN of the peer's DATA_FIN once a mapping accepted by
// Add announced it (RFC 8684 §3.3.3: the DATA_FIN takes the last DSN of its
// mapping), and whether one did. It is known as soon as the mapping
// arrives, before its bytes are delivered, and also when the mapping is a
// copy for bytes already delivered, whose pieces will not be emitted again:
// a caller may then mark the end of the stream itself (Reassembler.SetFIN)
// rather than wait for a Piece with DataFIN set.
func (r *RxMap) DataFIN() (DSN, bool) { return r.finDSN, r.finKnown }

// unwrap turns a 32-bit relative subflow sequence number into the 64-bit
// position nearest to where the subflow is.
func (r *RxMap) unwrap(x uint32) uint64 {
	ref := r.next
	if !r.started {
		if !r.haveRef {
			// Start high enough that positions before it stay positive.
			r.ref, r.haveRef = 1<<32|uint64(x), true
		}
		ref = r.ref
	}
	return ref + uint64(int64(int32(x-uint32(ref))))
}

// Add records a mapping seen on a segment (RFC 8684 §3.3.1). It accepts:
//
//   - repeats of a pending mapping, and copies of it with the DATA_FIN
//     added (data-level length one larger, as Linux re-sends its last
//     mapping when the DATA_FIN left before the last data): the pending
//     mapping then carries the DATA_FIN, so the last Piece it yields has
//     DataFIN set. With checksums, the version seen first and its checksum
//     are kept (each version's checksum is valid for its own data-level
//     length);
//   - mappings with other boundaries consistent with the pending ones
//     (every subflow byte covered by both has the same DSN, any DATA_FIN at
//     the same place), from retransmissions split or merged differently or
//     segment-splitting middleboxes. Without checksums, the bytes they map
//     that nothing pending maps are added (merged with consistent
//     neighbours), so every byte is delivered once with its DSN. With
//     checksums a mapping is verified as one unit: one whose bytes pending
//     (or delivered) mappings cover entirely is ignored, one overlapping
//     nothing is queued, and one that partly overlaps them with other
//     boundaries is ignored, because it cannot be verified and its overlap
//     is already mapped (its other bytes then need their own mapping, which
//     a sender sends with them; bytes that never get one fail Deliver with
//     ErrNoMapping). Linux resets the subflow in that last case
//     (MPTcpExtDSSNotMatching); ignoring it loses nothing and never
//     delivers an unverified byte;
//   - mappings for bytes already delivered that map them as they were
//     mapped (or that are too old to check): ignored;
//   - DATA_FIN-only mappings (FINOnly): no subflow byte to map; the caller
//     handles them at connection level. Add only records their position
//     (see DataFIN) and checks it against what it knows.
//
// It fails with ErrMappingConflict when the mapping maps a pending subflow
// byte to another DSN, puts the DATA_FIN elsewhere than a known one, or
// maps data at or beyond the DATA_FIN; with ErrStaleMapping when it maps
// delivered bytes to other DSNs than they had; with ErrTooManyMappings when
// the table is full. A failed Add changes nothing.
//
// For an infinite mapping (§3.7) the caller sets SubflowSeq to the relative
// sequence number of the first payload byte of the segment that carried
// it; it replaces every pending mapping from that point on, and later
// finite mappings are ignored.
func (r *RxMap) Add(m Mapping) error {
	if r.infinite != nil {
		return nil
	}
	if m.Infinite() {
		mm := m
		r.infinite = &mm
		r.infStart = r.unwrap(m.SubflowSeq)
		r.tree.removeFrom(r.infStart)
		return nil
	}
	p := uint64(m.PayloadLen())
	if m.DataFIN {
		fin := m.DSN.Add(p)
		if r.finKnown && fin != r.finDSN {
			return ErrMappingConflict
		}
		if r.mapped && fin.LessThan(r.maxEnd) {
			return ErrMappingConflict // data mapped beyond this DATA_FIN
		}
		if p == 0 {
			r.finKnown, r.finDSN = true, fin
			return nil
		}
	} else if r.finKnown && r.finDSN.LessThan(m.DSN.Add(p)) {
		return ErrMappingConflict // data beyond the DATA_FIN
	}
	e := rxEntry{
		start: r.unwrap(m.SubflowSeq), n: p, dsn: m.DSN, fin: m.DataFIN,
		ssn32: m.SubflowSeq, csumLen: m.Len, csum: m.Checksum,
	}
	from := e.start
	if r.started && from < r.next {
		// Some bytes were delivered already: check them against what
		// they were mapped to, as far as it is remembered.
		upTo := min(e.end(), r.next)
		for k := range r.histN {
			h := &r.hist[k]
			if h.start < upTo && e.start < h.end() && !h.sameOffset(&e) {
				return ErrStaleMapping
			}
		}
		from = r.next
	}
	var err error
	if r.checksums {
		err = r.addUnit(&e, from)
	} else {
		err = r.addRun(&e, from)
	}
	if err == nil && e.fin {
		r.finKnown, r.finDSN = true, e.dsnEnd()
	}
	return err
}

// conflictErr is the error for an entry overlapping e with another DSN
// offset: stale when every byte they share is delivered.
func (r *RxMap) conflictErr(e, o *rxEntry) error {
	if r.started && min(e.end(), o.end()) <= r.next {
		return ErrStaleMapping
	}
	return ErrMappingConflict
}

// markFIN gives the DATA_FIN of e to the pending entry ending where e ends,
// if there is one (it is consistent with e: checked by the caller), and
// reports whether that added it.
func (r *RxMap) markFIN(e *rxEntry) bool {
	if i := r.tree.endAfter(e.end() - 1); i != nilNode {
		if o := r.tree.at(i); o.end() == e.end() && o.start < e.end() && !o.fin {
			o.fin = true
			r.stats.FINAdded++
			return true
		}
	}
	return false
}

func (r *RxMap) noteMapped(e *rxEntry) {
	if end := e.dsnEnd(); !r.mapped || r.maxEnd.LessThan(end) {
		r.maxEnd, r.mapped = end, true
	}
}

// addUnit installs e as a unit verified by its own checksum, or accepts it
// as a copy of what pending units map (see Add). Bytes before from are
// delivered.
func (r *RxMap) addUnit(e *rxEntry, from uint64) error {
	cur := from // bytes of e before cur are known to be mapped
	overlaps := 0
	exact := int32(nilNode)
	for i := r.tree.endAfter(e.start); i != nilNode && overlaps < maxCoverWalk; i = r.tree.next(i) {
		o := r.tree.at(i)
		if o.start >= e.end() {
			break
		}
		if !o.sameOffset(e) {
			return r.conflictErr(e, o)
		}
		overlaps++
		if o.start == e.start && o.n == e.n {
			exact = i
		}
		if o.start <= cur {
			cur = max(cur, o.end())
		}
	}
	switch {
	case exact != nilNode:
		if o := r.tree.at(exact); e.fin && !o.fin {
			o.fin = true // keep o's checksum and its data-level length
			r.stats.FINAdded++
		} else {
			r.stats.Repeated++
		}
	case cur >= e.end():
		if from >= e.end() {
			r.stats.Stale++
		} else {
			r.stats.Covered++
		}
		if e.fin {
			r.markFIN(e)
		}
	case overlaps == 0 && from == e.start:
		if r.tree.len() >= r.limit {
			return ErrTooManyMappings
		}
		r.tree.insert(*e)
		r.noteMapped(e)
	default:
		r.stats.Unverifiable++
		// Its DATA_FIN is not trusted either; Add must not record it.
		e.fin = false
	}
	return nil
}

// gap is a run of subflow bytes [a, b) that no pending entry maps.
type gap struct{ a, b uint64 }

// addRun maps the bytes of e from from on that no pending entry maps,
// merging them with consistent neighbours (no checksums: entries are runs,
// not units).
func (r *RxMap) addRun(e *rxEntry, from uint64) error {
	var gaps [2]gap // the common cases; more go to the heap
	gs := gaps[:0]
	cur := from
	overlapped := false
	for i := r.tree.endAfter(e.start); i != nilNode; i = r.tree.next(i) {
		o := r.tree.at(i)
		if o.start >= e.end() {
			break
		}
		if !o.sameOffset(e) {
			return r.conflictErr(e, o)
		}
		overlapped = true
		if o.start > cur {
			gs = append(gs, gap{cur, o.start})
		}
		cur = max(cur, o.end())
	}
	if cur < e.end() {
		gs = append(gs, gap{cur, e.end()})
	}
	if len(gs) == 0 {
		switch {
		case from >= e.end():
			r.stats.Stale++
		case !e.fin || !r.markFIN(e):
			r.stats.Covered++
		}
		return nil
	}
	// Count the entries the gaps add (a gap joining two neighbours
	// removes one) before changing anything.
	net := 0
	for _, g := range gs {
		net++
		if r.joinsLeft(e, g.a) != nilNode {
			net--
		}
		if r.joinsRight(e, g.b) != nilNode {
			net--
		}
	}
	if r.tree.len()+net > r.limit {
		return ErrTooManyMappings
	}
	for _, g := range gs {
		fin := e.fin && g.b == e.end()
		l, rt := r.joinsLeft(e, g.a), r.joinsRight(e, g.b)
		switch {
		case l != nilNode && rt != nilNode:
			right := *r.tree.at(rt)
			r.tree.remove(right.start) // relinks nodes, never moves them
			lo := r.tree.at(l)
			lo.n += g.b - g.a + right.n
			lo.fin = right.fin
		case l != nilNode:
			lo := r.tree.at(l)
			lo.n += g.b - g.a
			lo.fin = fin
		case rt != nilNode:
			ro := r.tree.at(rt) // grows leftwards into the gap: order kept
			ro.n += g.b - g.a
			ro.start, ro.dsn = g.a, e.dsnAt(g.a)
		default:
			r.tree.insert(rxEntry{start: g.a, n: g.b - g.a, dsn: e.dsnAt(g.a), fin: fin})
		}
	}
	if e.fin && gs[len(gs)-1].b != e.end() {
		r.markFIN(e)
	}
	r.noteMapped(e)
	if overlapped || from > e.start {
		r.stats.Extended++
	}
	return nil
}

// joinsLeft returns the node of the pending entry ending at a that maps
// like e and has no DATA_FIN, or nilNode.
func (r *RxMap) joinsLeft(e *rxEntry, a uint64) int32 {
	i := r.tree.startBefore(a)
	if i == nilNode {
		return nilNode
	}
	if o := r.tree.at(i); o.end() != a || o.fin || !o.sameOffset(e) {
		return nilNode
	}
	return i
}

// joinsRight returns the node of the pending entry starting at b that maps
// like e, or nilNode.
func (r *RxMap) joinsRight(e *rxEntry, b uint64) int32 {
	i := r.tree.endAfter(b)
	if i == nilNode {
		return nilNode
	}
	if o := r.tree.at(i); o.start != b || !o.sameOffset(e) {
		return nilNode
	}
	return i
}

// retire removes the delivered entry at node i and remembers it.
func (r *RxMap) retire(i int32) {
	e := *r.tree.at(i)
	r.hist[r.histPos] = e
	r.histPos = (r.histPos + 1) % rxHistory
	r.histN = min(r.histN+1, rxHistory)
	r.tree.remove(e.start)
}

// Deliver places in-order subflow payload starting at relative subflow
// sequence ssn into data-sequence space, calling emit for each piece in
// order. Piece.Data aliases data unless checksums are in use, in which case
// it aliases an internal buffer; either way it is valid only during emit,
// and emit must not call r's methods.
//
// Deliver stops at the first error: ErrNoMapping when bytes arrive that no
// mapping covers, ErrChecksum when a mapping completes with a bad checksum
// (none of its bytes are emitted). Bytes before the error have been emitted.
func (r *RxMap) Deliver(ssn uint32, data []byte, emit func(Piece)) error {
	s := r.unwrap(ssn)
	if !r.started {
		r.started, r.next = true, s
	} else if s != r.next {
		// The caller delivers strictly in order; a gap or overlap here
		// is a caller bug, reported as unmapped data.
		return ErrNoMapping
	}
	for len(data) > 0 {
		i := r.tree.first()
		for i != nilNode && r.tree.at(i).end() <= r.next {
			// Mapped before the first byte delivered: never needed.
			r.tree.remove(r.tree.at(i).start)
			i = r.tree.first()
		}
		if i == nilNode || r.tree.at(i).start > r.next {
			if r.infinite == nil {
				return ErrNoMapping
			}
			n := uint64(len(data))
			if i != nilNode {
				n = min(n, r.tree.at(i).start-r.next)
			}
			emit(Piece{DSN: r.infinite.DSN.Add(r.next - r.infStart), Data: data[:n]})
			r.next += n
			data = data[n:]
			continue
		}
		e := *r.tree.at(i)
		off := r.next - e.start
		n := min(uint64(len(data)), e.end()-r.next)
		chunk := data[:n]
		data = data[n:]
		r.next += n
		complete := r.next == e.end()
		if !r.checksums {
			emit(Piece{DSN: e.dsnAt(e.start + off), Data: chunk, DataFIN: complete && e.fin})
		} else {
			if off == 0 {
				r.held = r.held[:0]
				r.heldSum = checksum.NewDSS(uint64(e.dsn), e.ssn32, e.csumLen)
				r.heldFrom, r.holding = e.start, true
			} else if !r.holding || r.heldFrom != e.start {
				// Delivery began inside this mapping: its
				// checksum cannot be verified.
				r.holding = false
				r.tree.remove(e.start)
				return ErrChecksum
			}
			r.held = append(r.held, chunk...)
			r.heldSum.Add(chunk)
			if complete {
				r.holding = false
				if !r.heldSum.Verify(e.csum) {
					r.held = r.held[:0]
					r.tree.remove(e.start)
					return ErrChecksum
				}
				emit(Piece{DSN: e.dsn, Data: r.held, DataFIN: e.fin})
				r.held = r.held[:0]
			}
		}
		if complete {
			r.retire(i)
		}
	}
	return nil
}
