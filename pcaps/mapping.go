package pcaps

import (
	"math/bits"
	"slices"
	"sort"
)

// Limits that bound the analyzer's memory on large or hostile captures.
// Whatever a limit cuts is reported in [Report.NotChecked], never as a
// failure.
const (
	// MaxReassemblyBytes bounds the payload bytes buffered, over the whole
	// analysis, for mappings whose DSS checksum still awaits bytes. A
	// buffer lives only while its mapping is incomplete.
	MaxReassemblyBytes = 64 << 20
	// MaxMappings is how many mappings are remembered per subflow
	// direction (the lowest subflow sequence numbers are forgotten first).
	// Coverage and consistency are checked against the remembered ones.
	MaxMappings = 4096
	// MaxUncovered is how many data segments per subflow direction may wait
	// for a mapping that covers them (a mapping may be captured after the
	// data it maps, e.g. when the segment carrying it was retransmitted).
	MaxUncovered = 1024
	// MaxRecentSegments is how many of the latest data segments per
	// subflow direction are remembered to feed the checksum of a mapping
	// captured after bytes it covers (a retransmission re-sent with other,
	// consistent boundaries). Older bytes leave such a mapping not
	// checked.
	MaxRecentSegments = 256
	// MaxEvents is the number of events recorded per connection.
	MaxEvents = 1000
)

// maxMappingLen is the largest subflow range one mapping covers (the
// data-level length is 16 bits, RFC 8684 §3.3).
const maxMappingLen = 1<<16 - 1

// mapping is one DSS mapping (RFC 8684 §3.3.1) of a subflow direction:
// subflow bytes [ssn, ssn+n) carry data sequence numbers [dsn, dsn+n).
type mapping struct {
	ssn   uint64 // relative subflow sequence number, unwrapped
	n     uint64 // subflow bytes (the data-level length minus a DATA_FIN)
	dsn   uint64 // expanded to 64 bits
	ssn32 uint32 // subflow sequence number as sent (pseudo-header)
	// dataLen is the data-level length as sent, DATA_FIN included: the
	// pseudo-header uses it (Linux subflow.c validate_data_csum).
	dataLen uint16
	hasCsum bool
	csum    uint16
	frame   int
	rs      *reassembly // non-nil while the checksum awaits payload bytes
	// paySum is the ones'-complement sum of the payload once it was
	// reassembled uncut (haveSum), kept so that a copy of the mapping seen
	// later can be verified after the bytes are gone.
	paySum  uint16
	haveSum bool
	// alt is a copy of the mapping with the other data-level length: the
	// DATA_FIN added (Linux re-sends its last mapping so when the DATA_FIN
	// left before the last data) or removed. Its checksum covers the same
	// payload under its own length (RFC 8684 §3.3.1).
	alt *altVersion
}

// altVersion is the other data-level length of a mapping, as re-sent.
type altVersion struct {
	dataLen uint16
	csum    uint16
	frame   int
}

func (m *mapping) end() uint64 { return m.ssn + m.n }

// reassembly collects a mapping's payload for the DSS checksum.
type reassembly struct {
	buf       []byte
	have      []uint64 // one bit per byte of buf
	missing   int      // bytes not seen yet
	truncated bool     // a segment was cut by the snap length
}

func newReassembly(n int) *reassembly {
	return &reassembly{buf: make([]byte, n), have: make([]uint64, (n+63)/64), missing: n}
}

// mark records bytes [lo, hi) of the mapping as seen.
func (r *reassembly) mark(lo, hi int) {
	for lo < hi {
		w, b := lo/64, lo%64
		n := min(64-b, hi-lo)
		mask := ^uint64(0) >> (64 - n) << b
		r.missing -= bits.OnesCount64(mask &^ r.have[w])
		r.have[w] |= mask
		lo += n
	}
}

// segRef is a data segment waiting for a mapping that covers it.
type segRef struct {
	start, end uint64 // relative subflow sequence numbers
	pkt        int    // index into the analyzed packets
}

// flowDir is the state of one direction of a subflow.
type flowDir struct {
	isn     uint32
	haveISN bool
	ref     uint64 // highest relative sequence number seen, for unwrapping
	maxEnd  uint64 // highest relative end of payload seen
	// maps is sorted by ssn; at most MaxMappings.
	maps      []*mapping
	uncovered []segRef
	recent    []segRef // the latest data segments, a ring of MaxRecentSegments
	recentPos int
	mapped    bool // a mapping (or infinite mapping) was seen
	infinite  bool // an infinite mapping was sent: the rest maps one to one
	fin       bool
}

// remember records a data segment in the ring of recent ones.
func (d *flowDir) remember(s segRef) {
	if len(d.recent) < MaxRecentSegments {
		d.recent = append(d.recent, s)
		return
	}
	d.recent[d.recentPos] = s
	d.recentPos = (d.recentPos + 1) % MaxRecentSegments
}

// rel returns the relative, unwrapped sequence number of seq.
func (d *flowDir) rel(seq uint32) uint64 {
	r := expand32(seq-d.isn, d.ref)
	if r > d.ref && r-d.ref < 1<<31 {
		d.ref = r
	}
	return r
}

// find returns the index of the first mapping that may overlap subflow
// bytes at or after s.
func (d *flowDir) find(s uint64) int {
	lo := uint64(0)
	if s > maxMappingLen {
		lo = s - maxMappingLen
	}
	return sort.Search(len(d.maps), func(i int) bool { return d.maps[i].ssn >= lo })
}

// covered reports whether every subflow byte in [s, e) lies in a mapping.
func (d *flowDir) covered(s, e uint64) bool {
	cur := s
	for _, m := range d.maps[d.find(s):] {
		if cur >= e {
			break
		}
		if m.ssn > cur {
			return false
		}
		cur = max(cur, m.end())
	}
	return cur >= e
}

// conflict returns a remembered mapping that maps some byte of m to a
// different data sequence number, and whether m is already remembered.
func (d *flowDir) conflict(m *mapping) (other *mapping, dup bool) {
	for _, o := range d.maps[d.find(m.ssn):] {
		if o.ssn >= m.end() {
			break
		}
		if o.end() <= m.ssn {
			continue
		}
		if o.ssn == m.ssn && o.n == m.n && o.dsn == m.dsn {
			return o, true
		}
		if o.dsn-o.ssn != m.dsn-m.ssn && other == nil {
			other = o
		}
	}
	return other, false
}

// insert remembers m, returning the mapping evicted to stay within
// MaxMappings, if any.
func (d *flowDir) insert(m *mapping) (evicted *mapping) {
	i := sort.Search(len(d.maps), func(i int) bool { return d.maps[i].ssn > m.ssn })
	d.maps = slices.Insert(d.maps, i, m)
	if len(d.maps) > MaxMappings {
		evicted = d.maps[0]
		d.maps[0] = nil
		d.maps = d.maps[1:]
	}
	return evicted
}
