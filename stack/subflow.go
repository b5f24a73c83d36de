package stack

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// subflow is one TCP endpoint of a Conn: its first, or one added by
// MP_JOIN (RFC 8684 §3.2). Each has its own four-tuple registration,
// route and port reservation; all share their Conn's lock, timer, events
// and data level. A plain TCP connection has exactly one.
//
// Guarded by c.mu, like everything of the Conn.
type subflow struct {
	c        *Conn
	id       stack.TransportEndpointID
	netProto tcpip.NetworkProtocolNumber
	route    *stack.Route // nil once torn down
	ep       *tcp.Endpoint
	sf       *mptcp.Subflow // the MPTCP extension; nil for plain TCP
	// res is the port reservation of an actively opened subflow.
	res        ports.Reservation
	hasRes     bool
	registered bool
	gone       bool // torn down: unregistered, route released
	ackQueued  bool // in an ackBatch, waiting for the end of the batch
}

// newSubflow returns a subflow of c for id over r, without endpoint yet;
// it takes ownership of r.
func newSubflow(c *Conn, r *stack.Route, id stack.TransportEndpointID, netProto tcpip.NetworkProtocolNumber) *subflow {
	return &subflow{c: c, id: id, netProto: netProto, route: r}
}

// flow is the subflow's four-tuple in the tcp package's terms.
func (sub *subflow) flow() tcp.FlowID {
	return tcp.FlowID{
		LocalAddr:  sub.id.LocalAddress,
		RemoteAddr: sub.id.RemoteAddress,
		LocalPort:  sub.id.LocalPort,
		RemotePort: sub.id.RemotePort,
	}
}

// local and remote return the subflow's addresses.
func (sub *subflow) local() netip.AddrPort {
	a, _ := netip.AddrFromSlice(sub.id.LocalAddress.AsSlice())
	return netip.AddrPortFrom(a, sub.id.LocalPort)
}

func (sub *subflow) remote() netip.AddrPort {
	a, _ := netip.AddrFromSlice(sub.id.RemoteAddress.AsSlice())
	return netip.AddrPortFrom(a, sub.id.RemotePort)
}

// config returns the tcp.Config of the subflow's endpoint.
func (sub *subflow) config() tcp.Config {
	cfg := sub.c.eng.tcpConfig(sub.route)
	cfg.Output = (*subflowOutput)(sub)
	cfg.Notify = sub.c.notify
	if sub.sf != nil {
		cfg.Extension = sub.sf
	}
	return cfg
}

// bindMPTCP tells the MPTCP subflow its addresses (tcp.NewEndpoint has
// bound it to its endpoint already, tcp.Binder).
func (sub *subflow) bindMPTCP() {
	if sub.sf == nil {
		return
	}
	sub.sf.Local, sub.sf.Remote = sub.local(), sub.remote()
}

// registerLocked adds the subflow to the stack's demultiplexer under its
// four-tuple.
func (sub *subflow) registerLocked() tcpip.Error {
	err := sub.c.eng.s.RegisterTransportEndpoint([]tcpip.NetworkProtocolNumber{sub.netProto}, header.TCPProtocolNumber, sub.id, (*subflowEndpoint)(sub), ports.Flags{}, 0)
	if err == nil {
		sub.registered = true
	}
	return err
}

// bindLocked reserves the local port (lport, or an ephemeral one) for the
// subflow's four-tuple and registers it with the demultiplexer.
func (sub *subflow) bindLocked(lport uint16) error {
	s := sub.c.eng.s
	res := ports.Reservation{
		Networks:  []tcpip.NetworkProtocolNumber{sub.netProto},
		Transport: header.TCPProtocolNumber,
		Addr:      sub.id.LocalAddress,
		Dest:      tcpip.FullAddress{Addr: sub.id.RemoteAddress, Port: sub.id.RemotePort},
	}
	try := func(p uint16) (bool, tcpip.Error) {
		res.Port = p
		if _, err := s.ReservePort(s.SecureRNG(), res, nil); err != nil {
			return false, nil
		}
		sub.id.LocalPort = p
		if err := sub.registerLocked(); err != nil {
			s.ReleasePort(res)
			return false, nil
		}
		sub.res, sub.hasRes = res, true
		return true, nil
	}
	if lport != 0 {
		if ok, _ := try(lport); !ok {
			return &connError{errno: syscall.EADDRINUSE, err: fmt.Errorf("port %d in use", lport)}
		}
		return nil
	}
	if _, err := s.PickEphemeralPort(s.SecureRNG(), try); err != nil {
		return &connError{errno: syscall.EADDRNOTAVAIL, err: fmt.Errorf("no ephemeral port: %s", err)}
	}
	return nil
}

