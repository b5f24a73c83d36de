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
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Conn is one connection of the engine: plain TCP, or MPTCP over one or
// more subflows. It implements net.Conn with the semantics of
// *net.TCPConn: Read returns io.EOF after the peer's FIN (DATA_FIN),
// CloseWrite sends a FIN (half-close, RFC 9293 §3.10.4), Close with unread
// data resets the connection (RFC 2525 §2.17) as Linux does, deadlines
// fail with os.ErrDeadlineExceeded, and connection failures carry the errno
// a kernel socket would report (errors.Is(err, syscall.ECONNRESET)). Every
// error is a *net.OpError.
//
// A Conn is the socket; its subflows are TCP endpoints, each registered
// under its own four-tuple, and the data level (plainLevel or
// mptcp.Conn) maps the byte stream onto them.
//
// A Conn is safe for concurrent use. Concurrent Reads (or Writes) are
// serialised; a Write returns only when all of its bytes are queued (or on
// error), so the bytes of concurrent Writes never interleave.
type Conn struct {
	eng   *Engine
	laddr *net.TCPAddr // the first subflow's addresses
	raddr *net.TCPAddr
	// listener is set for passively opened connections; it receives the
	// connection once established (its accept queue).
	listener *Listener
	// sndBuf is the send buffer size, for the writer wake-up threshold.
	sndBuf int

	readMu  sync.Mutex // held for a whole Read
	writeMu sync.Mutex // held for a whole Write

	mu sync.Mutex // guards everything below and every call into the data level and the subflows' endpoints
	// dl is the data level: the application's calls go there.
	dl dataLevel
	// mc is the MPTCP connection (nil for plain TCP), also dl.
	mc *mptcp.Conn
	// subs are the subflows, the first one first; torn-down subflows
	// leave the list.
	subs []*subflow
	// first is the connection's first subflow (kept after it is gone,
	// for Info and State).
	first *subflow
	// peerNoMPTCP: accepted with MPTCP enabled from a SYN without
	// MP_CAPABLE.
	peerNoMPTCP bool
	// enqueued: handed to the listener's accept queue.
	enqueued bool
	// synData is what is left to Read of the data accepted from the
	// peer's SYN (Listener.SetAcceptSynData): it precedes the stream.
	synData []byte
	seg     tcp.Segment // scratch for incoming segments
	segView buffer.View // descriptor of seg's payload view, see setPayloadView
	// pending accumulates the events Notify reports during a call into
	// an endpoint or the data level; flushLocked acts on them afterwards.
	pending    tcp.Events
	timer      tcpip.Timer
	timerAt    tcpip.MonotonicTime
	timerArmed bool
	readers    waitList
	writers    waitList
	// closers are Close calls lingering until delivery (SetLinger).
	closers waitList
	// linger is SetLinger's value (negative: close in the background).
	linger int
	// writeWant is what a blocked writer still has to queue: writers are
	// woken once that much (or a quarter of the buffer) is free, not on
	// every ACK.
	writeWant int
	rd, wd    deadline
	// finished is closed once the closing is complete (see Finished).
	finished     chan struct{}
	finishedDone bool
	closed       bool // Close was called
	readShut     bool // CloseRead was called
	dead         bool // torn down: every subflow gone, timer stopped
	connLimited  bool // counted against Options.MaxConnections
}

var _ net.Conn = (*Conn)(nil)

// newConn returns a connection whose first subflow is id over r, without
// endpoint yet. It takes ownership of r.
func newConn(e *Engine, r *stack.Route, id stack.TransportEndpointID, netProto tcpip.NetworkProtocolNumber) *Conn {
	c := &Conn{
		eng:    e,
		laddr:  &net.TCPAddr{IP: net.IP(id.LocalAddress.AsSlice()), Port: int(id.LocalPort)},
		raddr:  &net.TCPAddr{IP: net.IP(id.RemoteAddress.AsSlice()), Port: int(id.RemotePort)},
		sndBuf: e.opts.TCP.SendBuffer,
		linger: -1,
	}
	if c.sndBuf <= 0 {
		c.sndBuf = tcp.DefaultSendBuffer
	}
	c.first = newSubflow(c, r, id, netProto)
	c.subs = []*subflow{c.first}
	return c
}

