package pcaps

import "github.com/mptund/mptund/dsnmap"

// expand32 returns the 64-bit value whose low 32 bits are v and which is
// closest to ref: the expansion of a 4-byte DSN or Data ACK (RFC 8684
// §3.3.1) and the unwrapping of a relative subflow sequence number. It
// defers to dsnmap.Expand, the project's one widening function.
func expand32(v uint32, ref uint64) uint64 {
	return uint64(dsnmap.Expand(v, dsnmap.DSN(ref)))
}