// teardownLocked releases what a closed subflow holds: its registration,
// port and route.
func (sub *subflow) teardownLocked() {
	if sub.gone {
		return
	}
	sub.gone = true
	e := sub.c.eng
	if sub.registered {
		e.s.UnregisterTransportEndpoint([]tcpip.NetworkProtocolNumber{sub.netProto}, header.TCPProtocolNumber, sub.id, (*subflowEndpoint)(sub), ports.Flags{}, 0)
		sub.registered = false
	}
	if sub.hasRes {
		e.s.ReleasePort(sub.res)
		sub.hasRes = false
	}
	if sub.route != nil {
		sub.route.Release()
		sub.route = nil
	}
}

// subflowOutput is a subflow as its endpoint's tcp.Output (and, for
// endpoints a tcp.Listener creates, its tcp.Notifier).
type subflowOutput subflow

// WriteSegment implements tcp.Output; it runs with c.mu held.
func (o *subflowOutput) WriteSegment(s *tcp.OutSegment) {
	sub := (*subflow)(o)
	if sub.route == nil {
		return
	}
	sub.c.eng.writeSegment(sub.route, &sub.id, s)
}

// Notify implements tcp.Notifier.
func (o *subflowOutput) Notify(ev tcp.Events) { (*subflow)(o).c.notify(ev) }

// subflowEndpoint is a subflow as a stack.TransportEndpoint: the
// demultiplexer hands it the segments of its four-tuple.
type subflowEndpoint subflow

var _ stack.TransportEndpoint = (*subflowEndpoint)(nil)

// HandlePacket implements stack.TransportEndpoint. It runs on the link's
// dispatch goroutine.
func (se *subflowEndpoint) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	sub := (*subflow)(se)
	c := sub.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := parseIncoming(&id, pkt, &c.seg); err != nil || c.eng.countOptions(&c.seg) {
		c.eng.countParseError(err)
		return
	}
	if sub.gone || sub.ep == nil {
		// Unregistered meanwhile: answer as CLOSED does.
		c.eng.replyReset(&id, pkt, &c.seg)
		return
	}
	c.eng.tcpStats.ValidSegmentsReceived.Increment()
	setPayloadView(pkt, &c.seg, &c.segView)
	sub.handleSegmentLocked(pkt.NICID)
	c.seg.Payload, c.seg.PayloadView = nil, nil
	c.updateLocked()
	c.flushLocked()
}

// HandleError implements stack.TransportEndpoint: an ICMP "fragmentation
// needed" or ICMPv6 "packet too big" lowers the subflow's MSS (RFC 1191,
// RFC 8201); gVisor reports the largest transport payload the path
// carries. Other ICMP errors are soft errors for TCP (RFC 1122 §4.2.3.9)
// and ignored.
func (se *subflowEndpoint) HandleError(transErr stack.TransportError, _ *stack.PacketBuffer) {
	if transErr.Kind() != stack.PacketTooBigTransportError {
		return
	}
	sub := (*subflow)(se)
	c := sub.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if sub.gone || sub.ep == nil {
		return
	}
	sub.ep.HandlePacketTooBig(int(transErr.Info()) - header.TCPMinimumSize)
	c.updateLocked()
	c.flushLocked()
}

// Abort implements stack.TransportEndpoint (used by Engine.Close): it
// resets the whole connection.
func (se *subflowEndpoint) Abort() {
	c := (*subflow)(se).c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	c.dl.Abort()
	c.flushLocked()
	c.teardownLocked()
}

// Wait implements stack.TransportEndpoint; a subflow has no goroutines.
func (*subflowEndpoint) Wait() {}
