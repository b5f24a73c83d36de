package mptcp

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Defaults for Config fields left zero.
const (
	DefaultSendBuffer    = 4 << 20
	DefaultReceiveBuffer = 2 << 20
	// DefaultMaxReceiveBuffer caps the auto-tuned connection-level
	// receive buffer (autotune.go).
	DefaultMaxReceiveBuffer = 16 << 20
	// DefaultDataAckTimeout bounds how long the peer may leave data that
	// its subflows acknowledged unacknowledged at the data level before
	// the connection is reset with MP_TCPRST "too much outstanding data"
	// (RFC 8684 §3.6, reason 4).
	DefaultDataAckTimeout = 2 * time.Minute
	// rtxMin and rtxMax bound the data-level retransmission timer
	// (retrans.go); it starts at the largest subflow RTO and backs off
	// exponentially.
	rtxMin = 200 * time.Millisecond
	rtxMax = 60 * time.Second
)

// Errors reported by a Conn.
var (
	// ErrFastclose: the peer aborted the connection with MP_FASTCLOSE
	// (RFC 8684 §3.5). It wraps tcp.ErrConnectionReset.
	ErrFastclose = fmt.Errorf("mptcp: connection closed by MP_FASTCLOSE: %w", tcp.ErrConnectionReset)
	// ErrDataAckTimeout: the peer left data unacknowledged at the data
	// level for longer than Config.DataAckTimeout.
	ErrDataAckTimeout = fmt.Errorf("mptcp: data not acknowledged at the data level: %w", tcp.ErrTimeout)
	// ErrProtocol: the peer violated RFC 8684 in a way that leaves no
	// fallback (conflicting mappings, data beyond DATA_FIN, ...).
	ErrProtocol = errors.New("mptcp: protocol violation by the peer")
	// ErrSubflowsClosed: the peer closed every subflow without finishing
	// the data level (no DATA_FIN): the stream is incomplete. It wraps
	// tcp.ErrConnectionReset.
	ErrSubflowsClosed = fmt.Errorf("mptcp: every subflow closed before the DATA_FIN: %w", tcp.ErrConnectionReset)
)

// Config parameterises a Conn.
type Config struct {
	// Clock is the connection's time source (the subflows' clock).
	Clock tcpip.Clock
	// Tokens is the engine's token table; required.
	Tokens *Tokens
	// Rand supplies keys; nil selects crypto/rand.
	Rand io.Reader
	// Checksums requests DSS checksums (MP_CAPABLE flag A, RFC 8684 §3.1).
	Checksums bool
	// SendBuffer bounds the data kept until data-level acknowledgement.
	SendBuffer int
	// ReceiveBuffer is the initial connection-level receive buffer, whose
	// free space is the window advertised on every subflow (§3.3.4); it
	// grows with what the paths deliver per round trip of the slowest
	// (autotune.go) up to MaxReceiveBuffer.
	ReceiveBuffer    int
	MaxReceiveBuffer int
	// DataAckTimeout: see DefaultDataAckTimeout. Negative disables.
	DataAckTimeout time.Duration
	// Notify receives the connection's readiness events (tcp.EventReadable,
	// EventWritable, EventClosed, EventError, EventTimer) synchronously.
	Notify func(tcp.Events)
	// MIB is the engine-wide counter set (nil counts nothing).
	MIB *MIB
	// PM is the engine's path manager (nil: no endpoints, default
	// limits: the connection opens no subflow of its own and accepts up
	// to DefaultSubflowsLimit joins).
	PM *PathManager
	// Scheduler names the scheduler (RegisterScheduler); empty selects
	// DefaultScheduler.
	Scheduler string
	// Tracer receives the connection's events (nil: none).
	Tracer *Tracer
}

// State is a connection's data-level state.
type State uint8

// Data-level states. The connection is open until both DATA_FINs have
// been exchanged and acknowledged, or it is reset.
const (
	StateHandshake State = iota // first subflow not yet established
	StateEstablished
	StateClosing // DATA_FIN sent or received, not both acknowledged
	StateClosed  // both DATA_FINs acknowledged; subflows closing
	StateReset   // aborted (fastclose, reset, timeout)
)

