package stack

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Conn is one TCP connection of the engine. It implements net.Conn with the
// semantics of *net.TCPConn: Read returns io.EOF after the peer's FIN,
// CloseWrite sends a FIN (half-close, RFC 9293 §3.10.4), Close with unread
// data resets the connection (RFC 2525 §2.17) as Linux does, deadlines
// fail with os.ErrDeadlineExceeded, and connection failures carry the errno
// a kernel socket would report (errors.Is(err, syscall.ECONNRESET)). Every
// error is a *net.OpError.
//
// A Conn is safe for concurrent use. Concurrent Reads (or Writes) are
// serialised; a Write returns only when all of its bytes are queued (or on
// error), so the bytes of concurrent Writes never interleave.
type Conn struct {
	eng      *Engine
	id       stack.TransportEndpointID
	netProto tcpip.NetworkProtocolNumber
	laddr    *net.TCPAddr
	raddr    *net.TCPAddr
	// listener is set for passively opened connections; it receives the
	// connection once established (its accept queue).
	listener *Listener
	// sndBuf is the send buffer size, for the writer wake-up threshold.
	sndBuf int

	readMu  sync.Mutex // held for a whole Read
	writeMu sync.Mutex // held for a whole Write

	mu sync.Mutex // guards everything below and every call into ep
	ep *tcp.Endpoint
	// mc is the MPTCP connection (nil for plain TCP) and sf its subflow on
	// ep: the application's calls go to mc, which maps data onto ep.
	mc *mptcp.Conn
	sf *mptcp.Subflow
	// peerNoMPTCP: accepted with MPTCP enabled from a SYN without
	// MP_CAPABLE.
	peerNoMPTCP bool
	route       *stack.Route // nil once torn down
	seg         tcp.Segment  // scratch for incoming segments
	segView     buffer.View  // descriptor of seg's payload view, see setPayloadView
	// pending accumulates the events Notify reports during a call into
	// ep; flushLocked acts on them after the call returned.
	pending    tcp.Events
	timer      tcpip.Timer
	timerAt    tcpip.MonotonicTime
	timerArmed bool
	ackQueued  bool // in an ackBatch, waiting for the end of the batch
	readers    waitList
	writers    waitList
	// closers are Close calls lingering until delivery (SetLinger).
	closers waitList
	// written counts the bytes Write accepted; linger is SetLinger's
	// value (negative: close in the background).
	written uint64
	linger  int
	// writeWant is what a blocked writer still has to queue: writers are
	// woken once that much (or a quarter of the buffer) is free, not on
	// every ACK.
	writeWant int
	rd, wd    deadline
	// res is the port reservation of an actively opened connection.
	res         ports.Reservation
	hasRes      bool
	registered  bool
	closed      bool // Close was called
	readShut    bool // CloseRead was called
	dead        bool // torn down: unregistered, route released
	connLimited bool // counted against Options.MaxConnections
}

var _ net.Conn = (*Conn)(nil)

// newConn returns a connection for id over r, without endpoint yet. It
// takes ownership of r.
func newConn(e *Engine, r *stack.Route, id stack.TransportEndpointID, netProto tcpip.NetworkProtocolNumber) *Conn {
	c := &Conn{
		eng:      e,
		id:       id,
		netProto: netProto,
		route:    r,
		laddr:    &net.TCPAddr{IP: net.IP(id.LocalAddress.AsSlice()), Port: int(id.LocalPort)},
		raddr:    &net.TCPAddr{IP: net.IP(id.RemoteAddress.AsSlice()), Port: int(id.RemotePort)},
		sndBuf:   e.opts.TCP.SendBuffer,
		linger:   -1,
	}
	if c.sndBuf <= 0 {
		c.sndBuf = tcp.DefaultSendBuffer
	}
	return c
}

// config returns the tcp.Config of this connection.
func (c *Conn) config() tcp.Config {
	cfg := c.eng.tcpConfig(c.route)
	cfg.Output = (*connOutput)(c)
	cfg.Notify = c.notify
	if c.sf != nil {
		cfg.Extension = c.sf
	}
	return cfg
}

// mptcpConfig returns the configuration of this connection's MPTCP layer.
func (c *Conn) mptcpConfig() mptcp.Config {
	cfg := c.eng.mptcpConfig()
	cfg.Notify = c.notify
	return cfg
}

