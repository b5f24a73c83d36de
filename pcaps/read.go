package pcaps

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/options"
)

// TCP header flag bits, as they appear in [Packet.Flags] (RFC 9293 §3.1).
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// Errors returned by [Read] and [ReadFile].
var (
	// ErrFormat means the input is neither a pcap nor a pcapng capture.
	ErrFormat = errors.New("pcaps: not a pcap or pcapng capture")
	// ErrCutShort means the capture ends in the middle of a record, as
	// happens when tcpdump is killed. The packets before it are returned
	// together with the error.
	ErrCutShort = errors.New("pcaps: capture cut short")
	// ErrLinkType means a record uses a link type the reader does not
	// decode (see [Read] for the supported ones).
	ErrLinkType = errors.New("pcaps: unsupported link type")
)

// Packet is one captured TCP segment.
//
// Options, Payload and the slices inside Opts and MPTCP alias the record
// read from the capture; a Packet owns them (nothing else refers to them).
type Packet struct {
	// Index is the 1-based frame number within the capture, counting every
	// record (also the non-TCP ones that were skipped), as tshark numbers
	// frames.
	Index int
	// Time is the capture timestamp (zero for pcapng simple packet blocks).
	Time     time.Time
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	// Flags is the TCP flags byte (FlagSYN, FlagACK, ...).
	Flags  uint8
	Window uint16
	// Options is the raw TCP option area (header bytes after the fixed 20).
	Options []byte
	// Payload is the captured part of the segment's payload.
	Payload []byte
	// PayloadLen is the payload length on the wire, derived from the IP
	// header. It exceeds len(Payload) when the snap length cut the record.
	PayloadLen int
	// Opts holds the TCP options parsed by options.ParseTCPOptions.
	Opts options.TCPOptions
	// MPTCP holds every well-formed MPTCP option of the segment, in order
	// (not limited to options.MaxMPTCPOptions).
	MPTCP []options.Option
	// OptErrors lists the options that failed to parse: an *OptionError for
	// a malformed MPTCP option, a wrapped options error for a malformed
	// TCP option area.
	OptErrors []error
}

// Truncated reports whether the snap length cut part of the payload.
func (p *Packet) Truncated() bool { return len(p.Payload) < p.PayloadLen }

// OptionError describes an MPTCP option (TCP option kind 30) that failed to
// parse. Unwrap gives the options package's sentinel error
// (options.ErrTruncated, options.ErrBadLength, options.ErrBadVersion).
type OptionError struct {
	Raw []byte // the whole option, from the kind byte
	Err error
}

func (e *OptionError) Error() string {
	name := "MPTCP option"
	if len(e.Raw) >= 3 {
		name = options.Subtype(e.Raw[2] >> 4).String()
	}
	return fmt.Sprintf("%s (%d bytes: %x): %v", name, len(e.Raw), e.Raw, e.Err)
}

func (e *OptionError) Unwrap() error { return e.Err }

// ReadFile reads the capture file at path. See [Read].
func ReadFile(path string) ([]Packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Read decodes a pcap or pcapng capture (optionally gzip-compressed) and
// returns its TCP segments in capture order.
//
// Link types: Ethernet (with 802.1Q/802.1ad tags), raw IP (LINKTYPE_RAW,
// LINKTYPE_IPV4, LINKTYPE_IPV6), BSD loopback (NULL, LOOP) and Linux cooked
// capture v1 and v2 (SLL, SLL2: what tcpdump -i any writes). A pcapng file
// may mix link types across interfaces. IPv4 and IPv6 (hop-by-hop,
// routing, destination options and AH headers are skipped). Non-IP,
// non-TCP packets, IP fragments and packets whose TCP header was not
// captured in full are skipped (they still count in frame numbers).
//
// When the capture ends inside a record, Read returns the packets before
// it and an error wrapping [ErrCutShort]. Read holds the whole capture in
// memory.
func Read(r io.Reader) ([]Packet, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, zerr := gzip.NewReader(br)
		if zerr != nil {
			return nil, fmt.Errorf("pcaps: gzip: %w", zerr)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
		magic, err = br.Peek(4)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w (%d bytes)", ErrFormat, len(magic))
		}
		return nil, err
	}

	var src packetSource
	switch {
	case binary.LittleEndian.Uint32(magic) == 0x0a0d0d0a:
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("pcaps: pcapng: %w", readErr(err))
		}
		src = ngSource{ng}
	case isPcapMagic(magic):
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcaps: pcap: %w", readErr(err))
		}
		src = pcapSource{pr}
	default:
		return nil, fmt.Errorf("%w (magic %x)", ErrFormat, magic)
	}

	var pkts []Packet
	for frame := 1; ; frame++ {
		data, ci, lt, err := src.next()
		if err == io.EOF {
			return pkts, nil
		}
		if err != nil {
			return pkts, fmt.Errorf("pcaps: frame %d: %w", frame, readErr(err))
		}
		var p Packet
		ok, err := decodePacket(&p, lt, data, ci.Length)
		if err != nil {
			return pkts, fmt.Errorf("frame %d: %w", frame, err)
		}
		if !ok {
			continue
		}
		p.Index = frame
		p.Time = ci.Timestamp
		pkts = append(pkts, p)
	}
}

