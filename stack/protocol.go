package stack

import (
	"errors"
	"sync"

	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/header/parse"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/waiter"
)

// protocol is mptund's TCP as gVisor transport protocol 6. Segments for
// registered connections and listeners go straight to their HandlePacket;
// the protocol itself only parses headers and answers segments nobody
// claims.
type protocol struct {
	eng *Engine
}

var _ stack.TransportProtocol = (*protocol)(nil)

// Number implements stack.TransportProtocol.
func (*protocol) Number() tcpip.TransportProtocolNumber { return header.TCPProtocolNumber }

// NewEndpoint implements stack.TransportProtocol. The engine's API is its
// own (Engine.Dial, Engine.Listen), not tcpip.Endpoint.
func (*protocol) NewEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrNotSupported{}
}

// NewRawEndpoint implements stack.TransportProtocol; raw TCP sockets are
// not supported.
func (*protocol) NewRawEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrNotSupported{}
}

// MinimumPacketSize implements stack.TransportProtocol: the fixed TCP
// header (RFC 9293 §3.1).
func (*protocol) MinimumPacketSize() int { return header.TCPMinimumSize }

// ParsePorts implements stack.TransportProtocol.
func (*protocol) ParsePorts(b []byte) (src, dst uint16, err tcpip.Error) {
	if len(b) < 4 {
		return 0, 0, &tcpip.ErrMalformedHeader{}
	}
	h := header.TCP(b)
	return h.SourcePort(), h.DestinationPort(), nil
}

// Parse implements stack.TransportProtocol: it sets the transport header
// to the fixed header plus options. A data offset pointing outside the
// packet leaves 20 bytes there; tcp.ParseSegment rejects such a segment.
func (*protocol) Parse(pkt *stack.PacketBuffer) bool { return parse.TCP(pkt) }

// segPool holds scratch segments for the rare paths that have no
// connection to borrow one from (unknown destinations).
var segPool = sync.Pool{New: func() any { return new(tcp.Segment) }}

// HandleUnknownDestinationPacket implements stack.TransportProtocol: a
// segment for a four-tuple with no connection and no listener is answered
// with a RST, unless it is itself a RST (RFC 9293 §3.10.7.1, "If the state
// is CLOSED").
func (p *protocol) HandleUnknownDestinationPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) stack.UnknownDestinationPacketDisposition {
	seg := segPool.Get().(*tcp.Segment)
	defer segPool.Put(seg)
	if err := parseIncoming(&id, pkt, seg); err != nil || p.eng.countOptions(seg) {
		p.eng.countParseError(err)
		return stack.UnknownDestinationPacketMalformed
	}
	if isJoinSYN(seg) {
		// A join to an address of ours with no listener of its own (an
		// announced address, on the connection's port): routed by token.
		p.eng.handleJoinSYN(id, pkt, seg, false)
		return stack.UnknownDestinationPacketHandled
	}
	p.eng.tcpStats.InvalidSegmentsReceived.Increment()
	if seg.Flags&tcp.FlagRST == 0 {
		p.eng.replyReset(&id, pkt, seg)
	}
	return stack.UnknownDestinationPacketHandled
}

// countOptions counts the malformed TCP options of a parsed segment
// (skipped as Linux does, RFC 9293 §3.1: the segment is still processed)
// and reports false, so that it can follow parseIncoming in a condition.
func (e *Engine) countOptions(seg *tcp.Segment) bool {
	if n := seg.Options.Malformed; n > 0 {
		e.stats.malformedOptions.Add(uint64(n))
	}
	return false
}

// countParseError counts a segment dropped by parseIncoming.
func (e *Engine) countParseError(err error) {
	if errors.Is(err, errBadChecksum) {
		e.stats.checksumErrors.Add(1)
		e.tcpStats.ChecksumErrors.Increment()
		return
	}
	e.stats.malformed.Add(1)
	e.tcpStats.InvalidSegmentsReceived.Increment()
}

// replyReset answers seg (arrived in pkt for id) with a RST, as a TCP in
// CLOSED state does (RFC 9293 §3.10.7.1): <SEQ=SEG.ACK><CTL=RST> if the
// segment has an ACK, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
func (e *Engine) replyReset(id *stack.TransportEndpointID, pkt *stack.PacketBuffer, seg *tcp.Segment) {
	if seg.Flags&tcp.FlagRST != 0 {
		return
	}
	r, err := e.s.FindRoute(pkt.NICID, id.LocalAddress, id.RemoteAddress, pkt.NetworkProtocolNumber, false)
	if err != nil {
		return
	}
	defer r.Release()
	out := tcp.OutSegment{Flags: tcp.FlagRST}
	if seg.Flags&tcp.FlagACK != 0 {
		out.Seq = seg.Ack
	} else {
		n := len(seg.Payload)
		if seg.Flags&tcp.FlagSYN != 0 {
			n++
		}
		if seg.Flags&tcp.FlagFIN != 0 {
			n++
		}
		out.Ack = seg.Seq.Add(seqnum.Size(n))
		out.Flags |= tcp.FlagACK
	}
	if e.writeSegment(r, id, &out) == nil {
		e.stats.resetsSentUnknown.Add(1)
	}
}

// SetOption implements stack.TransportProtocol; options are set through
// Options.TCP instead.
func (*protocol) SetOption(tcpip.SettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// Option implements stack.TransportProtocol.
func (*protocol) Option(tcpip.GettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// Close implements stack.TransportProtocol; the protocol owns no
// goroutines.
func (*protocol) Close() {}

// Wait implements stack.TransportProtocol.
func (*protocol) Wait() {}

// Pause implements stack.TransportProtocol.
func (*protocol) Pause() {}

// Resume implements stack.TransportProtocol.
func (*protocol) Resume() {}

// Restore implements stack.TransportProtocol.
func (*protocol) Restore() {}
