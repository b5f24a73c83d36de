// Package handshake holds the cryptography of the MPTCP v1 handshakes
// (RFC 8684): connection keys and the tokens and initial data sequence
// numbers derived from them (§3.1, §2.2), the HMACs that authenticate an
// MP_JOIN (§3.2), and the HMAC that authenticates an ADD_ADDR (§3.4.1).
//
// Every function is pure: no I/O (randomness comes in through an io.Reader),
// no clock, no shared state, safe for concurrent use. The per-join and
// per-ADD_ADDR functions do not allocate.
//
// Byte order follows RFC 8684 and the Linux kernel (net/mptcp/crypto.c,
// subflow.c, options.c): keys and nonces are fed to SHA-256 and HMAC as
// big-endian bytes, and a truncated HMAC carried as a 64-bit integer is the
// big-endian value of the 8 bytes on the wire.
package handshake
