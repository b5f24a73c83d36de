package tun

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// virtioNetHdrLen is sizeof(struct virtio_net_hdr) (include/uapi/linux/
// virtio_net.h), the header a TUN opened with IFF_VNET_HDR puts in front of
// every packet in both directions.
const virtioNetHdrLen = 10

// virtio_net_hdr flags and GSO types (linux/virtio_net.h).
const (
	virtioFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: CHECKSUM_PARTIAL
	virtioFlagDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: CHECKSUM_UNNECESSARY

	virtioGSONone  = 0
	virtioGSOTCPv4 = 1
	virtioGSOUDP   = 3
	virtioGSOTCPv6 = 4
	virtioGSOUDPL4 = 5
	virtioGSOECN   = 0x80
)

// maxIovecs bounds the iovecs of one raw write; packets made of more
// views are copied into one buffer first.
const maxIovecs = 64

// ErrUnsupportedGSO: a super-packet of a GSO type the Endpoint cannot pass
// on whole (UDP fragmentation or segmentation offload), or whose virtio
// header contradicts the packet it describes.
var ErrUnsupportedGSO = errors.New("tun: unsupported or inconsistent GSO packet")

// virtioNetHdr is struct virtio_net_hdr, in the host's byte order (a TUN
// uses native endianness unless TUNSETVNETLE/BE says otherwise).
type virtioNetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *virtioNetHdr) decode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *virtioNetHdr) encode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	b[0] = h.flags
	b[1] = h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// offloaded is what classifyOffloaded learnt about a packet read with its
// virtio header.
type offloaded struct {
	proto tcpip.NetworkProtocolNumber
	// segs is the number of wire packets the packet stands for: 1, or for
	// a TCP super-packet its payload divided by the segment size, rounded
	// up.
	segs int
	// gso is true for a TCP super-packet.
	gso bool
	// unverified is true when the transport checksum could not be checked
	// (IP fragments, IPv6 routing header), as ErrUnverifiable from
	// verifyPacket.
	unverified bool
	// hdrLen is the length of the IP and TCP headers of a TCP packet
	// (0 otherwise): where its payload starts.
	hdrLen int
}

// classifyOffloaded checks a packet b that a TUN returned with virtio
// header h, and decides whether it can be delivered whole, with
// pkt.RXChecksumValidated set (see Endpoint):
//
//   - A TCP super-packet (GSO_TCPV4/GSO_TCPV6, the kernel's TSO/GRO
//     packets) always comes with NEEDS_CSUM: the kernel built or merged it
//     and its TCP checksum field holds only the pseudo-header sum. Its IP
//     header is checked as verifyPacket does (IPv4 header checksum, lengths,
//     no fragment), and the virtio header must agree with it (checksum at the
//     TCP checksum field, a TCP header that fits); the TCP checksum is not
//     computed: the bytes come from the local kernel, which verified every
//     segment it merged. It is delivered whole (the receive coalescing the
//     Endpoint would otherwise redo with GRO).
//   - A packet with NEEDS_CSUM and no GSO (CHECKSUM_PARTIAL, the kernel's
//     locally generated packets) is treated the same way when the checksum
//     it leaves open is the TCP or UDP one; any other partial checksum is
//     completed in place and then verified like an ordinary packet.
//   - A packet with DATA_VALID (CHECKSUM_UNNECESSARY: the kernel or the NIC
//     it arrived on verified it) gets its IP header checked only.
//   - Anything else is verified in full by verifyPacket.
//
// UDP super-packets (GSO_UDP, GSO_UDP_L4) fail with ErrUnsupportedGSO: the
// Endpoint turns UDP segmentation offload off on the device, so the kernel
// splits them before they reach it. It never panics and does not allocate.
func classifyOffloaded(h *virtioNetHdr, b []byte) (offloaded, error) {
	o := offloaded{segs: 1}
	gsoType := h.gsoType &^ virtioGSOECN
	ip, err := parseIP(b)
	o.proto = ip.proto
	if err == nil {
		o.hdrLen = tcpHeaderEnd(&ip, b)
	}
	if gsoType == virtioGSONone && h.flags&virtioFlagNeedsCsum == 0 {
		if err == ErrUnverifiable {
			o.unverified = true
			return o, nil
		}
		if err != nil {
			return o, err
		}
		if h.flags&virtioFlagDataValid != 0 {
			return o, nil
		}
		return o, ip.verifyTransport(b)
	}
	if err == ErrUnverifiable {
		if gsoType != virtioGSONone {
			return o, ErrUnsupportedGSO
		}
		// A fragment with a partial checksum: nothing we can complete.
		o.unverified = true
		return o, nil
	}
	if err != nil {
		return o, err
	}
	switch gsoType {
	case virtioGSONone:
		// CHECKSUM_PARTIAL without segmentation.
		if int(h.csumStart) == ip.l4Off && partialIsTransport(ip.l4Proto, h.csumOffset) {
			return o, nil
		}
		if err := completeChecksum(b[:ip.end], h.csumStart, h.csumOffset); err != nil {
			return o, err
		}
		return o, ip.verifyTransport(b)
	case virtioGSOTCPv4, virtioGSOTCPv6:
	default:
		return o, ErrUnsupportedGSO
	}
	if (gsoType == virtioGSOTCPv4) != (o.proto == header.IPv4ProtocolNumber) ||
		h.flags&virtioFlagNeedsCsum == 0 || h.gsoSize == 0 ||
		ip.l4Proto != uint8(header.TCPProtocolNumber) || int(h.csumStart) != ip.l4Off ||
		h.csumOffset != header.TCPChecksumOffset {
		return o, ErrUnsupportedGSO
	}
	seg := b[ip.l4Off:ip.end]
	if len(seg) < header.TCPMinimumSize {
		return o, ErrMalformed
	}
	thl := int(header.TCP(seg).DataOffset())
	if thl < header.TCPMinimumSize || thl > len(seg) {
		return o, ErrMalformed
	}
	payload := len(seg) - thl
	if payload == 0 {
		return o, ErrUnsupportedGSO
	}
	o.gso = true
	o.segs = (payload + int(h.gsoSize) - 1) / int(h.gsoSize)
	return o, nil
}