var stateNames = [...]string{"handshake", "established", "closing", "closed", "reset"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// Conn is one MPTCP connection at the data level (RFC 8684 §3.3): a 64-bit
// data sequence space in each direction, mappings of data onto subflows, a
// send buffer kept until the Data ACK covers it, connection-level
// reassembly and receive window, DATA_FIN, MP_FASTCLOSE and the fallback to
// plain TCP (§3.7).
//
// A Conn is sans-I/O and not safe for concurrent use: its driver (the
// adapter in package stack) serialises every call into it and into its
// subflows' endpoints with one lock, calls Update after every call into a
// subflow endpoint (segment, timer, packet too big), and serves the
// deadline reported by NextDeadline with HandleTimers.
type Conn struct {
	cfg    Config
	client bool
	state  State

	localKey, remoteKey     uint64
	localToken, remoteToken uint32
	localIDSN, remoteIDSN   uint64
	tokenHeld               bool
	haveRemoteKey           bool
	checksums               bool
	// fullyEstablished: the peer is known to hold both keys (client: a
	// DSS arrived from the server; server: the third ACK or MP_CAPABLE
	// with data arrived), RFC 8684 §3.1.
	fullyEstablished bool
	// keysRepeated: (client) the third ACK was sent again just before the
	// first data (see push).
	keysRepeated bool
	fallback     FallbackReason
	// peerNoNewToSource: the peer's MP_CAPABLE had flag C: no new subflow
	// may be opened to its source address (RFC 8684 §3.1), which the path
	// manager honours.
	peerNoNewToSource bool

	// subflows are the live subflows (the initial one first while it
	// lives); a subflow leaves the list once its endpoint is closed and
	// its data was handed to the others.
	subflows  []*Subflow
	nextSubID uint32
	sched     Scheduler
	pm        pmConn
	// owner is the driver's handle (the stack's socket), for finding the
	// driver from a token (joins).
	owner any
	// Subflow totals: opened (the first included) and closed; closedSubs
	// the last maxClosedSubflows closed ones, as they were at the end.
	subflowsOpened, subflowsClosed uint64
	closedSubs                     []SubflowInfo

	// Send side. snd holds the bytes [sndUna, sndUna+snd.Len()); the first
	// sndNxt-sndUna of them are mapped onto a subflow.
	snd            *sendQueue
	sndUna, sndNxt dsnmap.DSN
	peerEdge       dsnmap.DSN // right edge of the peer's data-level window
	// peerWndKnown: a Data ACK has told the window; before that only the
	// subflow's own window limits sending. peerMaxWnd is the largest
	// window seen, for silly-window avoidance.
	peerWndKnown bool
	peerMaxWnd   uint64
	finQueued    bool // the application closed for sending
	finSent      bool // DATA_FIN signalled at least once
	finAcked     bool
	// rtx is the data-level retransmission timer (retrans.go): armed
	// while data or the DATA_FIN is unacknowledged at the data level.
	rtx rtxTimer
	// reinj are the data ranges to re-send on other subflows (a subflow
	// failed or stalled with them unacknowledged), sorted, disjoint.
	reinj []dsnRange
	// ackStall is when the data level first fell behind the subflow
	// level (for DataAckTimeout); zero when it is not behind.
	ackStall tcpip.MonotonicTime

	// Receive side; rx is nil until the peer's key is known. rcvLimit is
	// its current size (auto-tuned).
	rx       *dsnmap.Reassembler
	rcvLimit int
	// rcvEdge is the right edge of the window advertised, in data
	// sequence space; it never moves back (ReceiveWindow).
	rcvEdge    dsnmap.DSN
	rcvEdgeSet bool
	tune       rcvTune
	// rcvFIN is the DSN of the peer's DATA_FIN once announced (rcvFINSet);
	// it takes effect when the in-order stream reaches it (see noteFIN).
	rcvFIN    dsnmap.DSN
	rcvFINSet bool

	err         error
	undelivered uint64 // Undelivered at the reset
	appClosed   bool   // Close called: nothing more will be read
	fastclose   bool   // sending MP_FASTCLOSE on the RSTs of our subflows
	pending     tcp.Events

	stats Stats
}

// Stats counts a connection's data-level events.
type Stats struct {
	MappingsSent     uint64
	MappingsReceived uint64
	DataAcksReceived uint64
	ChecksumErrors   uint64
	BytesSent        uint64 // data bytes mapped onto subflows
	BytesAcked       uint64 // data bytes acknowledged at the data level
	BytesReceived    uint64 // data bytes placed in the reassembler
	DataFINsSent     uint64
	FastclosesSent   uint64
	FastclosesRcvd   uint64
	// TCPRstsRcvd counts MP_TCPRST options received on RSTs (RFC 8684
	// §3.6); LastTCPRstReason is the reason code of the latest.
	TCPRstsRcvd      uint64
	LastTCPRstReason uint8
	// Retransmits counts data-level retransmissions (chunks re-sent with
	// their original data sequence numbers, retrans.go) and RetransBytes
	// their bytes; DataFINRetransmits the DATA_FIN re-signalled alone.
	Retransmits        uint64
	RetransBytes       uint64
	DataFINRetransmits uint64
	// Reinjected counts bytes re-sent on another subflow than the one
	// they were first sent on (a subflow failed or went stale).
	Reinjected uint64
	// WindowUpdates counts pure ACKs sent on a subflow because reading
	// moved the right edge it last advertised by a quarter of the buffer.
	WindowUpdates uint64
	// Dropped* count data-level information ignored as out of window or
	// inconsistent, never a reset (the peer retransmits at the data level
	// what was dropped): bytes outside the receive window, bytes beyond
	// the out-of-order bound, bytes after the DATA_FIN, Data ACKs for
	// data never sent, DATA_FINs out of window or contradicting an
	// earlier one, mappings on segments that carry no byte they map.
	DroppedOutOfWindow uint64
	DroppedOFOBytes    uint64
	DroppedAfterFIN    uint64
	IgnoredDataAcks    uint64
	IgnoredDataFINs    uint64
	IgnoredMappings    uint64
}

func newConn(cfg Config, client bool) (*Conn, error) {
	if cfg.Clock == nil || cfg.Tokens == nil {
		return nil, errors.New("mptcp: Config needs Clock and Tokens")
	}
	c := &Conn{cfg: cfg}
	if err := c.init(client); err != nil {
		return nil, err
	}
	key, err := c.cfg.Tokens.NewKey(c.cfg.Rand, c)
	if err != nil {
		return nil, err
	}
	c.setLocalKey(key)
	c.tokenHeld = true
	return c, nil
}

// init applies the defaults of c.cfg and sets up the send queue and the
// scheduler.
func (c *Conn) init(client bool) error {
	cfg := &c.cfg
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = DefaultSendBuffer
	}
	if cfg.ReceiveBuffer <= 0 {
		cfg.ReceiveBuffer = DefaultReceiveBuffer
	}
	if cfg.MaxReceiveBuffer <= 0 {
		cfg.MaxReceiveBuffer = DefaultMaxReceiveBuffer
	}
	cfg.MaxReceiveBuffer = max(cfg.MaxReceiveBuffer, cfg.ReceiveBuffer)
	c.rcvLimit = cfg.ReceiveBuffer
	if cfg.DataAckTimeout == 0 {
		cfg.DataAckTimeout = DefaultDataAckTimeout
	}
	sched, err := NewScheduler(cfg.Scheduler)
	if err != nil {
		return err
	}
	c.sched = sched
	c.client, c.checksums, c.snd = client, cfg.Checksums, newSendQueue(cfg.SendBuffer)
	return nil
}

func (c *Conn) setLocalKey(key uint64) {
	c.localKey = key
	c.localToken, c.localIDSN = handshake.TokenAndIDSN(key)
	c.sndUna = dsnmap.DSN(c.localIDSN + 1)
	c.sndNxt = c.sndUna
	c.peerEdge = c.sndUna
}

func (c *Conn) setRemoteKey(key uint64) {
	c.remoteKey = key
	c.haveRemoteKey = true
	c.remoteToken, c.remoteIDSN = handshake.TokenAndIDSN(key)
	if c.rx == nil {
		c.rx = dsnmap.NewReassembler(dsnmap.DSN(c.remoteIDSN+1), c.cfg.ReceiveBuffer)
	}
}

// NewClient creates the connection of an active opener and its first
// subflow's extension; build the subflow's tcp.Endpoint with Extension set
// to the returned Subflow, then call Subflow.Bind and Connect it.
func NewClient(cfg Config) (*Conn, *Subflow, error) {
	c, err := newConn(cfg, true)
	if err != nil {
		return nil, nil, err
	}
	cfg.MIB.Inc(MPCapableSYNTX)
	return c, c.addSubflow(), nil
}

