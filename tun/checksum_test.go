package tun

import (
	"errors"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ipv6WithExt builds an IPv6 packet whose first extension header is of type
// ext (8 bytes, next header nh) followed by l4 of protocol nh. The L4
// checksum is computed over l4 with the packet's addresses.
func ipv6WithExt(ext, nh uint8, l4 []byte) []byte {
	// Compute the L4 checksum on a plain packet, then insert the header.
	plain := finishL4(ipv6Packet(nh, nil, l4))
	hdr := []byte{nh, 0, 0, 0, 0, 0, 0, 0}
	if ext == uint8(header.IPv6FragmentExtHdrIdentifier) {
		hdr = []byte{nh, 0, 0, 1, 0, 0, 0, 7} // offset 0, M=1
	}
	return ipv6Packet(ext, hdr, plain[header.IPv6MinimumSize:])
}

func validPackets() map[string][]byte {
	udp4NoSum := udp4(payload(20, 1))
	udp4NoSum[26], udp4NoSum[27] = 0, 0
	padded := append(tcp4(7, header.TCPFlagAck, payload(10, 2)), 0, 0, 0, 0, 0, 0)
	return map[string][]byte{
		"tcp4":          tcp4(1, header.TCPFlagAck, payload(1000, 1)),
		"tcp4-odd":      tcp4(1, header.TCPFlagAck|header.TCPFlagPsh, payload(999, 3)),
		"tcp4-empty":    tcp4(1, header.TCPFlagSyn, nil),
		"tcp6":          tcp6(1, header.TCPFlagAck, payload(1000, 4)),
		"udp4":          udp4(payload(100, 5)),
		"udp4-nosum":    udp4NoSum,
		"udp6":          udp6(payload(101, 6)),
		"tcp4-padded":   padded,
		"tcp6-hopbyhop": ipv6WithExt(uint8(header.IPv6HopByHopOptionsExtHdrIdentifier), uint8(header.TCPProtocolNumber), tcpSegment(5, header.TCPFlagAck, payload(50, 7))),
		"udp6-destopts": ipv6WithExt(uint8(header.IPv6DestinationOptionsExtHdrIdentifier), uint8(header.UDPProtocolNumber), udpDatagram(payload(50, 8))),
		"icmp4":         ipv4Packet(uint8(header.ICMPv4ProtocolNumber), payload(30, 9)),
		"icmp6":         ipv6Packet(uint8(header.ICMPv6ProtocolNumber), nil, payload(30, 10)),
	}
}

func TestVerifyPacket(t *testing.T) {
	for name, p := range validPackets() {
		proto, err := verifyPacket(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		want := header.IPv4ProtocolNumber
		if p[0]>>4 == 6 {
			want = header.IPv6ProtocolNumber
		}
		if proto != want {
			t.Errorf("%s: protocol %d, want %d", name, proto, want)
		}
	}

	mutate := func(p []byte, fn func([]byte)) []byte {
		p = slices.Clone(p)
		fn(p)
		return p
	}
	reIPv4Sum := func(p []byte) {
		p[10], p[11] = 0, 0
		header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
	}
	v := validPackets()
	cases := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version 0", []byte{0x05}, ErrMalformed},
		{"version 5", mutate(v["tcp4"], func(p []byte) { p[0] = 0x55 }), ErrMalformed},
		{"ipv4 ihl 4", mutate(v["tcp4"], func(p []byte) { p[0] = 0x44 }), ErrMalformed},
		{"ipv4 ihl past total", mutate(v["icmp4"], func(p []byte) { p[0] = 0x4f; p[2], p[3] = 0, 40 }), ErrMalformed},
		{"ipv4 total past end", mutate(v["tcp4"], func(p []byte) { p[2]++; reIPv4Sum(p) }), ErrMalformed},
		{"ipv4 header checksum", mutate(v["tcp4"], func(p []byte) { p[8]-- }), ErrBadChecksum},
		{"ipv4 more fragments", mutate(v["tcp4"], func(p []byte) { p[6] = 0x20; reIPv4Sum(p) }), ErrUnverifiable},
		{"ipv4 fragment offset", mutate(v["udp4"], func(p []byte) { p[7] = 1; reIPv4Sum(p) }), ErrUnverifiable},
		{"tcp4 payload", mutate(v["tcp4"], func(p []byte) { p[100] ^= 0x80 }), ErrBadChecksum},
		{"tcp4 short header", func() []byte {
			p := ipv4Packet(uint8(header.TCPProtocolNumber), payload(19, 0))
			return p
		}(), ErrMalformed},
		{"udp4 short header", ipv4Packet(uint8(header.UDPProtocolNumber), payload(7, 0)), ErrMalformed},
		{"udp4 payload", mutate(v["udp4"], func(p []byte) { p[40] ^= 1 }), ErrBadChecksum},
		{"tcp6 payload", mutate(v["tcp6"], func(p []byte) { p[len(p)-1] ^= 1 }), ErrBadChecksum},
		{"tcp6 source address", mutate(v["tcp6"], func(p []byte) { p[9] ^= 1 }), ErrBadChecksum},
		{"udp6 zero checksum", mutate(v["udp6"], func(p []byte) { p[46], p[47] = 0, 0 }), ErrBadChecksum},
		{"ipv6 short", v["tcp6"][:39], ErrMalformed},
		{"ipv6 payload length past end", mutate(v["tcp6"], func(p []byte) { p[5]++ }), ErrMalformed},
		{"ipv6 fragment", ipv6WithExt(uint8(header.IPv6FragmentExtHdrIdentifier), uint8(header.TCPProtocolNumber), tcpSegment(1, header.TCPFlagAck, nil)), ErrUnverifiable},
		{"ipv6 routing", ipv6WithExt(uint8(header.IPv6RoutingExtHdrIdentifier), uint8(header.TCPProtocolNumber), tcpSegment(1, header.TCPFlagAck, nil)), ErrUnverifiable},
		{"ipv6 ext past end", mutate(v["tcp6-hopbyhop"], func(p []byte) { p[41] = 200 }), ErrMalformed},
		{"ipv6 ext truncated", ipv6Packet(uint8(header.IPv6HopByHopOptionsExtHdrIdentifier), []byte{6}, nil), ErrMalformed},
		{"tcp6 behind hop-by-hop", mutate(v["tcp6-hopbyhop"], func(p []byte) { p[len(p)-1] ^= 1 }), ErrBadChecksum},
	}
	for _, c := range cases {
		if _, err := verifyPacket(c.pkt); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// TestVerifyPacketTruncated: every proper prefix of a valid packet is
// malformed (its length fields now overrun it).
func TestVerifyPacketTruncated(t *testing.T) {
	for name, p := range validPackets() {
		if name == "tcp4-padded" {
			p = p[:len(p)-6]
		}
		for n := range len(p) {
			if _, err := verifyPacket(p[:n]); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s cut to %d of %d bytes: %v, want ErrMalformed", name, n, len(p), err)
			}
		}
	}
}

// TestVerifyPacketBitFlips: flipping any bit that a checksum covers is
// caught. For IPv4 that is every byte up to the total length; for IPv6 the
// addresses and everything from the transport header on (traffic class, flow
// label, payload length and hop limit are not covered; next header changes
// which checksum applies). The version nibble is not covered either.
func TestVerifyPacketBitFlips(t *testing.T) {
	for name, p := range validPackets() {
		if name == "icmp4" || name == "icmp6" || name == "udp4-nosum" || name == "tcp4-padded" {
			continue
		}
		from := 0
		if p[0]>>4 == 6 {
			from = 8
		}
		for i := from; i < len(p); i++ {
			if p[0]>>4 == 6 && i >= 40 && i < 48 && (name == "tcp6-hopbyhop" || name == "udp6-destopts") {
				continue // the extension header is not checksummed
			}
			for bit := range 8 {
				if i == 0 && bit >= 4 {
					// The version nibble selects the parser: 4 -> 6
					// reads as an IPv6 packet of some unknown protocol.
					continue
				}
				q := slices.Clone(p)
				q[i] ^= 1 << bit
				if _, err := verifyPacket(q); err == nil {
					t.Errorf("%s: flipping bit %d of byte %d went unnoticed", name, bit, i)
				}
			}
		}
	}
}

func TestVerifyPacketNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	pkts := validPackets()
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range pkts {
			verifyPacket(p)
		}
	})
	if allocs != 0 {
		t.Errorf("verifyPacket allocates %v times per round", allocs)
	}
}