// tcpHeaderEnd returns the offset of the payload of a TCP packet that
// parseIP described, or 0 if it is not TCP or its header is malformed.
func tcpHeaderEnd(ip *ipInfo, b []byte) int {
	if ip.l4Proto != uint8(header.TCPProtocolNumber) || ip.l4Off+header.TCPMinimumSize > ip.end {
		return 0
	}
	end := ip.l4Off + int(header.TCP(b[ip.l4Off:]).DataOffset())
	if end < ip.l4Off+header.TCPMinimumSize || end > ip.end {
		return 0
	}
	return end
}

// partialIsTransport reports whether a partial checksum at csumOffset from
// the start of a proto header is that header's own checksum field.
func partialIsTransport(proto uint8, csumOffset uint16) bool {
	switch tcpip.TransportProtocolNumber(proto) {
	case header.TCPProtocolNumber:
		return csumOffset == header.TCPChecksumOffset
	case header.UDPProtocolNumber:
		return csumOffset == udpChecksumOffset
	}
	return false
}

// completeChecksum finishes a CHECKSUM_PARTIAL packet as the device would:
// the one's complement sum from csumStart to the end of the packet (the
// field already holds the pseudo-header sum) is stored, complemented, at
// csumStart+csumOffset.
func completeChecksum(b []byte, csumStart, csumOffset uint16) error {
	at := int(csumStart) + int(csumOffset)
	if int(csumStart) > len(b) || at+2 > len(b) {
		return ErrMalformed
	}
	sum := checksum.Checksum(b[csumStart:], 0)
	binary.BigEndian.PutUint16(b[at:], ^sum)
	return nil
}

// gsoHeader returns the virtio header for pkt, a packet the stack built with
// GSO options (stack.GSO; see Endpoint.SupportedGSO): NEEDS_CSUM with the
// checksum position when the stack left the transport checksum to the
// device, and a TCP segmentation request when the payload is larger than
// one segment.
func gsoHeader(pkt *stack.PacketBuffer) virtioNetHdr {
	var h virtioNetHdr
	g := &pkt.GSOOptions
	l3 := len(pkt.NetworkHeader().Slice())
	if g.NeedsCsum {
		h.flags = virtioFlagNeedsCsum
		h.csumStart = uint16(l3)
		h.csumOffset = g.CsumOffset
	}
	if g.MSS > 0 && pkt.Data().Size() > int(g.MSS) {
		switch g.Type {
		case stack.GSOTCPv4:
			h.gsoType = virtioGSOTCPv4
		case stack.GSOTCPv6:
			h.gsoType = virtioGSOTCPv6
		}
		if h.gsoType != virtioGSONone {
			h.gsoSize = g.MSS
			h.hdrLen = uint16(l3 + len(pkt.TransportHeader().Slice()))
		}
	}
	return h
}

// gsoSegments is the number of wire packets a GSO packet with header h
// and payload bytes stands for.
func gsoSegments(h *virtioNetHdr, payload int) int {
	if h.gsoType == virtioGSONone || h.gsoSize == 0 || payload <= 0 {
		return 1
	}
	return (payload + int(h.gsoSize) - 1) / int(h.gsoSize)
}

// udpChecksumOffset is the offset of the checksum field in a UDP header
// (RFC 768).
const udpChecksumOffset = 6