// bindMPTCP attaches the MPTCP layer's subflow to the endpoint.
func (c *Conn) bindMPTCP() {
	if c.sf == nil {
		return
	}
	c.sf.Bind(c.ep)
	c.sf.Local = addrPort(c.laddr.IP, c.laddr.Port)
	c.sf.Remote = addrPort(c.raddr.IP, c.raddr.Port)
}

// updateMPTCP lets the MPTCP layer follow the subflow after a call into ep.
func (c *Conn) updateMPTCP() {
	if c.mc != nil {
		c.mc.Update()
	}
}

// flow is the connection's four-tuple in the tcp package's terms.
func (c *Conn) flow() tcp.FlowID {
	return tcp.FlowID{
		LocalAddr:  c.id.LocalAddress,
		RemoteAddr: c.id.RemoteAddress,
		LocalPort:  c.id.LocalPort,
		RemotePort: c.id.RemotePort,
	}
}

// notify is tcp.Config.Notify: it runs inside calls into ep, with c.mu
// held, and only records the events.
func (c *Conn) notify(ev tcp.Events) { c.pending |= ev }

// connOutput is Conn as the endpoint's tcp.Output.
type connOutput Conn

// WriteSegment implements tcp.Output; it runs with c.mu held.
func (o *connOutput) WriteSegment(s *tcp.OutSegment) {
	c := (*Conn)(o)
	if c.route == nil {
		return
	}
	c.eng.writeSegment(c.route, &c.id, s)
}

// flushLocked acts on the events recorded during the last calls into ep:
// it wakes blocked readers and writers, re-arms the timer, hands a newly
// established passive connection to its listener and tears the connection
// down once it is CLOSED. Called with c.mu held after every call into ep.
func (c *Conn) flushLocked() {
	for c.pending != 0 {
		ev := c.pending
		c.pending = 0
		if ev&(tcp.EventReadable|tcp.EventClosed|tcp.EventError) != 0 {
			c.readers.wake()
		}
		if ev&(tcp.EventWritable|tcp.EventClosed|tcp.EventError) != 0 {
			c.closers.wake()
		}
		const always = tcp.EventEstablished | tcp.EventClosed | tcp.EventError
		if ev&always != 0 || (ev&tcp.EventWritable != 0 && c.writable()) {
			c.writers.wake()
		}
		if ev&tcp.EventTimer != 0 {
			c.armTimerLocked()
		}
		if ev&tcp.EventEstablished != 0 && c.listener != nil && !c.listener.enqueue(c) {
			c.eng.stats.acceptQueueOverflows.Add(1)
			c.eng.tcpStats.ListenOverflowAckDrop.Increment()
			c.ep.Abort() // RST; the loop tears down
			continue
		}
		if ev&tcp.EventClosed != 0 && c.ep.State() == tcp.StateClosed {
			c.teardownLocked()
		}
	}
}

// writable reports whether a blocked writer should be woken.
func (c *Conn) writable() bool {
	if c.writers.ch == nil {
		return false
	}
	want := min(c.writeWant, c.sndBuf/4)
	free := c.ep.SendBufferFree()
	if c.mc != nil {
		free = c.mc.SendBufferFree()
	}
	return free >= max(want, 1)
}

// teardownLocked releases what a CLOSED connection holds: its demultiplexer
// registration, port reservation, timer and route.
func (c *Conn) teardownLocked() {
	if c.dead {
		return
	}
	c.dead = true
	if c.ep != nil {
		if ue, ok := c.gaveUpLocked().(*UndeliveredError); ok {
			c.eng.stats.undeliveredCloses.Add(1)
			c.eng.stats.undeliveredBytes.Add(ue.Bytes)
		}
	}
	if c.registered {
		c.eng.s.UnregisterTransportEndpoint([]tcpip.NetworkProtocolNumber{c.netProto}, header.TCPProtocolNumber, c.id, (*connEndpoint)(c), ports.Flags{}, 0)
		c.registered = false
	}
	if c.hasRes {
		c.eng.s.ReleasePort(c.res)
		c.hasRes = false
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timerArmed = false
	}
	if c.route != nil {
		c.route.Release()
		c.route = nil
	}
	if c.connLimited {
		c.eng.releaseConn()
		c.connLimited = false
	}
	if c.mc != nil {
		c.mc.Release()
	}
	if c.listener != nil {
		c.listener.forget(c)
	}
	c.readers.wake()
	c.writers.wake()
	c.closers.wake()
}

