package stack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Subflows added with MP_JOIN (RFC 8684 §3.2), both ways.
//
// A join SYN is routed by its token to the connection it joins, never to
// the listener of its port: the listener (and the join-only endpoint of an
// address announced with a port) hands it to handleJoinSYN, which asks the
// connection (mptcp.Conn.AcceptJoin) and, if it accepts, builds the
// subflow's endpoint in SYN-RECEIVED with the engine's join listener. An
// unknown token, a connection that takes no more subflows, or a join to an
// address the connection may not be joined on is answered with a RST
// carrying MP_TCPRST, and counted.

// maxJoinBacklog bounds the half-open joined subflows of the engine.
const maxJoinBacklog = 256

// joinListener builds the SYN-RECEIVED endpoints of accepted joins.
type joinListener struct {
	mu  sync.Mutex // guards tl and cur; taken with a Conn.mu held, never the reverse
	tl  *tcp.Listener
	cur *mptcp.Subflow // the extension for the SYN being handled
}

func (e *Engine) newJoinListener() error {
	cfg := e.opts.TCP
	cfg.Clock = e.clock
	jl := &joinListener{}
	tl, err := tcp.NewListener(tcp.ListenerConfig{Config: cfg, Backlog: maxJoinBacklog, Cookies: tcp.CookiesNever, Secret: e.secret,
		NewExtension: func(tcp.FlowID, *tcp.Segment) (tcp.Extension, tcp.Verdict) {
			if jl.cur == nil {
				return nil, tcp.VerdictReset
			}
			return jl.cur, tcp.VerdictAccept
		}})
	if err != nil {
		return err
	}
	jl.tl = tl
	e.joins = jl
	return nil
}

// isJoinSYN reports whether seg is a SYN (without ACK) carrying MP_JOIN.
func isJoinSYN(seg *tcp.Segment) bool {
	return seg.Flags&(tcp.FlagSYN|tcp.FlagACK|tcp.FlagRST) == tcp.FlagSYN && mptcp.IsJoin(seg)
}

