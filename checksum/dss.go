// Package checksum computes the MPTCP DSS checksum (RFC 8684 §3.3.1).
//
// The DSS checksum is the 16-bit ones' complement of the ones' complement
// sum of a pseudo-header followed by the payload of one DSS mapping:
//
//	DSN (8 bytes, always the full 64-bit value, whatever the option carries)
//	relative subflow sequence number (4) | data-level length (2) | zero (2)
//	payload of the mapping (data-level length bytes, less one for a DATA_FIN)
//
// A receiver gets a mapping's payload in segments with arbitrary, often odd,
// boundaries; Sum accumulates it incrementally and verifies once the last
// byte has arrived. The arithmetic is RFC 1071's, via gVisor's
// pkg/tcpip/checksum; results agree bit for bit with the Linux kernel's
// (net/mptcp/options.c __mptcp_make_csum, subflow.c validate_data_csum).
package checksum

import (
	"math/bits"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// PseudoHeaderLen is the length of the DSS checksum pseudo-header.
const PseudoHeaderLen = 16

// Sum is an incremental ones' complement sum (RFC 1071) over a byte stream
// given in chunks of any length. The zero value is an empty sum. A Sum is a
// small value: copy it freely; it is not safe for concurrent Add calls.
type Sum struct {
	sum uint16 // folded sum, bytes at even stream offsets in the high octet
	n   uint64 // bytes added by Add and AddPartial
}

// Add adds the next len(b) bytes of the stream. Chunks may have any length,
// including zero and odd lengths. It does not allocate.
func (s *Sum) Add(b []byte) {
	if len(b) == 0 {
		return
	}
	if s.n&1 == 0 {
		s.sum = checksum.Checksum(b, s.sum)
	} else {
		// The chunk starts at an odd stream offset: its bytes sit in the
		// other octet of each 16-bit word, so its sum is byte-swapped
		// before being added (RFC 1071 §2(B)).
		s.sum = checksum.Combine(s.sum, bits.ReverseBytes16(checksum.Checksum(b, 0)))
	}
	s.n += uint64(len(b))
}

// AddPartial adds the next length bytes of the stream by their precomputed
// ones' complement sum partial, as checksum.Checksum(bytes, 0) or another
// Sum's Value returns it (a sum taken as if the bytes started at an even
// offset). It lets a receiver reuse a payload sum it already computed, for
// example while verifying the TCP checksum.
func (s *Sum) AddPartial(partial uint16, length uint64) {
	if length == 0 {
		return
	}
	if s.n&1 != 0 {
		partial = bits.ReverseBytes16(partial)
	}
	s.sum = checksum.Combine(s.sum, partial)
	s.n += length
}

// Len returns the number of bytes added with Add and AddPartial. The
// pseudo-header that NewDSS adds is not counted, so for a DSS sum Len is the
// number of payload bytes seen so far.
func (s Sum) Len() uint64 { return s.n }

// Value returns the folded 16-bit ones' complement sum, not complemented.
func (s Sum) Value() uint16 { return s.sum }

// Checksum returns the ones' complement of Value: for a DSS sum over the
// whole mapping, the value to put in the DSS option's checksum field.
func (s Sum) Checksum() uint16 { return ^s.sum }

// Verify reports whether wire, the checksum field of a received DSS option,
// matches the sum of the whole mapping. As in the Linux kernel, the received
// checksum is added to the sum and the total must fold to zero (0xffff
// before the complement), so both ones' complement forms of zero are
// accepted as senders may write either.
func (s Sum) Verify(wire uint16) bool {
	return checksum.Combine(s.sum, wire) == 0xffff
}

// PseudoHeaderSum returns the folded ones' complement sum of the DSS
// checksum pseudo-header alone (RFC 8684 §3.3.1), for senders that fold in
// the payload's sum later. dataLen is the data-level length exactly as the
// DSS option carries it: when the mapping carries a DATA_FIN it counts the
// DATA_FIN's byte of sequence space too (Linux validate_data_csum adds it
// back for the same reason).
func PseudoHeaderSum(dsn uint64, subflowSeq uint32, dataLen uint16) uint16 {
	v := dsn>>48 + dsn>>32&0xffff + dsn>>16&0xffff + dsn&0xffff +
		uint64(subflowSeq>>16) + uint64(subflowSeq&0xffff) + uint64(dataLen)
	v = v&0xffff + v>>16 // at most 0x6fff9 before: now at most 0x10005
	v = v&0xffff + v>>16
	return uint16(v)
}

// NewDSS starts the DSS checksum of the mapping (dsn, subflowSeq, dataLen)
// with its pseudo-header (RFC 8684 §3.3.1); Add the mapping's payload to it,
// then take Checksum (sender) or Verify (receiver). dsn is the full 64-bit
// DSN even when the option carries only its low 32 bits; subflowSeq the
// relative subflow sequence number; dataLen as for PseudoHeaderSum.
func NewDSS(dsn uint64, subflowSeq uint32, dataLen uint16) Sum {
	return Sum{sum: PseudoHeaderSum(dsn, subflowSeq, dataLen)}
}

// DSSChecksum returns the DSS checksum of a mapping whose whole payload is
// in one slice: the value to put in the DSS option. It does not allocate.
func DSSChecksum(dsn uint64, subflowSeq uint32, dataLen uint16, payload []byte) uint16 {
	return ^checksum.Checksum(payload, PseudoHeaderSum(dsn, subflowSeq, dataLen))
}

// VerifyDSS reports whether wire is a correct DSS checksum for the mapping
// (dsn, subflowSeq, dataLen) with the given payload; see Sum.Verify. On a
// mismatch RFC 8684 §3.7 applies (MP_FAIL, then fallback or subflow reset).
func VerifyDSS(dsn uint64, subflowSeq uint32, dataLen uint16, payload []byte, wire uint16) bool {
	return checksum.Combine(checksum.Checksum(payload, PseudoHeaderSum(dsn, subflowSeq, dataLen)), wire) == 0xffff
}