// register adds the connection to the stack's demultiplexer under its
// four-tuple.
func (c *Conn) registerLocked() tcpip.Error {
	err := c.eng.s.RegisterTransportEndpoint([]tcpip.NetworkProtocolNumber{c.netProto}, header.TCPProtocolNumber, c.id, (*connEndpoint)(c), ports.Flags{}, 0)
	if err == nil {
		c.registered = true
	}
	return err
}

// armTimerLocked makes sure the timer fires no later than the endpoint's
// next deadline. A timer already due earlier is left alone: firing early
// is harmless (HandleTimers does nothing yet) and re-arms it, which keeps
// timer resets to about one per deadline instead of one per ACK.
func (c *Conn) armTimerLocked() {
	if c.dead {
		return
	}
	at, ok := c.ep.NextDeadline()
	if c.mc != nil {
		if mat, mok := c.mc.NextDeadline(); mok && (!ok || mat.Before(at)) {
			at, ok = mat, true
		}
	}
	if !ok || (c.timerArmed && !at.Before(c.timerAt)) {
		return
	}
	d := at.Sub(c.eng.clock.NowMonotonic())
	if c.timer == nil {
		c.timer = c.eng.clock.AfterFunc(d, c.onTimer)
	} else {
		c.timer.Reset(d)
	}
	c.timerArmed, c.timerAt = true, at
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timerArmed = false
	if c.dead {
		return
	}
	c.ep.HandleTimers()
	if c.mc != nil {
		c.mc.HandleTimers()
		c.mc.Update()
	}
	c.flushLocked()
	c.armTimerLocked()
}

// connEndpoint is Conn as a stack.TransportEndpoint.
type connEndpoint Conn

var _ stack.TransportEndpoint = (*connEndpoint)(nil)

// HandlePacket implements stack.TransportEndpoint. It runs on the link's
// dispatch goroutine.
func (ce *connEndpoint) HandlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) {
	c := (*Conn)(ce)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := parseIncoming(&id, pkt, &c.seg); err != nil || c.eng.countOptions(&c.seg) {
		c.eng.countParseError(err)
		return
	}
	if c.dead {
		// Unregistered meanwhile: answer as CLOSED does.
		c.eng.replyReset(&id, pkt, &c.seg)
		return
	}
	c.eng.tcpStats.ValidSegmentsReceived.Increment()
	setPayloadView(pkt, &c.seg, &c.segView)
	c.handleSegmentLocked(pkt.NICID)
	c.seg.Payload, c.seg.PayloadView = nil, nil
	c.updateMPTCP()
	c.flushLocked()
}

// HandleError implements stack.TransportEndpoint: an ICMP "fragmentation
// needed" or ICMPv6 "packet too big" lowers the MSS (RFC 1191, RFC 8201);
// gVisor reports the largest transport payload the path carries. Other
// ICMP errors are soft errors for TCP (RFC 1122 §4.2.3.9) and ignored.
func (ce *connEndpoint) HandleError(transErr stack.TransportError, _ *stack.PacketBuffer) {
	if transErr.Kind() != stack.PacketTooBigTransportError {
		return
	}
	c := (*Conn)(ce)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	c.ep.HandlePacketTooBig(int(transErr.Info()) - header.TCPMinimumSize)
	c.updateMPTCP()
	c.flushLocked()
}

// Abort implements stack.TransportEndpoint (used by Engine.Close): it
// resets the connection.
func (ce *connEndpoint) Abort() {
	c := (*Conn)(ce)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	if c.mc != nil {
		c.mc.Abort()
	} else {
		c.ep.Abort()
	}
	c.flushLocked()
	c.teardownLocked()
}

// Wait implements stack.TransportEndpoint; a Conn has no goroutines.
func (*connEndpoint) Wait() {}

// Read implements net.Conn. It blocks until data, EOF (the peer's FIN,
// io.EOF), an error or the read deadline.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, c.opError("read", net.ErrClosed)
		case c.rd.expired:
			return 0, c.opError("read", errDeadline)
		case c.readShut:
			return 0, io.EOF
		case len(b) == 0:
			return 0, nil
		}
		var n int
		var err error
		if c.mc != nil {
			n, err = c.mc.Read(b)
		} else {
			n, err = c.ep.Read(b)
		}
		c.flushLocked()
		if n > 0 {
			return n, nil
		}
		if err == nil {
			return 0, io.EOF
		}
		if !errors.Is(err, tcp.ErrWouldBlock) {
			return 0, c.opError("read", mapError(err))
		}
		c.waitLocked(&c.readers, &c.rd)
	}
}

