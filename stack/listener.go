package stack

import (
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Listener accepts TCP connections on a local address and port (RFC 9293
// §3.10.7.2, LISTEN). It implements net.Listener. Half-open connections
// are bounded by Options.Backlog (then SYN cookies, RFC 4987), and so are
// established connections waiting for Accept; a connection completing its
// handshake while that queue is full is reset and counted
// (Stats.AcceptQueueOverflows).
//
// A Listener is safe for concurrent use.
type Listener struct {
	eng       *Engine
	id        stack.TransportEndpointID // local address (maybe any) and port
	netProtos []tcpip.NetworkProtocolNumber
	res       ports.Reservation
	addr      *net.TCPAddr
	backlog   int

	mu sync.Mutex // guards everything below; never held while taking Conn.mu
	tl *tcp.Listener
	// seg is scratch for incoming segments.
	seg tcp.Segment
	// pending holds the connections created by this listener and not yet
	// accepted (half-open or queued), so Close can reset them.
	pending map[*Conn]struct{}
	queue   []*Conn // established, waiting for Accept
	waiters waitList
	closed  bool
	// cur is the connection HandleSegment is creating (for newExtension),
	// and newMC/newSF the MPTCP layer newExtension made for it.
	cur   *Conn
	newMC *mptcp.Conn
	newSF *mptcp.Subflow
}

var _ net.Listener = (*Listener)(nil)

// SetAcceptSynData lets the listener accept data in the SYN (TCP Fast Open
// without a cookie, as an RFC 8803 Transport Converter does): the
// connection is handed to Accept as soon as such a SYN arrives, before the
// handshake completes, and its first Reads return the SYN's data. Writes
// wait for the handshake. Linux's TCP_FASTOPEN listener option, with
// net.ipv4.tcp_fastopen's "no cookie" bit. Data in a SYN that arrives while
// the SYN queue is full is not accepted (the SYN is answered with a
// cookie and the client sends the data again after the handshake).
func (l *Listener) SetAcceptSynData(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tl.SetAcceptSynData(on)
}

// Listen listens on address ("[host]:port", host an IP literal or empty for
// every address of the engine) for network "tcp", "tcp4" or "tcp6", like
// net.Listen. Port 0 picks an ephemeral port (see Addr).
func (e *Engine) Listen(network, address string) (net.Listener, error) {
	laddr, err := ResolveTCPAddr(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	l, err := e.ListenTCP(network, laddr)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// ListenTCP is Listen with a parsed address; a nil laddr or a nil IP
// listens on every address ("tcp": IPv4 and IPv6).
func (e *Engine) ListenTCP(network string, laddr *net.TCPAddr) (*Listener, error) {
	if laddr == nil {
		laddr = &net.TCPAddr{}
	}
	fail := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: laddr, Err: err}
	}
	var local tcpip.Address
	var protos []tcpip.NetworkProtocolNumber
	switch {
	case laddr.IP != nil && !laddr.IP.IsUnspecified():
		a, proto, err := tcpipAddr(network, laddr.IP)
		if err != nil {
			return nil, fail(err)
		}
		local, protos = a, []tcpip.NetworkProtocolNumber{proto}
	case network == "tcp4":
		protos = []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber}
	case network == "tcp6":
		protos = []tcpip.NetworkProtocolNumber{ipv6.ProtocolNumber}
	case network == "tcp":
		protos = []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber}
	default:
		return nil, fail(net.UnknownNetworkError(network))
	}
	if laddr.Port < 0 || laddr.Port > 0xffff {
		return nil, fail(fmt.Errorf("%w: port %d", ErrAddress, laddr.Port))
	}
	if e.isClosed() {
		return nil, fail(ErrEngineClosed)
	}
	l := &Listener{eng: e, netProtos: protos, backlog: e.opts.Backlog, pending: make(map[*Conn]struct{})}
	l.res = ports.Reservation{
		Networks:  protos,
		Transport: header.TCPProtocolNumber,
		Addr:      local,
		Port:      uint16(laddr.Port),
	}
	port, terr := e.s.ReservePort(e.s.SecureRNG(), l.res, nil)
	if terr != nil {
		return nil, fail(&connError{errno: syscall.EADDRINUSE, err: fmt.Errorf("reserving port %d: %s", laddr.Port, terr)})
	}
	l.res.Port = port
	l.id = stack.TransportEndpointID{LocalPort: port, LocalAddress: local}
	ip := net.IP(nil)
	if local.Len() > 0 {
		ip = net.IP(local.AsSlice())
	}
	l.addr = &net.TCPAddr{IP: ip, Port: int(port)}

	cfg := e.opts.TCP
	cfg.Clock = e.clock
	cfg.MSS = l.templateMSS()
	lcfg := tcp.ListenerConfig{Config: cfg, Backlog: e.opts.Backlog, Secret: e.secret}
	if !e.opts.MPTCP.Disabled {
		lcfg.NewExtension = l.newExtension
		lcfg.NewCookieExtension = l.newCookieExtension
	}
	tl, err := tcp.NewListener(lcfg)
	if err != nil {
		e.s.ReleasePort(l.res)
		return nil, fail(err)
	}
	l.tl = tl
	if terr := e.s.RegisterTransportEndpoint(protos, header.TCPProtocolNumber, l.id, (*listenerEndpoint)(l), ports.Flags{}, 0); terr != nil {
		e.s.ReleasePort(l.res)
		return nil, fail(&connError{errno: syscall.EADDRINUSE, err: fmt.Errorf("registering: %s", terr)})
	}
	return l, nil
}