// oracle judges p with gVisor's header package where that is independent
// of verifyPacket: IPv4 with TCP or UDP, and IPv6 whose next header is TCP
// or UDP. ok is false for everything else.
func oracle(p []byte) (err error, ok bool) {
	if len(p) == 0 {
		return nil, false
	}
	var src, dst tcpip.Address
	var seg []byte
	var proto tcpip.TransportProtocolNumber
	v6 := false
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || int(ip.TotalLength()) < int(ip.HeaderLength()) {
			return nil, false
		}
		if !ip.IsChecksumValid() {
			return ErrBadChecksum, true
		}
		if ip.Flags()&header.IPv4FlagMoreFragments != 0 || ip.FragmentOffset() != 0 {
			return ErrUnverifiable, true
		}
		src, dst, proto = ip.SourceAddress(), ip.DestinationAddress(), ip.TransportProtocol()
		seg = p[ip.HeaderLength():ip.TotalLength()]
	case 6:
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) {
			return nil, false
		}
		src, dst, proto = ip.SourceAddress(), ip.DestinationAddress(), ip.TransportProtocol()
		seg = p[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())]
		v6 = true
	default:
		return nil, false
	}
	switch proto {
	case header.TCPProtocolNumber:
		tcp := header.TCP(seg)
		if len(seg) < header.TCPMinimumSize || int(tcp.DataOffset()) < header.TCPMinimumSize || int(tcp.DataOffset()) > len(seg) {
			return nil, false
		}
		off := int(tcp.DataOffset())
		if !tcp.IsChecksumValid(src, dst, checksum.Checksum(seg[off:], 0), uint16(len(seg)-off)) {
			return ErrBadChecksum, true
		}
		return nil, true
	case header.UDPProtocolNumber:
		if len(seg) < header.UDPMinimumSize {
			return nil, false
		}
		udp := header.UDP(seg)
		if int(udp.Length()) != len(seg) {
			return nil, false // gVisor's check would use the UDP length
		}
		if udp.Checksum() == 0 && !v6 {
			return nil, true
		}
		if !udp.IsChecksumValid(src, dst, checksum.Checksum(seg[header.UDPMinimumSize:], 0)) {
			return ErrBadChecksum, true
		}
		return nil, true
	}
	return nil, false
}

// FuzzVerifyPacket checks that verifyPacket never panics and agrees with
// gVisor's own checks wherever those apply.
func FuzzVerifyPacket(f *testing.F) {
	for _, p := range validPackets() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		proto, err := verifyPacket(p)
		if err == nil || errors.Is(err, ErrUnverifiable) {
			if proto != header.IPv4ProtocolNumber && proto != header.IPv6ProtocolNumber {
				t.Fatalf("accepted with protocol %d", proto)
			}
		}
		want, ok := oracle(p)
		if !ok {
			return
		}
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("verifyPacket = %v, gVisor says %v", err, want)
		}
	})
}
