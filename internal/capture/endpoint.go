package capture

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Endpoint is a stack.LinkEndpoint that records every packet passing
// between the stack and its child link endpoint: what the stack writes
// (WritePackets, outbound) before the child gets it, and what the child
// delivers (DeliverNetworkPacket, inbound) before the stack gets it. The
// bytes are copied; packet buffers are neither kept nor referenced.
//
// Outbound packets are recorded whether or not the child then manages to
// send them. Inbound packets are recorded as delivered, also while no
// dispatcher is attached (the stack then never sees them); see the package
// documentation about links that coalesce.
//
// Endpoint is safe for concurrent use as far as its child is.
type Endpoint struct {
	nested.Endpoint
	w   *Writer
	ifc int
}

var (
	_ stack.LinkEndpoint      = (*Endpoint)(nil)
	_ stack.NetworkDispatcher = (*Endpoint)(nil)
)

// NewEndpoint returns an Endpoint recording the packets of child on
// interface ifc of w. The Endpoint is what goes to the stack (AddNIC);
// the caller keeps ownership of w and closes it after the Endpoint has
// been closed and waited for.
func NewEndpoint(child stack.LinkEndpoint, w *Writer, ifc int) *Endpoint {
	e := &Endpoint{w: w, ifc: ifc}
	e.Endpoint.Init(child, e)
	return e
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: the child
// delivers here, the packet is recorded and passed on to the stack.
func (e *Endpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.w.mu.Lock()
	e.w.writePacketBufferLocked(e.ifc, Inbound, pkt)
	e.w.mu.Unlock()
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkWriter: the packets are recorded, then
// written by the child.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.w.mu.Lock()
	for _, pkt := range pkts.AsSlice() {
		e.w.writePacketBufferLocked(e.ifc, Outbound, pkt)
	}
	e.w.mu.Unlock()
	return e.Endpoint.WritePackets(pkts)
}

// Close implements stack.LinkEndpoint: it closes the child and flushes the
// Writer (which stays open: packets the child still delivers while its
// goroutines stop are recorded too).
func (e *Endpoint) Close() {
	e.Endpoint.Close()
	_ = e.w.Flush()
}

// writePacketBufferLocked records pkt (its headers and payload, as they
// would go on the wire), copying at most the snap length out of its views.
// It does not allocate.
func (w *Writer) writePacketBufferLocked(ifc int, dir Direction, pkt *stack.PacketBuffer) {
	n := 0
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil && n < len(w.scratch); v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(w.scratch[n:], s[off:])
		off = 0
	}
	_ = w.writeLocked(ifc, dir, w.scratch[:n], pkt.Size())
}