func (c *Conn) addSubflow() *Subflow {
	s := &Subflow{c: c, id: c.nextSubID, rcvRel: 1, lastAckedTop: c.sndUna}
	c.nextSubID++
	c.subflowsOpened++
	s.rxmap = dsnmap.NewRxMap(c.rxMapLimit(), c.checksums)
	c.subflows = append(c.subflows, s)
	return s
}

// SetOwner records the driver's handle for this connection; Owner
// returns it.
func (c *Conn) SetOwner(v any) { c.owner = v }

// Owner returns what SetOwner recorded.
func (c *Conn) Owner() any { return c.owner }

// liveSubflows counts the subflows not closed or closing.
func (c *Conn) liveSubflows() int {
	n := 0
	for _, s := range c.subflows {
		if !s.dead && !s.closing {
			n++
		}
	}
	return n
}

// maxSubflows is the most subflows the connection may have.
func (c *Conn) maxSubflows() int { return 1 + c.cfg.PM.Limits().Subflows }

// usableSubflows returns the subflows that can carry data now, in dst.
func (c *Conn) usableSubflows(dst []*Subflow) []*Subflow {
	for _, s := range c.subflows {
		if s.usable() {
			dst = append(dst, s)
		}
	}
	return dst
}

// anyUsable returns a usable subflow (for pure ACKs), preferring the
// initial one, or nil.
func (c *Conn) anyUsable() *Subflow {
	for _, s := range c.subflows {
		if s.usable() {
			return s
		}
	}
	return nil
}

// Fallback returns why the connection runs as plain TCP, FallbackNone if it
// runs MPTCP.
func (c *Conn) Fallback() FallbackReason { return c.fallback }

// State returns the data-level state.
func (c *Conn) State() State { return c.state }

// Err returns the error that ended the connection, or nil.
func (c *Conn) Err() error { return c.err }

// Subflows returns the connection's subflows (do not modify the slice).
func (c *Conn) Subflows() []*Subflow { return c.subflows }

func (c *Conn) notify(ev tcp.Events) { c.pending |= ev }

// flush hands the accumulated events to Config.Notify.
func (c *Conn) flush() {
	if c.pending != 0 && c.cfg.Notify != nil {
		ev := c.pending
		c.pending = 0
		c.cfg.Notify(ev)
	}
	c.pending = 0
}

// doFallback switches the connection to plain TCP on its (single) subflow
// (RFC 8684 §3.7): from now on subflow bytes map one to one onto data
// sequence numbers, acknowledgement is the subflow's, and no MPTCP option
// is sent. The receive side keeps what was already delivered.
func (c *Conn) doFallback(reason FallbackReason, s *Subflow) {
	if c.fallback != FallbackNone {
		return
	}
	c.fallback = reason
	c.trace(func(t *Tracer) {
		if t.Fallback != nil {
			t.Fallback(c, reason)
		}
	})
	switch reason {
	case FallbackSynAckNoMPCapable, FallbackSynNoMPCapable, FallbackAckNoMPCapable, FallbackInfiniteMapping:
		// Fallen back at the handshake (plain TCP from the start, no
		// option on any segment), or the peer fell back first.
	default:
		// After the handshake: the peer may still expect mappings; the
		// infinite mapping tells it (§3.7).
		s.sendInfinite = true
	}
	if c.rx == nil {
		// The peer's key was never learnt: its data sequence space is the
		// subflow's, starting at relative sequence 1.
		c.rx = dsnmap.NewReassembler(1, c.cfg.ReceiveBuffer)
		c.remoteIDSN = 0
	}
	s.fbRcvBase = c.rx.Next() - dsnmap.DSN(s.rcvRel)
	una := uint32(1)
	if s.ep != nil {
		una = s.ep.SndUnaRel()
	}
	s.fbSndBase = c.sndUna - dsnmap.DSN(una)
	c.releaseToken()
	if c.state == StateHandshake && s.ep != nil && s.ep.State() >= tcp.StateEstablished {
		c.state = StateEstablished
	}
}

func (c *Conn) releaseToken() {
	if c.tokenHeld {
		c.cfg.Tokens.Release(c.localToken, c)
		c.tokenHeld = false
	}
}

// Write queues p for sending; like tcp.Endpoint.Write it returns
// tcp.ErrWouldBlock with the count queued when the send buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	defer c.flush()
	switch {
	case c.err != nil:
		return 0, c.err
	case c.finQueued:
		return 0, tcp.ErrClosedForSend
	case c.state == StateHandshake:
		return 0, tcp.ErrNotConnected
	}
	chunkCap := tcp.MaxChunk
	if s := c.anyUsable(); s != nil {
		chunkCap = s.ep.ChunkSize()
	}
	n := c.snd.Write(p, chunkCap)
	if n > 0 {
		c.push()
	}
	if n < len(p) {
		return n, tcp.ErrWouldBlock
	}
	return n, nil
}

// buffered is the number of bytes held: unacknowledged and unsent.
func (c *Conn) buffered() int { return c.snd.Len() }

// SendBufferFree returns how many bytes Write would accept now.
func (c *Conn) SendBufferFree() int { return c.snd.Free() }