// newExtension is the tcp.Listener's extension factory: a SYN with
// MP_CAPABLE gets an MPTCP connection (RFC 8684 §3.1), anything else plain
// TCP; the ACK completing a SYN-cookie handshake rebuilds the MPTCP
// connection from the keys MP_CAPABLE echoes there. A SYN with MP_JOIN is
// refused with a RST: joins are routed by token to their connection, never
// to a listener (§3.2; this engine accepts no joins yet). Called with l.mu
// held, from HandleSegment.
func (l *Listener) newExtension(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
	c := l.cur
	if c == nil {
		return nil, tcp.VerdictAccept
	}
	var (
		mc  *mptcp.Conn
		sf  *mptcp.Subflow
		ok  bool
		err error
	)
	if seg.Flags&tcp.FlagSYN == 0 {
		mc, sf, ok, err = mptcp.NewServerFromCookie(c.mptcpConfig(), seg)
	} else {
		if mptcp.IsJoin(seg) {
			l.eng.mib.Inc(mptcp.MPJoinSynRx)
			l.eng.mib.Inc(mptcp.MPJoinRejected)
			return nil, tcp.VerdictReset
		}
		mc, sf, ok, err = mptcp.NewServer(c.mptcpConfig(), seg)
	}
	if err != nil {
		return nil, tcp.VerdictDrop // no unique key: the peer retries
	}
	if !ok {
		return nil, tcp.VerdictAccept
	}
	if l.newMC != nil {
		l.newMC.Release()
	}
	l.newMC, l.newSF = mc, sf
	return sf, tcp.VerdictAccept
}

// newCookieExtension is the factory for SYNs answered with a SYN cookie
// (a full SYN queue): MP_CAPABLE on the SYN/ACK without any state, so
// that a SYN flood costs no connection per SYN; the third ACK rebuilds
// the connection (newExtension). A join SYN is refused as in
// newExtension. Called with l.mu held.
func (l *Listener) newCookieExtension(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
	if mptcp.IsJoin(seg) {
		l.eng.mib.Inc(mptcp.MPJoinSynRx)
		l.eng.mib.Inc(mptcp.MPJoinRejected)
		return nil, tcp.VerdictReset
	}
	ext, ok, err := mptcp.NewCookieSYNACK(l.eng.mptcpConfig(), seg)
	if err != nil {
		return nil, tcp.VerdictDrop
	}
	if !ok {
		return nil, tcp.VerdictAccept
	}
	return ext, tcp.VerdictAccept
}

// templateMSS is the MSS the listener advertises: the largest any NIC
// carries (RFC 9293 §3.7.1: MTU minus IP and TCP fixed headers), or
// tcp.DefaultMSS with no NIC. Connections over a smaller MTU lower their
// sending MSS when accepted (see acceptedLocked).
func (l *Listener) templateMSS() int {
	ipHdr := header.IPv4MinimumSize
	if len(l.netProtos) == 1 && l.netProtos[0] == ipv6.ProtocolNumber {
		ipHdr = header.IPv6MinimumSize
	}
	mss := 0
	for _, info := range l.eng.s.NICInfo() {
		mss = max(mss, int(info.MTU)-ipHdr-header.TCPMinimumSize)
	}
	if mss <= 0 {
		mss = tcp.DefaultMSS
	}
	if m := l.eng.opts.TCP.MSS; m > 0 && m < mss {
		mss = m
	}
	return mss
}

// Addr implements net.Listener; it returns a *net.TCPAddr.
func (l *Listener) Addr() net.Addr { return l.addr }

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptTCP waits for the next established connection.
func (l *Listener) AcceptTCP() (*Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.queue) == 0 {
		if l.closed {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
		}
		ch := l.waiters.get()
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
	c := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	delete(l.pending, c)
	return c, nil
}

// Close implements net.Listener: it stops listening and resets the
// connections not yet accepted.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	l.closed = true
	conns := make([]*Conn, 0, len(l.pending))
	for c := range l.pending {
		conns = append(conns, c)
	}
	l.pending, l.queue = nil, nil
	l.waiters.wake()
	l.mu.Unlock()

	l.eng.s.UnregisterTransportEndpoint(l.netProtos, header.TCPProtocolNumber, l.id, (*listenerEndpoint)(l), ports.Flags{}, 0)
	l.eng.s.ReleasePort(l.res)
	for _, c := range conns {
		(*subflowEndpoint)(c.first).Abort()
	}
	return nil
}

// Stats returns the counters of the listener's SYN handling.
func (l *Listener) Stats() tcp.ListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tl.Stats()
}