// setEndpoint completes the first subflow with its endpoint and sets up
// the data level: mc (with sf, the first subflow's extension) or plain
// TCP.
func (c *Conn) setEndpoint(ep *tcp.Endpoint, mc *mptcp.Conn, sf *mptcp.Subflow) {
	c.first.ep, c.first.sf = ep, sf
	c.mc = mc
	if mc != nil {
		mc.SetOwner(c)
		c.dl = mc
		c.first.bindMPTCP()
	} else {
		c.dl = &plainLevel{ep: ep}
	}
}

// mptcpConfig returns the configuration of this connection's MPTCP layer.
func (c *Conn) mptcpConfig() mptcp.Config {
	cfg := c.eng.mptcpConfig()
	cfg.Notify = c.notify
	return cfg
}

// notify is tcp.Config.Notify (and mptcp.Config.Notify): it runs inside
// calls into an endpoint or the data level, with c.mu held, and only
// records the events.
func (c *Conn) notify(ev tcp.Events) { c.pending |= ev }

// updateLocked lets the data level follow its subflows after a call into
// one of them, and opens the subflows the path manager asks for. Called
// with c.mu held.
func (c *Conn) updateLocked() {
	if c.mc == nil {
		return
	}
	c.mc.Update()
	for _, r := range c.mc.TakeJoinRequests() {
		if err := c.openJoinLocked(r); err != nil {
			c.mc.JoinFailed(r)
		}
	}
}

// flushLocked acts on the events recorded during the last calls: it
// wakes blocked readers and writers, re-arms the timer, hands a newly
// established passive connection to its listener, and tears down the
// subflows that are CLOSED (and the connection once none is left). Called
// with c.mu held after every call into the data level or an endpoint.
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
		if ev&tcp.EventEstablished != 0 && c.listener != nil && !c.enqueued && c.first.ep.State() >= tcp.StateEstablished {
			c.enqueued = true
			if !c.listener.enqueue(c) {
				c.eng.stats.acceptQueueOverflows.Add(1)
				c.eng.tcpStats.ListenOverflowAckDrop.Increment()
				c.dl.Abort() // RST; the loop tears down
				continue
			}
		}
		if ev&tcp.EventClosed != 0 {
			c.reapLocked()
			c.checkFinishedLocked()
		}
	}
}

// reapLocked tears down the subflows whose endpoint is CLOSED, and the
// connection once none is left.
func (c *Conn) reapLocked() {
	j := 0
	for _, sub := range c.subs {
		if sub.ep == nil || sub.ep.State() == tcp.StateClosed {
			sub.teardownLocked()
			continue
		}
		c.subs[j] = sub
		j++
	}
	clear(c.subs[j:])
	c.subs = c.subs[:j]
	if len(c.subs) == 0 {
		c.teardownLocked()
	}
}

// writable reports whether a blocked writer should be woken.
func (c *Conn) writable() bool {
	if c.writers.ch == nil {
		return false
	}
	want := min(c.writeWant, c.sndBuf/4)
	return c.dl.SendBufferFree() >= max(want, 1)
}

