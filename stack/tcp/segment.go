package tcp

import (
	"encoding/binary"
	"errors"

	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// TCP header flags, re-exported from gVisor's header package for callers
// that build or inspect segments.
const (
	FlagFIN = header.TCPFlagFin
	FlagSYN = header.TCPFlagSyn
	FlagRST = header.TCPFlagRst
	FlagPSH = header.TCPFlagPsh
	FlagACK = header.TCPFlagAck
	FlagURG = header.TCPFlagUrg
)

// FlowID names a connection by its four-tuple, from this host's point of
// view. The core uses it only to key SYN cookies (Listener); demultiplexing
// is the adapter's job.
type FlowID struct {
	LocalAddr  tcpip.Address
	RemoteAddr tcpip.Address
	LocalPort  uint16
	RemotePort uint16
}

// Segment is one decoded incoming TCP segment (RFC 9293 §3.1), the input
// of Endpoint.HandleSegment and Listener.HandleSegment.
//
// Payload and the MPTCP option views in Options alias the caller's packet
// buffer; they are valid only during the call that receives the segment.
// The core copies what it keeps.
type Segment struct {
	Seq     seqnum.Value
	Ack     seqnum.Value
	Flags   header.TCPFlags
	Window  uint16 // raw header value, not yet scaled
	Options options.TCPOptions
	Payload []byte
}

// logicalLen is the sequence space the segment occupies: payload plus one
// for each of SYN and FIN.
func (s *Segment) logicalLen() uint32 {
	n := uint32(len(s.Payload))
	if s.Flags&FlagSYN != 0 {
		n++
	}
	if s.Flags&FlagFIN != 0 {
		n++
	}
	return n
}

// OutSegment is one segment the core asks its Output to transmit.
//
// Options is the complete option block, already padded to a multiple of
// four bytes. Payload is a view of the send buffer (no per-segment copy).
// Both are valid only during Output.WriteSegment: the writer must copy them
// (or build a packet buffer from them) before returning.
type OutSegment struct {
	Seq     seqnum.Value
	Ack     seqnum.Value
	Flags   header.TCPFlags
	Window  uint16 // header value, already scaled down
	Options []byte
	Payload []byte

	// Retransmit reports that the payload (or SYN/FIN) was sent before.
	// Informational (pcap annotations, counters).
	Retransmit bool
}

// Output receives the segments an endpoint transmits. WriteSegment is
// called synchronously from within the endpoint's methods, under the
// caller's serialisation; it must not call back into the endpoint. Errors
// are not reported: a segment the writer cannot send is lost, and the
// endpoint's retransmission recovers it.
type Output interface {
	WriteSegment(seg *OutSegment)
}

// OutputFunc adapts a function to the Output interface.
type OutputFunc func(seg *OutSegment)

// WriteSegment implements Output.
func (f OutputFunc) WriteSegment(seg *OutSegment) { f(seg) }

// ErrMalformed is returned by ParseSegment for a header that is too short
// or whose data offset points outside the buffer.
var ErrMalformed = errors.New("tcp: malformed segment header")

// ParseSegment decodes a TCP header, its options and payload from b (a whole
// TCP segment, header first) into seg, and returns the source and
// destination ports. It does not verify the checksum (the adapter does, see
// docs/architecture.md). Malformed options are reported with the options
// package's sentinel errors; seg is then unusable. It never allocates:
// seg's Payload and MPTCP views alias b.
func ParseSegment(b []byte, seg *Segment) (srcPort, dstPort uint16, err error) {
	if len(b) < header.TCPMinimumSize {
		return 0, 0, ErrMalformed
	}
	h := header.TCP(b)
	off := int(h.DataOffset())
	if off < header.TCPMinimumSize || off > len(b) {
		return 0, 0, ErrMalformed
	}
	seg.Seq = seqnum.Value(h.SequenceNumber())
	seg.Ack = seqnum.Value(h.AckNumber())
	seg.Flags = h.Flags()
	seg.Window = h.WindowSize()
	seg.Payload = b[off:]
	if err := options.ParseTCPOptions(b[header.TCPMinimumSize:off], &seg.Options); err != nil {
		return 0, 0, err
	}
	return h.SourcePort(), h.DestinationPort(), nil
}

// AppendHeader appends the TCP header of seg (20 bytes plus its option
// block, checksum zero) to b. The payload is not appended. The adapter or a
// pcap writer fills in the checksum.
func (seg *OutSegment) AppendHeader(b []byte, srcPort, dstPort uint16) []byte {
	var h [header.TCPMinimumSize]byte
	binary.BigEndian.PutUint16(h[0:], srcPort)
	binary.BigEndian.PutUint16(h[2:], dstPort)
	binary.BigEndian.PutUint32(h[4:], uint32(seg.Seq))
	binary.BigEndian.PutUint32(h[8:], uint32(seg.Ack))
	h[12] = byte((header.TCPMinimumSize+len(seg.Options))/4) << 4
	h[13] = byte(seg.Flags)
	binary.BigEndian.PutUint16(h[14:], seg.Window)
	b = append(b, h[:]...)
	return append(b, seg.Options...)
}