// enqueue hands an established connection to Accept. It reports false if
// the listener is closed or its queue is full; the caller resets the
// connection. Called with c.mu held.
func (l *Listener) enqueue(c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pending[c]; !ok || l.closed || len(l.queue) >= l.backlog {
		return false
	}
	l.queue = append(l.queue, c)
	l.waiters.wake()
	return true
}

// forget drops a torn-down connection from the not-yet-accepted set
// (queued connections stay queued: Accept returns them and their first
// Read reports what happened). Called with c.mu held.
func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.queue {
		if q == c {
			return
		}
	}
	delete(l.pending, c)
}

// listenerEndpoint is Listener as a stack.TransportEndpoint: it receives the
// segments for the listening address and port that match no connection.
type listenerEndpoint Listener

var _ stack.TransportEndpoint = (*listenerEndpoint)(nil)

// HandlePacket implements stack.TransportEndpoint. It runs on the link's
// dispatch goroutine: a SYN (or the ACK of a SYN cookie) may create a
// connection, which is registered under its four-tuple before the next
// segment is dispatched.
func (le *listenerEndpoint) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	l := (*Listener)(le)
	e := l.eng
	l.mu.Lock()
	seg := &l.seg
	if err := parseIncoming(&id, pkt, seg); err != nil || l.eng.countOptions(seg) {
		l.mu.Unlock()
		e.countParseError(err)
		return
	}
	if l.closed {
		e.replyReset(&id, pkt, seg)
		l.mu.Unlock()
		return
	}
	if isJoinSYN(seg) {
		// Joins go to their connection by token, never to the listener
		// (RFC 8684 §3.2). Not under l.mu: the connection's lock comes
		// first.
		l.mu.Unlock()
		js := segPool.Get().(*tcp.Segment)
		defer segPool.Put(js)
		if err := parseIncoming(&id, pkt, js); err == nil {
			e.handleJoinSYN(id, pkt, js, false)
		}
		return
	}
	e.tcpStats.ValidSegmentsReceived.Increment()
	// Only a SYN, or an ACK that may complete a cookie handshake, can
	// create a connection; other segments are answered (if at all) with a
	// RST through a throwaway output.
	creates := seg.Flags&tcp.FlagRST == 0 && seg.Flags&(tcp.FlagSYN|tcp.FlagACK) != 0
	if creates && !e.reserveConn() {
		l.mu.Unlock()
		return // SYN dropped at MaxConnections; the peer retries
	}
	r, terr := e.s.FindRoute(pkt.NICID, id.LocalAddress, id.RemoteAddress, pkt.NetworkProtocolNumber, false)
	if terr != nil {
		if creates {
			e.releaseConn()
		}
		l.mu.Unlock()
		return
	}
	c := newConn(e, r, id, pkt.NetworkProtocolNumber)
	c.listener = l
	c.connLimited = creates
	l.cur, l.newMC, l.newSF = c, nil, nil
	tep := l.tl.HandleSegment(c.first.flow(), seg, (*subflowOutput)(c.first))
	mc, sf := l.newMC, l.newSF
	l.cur, l.newMC, l.newSF = nil, nil, nil
	seg.Payload = nil
	if tep == nil {
		l.mu.Unlock()
		if mc != nil {
			mc.Release() // a SYN answered with a cookie, or refused
		}
		c.teardownLocked() // releases the route and the connection count; c is private
		return
	}
	c.setEndpoint(tep, mc, sf)
	c.peerNoMPTCP = mc == nil && !e.opts.MPTCP.Disabled
	l.pending[c] = struct{}{}
	l.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		// The listener was closed between its unlock and ours, and reset
		// the connection: it must not be registered any more.
		return
	}
	e.tcpStats.PassiveConnectionOpenings.Increment()
	if terr := c.first.registerLocked(); terr != nil {
		tep.Abort()
		c.flushLocked()
		c.teardownLocked()
		return
	}
	// The advertised MSS came from the largest NIC; never send more than
	// this route carries.
	tep.HandlePacketTooBig(int(r.MTU()) - header.TCPMinimumSize)
	tep.SetGSOMaxSize(gsoMaxPayload(r)) // TSO when the link segments
	if d := tep.SynData(); d != nil {
		// Data in the SYN (SetAcceptSynData): the application gets the
		// connection now, its Reads start with the data.
		c.synData = d
		c.enqueued = true
		if !l.enqueue(c) {
			c.eng.stats.acceptQueueOverflows.Add(1)
			c.eng.tcpStats.ListenOverflowAckDrop.Increment()
			c.dl.Abort()
		}
	}
	c.updateLocked()
	c.flushLocked()
}

// HandleError implements stack.TransportEndpoint; a listener has no path
// to adjust.
func (*listenerEndpoint) HandleError(stack.TransportError, *stack.PacketBuffer) {}

// Abort implements stack.TransportEndpoint (Engine.Close).
func (le *listenerEndpoint) Abort() { (*Listener)(le).Close() }

// Wait implements stack.TransportEndpoint; a Listener has no goroutines.
func (*listenerEndpoint) Wait() {}
