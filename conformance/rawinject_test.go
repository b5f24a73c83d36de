package conformance

// Forging and sniffing segments on the kernel's side of a TUN (or a veth):
// an AF_PACKET socket bound to the interface inside the namespace. What it
// sends goes out of the interface as if the kernel had sent it (for a TUN:
// straight to the engine, which reads the device), bypassing the kernel's
// TCP and routing; what it receives is every packet crossing the
// interface, in both directions, except its own. The hostile-input and
// SYN-flood tests use it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// rawSeg is a TCP segment to forge.
type rawSeg struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    header.TCPFlags
	Window   uint16
	Options  []byte // TCP options, padded here to a multiple of 4 with NOPs... then EOL
	Payload  []byte
	TTL      uint8
}

// bytes encodes the segment as an IPv4 or IPv6 packet with valid
// checksums.
func (s rawSeg) bytes() []byte {
	opts := append([]byte(nil), s.Options...)
	for len(opts)%4 != 0 {
		opts = append(opts, 1) // NOP
	}
	if len(opts) > 40 {
		panic(fmt.Sprintf("rawSeg: %d bytes of TCP options", len(opts)))
	}
	tcpLen := header.TCPMinimumSize + len(opts) + len(s.Payload)
	ttl := s.TTL
	if ttl == 0 {
		ttl = 64
	}
	var b []byte
	var tcp header.TCP
	v6 := s.Src.Addr().Is6() && !s.Src.Addr().Is4In6()
	if v6 {
		b = make([]byte, header.IPv6MinimumSize+tcpLen)
		ip := header.IPv6(b)
		ip.Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          ttl,
			SrcAddr:           tcpip.AddrFrom16(s.Src.Addr().As16()),
			DstAddr:           tcpip.AddrFrom16(s.Dst.Addr().As16()),
		})
		tcp = header.TCP(b[header.IPv6MinimumSize:])
	} else {
		b = make([]byte, header.IPv4MinimumSize+tcpLen)
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)),
			TTL:         ttl,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4(s.Src.Addr().Unmap().As4()),
			DstAddr:     tcpip.AddrFrom4(s.Dst.Addr().Unmap().As4()),
			Flags:       header.IPv4FlagDontFragment,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		tcp = header.TCP(b[header.IPv4MinimumSize:])
	}
	tcp.Encode(&header.TCPFields{
		SrcPort:    s.Src.Port(),
		DstPort:    s.Dst.Port(),
		SeqNum:     s.Seq,
		AckNum:     s.Ack,
		DataOffset: uint8(header.TCPMinimumSize + len(opts)),
		Flags:      s.Flags,
		WindowSize: s.Window,
	})
	copy(tcp[header.TCPMinimumSize:], opts)
	copy(tcp[header.TCPMinimumSize+len(opts):], s.Payload)
	src, dst := addrOf(s.Src.Addr()), addrOf(s.Dst.Addr())
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))
	xsum = checksum.Checksum(tcp, xsum)
	tcp.SetChecksum(^xsum)
	return b
}

func addrOf(a netip.Addr) tcpip.Address {
	if a.Is4() || a.Is4In6() {
		return tcpip.AddrFrom4(a.Unmap().As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// parsedSeg is a sniffed TCP segment.
type parsedSeg struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    header.TCPFlags
	Window   uint16
	Options  []byte
	PayLen   int
	Outgoing bool // sent by this namespace's kernel (towards the engine)
	At       time.Time
}

// parseSeg decodes an IPv4 or IPv6 TCP packet.
func parseSeg(b []byte) (parsedSeg, bool) {
	var p parsedSeg
	if len(b) == 0 {
		return p, false
	}
	var payload []byte
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if len(b) < header.IPv4MinimumSize || !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return p, false
		}
		s, d := ip.SourceAddress().As4(), ip.DestinationAddress().As4()
		p.Src, p.Dst = netip.AddrPortFrom(netip.AddrFrom4(s), 0), netip.AddrPortFrom(netip.AddrFrom4(d), 0)
		payload = ip.Payload()
	case 6:
		ip := header.IPv6(b)
		if len(b) < header.IPv6MinimumSize || ip.TransportProtocol() != header.TCPProtocolNumber {
			return p, false
		}
		s, d := ip.SourceAddress().As16(), ip.DestinationAddress().As16()
		p.Src, p.Dst = netip.AddrPortFrom(netip.AddrFrom16(s), 0), netip.AddrPortFrom(netip.AddrFrom16(d), 0)
		payload = ip.Payload()
	default:
		return p, false
	}
	tcp := header.TCP(payload)
	if len(tcp) < header.TCPMinimumSize || int(tcp.DataOffset()) > len(tcp) || tcp.DataOffset() < header.TCPMinimumSize {
		return p, false
	}
	p.Src = netip.AddrPortFrom(p.Src.Addr(), tcp.SourcePort())
	p.Dst = netip.AddrPortFrom(p.Dst.Addr(), tcp.DestinationPort())
	p.Seq, p.Ack, p.Flags, p.Window = tcp.SequenceNumber(), tcp.AckNumber(), tcp.Flags(), tcp.WindowSize()
	p.Options = append([]byte(nil), tcp.Options()...)
	p.PayLen = len(tcp) - int(tcp.DataOffset())
	return p, true
}