// Read reads in-order data. It returns (0, nil) at the peer's DATA_FIN and
// tcp.ErrWouldBlock when nothing is available yet.
func (c *Conn) Read(p []byte) (int, error) {
	defer c.flush()
	if c.rx != nil {
		if n := c.rx.Read(p); n > 0 {
			c.windowUpdate()
			return n, nil
		}
		if c.rx.EOF() {
			return 0, nil
		}
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.state == StateHandshake {
		return 0, tcp.ErrWouldBlock
	}
	if c.subflowsGone() {
		// Every subflow ended without a DATA_FIN: as a plain TCP
		// connection whose FIN arrived.
		return 0, nil
	}
	return 0, tcp.ErrWouldBlock
}

// Readable returns the number of bytes Read would return now.
func (c *Conn) Readable() int {
	if c.rx == nil {
		return 0
	}
	return c.rx.Readable()
}

// windowUpdate sends a window update on every subflow whose last
// advertised right edge reading has moved by a significant amount
// (RFC 9293 §3.8.6.2.2 receiver-side SWS avoidance: at least a quarter of
// the buffer). Each subflow's sender reads the window against that
// subflow's own acknowledgements: a subflow that got no update keeps the
// small window it last saw and stalls the data it holds, the very data
// the others' out-of-order bytes wait for, until a window probe or a
// data-level retransmission (Linux likewise updates every subflow,
// mptcp_cleanup_rbuf).
func (c *Conn) windowUpdate() {
	edge := c.rx.Next() + dsnmap.DSN(c.rx.Window())
	for _, s := range c.subflows {
		if s.usable() && s.ackSent && int64(edge-s.advEdge) >= int64(c.rcvLimit/4) {
			c.stats.WindowUpdates++
			s.ep.SendAck()
		}
	}
}

// CloseWrite queues a DATA_FIN after the data already written (RFC 8684
// §3.3.3); on a fallen-back connection, the subflow's FIN.
func (c *Conn) CloseWrite() error {
	defer c.flush()
	if c.err != nil {
		return c.err
	}
	if c.finQueued {
		return nil
	}
	c.finQueued = true
	if c.state == StateHandshake {
		for _, s := range c.subflows {
			if s.ep != nil {
				s.ep.CloseWrite()
			}
		}
		return nil
	}
	c.push()
	return nil
}

// Close ends the application's use of the connection: like CloseWrite, but
// if unread data is pending the connection is aborted with MP_FASTCLOSE,
// as Linux does (and as TCP resets, RFC 2525 §2.17).
func (c *Conn) Close() error {
	defer c.flush()
	c.appClosed = true
	if c.err != nil {
		return nil
	}
	if c.Readable() > 0 && c.state != StateHandshake {
		c.Abort()
		return nil
	}
	return c.CloseWrite()
}

// Abort resets the connection: with MPTCP, every subflow is reset with
// MP_FASTCLOSE carrying the peer's key (RFC 8684 §3.5); after a fallback,
// with a plain RST.
func (c *Conn) Abort() {
	defer c.flush()
	if c.state == StateReset {
		return
	}
	if c.fallback == FallbackNone && c.haveRemoteKey && c.state != StateHandshake {
		c.fastclose = true
		c.stats.FastclosesSent++
		c.cfg.MIB.Inc(MPFastcloseTx)
	}
	c.reset(tcp.ErrAborted)
}

// reset aborts every subflow and ends the connection with err.
func (c *Conn) reset(err error) {
	if c.err == nil {
		c.err = err
	}
	c.die()
	for _, s := range c.subflows {
		if s.ep != nil && s.ep.State() != tcp.StateClosed {
			s.ep.Abort()
		}
	}
	c.releaseToken()
	c.snd.Release()
	c.notify(tcp.EventClosed | tcp.EventError | tcp.EventReadable | tcp.EventWritable)
	c.trace(func(t *Tracer) {
		if t.Closed != nil {
			t.Closed(c, c.err)
		}
	})
}

// die moves to StateReset, recording what was written and never
// acknowledged at the data level (see Undelivered).
func (c *Conn) die() {
	if c.state == StateReset {
		return
	}
	c.undelivered = c.Undelivered()
	c.state = StateReset
	c.rtx.stop()
	c.ackStall = tcpip.MonotonicTime{}
}

// Undelivered returns how many bytes the application wrote that the peer
// has not acknowledged at the data level (RFC 8684 §3.3.2): queued,
// in flight, or acknowledged only by a subflow. After a reset it is the
// figure at the time of the reset. An unacknowledged DATA_FIN counts as
// no byte: CloseWrite's success is reported by DataFINAcked.
func (c *Conn) Undelivered() uint64 {
	if c.state == StateReset {
		return c.undelivered
	}
	return uint64(c.snd.Len())
}

// Delivered reports whether everything written, and the DATA_FIN if the
// application closed for sending, was acknowledged at the data level
// (after a fallback: by the subflow, FIN included).
func (c *Conn) Delivered() bool {
	if c.state == StateReset || c.snd.Len() > 0 {
		return false
	}
	if !c.finQueued {
		return true
	}
	if c.fallback != FallbackNone && !c.finAcked {
		// Plain TCP: our FIN is acknowledged once the subflow left
		// FIN-WAIT-1, CLOSING and LAST-ACK for good (subflowDown sets
		// finAcked when it retires such a subflow).
		return slices.ContainsFunc(c.subflows, (*Subflow).tcpFINAcked)
	}
	return c.finAcked
}

// subflowsGone reports whether every subflow ended (a plain TCP
// connection whose FIN arrived, after a fallback).
func (c *Conn) subflowsGone() bool {
	for _, s := range c.subflows {
		if s.ep != nil && s.ep.State() != tcp.StateClosed && !s.finRcvd {
			return false
		}
	}
	return true
}

// push maps data onto the subflows the scheduler picks: first ranges to
// re-send (reinjection), then new data, as chunks of at most
// tcp.MaxChunk bytes that each carry one mapping on all their segments
// (RFC 8684 §3.3.1), within the peer's data-level window.
func (c *Conn) push() {
	var buf [8]*Subflow
	cands := c.usableSubflows(buf[:0])
	if len(cands) == 0 {
		return
	}
	if c.fallback != FallbackNone {
		cands = cands[:1]
	}
	c.pushReinjections(cands)
	for {
		unsent := int(c.sndUna + dsnmap.DSN(c.buffered()) - c.sndNxt)
		if unsent <= 0 {
			break
		}
		s := c.pick(cands)
		if s == nil {
			break
		}
		// Chunks a whole number of segments long keep every segment full
		// and TSO super-segments whole.
		n := min(unsent, s.ep.ChunkSize(), s.ep.SendBufferFree())
		probe := false
		if c.fallback == FallbackNone && c.peerWndKnown {
			// Window: the subflow also enforces the same window on its own
			// sequence space; limiting here keeps data for other subflows
			// (and the reinjection queue) at the connection level.
			if w := int64(c.peerEdge - c.sndNxt); w < int64(n) {
				n = int(max(w, 0))
				switch {
				case c.sndNxt == c.sndUna:
					// Nothing outstanding: send what fits, or one byte
					// into a zero window, as a probe; the data-level
					// retransmission timer repeats it until the window
					// opens.
					if n == 0 {
						n, probe = min(unsent, 1), true
					}
				case n < min(s.ep.MSS(), int(c.peerMaxWnd/2)):
					// Sender-side silly-window avoidance (RFC 9293
					// §3.8.6.2.1) at the data level: a sliver of window
					// waits for the acknowledgements in flight to open
					// it further, rather than going out as tiny segments.
					n = 0
				}
			}
		}
		if n <= 0 {
			break
		}
		if c.client && !c.fullyEstablished && !c.keysRepeated && !s.join &&
			c.fallback == FallbackNone && c.sndNxt == dsnmap.DSN(c.localIDSN+1) {
			// The server learns our key from the third ACK or from the
			// first data's MP_CAPABLE; a segment without either that
			// reaches it first (the second data segment, a DATA_FIN)
			// makes it fall back to TCP, in Linux too (MPTcpExt
			// MPCapableFallbackACK). Repeating the third ACK (a pure ACK
			// at the first sequence number carries both keys) just
			// before the first data makes that take three losses in a
			// row instead of two.
			c.keysRepeated = true
			c.cfg.MIB.Inc(MPCapableACKRepeat)
			s.ep.SendAck()
		}
		// A reference to the queued bytes, not a copy: the subflow and
		// the data level share them until each has its acknowledgement.
		v := c.snd.Next(n)
		if v == nil {
			break
		}
		if !c.enqueue(s, v, c.sndNxt) {
			c.snd.Unhand(v.Size())
			v.Release()
			break
		}
		n = v.Size()
		c.sndNxt += dsnmap.DSN(n)
		c.stats.BytesSent += uint64(n)
		if probe {
			c.cfg.MIB.Inc(WinProbe)
		}
	}
	if c.sndNxt != c.sndUna {
		c.rtx.arm(c)
	}
	if c.finQueued && c.sndNxt == c.sndUna+dsnmap.DSN(c.buffered()) {
		s := cands[0]
		if c.fallback != FallbackNone {
			s.ep.CloseWrite()
		} else if !c.finSent {
			c.finSent = true
			c.stats.DataFINsSent++
			c.rtx.arm(c)
			if c.state == StateEstablished {
				c.state = StateClosing
			}
			s.ep.SendAck() // the DATA_FIN rides on a pure ACK's DSS
		}
	}
}

// pick asks the scheduler for a subflow among cands, without the stale
// ones unless every one is stale.
func (c *Conn) pick(cands []*Subflow) *Subflow {
	if len(cands) == 1 {
		if cands[0].CanTake() {
			return cands[0]
		}
		return nil
	}
	var buf [8]*Subflow
	fresh := buf[:0]
	for _, s := range cands {
		if !s.stale {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) == 0 {
		fresh = cands
	}
	return c.sched.Pick(fresh)
}

// enqueue hands the bytes of v, which start at data sequence number dsn,
// to subflow s as one chunk with its mapping, and records the mapping for
// the subflow's acknowledgement tracking. It reports false (v still the
// caller's) when the subflow refused the chunk.
func (c *Conn) enqueue(s *Subflow, v *buffer.View, dsn dsnmap.DSN) bool {
	n := v.Size()
	var meta any
	if c.fallback == FallbackNone {
		ch := &chunk{dsn: dsn, len: uint16(n)}
		if c.checksums {
			ch.psum = partialSum(v.AsSlice())
		}
		meta = ch
	}
	if err := s.ep.EnqueueView(v, meta); err != nil {
		return false
	}
	if meta != nil {
		s.txq = append(s.txq, txRecord{rel: 1 + s.enqueued, dsn: dsn, len: uint32(n)})
		c.stats.MappingsSent++
	}
	s.enqueued += uint32(n)
	return true
}

// dataFIN returns the DSN of our DATA_FIN: right after the last byte.
func (c *Conn) dataFIN() dsnmap.DSN { return c.sndUna + dsnmap.DSN(c.buffered()) }

// outstanding reports whether anything sent is unacknowledged at the data
// level: data, or the DATA_FIN.
func (c *Conn) outstanding() bool {
	return c.sndNxt != c.sndUna || (c.finSent && !c.finAcked)
}

// onDataAck processes a Data ACK (already expanded to 64 bits) and the
// window that came with it (RFC 8684 §3.3.2, §3.3.4). A Data ACK for data
// never sent is ignored and counted, never a reset: it may be forged, and
// the kernel ignores it too.
func (c *Conn) onDataAck(ack dsnmap.DSN, wnd uint64) {
	c.stats.DataAcksReceived++
	limit := c.sndNxt
	if c.finSent {
		limit = c.dataFIN() + 1
	}
	if int64(ack-limit) > 0 {
		c.stats.IgnoredDataAcks++
		c.cfg.MIB.Inc(DataAckInvalid)
		return
	}
	if int64(ack-c.sndUna) < 0 {
		return // old (reordered): nothing new, and its window is stale
	}
	if edge := ack + dsnmap.DSN(wnd); !c.peerWndKnown || int64(edge-c.peerEdge) > 0 {
		c.peerEdge, c.peerWndKnown = edge, true
	}
	c.peerMaxWnd = max(c.peerMaxWnd, wnd)
	progress := false
	if c.finSent && ack == c.dataFIN()+1 {
		if !c.finAcked {
			c.finAcked = true
			progress = true
		}
		ack--
	}
	if n := int(ack - c.sndUna); n > 0 {
		c.snd.Discard(n)
		c.sndUna = ack
		c.stats.BytesAcked += uint64(n)
		c.ackStall = tcpip.MonotonicTime{}
		c.notify(tcp.EventWritable)
		progress = true
	}
	if progress {
		c.rtx.progress(c)
	}
}

// Update runs after every call into a subflow endpoint (segment, timer,
// packet too big): it follows the subflows' progress at the data level,
// retires the subflows that ended (handing their unacknowledged data to
// the others), and ends the connection when the last one is gone.
func (c *Conn) Update() {
	defer c.flush()
	for i := 0; i < len(c.subflows); i++ {
		s := c.subflows[i]
		if s.ep == nil {
			continue
		}
		if err := s.connErr; err != nil && c.state != StateReset {
			s.connErr = nil
			c.reset(err)
			return
		}
		if err := s.pendingErr; err != nil {
			s.pendingErr = nil
			c.subflowError(s, err)
			if c.state == StateReset {
				return
			}
		}
		if s.ackNeeded && s.ep.State() != tcp.StateClosed {
			s.ackNeeded = false
			s.ep.SendAck()
		}
		st := s.ep.State()
		if c.state == StateHandshake && st >= tcp.StateEstablished && !s.join {
			c.state = StateEstablished
			c.notify(tcp.EventWritable)
			c.trace(func(t *Tracer) {
				if t.Established != nil {
					t.Established(c)
				}
			})
		}
		if c.fallback != FallbackNone {
			// Plain TCP: the subflow's acknowledgement is the data level's.
			ack := s.fbSndBase + dsnmap.DSN(s.ep.SndUnaRel())
			c.onFallbackAck(ack)
			if s.finRcvd && c.rx != nil && !c.rx.FINReceived() {
				c.rx.SetFIN(s.fbRcvBase + dsnmap.DSN(s.rcvRel))
				c.notify(tcp.EventReadable)
			}
		} else {
			s.noteAcked()
			if s.finRcvd && !s.closing && !c.dataDone() && c.liveSubflows() > 1 {
				// The peer closed this subflow while the connection goes
				// on: close our side too and carry on with the others.
				c.closeSubflowGracefully(s)
			}
		}
		if (st == tcp.StateClosed || st == tcp.StateTimeWait) && !s.dead {
			// CLOSED, or TIME-WAIT: both FINs are through, the subflow
			// carries nothing any more (its endpoint serves TIME-WAIT on
			// its own).
			c.subflowDown(s)
			if c.state == StateReset {
				return
			}
		}
	}
	c.removeDead()
	if c.state == StateReset {
		return
	}
	c.push()
	c.checkDataAckStall()
	if c.dataDone() && c.state != StateClosed {
		c.state = StateClosed
		c.rtx.stop()
		c.releaseToken()
		// Both DATA_FINs are acknowledged: close the subflows (FIN), as
		// the kernel does once the data level is finished.
		for _, s := range c.subflows {
			if s.ep != nil && s.ep.State() != tcp.StateClosed {
				s.closing = true
				s.ep.Close()
			}
		}
		c.notify(tcp.EventClosed | tcp.EventReadable)
		c.trace(func(t *Tracer) {
			if t.Closed != nil {
				t.Closed(c, nil)
			}
		})
	}
	if c.fallback != FallbackNone && c.state == StateEstablished && (c.finQueued || (c.rx != nil && c.rx.FINReceived())) {
		c.state = StateClosing
	}
	c.pmUpdate()
}

// subflowError handles a subflow-level fault (a mapping conflict, a
// checksum failure, unmapped data): that subflow is reset with MP_TCPRST
// and its data re-sent on the others; only a connection left with no
// other subflow fails as a whole (RFC 8684 §3.6-3.7).
func (c *Conn) subflowError(s *Subflow, err error) {
	if c.liveSubflows() <= 1 {
		c.reset(err)
		return
	}
	c.closeSubflow(s, err)
}

// closeSubflow resets subflow s (RST with MP_TCPRST, its reason in
// s.rstReason) because of err; Update retires it.
func (c *Conn) closeSubflow(s *Subflow, err error) {
	if s.dead || s.closing {
		return
	}
	s.closing = true
	if s.err == nil {
		s.err = err
	}
	c.reinjectFrom(s)
	if s.ep != nil && s.ep.State() != tcp.StateClosed {
		s.ep.Abort()
	}
}

// closeGrace bounds the graceful close of a subflow the connection
// retires while it goes on: a path that is gone would keep the FIN
// unacknowledged for many RTOs. It is then reset.
const closeGrace = 5 * time.Second

// closeSubflowGracefully closes subflow s with a FIN (the peer closed
// its side, or the path manager retires it cleanly); if that does not
// complete within closeGrace, the subflow is reset.
func (c *Conn) closeSubflowGracefully(s *Subflow) {
	if s.dead || s.closing {
		return
	}
	s.closing = true
	c.reinjectFrom(s)
	if s.ep != nil && s.ep.State() != tcp.StateClosed {
		s.ep.Close()
		s.closeBy = c.cfg.Clock.NowMonotonic().Add(closeGrace)
		c.notify(tcp.EventTimer)
	}
}

// maxClosedSubflows bounds the closed subflows Info reports.
const maxClosedSubflows = 16

// tcpFINAcked reports whether the subflow's TCP shows our FIN
// acknowledged: FIN-WAIT-2, TIME-WAIT, or CLOSED without an error.
func (s *Subflow) tcpFINAcked() bool {
	if s.ep == nil {
		return false
	}
	switch s.ep.State() {
	case tcp.StateFinWait2, tcp.StateTimeWait:
		return true
	case tcp.StateClosed:
		return s.ep.Err() == nil && s.err == nil
	}
	return false
}

// subflowDown retires a subflow whose endpoint is CLOSED.
func (c *Conn) subflowDown(s *Subflow) {
	s.dead = true
	if c.fallback != FallbackNone && c.finQueued && s.tcpFINAcked() {
		// Plain TCP: Delivered no longer finds the subflow once retired.
		c.finAcked = true
	}
	c.subflowsClosed++
	if len(c.closedSubs) == maxClosedSubflows {
		c.closedSubs = append(c.closedSubs[:0], c.closedSubs[1:]...)
	}
	c.closedSubs = append(c.closedSubs, s.Info())
	err := s.err
	if err == nil {
		err = s.ep.Err()
	}
	if s.fastcloseRcvd {
		err = ErrFastclose
	}
	c.reinjectFrom(s)
	c.trace(func(t *Tracer) {
		if t.SubflowClosed != nil {
			t.SubflowClosed(c, s.Info(), err)
		}
	})
	if c.state == StateReset || c.state == StateClosed {
		return
	}
	if c.fallback != FallbackNone {
		if err == nil {
			c.state = StateClosed
		} else {
			c.fail(err)
		}
		return
	}
	if s.fastcloseRcvd {
		c.fail(ErrFastclose)
		return
	}
	if c.liveSubflows() > 0 || c.dataDone() {
		return
	}
	if err == nil {
		err = ErrSubflowsClosed
	}
	c.fail(err)
}

// fail ends the connection with err once no subflow is left to reset.
func (c *Conn) fail(err error) {
	if c.err == nil {
		c.err = err
	}
	c.die()
	for _, s := range c.subflows {
		if s.ep != nil && s.ep.State() != tcp.StateClosed {
			s.ep.Abort()
		}
	}
	c.releaseToken()
	c.notify(tcp.EventClosed | tcp.EventError | tcp.EventReadable | tcp.EventWritable)
	c.trace(func(t *Tracer) {
		if t.Closed != nil {
			t.Closed(c, err)
		}
	})
}

// removeDead drops retired subflows from the list.
func (c *Conn) removeDead() {
	j := 0
	for _, s := range c.subflows {
		if s.dead {
			continue
		}
		c.subflows[j] = s
		j++
	}
	clear(c.subflows[j:])
	c.subflows = c.subflows[:j]
}

// onFallbackAck frees data acknowledged by the subflow after a fallback.
func (c *Conn) onFallbackAck(ack dsnmap.DSN) {
	if int64(ack-c.sndNxt) > 0 {
		ack = c.sndNxt // the FIN's sequence number, or a bogus ACK TCP refused
	}
	if int64(ack-c.sndUna) <= 0 {
		return
	}
	n := int(ack - c.sndUna)
	c.snd.Discard(n)
	c.sndUna = ack
	c.stats.BytesAcked += uint64(n)
	c.notify(tcp.EventWritable)
}

// dataDone reports whether both directions are finished at the data level.
func (c *Conn) dataDone() bool {
	if c.fallback != FallbackNone {
		return false // the subflow's own close handshake ends it
	}
	return c.finAcked && c.rx != nil && c.rx.FINReceived()
}

// checkDataAckStall resets the connection when the subflows acknowledged
// data that the data level has not for longer than DataAckTimeout: the
// peer holds our data without delivering it (RFC 8684 §3.6 reason 4).
// The data-level retransmission timer has re-sent the oldest data (and so
// asked for a fresh Data ACK) several times by then.
func (c *Conn) checkDataAckStall() {
	if c.cfg.DataAckTimeout < 0 || c.fallback != FallbackNone {
		c.ackStall = tcpip.MonotonicTime{}
		return
	}
	behind := false
	for _, s := range c.subflows {
		if s.ep != nil && s.ep.State() >= tcp.StateEstablished && int64(s.lastAckedTop-c.sndUna) > 0 {
			behind = true
		}
	}
	now := c.cfg.Clock.NowMonotonic()
	switch {
	case !behind:
		c.ackStall = tcpip.MonotonicTime{}
	case c.ackStall == (tcpip.MonotonicTime{}):
		c.ackStall = now
		c.notify(tcp.EventTimer)
	case now.Sub(c.ackStall) >= c.cfg.DataAckTimeout:
		for _, s := range c.subflows {
			s.rstReason = options.RstReasonTooMuchOutstanding
		}
		c.cfg.MIB.Inc(DataAckStallReset)
		c.reset(ErrDataAckTimeout)
	}
}

// NextDeadline returns the connection's earliest timer (data-level
// retransmission, data-level acknowledgement bound), not the subflows'.
func (c *Conn) NextDeadline() (tcpip.MonotonicTime, bool) {
	var at tcpip.MonotonicTime
	ok := false
	if c.rtx.armed && c.state != StateReset {
		at, ok = c.rtx.at, true
	}
	if c.ackStall != (tcpip.MonotonicTime{}) && c.cfg.DataAckTimeout > 0 {
		if t := c.ackStall.Add(c.cfg.DataAckTimeout); !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	if t, tok := c.pmDeadline(); tok && (!ok || t.Before(at)) {
		at, ok = t, true
	}
	for _, s := range c.subflows {
		if s.initiator && !s.joined && s.joinAckAt != zeroTime && (!ok || s.joinAckAt.Before(at)) {
			at, ok = s.joinAckAt, true
		}
		if s.closeBy != zeroTime && !s.dead && (!ok || s.closeBy.Before(at)) {
			at, ok = s.closeBy, true
		}
		if s.closeAt != zeroTime && !s.dead && (!ok || s.closeAt.Before(at)) {
			at, ok = s.closeAt, true
		}
	}
	return at, ok
}

// HandleTimers runs the connection's expired timers.
func (c *Conn) HandleTimers() {
	defer c.flush()
	if c.state == StateReset {
		return
	}
	now := c.cfg.Clock.NowMonotonic()
	if c.rtx.due(now) {
		c.onRetransmitTimer(now)
	}
	for _, s := range c.subflows {
		s.joinTimers(now)
		if s.closeAt != zeroTime && !s.dead && !now.Before(s.closeAt) {
			s.closeAt = zeroTime
			if s.ep != nil && s.ep.State() != tcp.StateClosed {
				s.ep.Close()
				s.closeBy = now.Add(closeGrace)
			}
		}
		if s.closeBy != zeroTime && !s.dead && !now.Before(s.closeBy) {
			s.closeBy = zeroTime
			if s.ep != nil && s.ep.State() != tcp.StateClosed && s.ep.State() != tcp.StateTimeWait {
				s.ep.Abort()
			}
		}
	}
	c.pmTimers(now)
	c.checkDataAckStall()
}

// canSend reports whether a subflow in state st may carry new data.
func canSend(st tcp.State) bool {
	return st == tcp.StateEstablished || st == tcp.StateCloseWait
}

// NewServer creates the connection of a passive opener for a SYN that
// carries MP_CAPABLE (RFC 8684 §3.1), and its first subflow's extension to
// build the endpoint with (then Bind it). It returns ok false, and nothing
// else, when the SYN has no usable MP_CAPABLE: the connection is plain TCP.
func NewServer(cfg Config, syn *tcp.Segment) (c *Conn, s *Subflow, ok bool, err error) {
	var p parsed
	parseOptions(syn, &p)
	if !p.hasMPC || p.mpc.Form != options.CapableSYN || !usableCapable(&p.mpc) {
		return nil, nil, false, nil
	}
	if p.mpc.Flags&options.CapableFlagChecksum != 0 {
		cfg.Checksums = true
	}
	c, err = newConn(cfg, false)
	if err != nil {
		return nil, nil, false, err
	}
	cfg.MIB.Inc(MPCapableSYNRX)
	c.peerNoNewToSource = p.mpc.Flags&options.CapableFlagNoNewSubflowsToSource != 0
	return c, c.addSubflow(), true, nil
}

// NewServerFromCookie rebuilds the connection of a passive opener from
// the ACK that completes a SYN-cookie handshake: a listener under a SYN
// flood keeps no state for a SYN, and MP_CAPABLE's third ACK repeats both
// keys precisely so that it need not (RFC 8684 §3.1; Linux rebuilds its
// request the same way). Our key is the one the ACK echoes, which the
// cookie SYN/ACK carried. It returns ok false, and nothing else, when the
// ACK has no usable MP_CAPABLE, or when that key's token is in use by
// another connection: the connection is then plain TCP.
func NewServerFromCookie(cfg Config, ack *tcp.Segment) (c *Conn, s *Subflow, ok bool, err error) {
	var p parsed
	parseOptions(ack, &p)
	if !p.hasMPC || (p.mpc.Form != options.CapableACK && p.mpc.Form != options.CapableACKData) || !usableCapable(&p.mpc) {
		return nil, nil, false, nil
	}
	if cfg.Clock == nil || cfg.Tokens == nil {
		return nil, nil, false, errors.New("mptcp: Config needs Clock and Tokens")
	}
	if p.mpc.Flags&options.CapableFlagChecksum != 0 {
		cfg.Checksums = true
	}
	c = &Conn{cfg: cfg}
	if err := c.init(false); err != nil {
		return nil, nil, false, err
	}
	if !cfg.Tokens.Claim(handshake.Token(p.mpc.ReceiverKey), c) {
		return nil, nil, false, nil
	}
	c.setLocalKey(p.mpc.ReceiverKey)
	c.tokenHeld = true
	c.setRemoteKey(p.mpc.SenderKey)
	c.peerNoNewToSource = p.mpc.Flags&options.CapableFlagNoNewSubflowsToSource != 0
	cfg.MIB.Inc(MPCapableSYNCookie)
	return c, c.addSubflow(), true, nil
}

// Release frees what the connection holds outside itself (its token); the
// driver calls it when the last subflow is gone.
func (c *Conn) Release() {
	c.releaseToken()
	c.snd.Release()
}

// Info is a snapshot of a connection's data-level state.
type Info struct {
	State       State
	Client      bool
	Fallback    FallbackReason
	LocalKey    uint64
	RemoteKey   uint64
	LocalToken  uint32
	RemoteToken uint32
	Checksums   bool
	// FullyEstablished: the peer is known to hold both keys (§3.1).
	FullyEstablished bool
	// PeerNoNewSubflowsToSource: the peer set MP_CAPABLE's C flag.
	PeerNoNewSubflowsToSource bool
	SndUna, SndNxt            uint64 // data sequence numbers
	RcvNxt                    uint64
	SndBuffered               int
	RcvReadable               int
	RcvOutOfOrder             int
	DataFINSent               bool
	DataFINAcked              bool
	DataFINReceived           bool
	Stats                     Stats
	// Reassembly counts what the connection-level receive buffer did with
	// the bytes the subflows handed over.
	Reassembly dsnmap.ReassemblyStats
	// Subflows are the live subflows, then the last closed ones (Closed
	// set, as they were when they closed); SubflowsOpened and
	// SubflowsClosed count every subflow of the connection's life.
	Subflows                       []SubflowInfo
	SubflowsOpened, SubflowsClosed uint64
	// Scheduler names the scheduler in use.
	Scheduler string `json:",omitempty"`
	// RemoteAddrs are the peer's addresses the connection knows (ID 0 is
	// its initial address); Announced our addresses sent with ADD_ADDR.
	RemoteAddrs []Address `json:",omitempty"`
	Announced   []Address `json:",omitempty"`
	// ReceiveBuffer is the connection-level receive buffer's size now
	// (auto-tuned), ReceiveBufferGrows how often it grew.
	ReceiveBuffer      int
	ReceiveBufferGrows uint64
}

// Info returns a snapshot of the connection's state.
func (c *Conn) Info() Info {
	in := Info{
		State: c.state, Client: c.client, Fallback: c.fallback,
		LocalKey: c.localKey, LocalToken: c.localToken, Checksums: c.checksums && c.fallback == FallbackNone,
		FullyEstablished: c.fullyEstablished, PeerNoNewSubflowsToSource: c.peerNoNewToSource,
		SndUna: uint64(c.sndUna), SndNxt: uint64(c.sndNxt), SndBuffered: c.buffered(),
		DataFINSent: c.finSent, DataFINAcked: c.finAcked, Stats: c.stats,
	}
	if c.haveRemoteKey {
		in.RemoteKey, in.RemoteToken = c.remoteKey, c.remoteToken
	}
	if c.rx != nil {
		in.RcvNxt, in.RcvReadable, in.RcvOutOfOrder = uint64(c.rx.Next()), c.rx.Readable(), c.rx.OutOfOrder()
		in.DataFINReceived = c.rx.FINReceived()
		in.Reassembly = c.rx.Stats()
	}
	in.SubflowsOpened, in.SubflowsClosed = c.subflowsOpened, c.subflowsClosed
	in.ReceiveBuffer, in.ReceiveBufferGrows = c.rcvLimit, c.tune.grows
	for _, s := range c.subflows {
		in.Subflows = append(in.Subflows, s.Info())
	}
	in.Subflows = append(in.Subflows, c.closedSubs...)
	in.Scheduler = c.cfg.Scheduler
	if in.Scheduler == "" {
		in.Scheduler = DefaultScheduler
	}
	in.RemoteAddrs = append(in.RemoteAddrs, c.pm.remotes...)
	for _, a := range c.pm.announce {
		if !a.removed {
			in.Announced = append(in.Announced, Address{ID: a.ep.ID, Addr: a.ep.Addr, Port: a.ep.Port})
		}
	}
	return in
}

// cookieSYNACK is the extension of a SYN answered with a SYN cookie: it
// only puts MP_CAPABLE with a fresh key on the SYN/ACK and keeps no state
// (no connection, no token held: under a SYN flood it runs for every
// SYN). The key comes back in the third ACK (NewServerFromCookie).
type cookieSYNACK struct {
	tcp.NopExtension
	mpc options.MPCapable
}

func (e *cookieSYNACK) SegmentOptions(info *tcp.SegmentInfo, _ int, dst []options.Option) []options.Option {
	if info.Flags&header.TCPFlagSyn != 0 && info.Flags&header.TCPFlagAck != 0 {
		return append(dst, &e.mpc)
	}
	return dst
}

// NewCookieSYNACK returns the stateless extension of a SYN with
// MP_CAPABLE answered with a SYN cookie, or ok false when the SYN has no
// usable MP_CAPABLE (plain TCP). The key's token is free when chosen but
// not reserved: NewServerFromCookie claims it, or falls back to TCP if
// another connection took it meanwhile.
func NewCookieSYNACK(cfg Config, syn *tcp.Segment) (ext tcp.Extension, ok bool, err error) {
	var p parsed
	parseOptions(syn, &p)
	if !p.hasMPC || p.mpc.Form != options.CapableSYN || !usableCapable(&p.mpc) {
		return nil, false, nil
	}
	if cfg.Tokens == nil {
		return nil, false, errors.New("mptcp: Config needs Tokens")
	}
	key, err := handshake.NewKey(cfg.Rand, func(tok uint32) bool { return cfg.Tokens.Lookup(tok) != nil })
	if err != nil {
		return nil, false, err
	}
	flags := uint8(options.CapableFlagHMACSHA256)
	if cfg.Checksums || p.mpc.Flags&options.CapableFlagChecksum != 0 {
		flags |= options.CapableFlagChecksum
	}
	if cfg.PM.DenyJoinInitial() {
		flags |= options.CapableFlagNoNewSubflowsToSource
	}
	cfg.MIB.Inc(MPCapableSYNRX)
	return &cookieSYNACK{mpc: options.MPCapable{Form: options.CapableSYNACK, Version: 1, Flags: flags, SenderKey: key}}, true, nil
}
