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

// setPayloadView points seg.PayloadView at storage, made to cover exactly
// seg.Payload inside pkt's own view, so that the endpoint can keep
// in-order data by reference instead of copying it (tcp.Segment); it
// leaves seg.PayloadView nil when the payload is not one view's bytes.
// storage is a copy of the view's descriptor, valid only while pkt is:
// clear seg.PayloadView after the call into the endpoint.
func setPayloadView(pkt *stack.PacketBuffer, seg *tcp.Segment, storage *buffer.View) {
	seg.PayloadView = nil
	n := len(seg.Payload)
	if n == 0 {
		return
	}
	views, off := pkt.AsViewList()
	start := off + pkt.Size() - n // the payload ends the packet
	for v := views.Front(); v != nil; v = v.Next() {
		sz := v.Size()
		if start >= sz {
			start -= sz
			continue
		}
		if start+n != sz || &v.AsSlice()[start] != &seg.Payload[0] {
			return
		}
		*storage = *v
		storage.TrimFront(start)
		seg.PayloadView = storage
		return
	}
}

// gsoMaxPayload is the largest TSO super-segment payload to let a
// connection over r send (tcp.Endpoint.SetGSOMaxSize), or 0 when r's link
// cannot segment (no stack.HostGSOSupported): the link's GSO limit less
// the IP header and the largest TCP header, so that the packet's length
// fits its IP header field.
func gsoMaxPayload(r *stack.Route) int {
	if !r.HasHostGSOCapability() {
		return 0
	}
	ipHdr := header.IPv4MinimumSize
	if r.NetProto() == header.IPv6ProtocolNumber {
		ipHdr = header.IPv6MinimumSize
	}
	n := min(int(r.GSOMaxSize()), 0xffff) - ipHdr - header.TCPHeaderMaximumSize
	return max(n, 0)
}

// writeSegment sends one segment from id.LocalPort to id.RemotePort over r
// (RFC 9293 §3.1): it builds a packet buffer whose payload refers to the
// send buffer's bytes (tcp.OutSegment.ClonePayload, normally no copy),
// encodes the TCP header and computes the checksum.
//
// When r's link has segmentation offload (gsoMaxPayload > 0), the packet
// carries stack.GSO options instead: the link completes the checksum (the
// header holds the pseudo-header sum, CHECKSUM_PARTIAL) and cuts a TSO
// super-segment (s.SegmentSize) into segments, each with this header and
// its options, as Linux's GSO does. Errors are counted in the stack's
// statistics; TCP retransmission recovers a lost segment.
func (e *Engine) writeSegment(r *stack.Route, id *stack.TransportEndpointID, s *tcp.OutSegment) tcpip.Error {
	hdrLen := header.TCPMinimumSize + len(s.Options)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrLen + int(r.MaxHeaderLength()),
		Payload:            s.ClonePayload(),
	})
	defer pkt.DecRef()
	h := pkt.TransportHeader().Push(hdrLen)
	s.AppendHeader(h[:0], id.LocalPort, id.RemotePort)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	th := header.TCP(h)
	segs := s.Segments()
	switch {
	case r.HasHostGSOCapability():
		gso := stack.GSO{
			Type:       stack.GSOTCPv4,
			NeedsCsum:  true,
			CsumOffset: header.TCPChecksumOffset,
			L3HdrLen:   header.IPv4MinimumSize,
			MaxSize:    r.GSOMaxSize(),
		}
		if r.NetProto() == header.IPv6ProtocolNumber {
			gso.Type, gso.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
		}
		if segs > 1 {
			gso.MSS = uint16(s.SegmentSize)
		}
		pkt.GSOOptions = gso
		th.SetChecksum(r.PseudoHeaderChecksum(header.TCPProtocolNumber, uint16(hdrLen+s.PayloadLen())))
	case segs > 1:
		// Only endpoints told a GSO size (gsoMaxPayload) produce
		// super-segments, so this does not happen; were it to, the
		// segment is lost and retransmitted in single segments.
		e.tcpStats.SegmentSendErrors.IncrementBy(uint64(segs))
		return &tcpip.ErrNotSupported{}
	case r.RequiresTXTransportChecksum():
		// (No PayloadTail: only super-segments have one.)
		xsum := r.PseudoHeaderChecksum(header.TCPProtocolNumber, uint16(hdrLen+len(s.Payload)))
		xsum = checksum.Checksum(s.Payload, xsum)
		th.SetChecksum(^th.CalculateChecksum(xsum))
	}
	err := r.WritePacket(stack.NetworkHeaderParams{
		Protocol: header.TCPProtocolNumber,
		TTL:      r.DefaultTTL(),
		DF:       true, // path MTU discovery, RFC 1191
	}, pkt)
	tcpStats := &e.tcpStats
	if err != nil {
		tcpStats.SegmentSendErrors.IncrementBy(uint64(segs))
		return err
	}
	tcpStats.SegmentsSent.IncrementBy(uint64(segs))
	if s.Flags&tcp.FlagRST != 0 {
		tcpStats.ResetsSent.Increment()
	}
	if s.Retransmit {
		tcpStats.Retransmits.Increment()
	}
	return nil
}
