package handshake

import (
	"crypto/sha256"
	"encoding/binary"
)

const blockSize = 64 // SHA-256 block size

// HMAC is the MPTCP HMAC primitive (RFC 8684 §3.2, §3.4.1; Linux
// mptcp_crypto_hmac_sha): HMAC-SHA256 (RFC 2104) of msg keyed with the 16
// bytes key1||key2, each key as 8 big-endian bytes. For messages of up to 32
// bytes (all of MPTCP's: the longest, an IPv6 ADD_ADDR, is 19) it does not
// allocate.
func HMAC(key1, key2 uint64, msg []byte) [sha256.Size]byte {
	// The 16-byte key is shorter than a block, so it is used as is, zero
	// padded: H((K^opad) || H((K^ipad) || msg)).
	var buf [blockSize + sha256.Size]byte
	pad(buf[:blockSize], key1, key2, 0x36)
	// Stays in buf unless msg is longer than 32 bytes.
	inner := sha256.Sum256(append(buf[:blockSize], msg...))
	pad(buf[:blockSize], key1, key2, 0x5c)
	copy(buf[blockSize:], inner[:])
	return sha256.Sum256(buf[:])
}

// pad fills block with (key1||key2||zeros) XOR p.
func pad(block []byte, key1, key2 uint64, p byte) {
	binary.BigEndian.PutUint64(block[0:8], key1^(0x0101010101010101*uint64(p)))
	binary.BigEndian.PutUint64(block[8:16], key2^(0x0101010101010101*uint64(p)))
	for i := 16; i < len(block); i++ {
		block[i] = p
	}
}