// handleJoinSYN takes a join SYN that arrived for id in pkt (parsed into
// seg, a scratch the caller owns). Runs on the link's dispatch goroutine
// without any lock held.
func (e *Engine) handleJoinSYN(id stack.TransportEndpointID, pkt *stack.PacketBuffer, seg *tcp.Segment, joinPort bool) {
	if e.opts.MPTCP.Disabled {
		e.replyReset(&id, pkt, seg)
		return
	}
	tok, ok := mptcp.JoinToken(seg)
	if !ok {
		e.mib.Inc(mptcp.OptionIgnored)
		e.refuseJoin(&id, pkt, seg, options.RstReasonMPTCPError)
		return
	}
	mc := e.tokens.Lookup(tok)
	c, _ := ownerOf(mc)
	if c == nil {
		e.mib.Inc(mptcp.MPJoinSynRx)
		e.mib.Inc(mptcp.MPJoinNoTokenFound)
		e.refuseJoin(&id, pkt, seg, options.RstReasonMPTCPError)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.mc != mc {
		e.mib.Inc(mptcp.MPJoinNoTokenFound)
		e.refuseJoin(&id, pkt, seg, options.RstReasonMPTCPError)
		return
	}
	local := addrPortOf(id.LocalAddress, id.LocalPort)
	remote := addrPortOf(id.RemoteAddress, id.RemotePort)
	first := c.first.local()
	var localID uint8
	switch {
	case local.Addr() == first.Addr() && local.Port() == first.Port():
		// The connection's initial address and port: ID 0, unless we
		// told the peer not to come here (MP_CAPABLE's C flag).
		if e.pm.DenyJoinInitial() {
			e.mib.Inc(mptcp.MPJoinSynRx)
			e.mib.Inc(mptcp.MPJoinRejected)
			e.refuseJoin(&id, pkt, seg, options.RstReasonAdminProhibited)
			return
		}
	default:
		// Another address: one the path manager knows (announced, or a
		// subflow endpoint), on the initial port or its announced port.
		ep, ok := e.pm.EndpointFor(local.Addr(), 0)
		switch {
		case ok && (local.Port() == first.Port() || local.Port() == ep.Port):
			localID = ep.ID
		case !ok && !joinPort && local.Port() == first.Port() && e.hasLocalAddr(local.Addr()):
			// An address of ours the path manager does not manage: the
			// kernel gives it an implicit ID; so do we.
			localID = implicitID(local.Addr())
		default:
			e.mib.Inc(mptcp.MPJoinSynRx)
			e.mib.Inc(mptcp.MPJoinRejected)
			e.refuseJoin(&id, pkt, seg, options.RstReasonAdminProhibited)
			return
		}
	}
	sf, err := c.mc.AcceptJoin(seg, local, remote, localID)
	if err != nil {
		reason := uint8(options.RstReasonMPTCPError)
		if je, ok := err.(*mptcp.JoinError); ok {
			reason = je.Reason
		}
		e.refuseJoin(&id, pkt, seg, reason)
		c.flushLocked()
		return
	}
	r, terr := e.s.FindRoute(pkt.NICID, id.LocalAddress, id.RemoteAddress, pkt.NetworkProtocolNumber, false)
	if terr != nil {
		c.mc.AbandonSubflow(sf)
		return
	}
	sub := newSubflow(c, r, id, pkt.NetworkProtocolNumber)
	sub.sf = sf
	e.joins.mu.Lock()
	e.joins.cur = sf
	tep := e.joins.tl.HandleSegment(sub.flow(), seg, (*subflowOutput)(sub))
	e.joins.cur = nil
	e.joins.mu.Unlock()
	if tep == nil {
		c.mc.AbandonSubflow(sf)
		sub.teardownLocked()
		return
	}
	sub.ep = tep
	sub.bindMPTCP()
	if terr := sub.registerLocked(); terr != nil {
		tep.Abort()
		c.mc.AbandonSubflow(sf)
		sub.teardownLocked()
		c.flushLocked()
		return
	}
	c.subs = append(c.subs, sub)
	tep.HandlePacketTooBig(int(r.MTU()) - header.TCPMinimumSize)
	tep.SetGSOMaxSize(gsoMaxPayload(r))
	c.updateLocked()
	c.flushLocked()
}

// ownerOf returns the Conn of an MPTCP connection.
func ownerOf(mc *mptcp.Conn) (*Conn, bool) {
	if mc == nil {
		return nil, false
	}
	c, ok := mc.Owner().(*Conn)
	return c, ok
}

// implicitID is the address ID of a local address the path manager has no
// endpoint for (above the range endpoints take by default).
func implicitID(a netip.Addr) uint8 {
	b := a.AsSlice()
	return 200 + b[len(b)-1]%50
}

// hasLocalAddr reports whether a is an address of one of the engine's
// NICs.
func (e *Engine) hasLocalAddr(a netip.Addr) bool {
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return e.s.CheckLocalAddress(0, proto, tcpip.AddrFromSlice(a.AsSlice())) != 0
}

// refuseJoin answers a join SYN with a RST carrying MP_TCPRST with reason
// (RFC 8684 §3.6): <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>.
func (e *Engine) refuseJoin(id *stack.TransportEndpointID, pkt *stack.PacketBuffer, seg *tcp.Segment, reason uint8) {
	r, err := e.s.FindRoute(pkt.NICID, id.LocalAddress, id.RemoteAddress, pkt.NetworkProtocolNumber, false)
	if err != nil {
		return
	}
	defer r.Release()
	rst := options.MPTCPRst{Reason: reason}
	l := options.Layout{MPTCP: []options.Option{&rst}}
	opts, _ := l.Append(nil)
	out := tcp.OutSegment{Flags: tcp.FlagRST | tcp.FlagACK, Ack: seg.Seq.Add(1), Options: opts}
	if e.writeSegment(r, id, &out) == nil {
		e.stats.resetsSentUnknown.Add(1)
		e.mib.Inc(mptcp.MPRstTx)
	}
}

// openJoinLocked opens a subflow the path manager asked for (RFC 8684
// §3.2): a route from the local address, an ephemeral port, an endpoint
// with the join extension, and its SYN. Called with c.mu held.
func (c *Conn) openJoinLocked(r mptcp.JoinRequest) error {
	if c.dead || c.mc == nil {
		return fmt.Errorf("connection closed")
	}
	e := c.eng
	var local tcpip.Address
	if r.Local.IsValid() {
		local = tcpip.AddrFromSlice(r.Local.Unmap().AsSlice())
	}
	remoteIP := r.Remote.Addr().Unmap()
	remote := tcpip.AddrFromSlice(remoteIP.AsSlice())
	proto := ipv4.ProtocolNumber
	if remoteIP.Is6() {
		proto = ipv6.ProtocolNumber
	}
	rt, terr := e.s.FindRoute(0, local, remote, proto, false)
	if terr != nil {
		return &connError{errno: syscall.ENETUNREACH, err: fmt.Errorf("no route from %v to %v: %s", r.Local, r.Remote, terr)}
	}
	if !r.Local.IsValid() {
		// Routing picked the source address: give it its ID.
		la := rt.LocalAddress()
		src, _ := netip.AddrFromSlice(la.AsSlice())
		r.LocalID = 0
		if ep, ok := e.pm.EndpointFor(src, 0); ok {
			r.LocalID = ep.ID
		} else if src != c.first.local().Addr() {
			r.LocalID = implicitID(src)
		}
		r.Backup = r.Backup || e.pm.EndpointBackup(src)
	}
	sub := newSubflow(c, rt, tcpipID(rt.LocalAddress(), 0, remote, r.Remote.Port()), proto)
	if err := sub.bindLocked(0); err != nil {
		sub.teardownLocked()
		return err
	}
	sf, err := c.mc.NewJoinSubflow(sub.local(), sub.remote(), r.LocalID, r.RemoteID, r.Backup)
	if err != nil {
		sub.teardownLocked()
		return err
	}
	sub.sf = sf
	cfg := sub.config()
	cfg.ISS = tcp.ISN(&e.secret, sub.flow(), e.clock.NowMonotonic())
	cfg.TSOffset = rand.Uint32()
	ep, err := tcp.NewEndpoint(cfg)
	if err != nil {
		c.mc.AbandonSubflow(sf)
		sub.teardownLocked()
		return err
	}
	sub.ep = ep
	sub.bindMPTCP()
	ep.SetGSOMaxSize(gsoMaxPayload(rt))
	c.subs = append(c.subs, sub)
	if err := ep.Connect(); err != nil {
		return err // the endpoint is CLOSED: reaped with the next events
	}
	return nil
}

// AddSubflow opens a subflow of an MPTCP connection from local (an address
// of the engine; port 0 picks one) to remote (an address of the peer, for
// instance one it announced): the userspace path manager's "create
// subflow". backup asks the peer to use it only when no other subflow is
// usable. The subflow's handshake runs in the background; ConnInfo and
// the tracer report when it is established.
func (c *Conn) AddSubflow(local netip.Addr, remote netip.AddrPort, backup bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mc == nil {
		return c.opError("subflow", fmt.Errorf("%w: not an MPTCP connection", ErrAddress))
	}
	var localID, remoteID uint8
	if ep, ok := c.eng.pm.EndpointFor(local, 0); ok {
		localID = ep.ID
	} else if local != c.first.local().Addr() {
		localID = implicitID(local)
	}
	for _, a := range c.mc.Info().RemoteAddrs {
		if a.Addr == remote.Addr().Unmap() {
			remoteID = a.ID
		}
	}
	err := c.openJoinLocked(mptcp.JoinRequest{Local: local, LocalID: localID, Remote: remote, RemoteID: remoteID, Backup: backup})
	c.updateLocked()
	c.flushLocked()
	if err != nil {
		return c.opError("subflow", err)
	}
	return nil
}

// CloseSubflow resets the subflow with the given ID (SubflowInfo.ID)
// with MP_TCPRST; its unacknowledged data goes to the other subflows.
func (c *Conn) CloseSubflow(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mc == nil {
		return c.opError("subflow", fmt.Errorf("%w: not an MPTCP connection", ErrAddress))
	}
	err := c.mc.CloseSubflowID(id)
	c.updateLocked()
	c.flushLocked()
	if err != nil {
		return c.opError("subflow", err)
	}
	return nil
}

// SetSubflowBackup changes the priority this host asks the peer to give
// the subflow with the given ID (MP_PRIO, RFC 8684 §3.3.8).
func (c *Conn) SetSubflowBackup(id uint32, backup bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mc == nil {
		return c.opError("subflow", fmt.Errorf("%w: not an MPTCP connection", ErrAddress))
	}
	err := c.mc.SetSubflowBackupID(id, backup)
	c.updateLocked()
	c.flushLocked()
	if err != nil {
		return c.opError("subflow", err)
	}
	return nil
}

// RemoveAddr announces to the peer that the local address with address ID
// id is gone (REMOVE_ADDR, RFC 8684 §3.4.2; 0 is the connection's initial
// address) and closes its subflows.
func (c *Conn) RemoveAddr(id uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mc == nil {
		return
	}
	c.mc.RemoveAddr(id)
	c.updateLocked()
	c.flushLocked()
}

// joinPortEndpoint listens on an address and port announced with ADD_ADDR
// (an endpoint with FlagSignal and a Port): it takes join SYNs only
// (RFC 8684 §3.4.1), everything else gets a RST.
type joinPortEndpoint struct {
	e   *Engine
	id  stack.TransportEndpointID
	res ports.Reservation
	nps []tcpip.NetworkProtocolNumber
}

var _ stack.TransportEndpoint = (*joinPortEndpoint)(nil)

func (j *joinPortEndpoint) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	seg := segPool.Get().(*tcp.Segment)
	defer segPool.Put(seg)
	if err := parseIncoming(&id, pkt, seg); err != nil {
		j.e.countParseError(err)
		return
	}
	if isJoinSYN(seg) {
		j.e.mib.Inc(mptcp.MPJoinPortSynRx)
		j.e.handleJoinSYN(id, pkt, seg, true)
		return
	}
	j.e.replyReset(&id, pkt, seg)
}