// tcpTimestamp returns the TCP timestamp option (TSval, TSecr) if present.
func tcpTimestamp(opts []byte) (val, ecr uint32, ok bool) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0, 0, false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return 0, 0, false
		}
		if opts[i] == 8 && opts[i+1] == 10 {
			return binary.BigEndian.Uint32(opts[i+2:]), binary.BigEndian.Uint32(opts[i+6:]), true
		}
		i += int(opts[i+1])
	}
	return 0, 0, false
}

// packetSock is an AF_PACKET socket bound to one interface of a
// namespace. Send and the sniffer may be used from any goroutine.
type packetSock struct {
	fd      int
	ifindex int
	// dstMAC, for an Ethernet interface (veth), is the link address
	// packets are sent to; nil for a TUN.
	dstMAC net.HardwareAddr

	mu      sync.Mutex
	onSeg   func(parsedSeg) // called for every sniffed TCP segment
	closed  chan struct{}
	stopped chan struct{}
	sendErr error
	sent    uint64
}

// openPacketSock opens the socket inside ns on ifc. With sniff, a
// goroutine reads every packet and hands TCP segments to onSeg (set with
// setSniffer).
func openPacketSock(ns *netns.NS, ifc string, sniff bool) (*packetSock, error) {
	ps := &packetSock{fd: -1, closed: make(chan struct{}), stopped: make(chan struct{})}
	proto := sniffProto(sniff)
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		ps.ifindex = ifi.Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		// A large buffer: a flood of sends, or a bulk transfer sniffed.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		// Reads wake up now and then to see whether to stop.
		tv := unix.Timeval{Usec: 100000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		ps.fd = fd
		return nil
	})
	if err != nil {
		return nil, err
	}
	if sniff {
		go ps.sniff()
	} else {
		close(ps.stopped)
	}
	return ps, nil
}

// sniffProto is the protocol the socket binds: every packet when sniffing,
// none (send only) otherwise.
func sniffProto(sniff bool) uint16 {
	if sniff {
		return htons(unix.ETH_P_ALL)
	}
	return 0
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (ps *packetSock) setSniffer(f func(parsedSeg)) {
	ps.mu.Lock()
	ps.onSeg = f
	ps.mu.Unlock()
}

func (ps *packetSock) sniff() {
	defer close(ps.stopped)
	buf := make([]byte, 65536)
	for {
		select {
		case <-ps.closed:
			return
		default:
		}
		n, from, err := unix.Recvfrom(ps.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		seg, ok := parseSeg(buf[:n])
		if !ok {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			seg.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		seg.At = time.Now()
		ps.mu.Lock()
		f := ps.onSeg
		ps.mu.Unlock()
		if f != nil {
			f(seg)
		}
	}
}

// send writes one IP packet out of the interface.
func (ps *packetSock) send(pkt []byte) error {
	proto := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	for {
		sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ps.ifindex}
		if len(ps.dstMAC) == 6 {
			sa.Halen = 6
			copy(sa.Addr[:], ps.dstMAC)
		}
		err := unix.Sendto(ps.fd, pkt, 0, sa)
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		if err == nil {
			ps.mu.Lock()
			ps.sent++
			ps.mu.Unlock()
		}
		return err
	}
}

func (ps *packetSock) close() {
	select {
	case <-ps.closed:
		return
	default:
	}
	close(ps.closed)
	<-ps.stopped
	unix.Close(ps.fd)
}