// Write implements net.Conn. It blocks until all of b is queued for
// sending, or an error or the write deadline.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for {
		switch {
		case c.closed:
			return total, c.opError("write", c.closedErrLocked())
		case c.wd.expired:
			return total, c.opError("write", errDeadline)
		}
		var n int
		var err error
		if c.mc != nil {
			n, err = c.mc.Write(b[total:])
		} else {
			n, err = c.ep.Write(b[total:])
		}
		total += n
		c.written += uint64(n)
		c.flushLocked()
		if err == nil {
			return total, nil
		}
		if !errors.Is(err, tcp.ErrWouldBlock) {
			return total, c.opError("write", c.failureLocked(err))
		}
		c.writeWant = len(b) - total
		c.waitLocked(&c.writers, &c.wd)
	}
}

// waitLocked releases c.mu until w is woken or deadline d changes or
// passes, and takes it again. Callers loop and re-check.
func (c *Conn) waitLocked(w *waitList, d *deadline) {
	ch, dch := w.get(), d.get()
	c.mu.Unlock()
	select {
	case <-ch:
	case <-dch:
	}
	c.mu.Lock()
}

// Close implements net.Conn: it sends a FIN after the queued data (a
// DATA_FIN with MPTCP), or a RST if received data was left unread, and
// releases the connection once the closing handshake is over; blocked
// Reads and Writes return net.ErrClosed.
//
// By default (SetLinger with a negative value) the close completes in the
// background, as with a kernel socket. With a positive linger time, Close
// waits until the peer has acknowledged every byte written and the FIN
// (at the data level with MPTCP), and if that does not happen in time it
// resets the connection. Either way Close returns an *UndeliveredError
// (inside a *net.OpError) whenever the connection has given up with
// written bytes never acknowledged: success means delivered.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	var err error
	if !c.dead {
		switch {
		case c.linger == 0:
			c.abortLocked()
		case c.mc != nil:
			c.mc.Close()
		default:
			c.ep.Close()
		}
		c.flushLocked()
		if c.linger > 0 {
			err = c.lingerLocked(time.Duration(c.linger) * time.Second)
		}
	}
	if err == nil {
		err = c.gaveUpLocked()
	}
	c.rd.stop()
	c.wd.stop()
	c.readers.wake()
	c.writers.wake()
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// SetLinger sets how Close behaves when data is still unacknowledged, with
// the semantics of net.TCPConn.SetLinger: sec < 0 (the default) closes in
// the background; sec == 0 discards what is unsent or unacknowledged and
// resets the connection; sec > 0 makes Close wait up to sec seconds for
// the peer to acknowledge everything (see Close).
func (c *Conn) SetLinger(sec int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set", net.ErrClosed)
	}
	c.linger = sec
	return nil
}

// lingerLocked waits, at most d, until everything written and the FIN are
// acknowledged; when d passes first it resets the connection and reports
// what was lost.
func (c *Conn) lingerLocked(d time.Duration) error {
	expired := false
	t := c.eng.clock.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		expired = true
		c.closers.wake()
	})
	defer t.Stop()
	for {
		if c.deliveredLocked() {
			return nil
		}
		if c.dead || c.endErrLocked() != nil {
			return c.gaveUpLocked()
		}
		if expired {
			lost := c.undeliveredLocked()
			c.abortLocked()
			c.flushLocked()
			if lost == 0 {
				return nil // every byte made it; only the FIN's acknowledgement is missing
			}
			return &UndeliveredError{Bytes: lost, Err: ErrLingerTimeout}
		}
		ch := c.closers.get()
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
}

// abortLocked resets the connection (MP_FASTCLOSE with MPTCP).
func (c *Conn) abortLocked() {
	if c.mc != nil {
		c.mc.Abort()
	} else {
		c.ep.Abort()
	}
}

// undeliveredLocked returns how many written bytes the peer has not
// acknowledged (at the data level with MPTCP).
func (c *Conn) undeliveredLocked() uint64 {
	if c.mc != nil {
		return c.mc.Undelivered()
	}
	acked := c.ep.Info().BytesAcked
	if acked >= c.written {
		return 0
	}
	return c.written - acked
}