func (*joinPortEndpoint) HandleError(stack.TransportError, *stack.PacketBuffer) {}
func (*joinPortEndpoint) Abort()                                                {}
func (*joinPortEndpoint) Wait()                                                 {}

// syncJoinPorts registers a join-only endpoint for every signal endpoint
// with a port, and unregisters those of endpoints gone.
func (e *Engine) syncJoinPorts() {
	want := map[netip.AddrPort]bool{}
	for _, ep := range e.pm.Endpoints() {
		if ep.Flags&mptcp.FlagSignal != 0 && ep.Port != 0 {
			want[netip.AddrPortFrom(ep.Addr, ep.Port)] = true
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for ap, j := range e.joinPorts {
		if !want[ap] {
			e.s.UnregisterTransportEndpoint(j.nps, header.TCPProtocolNumber, j.id, j, ports.Flags{}, 0)
			e.s.ReleasePort(j.res)
			delete(e.joinPorts, ap)
		}
	}
	for ap := range want {
		if _, ok := e.joinPorts[ap]; ok {
			continue
		}
		proto := ipv4.ProtocolNumber
		if ap.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		j := &joinPortEndpoint{e: e, nps: []tcpip.NetworkProtocolNumber{proto}}
		j.id = stack.TransportEndpointID{LocalAddress: tcpip.AddrFromSlice(ap.Addr().AsSlice()), LocalPort: ap.Port()}
		j.res = ports.Reservation{Networks: j.nps, Transport: header.TCPProtocolNumber, Addr: j.id.LocalAddress, Port: ap.Port()}
		if _, err := e.s.ReservePort(e.s.SecureRNG(), j.res, nil); err != nil {
			continue
		}
		if err := e.s.RegisterTransportEndpoint(j.nps, header.TCPProtocolNumber, j.id, j, ports.Flags{}, 0); err != nil {
			e.s.ReleasePort(j.res)
			continue
		}
		e.joinPorts[ap] = j
	}
}

func addrPortOf(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}