// readErr maps an unexpected end of input to ErrCutShort.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrCutShort
	}
	return err
}

func isPcapMagic(m []byte) bool {
	switch binary.LittleEndian.Uint32(m) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		return true
	}
	return false
}

// packetSource hides the difference between pcap and pcapng readers.
type packetSource interface {
	next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error)
}

type pcapSource struct{ r *pcapgo.Reader }

func (s pcapSource) next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ReadPacketData()
	return data, ci, s.r.LinkType(), err
}

type ngSource struct{ r *pcapgo.NgReader }

func (s ngSource) next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ReadPacketData()
	if err != nil {
		return nil, ci, 0, err
	}
	lt := s.r.LinkType()
	if len(ci.AncillaryData) > 0 {
		if t, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			lt = t
		}
	}
	return data, ci, lt, nil
}

// Ethernet types and IP protocol numbers the decoder looks at.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88a8
	etherTypeQinQv1 = 0x9100

	protoTCP        = 6
	protoHopByHop   = 0
	protoRouting    = 43
	protoFragment   = 44
	protoAH         = 51
	protoDestOpts   = 60
	maxIPv6ExtChain = 8
)

// decodePacket fills p from one record. It reports false for records that
// are not complete, unfragmented TCP segments; it fails only for link types
// it does not know. wireLen is the record's original length.
func decodePacket(p *Packet, lt layers.LinkType, data []byte, wireLen int) (bool, error) {
	ip, hdr, ok, err := linkPayload(lt, data)
	if err != nil || !ok {
		return false, err
	}
	// What the link header took from the wire length; used when the IP
	// length field is zero (TSO/GSO super-packets captured on the sender).
	ipWire := wireLen - hdr
	if len(ip) < 1 {
		return false, nil
	}
	var (
		tcp     []byte
		tcpWire int
	)
	switch ip[0] >> 4 {
	case 4:
		tcp, tcpWire, ok = decodeIPv4(p, ip, ipWire)
	case 6:
		tcp, tcpWire, ok = decodeIPv6(p, ip, ipWire)
	default:
		return false, nil
	}
	if !ok {
		return false, nil
	}
	return decodeTCP(p, tcp, tcpWire), nil
}

// linkPayload strips the link-layer header. hdr is the header length.
func linkPayload(lt layers.LinkType, b []byte) (ip []byte, hdr int, ok bool, err error) {
	switch lt {
	case layers.LinkTypeEthernet:
		if len(b) < 14 {
			return nil, 0, false, nil
		}
		et, off := binary.BigEndian.Uint16(b[12:14]), 14
		for et == etherTypeVLAN || et == etherTypeQinQ || et == etherTypeQinQv1 {
			if len(b) < off+4 {
				return nil, 0, false, nil
			}
			et = binary.BigEndian.Uint16(b[off+2 : off+4])
			off += 4
		}
		return b[off:], off, isIPEtherType(et), nil
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return b, 0, true, nil
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// A 4-byte address family in host (NULL) or network (LOOP) byte
		// order; the IP version nibble says the same, more portably.
		if len(b) < 4 {
			return nil, 0, false, nil
		}
		return b[4:], 4, true, nil
	case layers.LinkTypeLinuxSLL:
		// packet type 2, ARPHRD 2, address length 2, address 8, protocol 2.
		if len(b) < 16 {
			return nil, 0, false, nil
		}
		return b[16:], 16, isIPEtherType(binary.BigEndian.Uint16(b[14:16])), nil
	case layers.LinkTypeLinuxSLL2:
		// protocol 2, reserved 2, interface index 4, ARPHRD 2, packet
		// type 1, address length 1, address 8.
		if len(b) < 20 {
			return nil, 0, false, nil
		}
		return b[20:], 20, isIPEtherType(binary.BigEndian.Uint16(b[0:2])), nil
	}
	return nil, 0, false, fmt.Errorf("%w %d (%s)", ErrLinkType, uint16(lt), lt)
}

