package tun

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Reasons a received packet is not delivered, or is delivered without its
// transport checksum having been checked. See verifyPacket.
var (
	// ErrMalformed: the IP header, or the TCP/UDP header the checksum
	// covers, is truncated or inconsistent with the packet length.
	ErrMalformed = errors.New("tun: malformed IP packet")
	// ErrBadChecksum: the IPv4 header checksum or the TCP/UDP checksum
	// does not verify.
	ErrBadChecksum = errors.New("tun: bad checksum")
	// ErrUnverifiable: the packet is an IP fragment or carries an IPv6
	// routing header, so its transport checksum cannot be checked here.
	// Such packets are delivered; see Endpoint for what that implies.
	ErrUnverifiable = errors.New("tun: transport checksum not verifiable per packet")
)

// verifyPacket classifies one raw IP packet by its version nibble and checks
// every checksum the stack would otherwise check itself when the link does
// not declare stack.CapabilityRXChecksumOffload:
//
//   - IPv4: the header checksum (RFC 791), always.
//   - TCP (RFC 9293 §3.1) and UDP (RFC 768; RFC 8200 §8.1 for IPv6) over
//     IPv4 or IPv6, using the pseudo-header. A zero UDP checksum is
//     accepted over IPv4 only ("no checksum").
//
// ICMPv4/ICMPv6 are left alone: gVisor verifies them whatever the flag says.
// Other transport protocols are not checked (gVisor has none that would
// consult the flag). It returns the network protocol and nil when the packet
// may be delivered as checked, ErrUnverifiable when it may be delivered but
// its transport checksum could not be checked (fragments, IPv6 routing
// header), ErrMalformed or ErrBadChecksum when it must be dropped.
//
// verifyPacket never panics and does not allocate.
func verifyPacket(b []byte) (tcpip.NetworkProtocolNumber, error) {
	ip, err := parseIP(b)
	if err != nil {
		return ip.proto, err
	}
	return ip.proto, ip.verifyTransport(b)
}

// ipInfo locates the transport segment of a packet checked by parseIP.
type ipInfo struct {
	proto   tcpip.NetworkProtocolNumber
	l4Proto uint8
	l4Off   int // offset of the transport header
	end     int // end of the IP packet (its length field), <= len(b)
	v6      bool
}

// parseIP checks the IP layer of b as verifyPacket does (version, lengths,
// the IPv4 header checksum, IPv6 extension headers) and locates the
// transport segment. It returns ErrUnverifiable for fragments and IPv6
// packets with a routing header, ErrMalformed or ErrBadChecksum for packets
// to drop. proto is set whenever the version nibble is known.
func parseIP(b []byte) (ipInfo, error) {
	if len(b) == 0 {
		return ipInfo{}, ErrMalformed
	}
	switch b[0] >> 4 {
	case 4:
		ip := ipInfo{proto: header.IPv4ProtocolNumber}
		return ip, parseIPv4(b, &ip)
	case 6:
		ip := ipInfo{proto: header.IPv6ProtocolNumber, v6: true}
		return ip, parseIPv6(b, &ip)
	default:
		return ipInfo{}, ErrMalformed
	}
}

func parseIPv4(b []byte, ip *ipInfo) error {
	if len(b) < header.IPv4MinimumSize {
		return ErrMalformed
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < header.IPv4MinimumSize || ihl > total || total > len(b) {
		return ErrMalformed
	}
	if checksum.Checksum(b[:ihl], 0) != 0xffff {
		return ErrBadChecksum
	}
	// MF set or a non-zero fragment offset: a fragment.
	if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return ErrUnverifiable
	}
	ip.l4Proto, ip.l4Off, ip.end = b[9], ihl, total
	return nil
}

func parseIPv6(b []byte, ip *ipInfo) error {
	if len(b) < header.IPv6MinimumSize {
		return ErrMalformed
	}
	end := header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:]))
	if end > len(b) {
		return ErrMalformed
	}
	nh := b[6]
	off := header.IPv6MinimumSize
	for {
		switch nh {
		case uint8(header.IPv6HopByHopOptionsExtHdrIdentifier), uint8(header.IPv6DestinationOptionsExtHdrIdentifier):
			if off+2 > end {
				return ErrMalformed
			}
			nh = b[off]
			off += (int(b[off+1]) + 1) * 8
			if off > end {
				return ErrMalformed
			}
		case uint8(header.IPv6FragmentExtHdrIdentifier), uint8(header.IPv6RoutingExtHdrIdentifier):
			// A fragment cannot be checked alone; with a routing header
			// the pseudo-header holds the final destination, not ours.
			return ErrUnverifiable
		default:
			ip.l4Proto, ip.l4Off, ip.end = nh, off, end
			return nil
		}
	}
}

// verifyTransport checks the TCP or UDP checksum of the packet b that
// parseIP described.
func (ip *ipInfo) verifyTransport(b []byte) error {
	// Source and destination addresses are adjacent: IPv4 bytes 12-19,
	// IPv6 bytes 8-39.
	addrs := b[12:20]
	if ip.v6 {
		addrs = b[8:40]
	}
	return verifyTransport(ip.l4Proto, addrs, b[ip.l4Off:ip.end], ip.v6)
}

// verifyTransport checks the TCP or UDP checksum of seg; addrs is the
// source address followed by the destination address.
func verifyTransport(proto uint8, addrs, seg []byte, v6 bool) error {
	switch tcpip.TransportProtocolNumber(proto) {
	case header.TCPProtocolNumber:
		if len(seg) < header.TCPMinimumSize {
			return ErrMalformed
		}
	case header.UDPProtocolNumber:
		if len(seg) < header.UDPMinimumSize {
			return ErrMalformed
		}
		if !v6 && binary.BigEndian.Uint16(seg[6:]) == 0 {
			return nil // IPv4 UDP without checksum (RFC 768).
		}
	default:
		return nil
	}
	if len(seg) > 0xffff {
		return ErrMalformed
	}
	// Pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1): addresses, protocol,
	// upper-layer length. The sum is order-independent per 16-bit word.
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(proto))
	binary.BigEndian.PutUint16(tail[2:], uint16(len(seg)))
	xsum := checksum.Checksum(addrs, 0)
	xsum = checksum.Checksum(tail[:], xsum)
	if checksum.Checksum(seg, xsum) != 0xffff {
		return ErrBadChecksum
	}
	return nil
}
