package handshake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxKeyAttempts bounds how many random keys NewKey draws before it gives up
// with ErrNoUniqueKey.
const MaxKeyAttempts = 64

// ErrNoUniqueKey is returned by NewKey when MaxKeyAttempts random keys all
// had a token that was already in use (or were zero).
var ErrNoUniqueKey = errors.New("handshake: no random key with an unused token")

// ErrZeroNonce is returned by NewNonce when its random source produced only
// zero nonces MaxKeyAttempts times in a row (a broken source).
var ErrZeroNonce = errors.New("handshake: random source gave only zero nonces")

// TokenAndIDSN derives, with one SHA-256, the token and the initial data
// sequence number of a connection key (RFC 8684 §3.1, §2.2): the key is
// hashed as 8 big-endian bytes; the token is the most significant 32 bits of
// the digest and the IDSN the least significant 64 bits.
func TokenAndIDSN(key uint64) (token uint32, idsn uint64) {
	var in [8]byte
	binary.BigEndian.PutUint64(in[:], key)
	d := sha256.Sum256(in[:])
	return binary.BigEndian.Uint32(d[:4]), binary.BigEndian.Uint64(d[sha256.Size-8:])
}

// Token returns the 32-bit token of a connection key: the most significant
// 32 bits of SHA-256 of the key as 8 big-endian bytes (RFC 8684 §3.1). An
// MP_JOIN SYN names the connection it joins by the receiver's token.
func Token(key uint64) uint32 {
	t, _ := TokenAndIDSN(key)
	return t
}

// IDSN returns the initial data sequence number of a connection key: the
// least significant 64 bits of SHA-256 of the key as 8 big-endian bytes
// (RFC 8684 §3.1). The first data byte a host sends has DSN IDSN(key)+1.
func IDSN(key uint64) uint64 {
	_, i := TokenAndIDSN(key)
	return i
}

// NewKey draws a fresh 64-bit connection key from r (crypto/rand.Reader when
// r is nil) whose token is not in use locally (RFC 8684 §3.1: "the key MUST
// be chosen so that its token is unique"). inUse reports whether a token
// already names a local connection; nil means no token is in use.
//
// A zero key is never returned (the Linux kernel rejects it). After
// MaxKeyAttempts draws without success NewKey returns ErrNoUniqueKey; a read
// error from r is returned wrapped.
func NewKey(r io.Reader, inUse func(token uint32) bool) (key uint64, err error) {
	if r == nil {
		r = rand.Reader
	}
	var b [8]byte
	for range MaxKeyAttempts {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("handshake: reading a random key: %w", err)
		}
		key = binary.BigEndian.Uint64(b[:])
		if key == 0 {
			continue
		}
		if inUse == nil || !inUse(Token(key)) {
			return key, nil
		}
	}
	return 0, ErrNoUniqueKey
}

// NewNonce draws a random 32-bit MP_JOIN nonce (RFC 8684 §3.2) from r
// (crypto/rand.Reader when r is nil). Zero is never returned, as in the
// Linux kernel, so that callers may use zero to mean "not drawn yet"; a
// source that yields MaxKeyAttempts zero nonces gets ErrZeroNonce.
func NewNonce(r io.Reader) (uint32, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [4]byte
	for range MaxKeyAttempts {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("handshake: reading a random nonce: %w", err)
		}
		if n := binary.BigEndian.Uint32(b[:]); n != 0 {
			return n, nil
		}
	}
	return 0, ErrZeroNonce
}