func isIPEtherType(et uint16) bool { return et == etherTypeIPv4 || et == etherTypeIPv6 }

// decodeIPv4 returns the captured TCP bytes (trimmed to the IP length, so
// Ethernet padding is dropped) and the TCP length on the wire.
func decodeIPv4(p *Packet, b []byte, wire int) ([]byte, int, bool) {
	if len(b) < 20 {
		return nil, 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl || b[9] != protoTCP {
		return nil, 0, false
	}
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 { // MF or fragment offset
		return nil, 0, false
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		total = wire
	}
	if total < ihl {
		return nil, 0, false
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	p.Src = netip.AddrPortFrom(src, 0)
	p.Dst = netip.AddrPortFrom(dst, 0)
	tcp := b[ihl:]
	if len(tcp) > total-ihl {
		tcp = tcp[:total-ihl]
	}
	return tcp, total - ihl, true
}

// decodeIPv6 walks the extension headers to TCP (RFC 8200 §4).
func decodeIPv6(p *Packet, b []byte, wire int) ([]byte, int, bool) {
	if len(b) < 40 {
		return nil, 0, false
	}
	total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if total == 40 && wire > 40 { // jumbogram or GSO super-packet
		total = wire
	}
	nh, off := b[6], 40
	for range maxIPv6ExtChain {
		if nh == protoTCP {
			break
		}
		if len(b) < off+8 {
			return nil, 0, false
		}
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts:
			nh, off = b[off], off+(int(b[off+1])+1)*8
		case protoAH:
			nh, off = b[off], off+(int(b[off+1])+2)*4
		case protoFragment:
			// Only an atomic fragment (offset 0, no more fragments) is a
			// whole packet.
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff9 != 0 {
				return nil, 0, false
			}
			nh, off = b[off], off+8
		default:
			return nil, 0, false
		}
	}
	if nh != protoTCP || len(b) < off || total < off {
		return nil, 0, false
	}
	p.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), 0)
	p.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), 0)
	tcp := b[off:]
	if len(tcp) > total-off {
		tcp = tcp[:total-off]
	}
	return tcp, total - off, true
}

// decodeTCP fills the TCP fields and parses the options. wire is the TCP
// segment length (header + payload) on the wire.
func decodeTCP(p *Packet, b []byte, wire int) bool {
	if len(b) < 20 {
		return false
	}
	doff := int(b[12]>>4) * 4
	if doff < 20 || len(b) < doff || wire < doff {
		return false
	}
	p.Src = netip.AddrPortFrom(p.Src.Addr(), binary.BigEndian.Uint16(b[0:2]))
	p.Dst = netip.AddrPortFrom(p.Dst.Addr(), binary.BigEndian.Uint16(b[2:4]))
	p.Seq = binary.BigEndian.Uint32(b[4:8])
	p.Ack = binary.BigEndian.Uint32(b[8:12])
	p.Flags = b[13]
	p.Window = binary.BigEndian.Uint16(b[14:16])
	p.Options = b[20:doff]
	p.Payload = b[doff:]
	p.PayloadLen = wire - doff
	parseOptions(p)
	return true
}

// parseOptions fills Opts, MPTCP and OptErrors from p.Options.
func parseOptions(p *Packet) {
	if len(p.Options) == 0 {
		return
	}
	if err := options.ParseTCPOptions(p.Options, &p.Opts); err != nil {
		p.OptErrors = append(p.OptErrors, fmt.Errorf("TCP option area: %w", err))
	}
	for rest := p.Options; len(rest) > 0; {
		kind, opt, next, err := options.NextTCPOption(rest)
		if err != nil || kind == 0 { // error already reported; EOL ends the list
			return
		}
		// An MPTCP option shorter than 3 bytes already failed
		// ParseTCPOptions above.
		if kind == options.KindMPTCP && len(opt) >= 3 {
			o, err := options.Parse(opt)
			if err != nil {
				p.OptErrors = append(p.OptErrors, &OptionError{Raw: opt, Err: err})
			} else {
				p.MPTCP = append(p.MPTCP, o)
			}
		}
		rest = next
	}
}
