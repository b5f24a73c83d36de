package pcaps

// expand32 returns the 64-bit value whose low 32 bits are v and which is
// closest to ref: the expansion of a 4-byte DSN or Data ACK (RFC 8684
// §3.3.1) and the unwrapping of a relative subflow sequence number. The
// analyzer uses it for both; within pcaps it is the only place that widens
// a 32-bit sequence number.
func expand32(v uint32, ref uint64) uint64 {
	return ref + uint64(int64(int32(v-uint32(ref))))
}
