package handshake

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
)

// Lengths of the truncated HMACs carried in MPTCP options.
const (
	JoinSYNACKHMACLen = 8  // MP_JOIN SYN/ACK: leftmost 64 bits (RFC 8684 §3.2)
	JoinACKHMACLen    = 20 // MP_JOIN third ACK: leftmost 160 bits (RFC 8684 §3.2)
	AddAddrHMACLen    = 8  // ADD_ADDR: rightmost 64 bits (RFC 8684 §3.4.1)
)

// The MP_JOIN handshake (RFC 8684 §3.2), with A the host that sends the join
// SYN (the initiator) and B the host that receives it (the listener):
//
//	SYN      A -> B  token(Key-B), R-A
//	SYN/ACK  B -> A  HMAC(Key=Key-B||Key-A, Msg=R-B||R-A), leftmost 64 bits; R-B
//	ACK      A -> B  HMAC(Key=Key-A||Key-B, Msg=R-A||R-B), leftmost 160 bits
//
// Nonces are fed to the HMAC as 4 big-endian bytes each (Linux
// subflow_generate_hmac). Each side computes its own HMAC with its own key
// and nonce first, and checks the peer's with the peer's first.

// joinHMAC returns HMAC(Key=key1||key2, Msg=nonce1||nonce2).
func joinHMAC(key1, key2 uint64, nonce1, nonce2 uint32) [sha256.Size]byte {
	var msg [8]byte
	binary.BigEndian.PutUint32(msg[:4], nonce1)
	binary.BigEndian.PutUint32(msg[4:], nonce2)
	return HMAC(key1, key2, msg[:])
}

// JoinSYNACKHMAC returns the truncated HMAC that the listener B puts in its
// MP_JOIN SYN/ACK (RFC 8684 §3.2): the leftmost 64 bits of
// HMAC(Key=Key-B||Key-A, Msg=R-B||R-A), as the big-endian value of those 8
// bytes.
func JoinSYNACKHMAC(keyListener, keyInitiator uint64, nonceListener, nonceInitiator uint32) uint64 {
	mac := joinHMAC(keyListener, keyInitiator, nonceListener, nonceInitiator)
	return binary.BigEndian.Uint64(mac[:JoinSYNACKHMACLen])
}

// JoinACKHMAC returns the HMAC that the initiator A puts in the third ACK of
// an MP_JOIN handshake (RFC 8684 §3.2): the leftmost 160 bits of
// HMAC(Key=Key-A||Key-B, Msg=R-A||R-B).
func JoinACKHMAC(keyInitiator, keyListener uint64, nonceInitiator, nonceListener uint32) [JoinACKHMACLen]byte {
	mac := joinHMAC(keyInitiator, keyListener, nonceInitiator, nonceListener)
	return [JoinACKHMACLen]byte(mac[:JoinACKHMACLen])
}

// VerifyJoinSYNACK reports, in constant time, whether got is the truncated
// HMAC that the listener B must send in its MP_JOIN SYN/ACK. The initiator
// A calls it with the listener's key and nonce first; a mismatch means the
// join must be reset (RFC 8684 §3.2).
func VerifyJoinSYNACK(keyListener, keyInitiator uint64, nonceListener, nonceInitiator uint32, got uint64) bool {
	want := JoinSYNACKHMAC(keyListener, keyInitiator, nonceListener, nonceInitiator)
	var w, g [8]byte
	binary.BigEndian.PutUint64(w[:], want)
	binary.BigEndian.PutUint64(g[:], got)
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}

// VerifyJoinACK reports, in constant time, whether got is the HMAC that the
// initiator A must send in the third ACK of an MP_JOIN handshake. The
// listener B calls it with the initiator's key and nonce first; a mismatch
// means the subflow must be reset (RFC 8684 §3.2).
func VerifyJoinACK(keyInitiator, keyListener uint64, nonceInitiator, nonceListener uint32, got [JoinACKHMACLen]byte) bool {
	want := JoinACKHMAC(keyInitiator, keyListener, nonceInitiator, nonceListener)
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}
