package stack

import (
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// parseIncoming decodes the TCP segment of pkt (whose transport header the
// protocol's Parse has set: the fixed header and its options) into seg and
// verifies the checksum, unless the link endpoint verified it already:
// pkt.RXChecksumValidated means every original segment was checked before
// delivery and the header field may be stale after GRO, so it is not
// checked again (see tun.Endpoint). seg.Payload aliases pkt and is valid
// until pkt is released; it is contiguous, pulled up into one pooled view
// if GRO merged several.
//
// It does not allocate when the payload is already contiguous.
func parseIncoming(id *stack.TransportEndpointID, pkt *stack.PacketBuffer, seg *tcp.Segment) error {
	hdr := pkt.TransportHeader().Slice()
	if _, _, err := tcp.ParseSegment(hdr, seg); err != nil {
		return err
	}
	n := pkt.Data().Size()
	if n > 0xffff-len(hdr) {
		return tcp.ErrMalformed
	}
	if !pkt.RXChecksumValidated {
		if !header.TCP(hdr).IsChecksumValid(id.RemoteAddress, id.LocalAddress, pkt.Data().Checksum(), uint16(n)) {
			return errBadChecksum
		}
	}
	seg.Payload = nil
	if n > 0 {
		p, ok := pkt.Data().PullUp(n)
		if !ok {
			return tcp.ErrMalformed
		}
		seg.Payload = p
	}
	return nil
}

// writeSegment sends one segment from id.LocalPort to id.RemotePort over r:
// it builds a packet buffer with room for the headers, copies the payload
// into a pooled view, encodes the TCP header and computes the checksum
// unless the route's NIC offloads it (RFC 9293 §3.1). Errors are counted in
// the stack's statistics; TCP retransmission recovers a lost segment.
func (e *Engine) writeSegment(r *stack.Route, id *stack.TransportEndpointID, s *tcp.OutSegment) tcpip.Error {
	hdrLen := header.TCPMinimumSize + len(s.Options)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrLen + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(s.Payload),
	})
	defer pkt.DecRef()
	h := pkt.TransportHeader().Push(hdrLen)
	s.AppendHeader(h[:0], id.LocalPort, id.RemotePort)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	if r.RequiresTXTransportChecksum() {
		xsum := r.PseudoHeaderChecksum(header.TCPProtocolNumber, uint16(hdrLen+len(s.Payload)))
		xsum = checksum.Checksum(s.Payload, xsum)
		th := header.TCP(h)
		th.SetChecksum(^th.CalculateChecksum(xsum))
	}
	err := r.WritePacket(stack.NetworkHeaderParams{
		Protocol: header.TCPProtocolNumber,
		TTL:      r.DefaultTTL(),
		DF:       true, // path MTU discovery, RFC 1191
	}, pkt)
	tcpStats := &e.tcpStats
	if err != nil {
		tcpStats.SegmentSendErrors.Increment()
		return err
	}
	tcpStats.SegmentsSent.Increment()
	if s.Flags&tcp.FlagRST != 0 {
		tcpStats.ResetsSent.Increment()
	}
	if s.Retransmit {
		tcpStats.Retransmits.Increment()
	}
	return nil
}
