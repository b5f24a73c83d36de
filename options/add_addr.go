package options

import (
	"encoding/binary"
	"net/netip"
)

// addAddrFlagEcho is the E bit in the low nibble of byte 2 (RFC 8684 §3.4.1).
const addAddrFlagEcho = 0x01

// ADD_ADDR field sizes (RFC 8684 §3.4.1, Figure 12).
const (
	lenAddAddrBase = 4 // kind, length, subtype|E, address ID
	lenAddAddrPort = 2
	lenAddAddrHMAC = 8
)

// AddAddr is the ADD_ADDR option (RFC 8684 §3.4.1): an address (and
// optionally a port) the sender can be reached at, authenticated by a
// truncated HMAC, or the receiver's echo of it.
//
// The IP version is given by the length. Whether the HMAC is present is
// given by the E bit, as Linux decides it: lengths 16/18 (IPv4) and 28/30
// (IPv6) without E, 8/10 and 20/22 with E; every other combination is
// ErrBadLength. The three reserved bits next to E are ignored.
type AddAddr struct {
	Echo   bool // E: this is the echo of a received ADD_ADDR
	AddrID uint8
	// Addr is the announced address: IPv4 for the 4-byte form, IPv6 for the
	// 16-byte form (an IPv4-mapped IPv6 address stays 16 bytes long). The
	// zero Addr cannot be encoded: Len is 0 and Append writes nothing.
	Addr    netip.Addr
	HasPort bool
	Port    uint16
	// HMAC is the rightmost 64 bits of the HMAC (RFC 8684 §3.4.1), as a
	// big-endian integer; present iff !Echo.
	HMAC uint64
}

// ParseAddAddr decodes an ADD_ADDR option (RFC 8684 §3.4.1). It does not
// allocate.
func ParseAddAddr(opt []byte) (AddAddr, error) {
	o, err := subHeader(opt, SubtypeAddAddr)
	if err != nil {
		return AddAddr{}, err
	}
	a := AddAddr{Echo: o[2]&addAddrFlagEcho != 0}
	body := len(o) - lenAddAddrBase // address, port, HMAC
	if !a.Echo {
		body -= lenAddAddrHMAC
	}
	switch body {
	case 4:
	case 4 + lenAddAddrPort:
		a.HasPort = true
	case 16:
	case 16 + lenAddAddrPort:
		a.HasPort = true
	default:
		return AddAddr{}, ErrBadLength
	}
	a.AddrID = o[3]
	p := o[lenAddAddrBase:]
	if body >= 16 {
		a.Addr = netip.AddrFrom16([16]byte(p[:16]))
		p = p[16:]
	} else {
		a.Addr = netip.AddrFrom4([4]byte(p[:4]))
		p = p[4:]
	}
	if a.HasPort {
		a.Port = binary.BigEndian.Uint16(p)
		p = p[2:]
	}
	if !a.Echo {
		a.HMAC = binary.BigEndian.Uint64(p)
	}
	return a, nil
}

// Subtype returns SubtypeAddAddr.
func (AddAddr) Subtype() Subtype { return SubtypeAddAddr }

// Len returns 4 + address (4 or 16) + port (0/2) + HMAC (8 unless Echo), or 0
// when Addr is the zero Addr.
func (a AddAddr) Len() int {
	var n int
	switch {
	case a.Addr.Is4():
		n = lenAddAddrBase + 4
	case a.Addr.Is6():
		n = lenAddAddrBase + 16
	default:
		return 0
	}
	if a.HasPort {
		n += lenAddAddrPort
	}
	if !a.Echo {
		n += lenAddAddrHMAC
	}
	return n
}

// Append appends the option with reserved bits zero. An IPv6 zone is not
// encoded.
func (a AddAddr) Append(b []byte) []byte {
	n := a.Len()
	if n == 0 {
		return b
	}
	var flags uint8
	if a.Echo {
		flags = addAddrFlagEcho
	}
	b = appendHeader(b, n, SubtypeAddAddr, flags)
	b = append(b, a.AddrID)
	if a.Addr.Is4() {
		v4 := a.Addr.As4()
		b = append(b, v4[:]...)
	} else {
		v6 := a.Addr.As16()
		b = append(b, v6[:]...)
	}
	if a.HasPort {
		b = binary.BigEndian.AppendUint16(b, a.Port)
	}
	if !a.Echo {
		b = binary.BigEndian.AppendUint64(b, a.HMAC)
	}
	return b
}