// deliveredLocked reports whether everything written, and the FIN once
// queued, has been acknowledged by the peer.
func (c *Conn) deliveredLocked() bool {
	if c.mc != nil {
		return c.mc.Delivered()
	}
	if c.undeliveredLocked() > 0 {
		return false
	}
	switch c.ep.State() {
	case tcp.StateFinWait2, tcp.StateTimeWait:
		return true
	case tcp.StateClosed:
		return c.ep.Err() == nil
	}
	return false
}

// endErrLocked returns the error that ended the connection, or nil.
func (c *Conn) endErrLocked() error {
	if c.mc != nil {
		return c.mc.Err()
	}
	return c.ep.Err()
}

// gaveUpLocked returns an *UndeliveredError if the connection ended with
// written bytes the peer never acknowledged, or nil.
func (c *Conn) gaveUpLocked() error {
	cause := c.endErrLocked()
	if cause == nil {
		return nil
	}
	if n := c.undeliveredLocked(); n > 0 {
		return &UndeliveredError{Bytes: n, Err: mapError(cause)}
	}
	return nil
}

// failureLocked maps an error of the endpoint or MPTCP layer for the
// application, as an *UndeliveredError when bytes were lost with it.
func (c *Conn) failureLocked(err error) error {
	if ue := c.gaveUpLocked(); ue != nil {
		return ue
	}
	return mapError(err)
}

// closedErrLocked is the error of an operation after Close.
func (c *Conn) closedErrLocked() error {
	if ue := c.gaveUpLocked(); ue != nil {
		return ue
	}
	return net.ErrClosed
}

// CloseWrite shuts down the sending side: a FIN follows the queued data
// (RFC 9293 §3.10.4). Reading continues until the peer's FIN.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", c.closedErrLocked())
	}
	if c.dead {
		if ue := c.gaveUpLocked(); ue != nil {
			return c.opError("close", ue)
		}
		return nil
	}
	var err error
	if c.mc != nil {
		err = c.mc.CloseWrite()
	} else {
		err = c.ep.CloseWrite()
	}
	c.flushLocked()
	if err != nil {
		return c.opError("close", c.failureLocked(err))
	}
	return nil
}

// CloseRead shuts down the receiving side: further Reads return io.EOF.
// Nothing is sent (as with shutdown(SHUT_RD) on Linux).
func (c *Conn) CloseRead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	c.readShut = true
	c.readers.wake()
	return nil
}

// LocalAddr implements net.Conn; it returns a *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr implements net.Conn; it returns a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd.set(c, t)
	c.wd.set(c, t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd.set(c, t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd.set(c, t)
	return nil
}

// Info returns a snapshot of the connection's TCP state and counters.
func (c *Conn) Info() tcp.Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ep.Info()
}

// State returns the connection's TCP state.
func (c *Conn) State() tcp.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ep.State()
}

func (c *Conn) opError(op string, err error) error {
	return opError(op, c.laddr, c.raddr, err)
}

// waitList wakes the goroutines blocked on one condition: they wait on ch,
// which is closed and forgotten on wake-up. It allocates a channel only
// when somebody waits. Guarded by Conn.mu (or Listener.mu).
type waitList struct {
	ch chan struct{}
}

func (w *waitList) get() <-chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *waitList) wake() {
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// deadline is one direction's deadline, measured on the engine's clock.
// Waiters also wait on its channel, which is closed whenever the deadline
// changes or passes so that they re-check expired. Guarded by Conn.mu.
type deadline struct {
	changed waitList
	timer   tcpip.Timer
	gen     uint64
	expired bool
}

func (d *deadline) get() <-chan struct{} { return d.changed.get() }

// set moves the deadline to t (zero: none).
func (d *deadline) set(c *Conn, t time.Time) {
	d.stop()
	d.gen++
	d.expired = false
	if !t.IsZero() {
		dur := t.Sub(c.eng.clock.Now())
		if dur <= 0 {
			d.expired = true
		} else {
			gen := d.gen
			d.timer = c.eng.clock.AfterFunc(dur, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				if d.gen == gen {
					d.expired = true
					d.changed.wake()
				}
			})
		}
	}
	d.changed.wake()
}

func (d *deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// Notify implements tcp.Notifier, so that endpoints created by a
// tcp.Listener report their events to their Conn.
func (o *connOutput) Notify(ev tcp.Events) { (*Conn)(o).notify(ev) }