// teardownLocked releases what a finished connection holds: every
// subflow's registration, port and route, its timer, its connection slot
// and token.
func (c *Conn) teardownLocked() {
	if c.dead {
		return
	}
	c.dead = true
	if c.dl != nil {
		if ue, ok := c.gaveUpLocked().(*UndeliveredError); ok {
			c.eng.stats.undeliveredCloses.Add(1)
			c.eng.stats.undeliveredBytes.Add(ue.Bytes)
		}
	}
	for _, sub := range c.subs {
		sub.teardownLocked()
	}
	c.first.teardownLocked()
	c.subs = nil
	if c.timer != nil {
		c.timer.Stop()
		c.timerArmed = false
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
	c.checkFinishedLocked()
}

// armTimerLocked makes sure the timer fires no later than the earliest
// deadline of the subflows and the data level. A timer already due earlier
// is left alone: firing early is harmless (HandleTimers does nothing yet)
// and re-arms it, which keeps timer resets to about one per deadline
// instead of one per ACK.
func (c *Conn) armTimerLocked() {
	if c.dead {
		return
	}
	var at tcpip.MonotonicTime
	ok := false
	for _, sub := range c.subs {
		if sub.ep == nil {
			continue
		}
		if t, tok := sub.ep.NextDeadline(); tok && (!ok || t.Before(at)) {
			at, ok = t, true
		}
	}
	if c.mc != nil {
		if t, tok := c.mc.NextDeadline(); tok && (!ok || t.Before(at)) {
			at, ok = t, true
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
	for i := 0; i < len(c.subs); i++ {
		if ep := c.subs[i].ep; ep != nil {
			ep.HandleTimers()
		}
	}
	if c.mc != nil {
		c.mc.HandleTimers()
	}
	c.updateLocked()
	c.flushLocked()
	c.armTimerLocked()
}

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
		case len(c.synData) > 0:
			n := copy(b, c.synData)
			if c.synData = c.synData[n:]; len(c.synData) == 0 {
				c.synData = nil
			}
			return n, nil
		}
		n, err := c.dl.Read(b)
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
		n, err := c.dl.Write(b[total:])
		total += n
		c.flushLocked()
		if err == nil {
			return total, nil
		}
		if !errors.Is(err, tcp.ErrWouldBlock) && !(errors.Is(err, tcp.ErrNotConnected) && c.handshakingLocked()) {
			return total, c.opError("write", c.failureLocked(err))
		}
		c.writeWant = len(b) - total
		c.waitLocked(&c.writers, &c.wd)
	}
}

// queueLocked queues p as the next bytes of the stream without waiting:
// the data of a SYN that the peer did not accept, right after the
// handshake, when the send buffer has room for it (it is at most a few
// KiB). Called with c.mu held.
func (c *Conn) queueLocked(p []byte) error {
	for len(p) > 0 {
		n, err := c.dl.Write(p)
		c.flushLocked()
		if err != nil && (n == 0 || !errors.Is(err, tcp.ErrWouldBlock)) {
			return err
		}
		p = p[n:]
	}
	return nil
}

// handshakingLocked reports whether the connection was accepted before its
// handshake completed (data in the SYN) and is still completing it:
// writes wait for it.
func (c *Conn) handshakingLocked() bool {
	return !c.dead && c.first.ep != nil && c.first.ep.State() == tcp.StateSynRcvd
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
		if c.linger == 0 {
			c.dl.Abort()
		} else {
			c.dl.Close()
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
			lost := c.dl.Undelivered()
			c.dl.Abort()
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

// deliveredLocked reports whether everything written, and the FIN once
// queued, has been acknowledged by the peer.
func (c *Conn) deliveredLocked() bool { return c.dl.Delivered() }

// endErrLocked returns the error that ended the connection, or nil.
func (c *Conn) endErrLocked() error { return c.dl.Err() }

// gaveUpLocked returns an *UndeliveredError if the connection ended with
// written bytes the peer never acknowledged, or nil.
func (c *Conn) gaveUpLocked() error {
	cause := c.endErrLocked()
	if cause == nil {
		return nil
	}
	if n := c.dl.Undelivered(); n > 0 {
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
	err := c.dl.CloseWrite()
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

// Info returns a snapshot of the TCP state and counters of the
// connection's first subflow (ConnInfo describes every subflow).
func (c *Conn) Info() tcp.Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first.ep.Info()
}

// State returns the TCP state of the connection's first subflow.
func (c *Conn) State() tcp.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first.ep.State()
}

// Finished returns a channel closed once the connection's closing is
// complete: every subflow CLOSED or in TIME-WAIT (our FIN acknowledged,
// the peer's received), or the connection torn down.
func (c *Conn) Finished() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished == nil {
		c.finished = make(chan struct{})
		c.checkFinishedLocked()
	}
	return c.finished
}

// Done reports whether the connection's closing is complete (see
// Finished) without waiting.
func (c *Conn) Done() bool {
	select {
	case <-c.Finished():
		return true
	default:
		return false
	}
}

// checkFinishedLocked closes the Finished channel when the closing is
// complete.
func (c *Conn) checkFinishedLocked() {
	if c.finished == nil || c.finishedDone {
		return
	}
	if !c.dead {
		for _, sub := range c.subs {
			if sub.ep == nil {
				continue
			}
			if st := sub.ep.State(); st != tcp.StateClosed && st != tcp.StateTimeWait {
				return
			}
		}
	}
	c.finishedDone = true
	close(c.finished)
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
