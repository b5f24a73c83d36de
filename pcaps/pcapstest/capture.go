// Package pcapstest synthesizes packet captures for tests: TCP segments
// encoded with gopacket's layers on any link type the pcaps reader
// supports, written with pcapgo as pcap or pcapng, and whole MPTCP v1
// conversations ([Conn]) with correct keys, HMACs, mappings and DSS
// checksums that a test can then corrupt one byte at a time.
package pcapstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TCP flag bits for Segment.Flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// maxOptions is the TCP option space (RFC 9293 §3.1).
const maxOptions = 40

// Segment is one TCP segment to encode.
type Segment struct {
	Time     time.Time
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	// Options is the option area as a sequence of well-framed TCP options
	// (each option's length byte must match its size); the encoder pads it
	// to a multiple of 4 with EOL bytes.
	Options []byte
	Payload []byte
}

// Format says how to write a capture.
type Format struct {
	// LinkType is one of Ethernet, Raw, IPv4, IPv6, Null, Loop, LinuxSLL,
	// LinuxSLL2 (layers.LinkType*).
	LinkType layers.LinkType
	// NG selects pcapng instead of pcap.
	NG bool
	// Snaplen cuts every record to this many bytes (0: no limit).
	Snaplen int
}

// Write writes segs as a capture in format f.
func Write(w io.Writer, f Format, segs []Segment) error {
	snap := uint32(262144)
	if f.Snaplen > 0 {
		snap = uint32(f.Snaplen)
	}
	var write func(gopacket.CaptureInfo, []byte) error
	var flush func() error
	if f.NG {
		intf := pcapgo.DefaultNgInterface
		intf.LinkType = f.LinkType
		intf.SnapLength = snap
		nw, err := pcapgo.NewNgWriterInterface(w, intf, pcapgo.DefaultNgWriterOptions)
		if err != nil {
			return err
		}
		write, flush = nw.WritePacket, nw.Flush
	} else {
		pw := pcapgo.NewWriterNanos(w)
		if err := pw.WriteFileHeader(snap, f.LinkType); err != nil {
			return err
		}
		write, flush = pw.WritePacket, func() error { return nil }
	}
	for i, s := range segs {
		data, err := Frame(f.LinkType, s)
		if err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		ci := gopacket.CaptureInfo{Timestamp: s.Time, Length: len(data), CaptureLength: len(data)}
		if f.Snaplen > 0 && len(data) > f.Snaplen {
			data = data[:f.Snaplen]
			ci.CaptureLength = f.Snaplen
		}
		if err := write(ci, data); err != nil {
			return err
		}
	}
	return flush()
}

// Frame encodes s as one link-layer frame of type lt, with correct IP and
// TCP checksums.
func Frame(lt layers.LinkType, s Segment) ([]byte, error) {
	ip, err := IPPacket(s)
	if err != nil {
		return nil, err
	}
	v6 := s.Src.Addr().Is6()
	proto := uint16(0x0800)
	if v6 {
		proto = 0x86dd
	}
	var hdr []byte
	switch lt {
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
	case layers.LinkTypeEthernet:
		buf := gopacket.NewSerializeBuffer()
		eth := &layers.Ethernet{
			SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 1},
			DstMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetType(proto),
		}
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload(ip)); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case layers.LinkTypeNull:
		hdr = binary.NativeEndian.AppendUint32(nil, familyOf(v6))
	case layers.LinkTypeLoop:
		hdr = binary.BigEndian.AppendUint32(nil, familyOf(v6))
	case layers.LinkTypeLinuxSLL:
		// packet type (outgoing), ARPHRD_ETHER, address length, address
		// (8 bytes), protocol.
		hdr = make([]byte, 16)
		binary.BigEndian.PutUint16(hdr[0:], 4)
		binary.BigEndian.PutUint16(hdr[2:], 1)
		binary.BigEndian.PutUint16(hdr[4:], 6)
		copy(hdr[6:], []byte{0x02, 0, 0, 0, 0, 1})
		binary.BigEndian.PutUint16(hdr[14:], proto)
	case layers.LinkTypeLinuxSLL2:
		// protocol, reserved, interface index, ARPHRD_ETHER, packet type,
		// address length, address (8 bytes).
		hdr = make([]byte, 20)
		binary.BigEndian.PutUint16(hdr[0:], proto)
		binary.BigEndian.PutUint32(hdr[4:], 3)
		binary.BigEndian.PutUint16(hdr[8:], 1)
		hdr[10] = 4
		hdr[11] = 6
		copy(hdr[12:], []byte{0x02, 0, 0, 0, 0, 1})
	default:
		return nil, fmt.Errorf("pcapstest: link type %v not supported", lt)
	}
	return append(hdr, ip...), nil
}

func familyOf(v6 bool) uint32 {
	if v6 {
		return 10 // AF_INET6 on Linux
	}
	return 2 // AF_INET
}

// IPPacket encodes s as an IPv4 or IPv6 packet (by the address family of
// s.Src) with gopacket's layers.
func IPPacket(s Segment) ([]byte, error) {
	if s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		return nil, errors.New("pcapstest: mixed address families")
	}
	if len(s.Options) > maxOptions {
		return nil, fmt.Errorf("pcapstest: %d bytes of options, TCP allows %d", len(s.Options), maxOptions)
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(s.Src.Port()),
		DstPort: layers.TCPPort(s.Dst.Port()),
		Seq:     s.Seq,
		Ack:     s.Ack,
		FIN:     s.Flags&FIN != 0,
		SYN:     s.Flags&SYN != 0,
		RST:     s.Flags&RST != 0,
		PSH:     s.Flags&PSH != 0,
		ACK:     s.Flags&ACK != 0,
		Window:  s.Window,
	}
	for b := s.Options; len(b) > 0; {
		switch {
		case b[0] <= 1: // EOL, NOP
			tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKind(b[0])})
			b = b[1:]
		case len(b) < 2 || int(b[1]) < 2 || int(b[1]) > len(b):
			return nil, fmt.Errorf("pcapstest: badly framed option area %x", s.Options)
		default:
			n := int(b[1])
			tcp.Options = append(tcp.Options, layers.TCPOption{
				OptionType: layers.TCPOptionKind(b[0]), OptionLength: b[1], OptionData: b[2:n],
			})
			b = b[n:]
		}
	}
	var ipl gopacket.NetworkLayer
	if s.Src.Addr().Is4() {
		ipl = &layers.IPv4{
			Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice(),
		}
	} else {
		ipl = &layers.IPv6{
			Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice(),
		}
	}
	if err := tcp.SetNetworkLayerForChecksum(ipl); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ipl.(gopacket.SerializableLayer), tcp, gopacket.Payload(s.Payload)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
