package tcp

import (
	"encoding/binary"
	"errors"

	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/buffer"
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
	// PayloadView, when set by the caller, is a gVisor view whose contents
	// are exactly Payload, alive during the call (typically the packet
	// buffer's). The endpoint may then keep in-order payload by taking a
	// reference (Clone) instead of copying it; it releases the reference
	// once the bytes are read. Nil: the endpoint copies what it keeps.
	PayloadView *buffer.View
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
// (or build a packet buffer from them) before returning, or take a
// reference to the payload with ClonePayload.
type OutSegment struct {
	Seq     seqnum.Value
	Ack     seqnum.Value
	Flags   header.TCPFlags
	Window  uint16 // header value, already scaled down
	Options []byte
	Payload []byte

	// PayloadTail continues Payload, for a TSO super-segment spanning two
	// chunks of the send buffer (only after SetGSOMaxSize, without an
	// extension): the segment's payload is Payload followed by
	// PayloadTail. Nil otherwise. Valid only during the call, like
	// Payload.
	PayloadTail []byte

	// SegmentSize is non-zero when the payload is longer than one segment:
	// the segment is a TCP segmentation offload (TSO) super-segment, which
	// the output must send as consecutive segments of SegmentSize payload
	// bytes (the last one possibly shorter), each with the same header and
	// Options and its sequence number advanced, FIN and PSH only on the
	// last (as Linux's GSO does). The endpoint produces such segments only
	// after SetGSOMaxSize.
	SegmentSize int

	// Retransmit reports that the payload (or SYN/FIN) was sent before.
	// Informational (pcap annotations, counters).
	Retransmit bool

	// src holds Payload: Payload is src's contents from srcOff on; nil
	// when Payload may not be shared (ClonePayload copies it). srcTail
	// likewise holds PayloadTail from its start.
	src     *buffer.View
	srcOff  int
	srcTail *buffer.View
}

// PayloadLen is the length of the segment's payload, PayloadTail included.
func (seg *OutSegment) PayloadLen() int { return len(seg.Payload) + len(seg.PayloadTail) }

// AppendPayload appends the segment's payload, PayloadTail included, to b.
func (seg *OutSegment) AppendPayload(b []byte) []byte {
	return append(append(b, seg.Payload...), seg.PayloadTail...)
}

// Segments returns the number of segments seg stands for on the wire: 1,
// or for a TSO super-segment its payload divided by SegmentSize, rounded
// up.
func (seg *OutSegment) Segments() int {
	n := seg.PayloadLen()
	if seg.SegmentSize <= 0 || n <= seg.SegmentSize {
		return 1
	}
	return (n + seg.SegmentSize - 1) / seg.SegmentSize
}

// ClonePayload returns the payload (PayloadTail included) as a gVisor
// buffer.Buffer of references to the send buffer's bytes, normally without
// copying them (bytes from send-buffer memory that may still be appended
// to, or from a segment built by hand, are copied); empty when there is no
// payload. The bytes never change while referenced, even after the call
// returns and the data is acknowledged; the caller must Release the
// buffer (or hand it to a packet buffer that will).
func (seg *OutSegment) ClonePayload() buffer.Buffer {
	b := clonePart(seg.Payload, seg.src, seg.srcOff)
	if len(seg.PayloadTail) > 0 {
		// Merge, not Append: Append would copy into spare capacity.
		t := clonePart(seg.PayloadTail, seg.srcTail, 0)
		b.Merge(&t)
	}
	return b
}

// clonePart returns p as a buffer: a reference into src from off when src
// is set, a copy otherwise.
func clonePart(p []byte, src *buffer.View, off int) buffer.Buffer {
	if len(p) == 0 {
		return buffer.Buffer{}
	}
	if src == nil {
		return buffer.MakeWithView(buffer.NewViewWithData(p))
	}
	v := src.Clone()
	v.TrimFront(off)
	v.CapLength(len(p))
	return buffer.MakeWithView(v)
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
// docs/architecture.md). It fails only with ErrMalformed, for a header that
// is too short or whose data offset points outside b. Options are parsed
// leniently, as Linux's tcp_parse_options does for a segment it processes
// (options.ParseTCPOptionsLenient): a known option with a wrong length is
// ignored, broken framing ends the option walk, and the segment is kept
// with the well-formed options; seg.Options.Malformed counts what was
// passed over. A SYN whose MP_CAPABLE is malformed is thus answered as
// plain TCP instead of not at all. It never allocates: seg's Payload and
// MPTCP views alias b.
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
	options.ParseTCPOptionsLenient(b[header.TCPMinimumSize:off], &seg.Options)
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
