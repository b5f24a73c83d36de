// Package dsnmap holds MPTCP's data-sequence machinery (RFC 8684 §3.3):
// 64-bit data sequence numbers and their 32-bit wire form, the per-subflow
// table of DSS mappings that turns subflow bytes into data-sequence ranges,
// and connection-level reassembly.
//
// Nothing here does I/O or reads a clock. Types are not safe for concurrent
// use; the owning connection serialises access.
package dsnmap

// DSN is a 64-bit MPTCP data sequence number. Comparisons are modulo 2^64
// (serial number arithmetic), so they stay correct across wraparound as long
// as the values compared are less than 2^63 apart.
type DSN uint64

// LessThan reports whether d comes before o in data-sequence order.
func (d DSN) LessThan(o DSN) bool { return int64(d-o) < 0 }

// LessThanEq reports whether d comes before o or equals it.
func (d DSN) LessThanEq(o DSN) bool { return int64(d-o) <= 0 }

// Add returns d advanced by n bytes.
func (d DSN) Add(n uint64) DSN { return d + DSN(n) }

// Size returns the number of bytes from d up to o (o must not precede d).
func (d DSN) Size(o DSN) uint64 { return uint64(o - d) }

// InWindow reports whether d lies in [first, first+size).
func (d DSN) InWindow(first DSN, size uint64) bool { return uint64(d-first) < size }

// Expand turns a 32-bit DSN or Data ACK taken from the wire into the 64-bit
// value nearest to ref, the value the receiver expects (RFC 8684 §3.3: "the
// lower 32 bits of the DSN"). ref is typically the next expected DSN for a
// mapping, or the last acknowledged DSN for a Data ACK. This is the only
// place where 32-bit values are widened.
func Expand(low uint32, ref DSN) DSN {
	// The signed 32-bit distance from ref's low bits to low, applied to
	// ref. A value exactly 2^31 away counts as behind, matching the
	// serial-number convention of LessThan and gVisor's seqnum.
	return ref + DSN(int64(int32(low-uint32(ref))))
}

// Low32 returns the 32 bits of d that a 4-byte DSS field carries.
func (d DSN) Low32() uint32 { return uint32(d) }
