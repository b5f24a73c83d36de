package handshake

import (
	"crypto/subtle"
	"encoding/binary"
	"net/netip"
)

// AddAddrHMAC returns the truncated HMAC of an ADD_ADDR option (RFC 8684
// §3.4.1): the rightmost 64 bits of HMAC(Key=Key-sender||Key-receiver,
// Msg=Address ID (1 byte) || Address (4 or 16 bytes) || Port (2 bytes,
// big-endian, zero when the option carries none)), as the big-endian value
// of those 8 bytes. The sender of the ADD_ADDR uses its own key first; the
// receiver verifies with the sender's key first.
//
// An IPv4 address, including an IPv4-mapped IPv6 one, is hashed as 4 bytes
// (ADD_ADDR carries IPv4 addresses in their 4-byte form); any other address
// as its 16 bytes, without zone. The invalid zero netip.Addr is hashed as 16
// zero bytes.
func AddAddrHMAC(keySender, keyReceiver uint64, addrID uint8, addr netip.Addr, port uint16) uint64 {
	var msg [1 + 16 + 2]byte
	msg[0] = addrID
	n := 1
	if addr = addr.Unmap(); addr.Is4() {
		a := addr.As4()
		n += copy(msg[n:], a[:])
	} else {
		a := addr.As16()
		n += copy(msg[n:], a[:])
	}
	binary.BigEndian.PutUint16(msg[n:], port)
	n += 2
	mac := HMAC(keySender, keyReceiver, msg[:n])
	return binary.BigEndian.Uint64(mac[len(mac)-AddAddrHMACLen:])
}

// VerifyAddAddr reports, in constant time, whether got is the HMAC of an
// ADD_ADDR option announcing (addrID, addr, port) sent by the holder of
// keySender to the holder of keyReceiver (RFC 8684 §3.4.1). An invalid
// address never verifies. An ADD_ADDR that fails verification must be
// ignored.
func VerifyAddAddr(keySender, keyReceiver uint64, addrID uint8, addr netip.Addr, port uint16, got uint64) bool {
	if !addr.IsValid() {
		return false
	}
	want := AddAddrHMAC(keySender, keyReceiver, addrID, addr, port)
	var w, g [8]byte
	binary.BigEndian.PutUint64(w[:], want)
	binary.BigEndian.PutUint64(g[:], got)
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}
