package tcp

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"time"

	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// timer is a deadline owned by the endpoint; the caller learns the earliest
// one from NextDeadline and calls HandleTimers when it has passed.
type timer struct {
	at    tcpip.MonotonicTime
	armed bool
}

func (t *timer) set(at tcpip.MonotonicTime) { t.at, t.armed = at, true }
func (t *timer) stop()                      { t.armed = false }
func (t *timer) due(now tcpip.MonotonicTime) bool {
	return t.armed && !now.Before(t.at)
}

// Endpoint is one TCP connection (a subflow when an Extension is attached):
// a sans-I/O state machine implementing RFC 9293 with the extensions listed
// in the package documentation.
//
// An Endpoint is not safe for concurrent use: the caller serialises every
// method call (the gVisor adapter holds a per-endpoint mutex), including
// HandleSegment and HandleTimers. Output, Notify and Extension callbacks run
// synchronously inside those calls.
type Endpoint struct {
	cfg   Config
	clock tcpip.Clock
	out   Output
	ext   Extension
	rx    Receiver // ext as a Receiver, or nil
	cc    CongestionControl
	// rateCC is cc as a RateController (BBR), or nil: then the endpoint
	// estimates the delivery rate and paces.
	rateCC    RateController
	rate      rateState
	paceNext  tcpip.MonotonicTime // the next transmission may leave then
	paceTimer timer

	state  State
	err    error
	closed bool // Close was called: the application reads no more

	// Send sequence space, as offsets from the ISS (SYN at 0, first data
	// byte at 1); sndNxt is the highest offset sent plus one (SND.MAX).
	iss            seqnum.Value
	sndUna, sndNxt uint64
	sndWnd         uint64 // peer's window, bytes
	maxSndWnd      uint64
	sndWl1         uint64 // receive offset of the last window update
	sndWl2         uint64 // send offset acked by the last window update
	sb             sendBuffer
	finQueued      bool
	finOff         uint64 // offset of our FIN once queued
	sndMSS         int    // largest payload (peer's MSS minus fixed options)
	gsoMax         int    // largest TSO super-segment payload, 0 for none
	peerMSS        int
	pathMSS        int // from HandlePacketTooBig; 0 = none

	// Receive sequence space, as offsets from the IRS.
	irs seqnum.Value
	// Data in the SYN (TCP Fast Open). Active open: synData is what
	// ConnectData offers, synDataLen what the first SYN carried,
	// synAccepted what the SYN-ACK acknowledged (ISS then counts from
	// after it). Passive open: synRcvd is what the listener accepted
	// (IRS counts from after it), until SynData takes it.
	synData     []byte
	synDataLen  int
	synAccepted int
	synRcvd     []byte
	synRcvdLen  int // IRS moved past the accepted SYN data by this much
	rb          recvBuffer
	rcvAdvEdge  uint64 // right edge of the window last advertised
	finRcvd     bool   // FIN received in order
	finRcvSeen  bool   // FIN seen (maybe out of order) at finRcvOff
	finRcvOff   uint64
	lastAckOff  uint64 // RCV.NXT carried by the last ACK we sent
	rcvMSSEst   int    // largest segment received (at most cfg.MSS), for the delayed-ACK rule

	// Negotiated options (RFC 7323, RFC 2018).
	sackOK, tsOK, wsOK bool
	sndWS, rcvWS       uint8
	tsRecent           uint32
	tsRecentAt         tcpip.MonotonicTime
	// sackHist holds an offset inside each of the out-of-order blocks
	// reported most recently, the latest first (RFC 2018 §4: the block of
	// the segment that triggered the ACK, then the most recently reported
	// ones, so that each is reported more than once despite lost ACKs;
	// Linux's selective_acks).
	sackHist  [4]uint64
	sackHistN int
	// dsack is a D-SACK block to report in the next ACK (RFC 2883), when
	// dsackOn: a duplicate received.
	dsack   span
	dsackOn bool

	// ACK generation (RFC 9293 §3.8.6.3, RFC 5681 §4.2).
	ackNow       bool
	unackedBytes int
	// ackDue is an ACK owed by the every-second-segment rule and held back
	// while deferAck is set (see SetAckDeferral).
	ackDue   bool
	deferAck bool
	dack     timer
	// Quick-ACK mode (Linux's icsk_ack.quick and pingpong): quickAcks
	// ACKs of new data go out at once rather than delayed, at the start
	// of the connection, after an idle period and after out-of-order
	// data; ackQuick says one is owed. In pingpong mode (we answer the
	// peer's data with data of our own, or the peer closed) ACKs wait to
	// ride on our next segment.
	quickAcks int
	ackQuick  bool
	pingpong  bool
	dataSeen  bool                // data was received
	lastRcvAt tcpip.MonotonicTime // when data last arrived

	// RTT and retransmission timer (RFC 6298).
	srtt, rttvar, rto time.Duration
	hasRTT            bool
	rttStart          tcpip.MonotonicTime // SYN sent, for the handshake's RTT
	minRTT            minMax
	ackRTT            time.Duration // the current ACK's RTT sample, for the controller
	backoff           int
	rtoTimer          timer
	synRetries        int

	// Loss recovery (recovery.go): the scoreboard, the congestion state,
	// RACK-TLP (rack.go), PRR and undo.
	rtx        rtxQueue
	ca         caState
	recoverOff uint64 // SND.NXT when recovery began (RFC 6582 "recover")
	dupAcks    int
	renoSacked int    // without SACK: duplicate ACKs counted as segments gone
	forceRetx  bool   // retransmit the head regardless of the windows (timeout)
	lostHint   uint64 // no record below it waits to be sent again
	// rackScanFrom: no record below it is a candidate for RACK's loss
	// marking (all SACKed or already waiting to be sent again).
	rackScanFrom uint64
	rack         rackState
	reoTimer     timer // RACK's reordering timer
	tlpTimer     timer // loss probe timer (PTO)
	tlpActive    bool  // a probe is outstanding (TLP.end_seq set)
	tlpRetrans   bool  // it was a retransmission
	tlpEnd       uint64
	tlpProbe     bool // a probe is being sent: ignore cwnd
	tlpRearm     bool // new data sent or SND.UNA advanced: reschedule the PTO
	// PRR (RFC 6937), in bytes.
	prrDelivered, prrOut, prrRecoverFS, prrCwnd int
	// Undo (RFC 3522, RFC 2883): the episode began with SND.UNA at
	// undoMarker; undoRetrans counts its retransmissions not yet
	// D-SACKed (-1: none yet); retransStamp is the timestamp of its first
	// retransmission.
	undoValid      bool
	undoMarker     uint64
	undoRetrans    int
	retransStamp   uint32
	retransStampOK bool
	// Round trips (RFC 9406 §4.2): a round ends when SND.UNA reaches
	// roundEnd, SND.NXT when it began.
	roundEnd uint64
	newRound bool
	// cwndBlocked records whether the last transmission attempt was
	// limited by cwnd (not by data or the peer's window): otherwise the
	// sender is application-limited and cwnd must not grow (RFC 7661).
	cwndBlocked bool

	// swsBlocked: the last output held back a segment for sender-side SWS
	// avoidance; swsOverride lets the persist timer send it anyway.
	swsBlocked, swsOverride bool

	// Persist (zero-window probes) and keepalive.
	persist      timer
	persistShift int
	probesOut    int // zero-window probes sent since the last ACK
	keepalive    timer
	kaProbes     int
	timeWait     timer
	finWait2     timer

	// Receive buffer auto-tuning.
	rcvEpochAt  tcpip.MonotonicTime
	rcvEpochOff uint64
	rcvRTT      time.Duration

	// Challenge ACK rate limit (RFC 5961 §7).
	chalSecond int64
	chalCount  int

	nowAt tcpip.MonotonicTime // the time of the current call (see now)
	nowOK bool

	lastNotifiedDeadline timer
	// synq is the SYN queue of the Listener that created the endpoint,
	// while it is in SYN-RECEIVED; synYoung is set until its SYN-ACK first
	// times out.
	synq     *synQueue
	synYoung bool

	info Info

	// Scratch space reused for every outgoing segment.
	seg       OutSegment
	segInfo   SegmentInfo
	ackSample AckSample
	optBuf    [64]byte
	extOpts   []options.Option
	sackBuf   [4]options.SACKBlock
}

// NewEndpoint returns an endpoint in CLOSED state. Call Connect for an
// active open; passive opens are created by a Listener.
func NewEndpoint(cfg Config) (*Endpoint, error) {
	if cfg.Clock == nil || cfg.Output == nil {
		return nil, ErrInvalidState
	}
	cfg.setDefaults()
	e := &Endpoint{cfg: cfg, clock: cfg.Clock, out: cfg.Output, ext: cfg.Extension}
	if r, ok := cfg.Extension.(Receiver); ok {
		e.rx = r
	}
	e.iss = cfg.ISS
	e.sndUna, e.sndNxt = 0, 0
	e.sb.init(cfg.SendBuffer)
	e.rb.init(cfg.ReceiveBuffer)
	e.rack.reoWndMult = 1
	e.rto = cfg.InitialRTO
	e.peerMSS = 536 // RFC 9293 §3.7.1 default until negotiated
	e.sndMSS = 536
	e.sb.segmentSize(e.sndMSS)
	if !cfg.DisableWScale {
		e.rcvWS = windowScaleFor(cfg.MaxReceiveBuffer)
	}
	cc, err := NewCongestionControl(cfg.Congestion, CCParams{
		MSS:         e.sndMSS,
		InitialCwnd: cfg.InitialCwnd * e.sndMSS,
		Subflow:     e,
	})
	if err != nil {
		return nil, err
	}
	e.setCC(cc)
	if b, ok := cfg.Extension.(Binder); ok {
		b.Bind(e)
	}
	return e, nil
}

// setCC installs the congestion controller.
func (e *Endpoint) setCC(cc CongestionControl) {
	e.cc = cc
	e.rateCC, _ = cc.(RateController)
}

// Connect starts an active open (RFC 9293 §3.10.1): it sends the SYN with
// MSS, window scale, SACK-permitted and timestamp options, plus the
// extension's options (MP_CAPABLE or MP_JOIN).
func (e *Endpoint) Connect() error {
	e.nowOK = false
	if e.state != StateClosed || e.err != nil || e.sndNxt != 0 {
		return ErrInvalidState
	}
	e.setState(StateSynSent)
	e.sendSYN(false)
	e.flushNotify()
	return nil
}

// MaxSynData bounds the data a SYN carries (ConnectData) or that a
// listener keeps from one (AcceptSynData). A SYN goes out before the
// peer's MSS is known, so the first SYN carries at most RFC 9293's default
// MSS (536) less its options; a larger SYN payload from a peer is
// accepted up to this bound and the rest left for the peer to resend.
const MaxSynData = 1460

// ConnectData is Connect with data in the SYN (TCP Fast Open without a
// cookie, RFC 7413, as an RFC 8803 Transport Converter accepts it): the
// first SYN carries a Fast Open option and as much of p as fits (at most
// 536 bytes less the options), copied. A server that accepts it
// acknowledges it in its SYN-ACK; SynDataAccepted then tells how much of
// p was delivered, and the caller sends the rest (p[SynDataAccepted():])
// as the first bytes of the stream. The accepted bytes are a prefix of
// the connection, outside its relative sequence numbers (and outside
// MPTCP's data sequence space, as Linux's MPTCP Fast Open counts them). A
// retransmitted SYN carries no data.
func (e *Endpoint) ConnectData(p []byte) error {
	if len(p) > 0 && e.state == StateClosed && e.sndNxt == 0 {
		e.synData = append([]byte(nil), p[:min(len(p), MaxSynData)]...)
	}
	return e.Connect()
}

// SynDataAccepted returns how many bytes of ConnectData's SYN data the
// peer acknowledged (0 until ESTABLISHED, or if it ignored them).
func (e *Endpoint) SynDataAccepted() int { return e.synAccepted }

// SynData returns, once, the data a listener accepted from the peer's SYN
// (Listener.AcceptSynData): the bytes that precede the stream that Read or
// the Receiver deliver. It returns nil on an active open or after the
// first call.
func (e *Endpoint) SynData() []byte {
	p := e.synRcvd
	e.synRcvd = nil
	return p
}

// peerSynSeq is the sequence number of the peer's SYN (IRS, unless it
// moved past accepted SYN data).
func (e *Endpoint) peerSynSeq() seqnum.Value { return e.irs - seqnum.Value(e.synRcvdLen) }

// State returns the connection state.
func (e *Endpoint) State() State { return e.state }

// Err returns why the connection failed, or nil.
func (e *Endpoint) Err() error { return e.err }

// Write copies as much of p as fits into the send buffer and transmits what
// the windows allow. It returns ErrWouldBlock with n < len(p) when the
// buffer is full (wait for EventWritable), ErrClosedForSend after
// CloseWrite, or the connection's error.
func (e *Endpoint) Write(p []byte) (int, error) {
	e.nowOK = false
	if e.err != nil {
		return 0, e.err
	}
	if e.finQueued || e.closed {
		return 0, ErrClosedForSend
	}
	if !e.state.canSend() {
		return 0, ErrNotConnected
	}
	n := e.sb.write(p)
	if e.state.synchronized() {
		e.output()
	}
	e.flushNotify()
	if n < len(p) {
		return n, ErrWouldBlock
	}
	return n, nil
}

// EnqueueChunk copies data into the send buffer as one chunk whose segments
// all carry meta in their SegmentInfo: the MPTCP layer's DSS mapping
// (RFC 8684 §3.3). A segment never spans two chunks. It fails with
// ErrChunkTooLarge above MaxChunk bytes and with ErrWouldBlock (queuing
// nothing) when the send buffer has no room for the whole chunk.
func (e *Endpoint) EnqueueChunk(data []byte, meta any) error {
	e.nowOK = false
	if e.err != nil {
		return e.err
	}
	if e.finQueued || e.closed {
		return ErrClosedForSend
	}
	if !e.state.canSend() {
		return ErrNotConnected
	}
	if len(data) > MaxChunk {
		return ErrChunkTooLarge
	}
	if len(data) > e.sb.free() {
		return ErrWouldBlock
	}
	if len(data) == 0 {
		return nil
	}
	e.sb.enqueue(data, meta)
	if e.state.synchronized() {
		e.output()
	}
	e.flushNotify()
	return nil
}

// EnqueueView is EnqueueChunk without the copy: the chunk's bytes are v's,
// and the endpoint takes over the caller's reference to v when it returns
// nil (releasing it once the bytes are acknowledged). The bytes must not
// change afterwards: share them only through clones (buffer.View.Clone),
// as the MPTCP layer does to keep data until the data-level
// acknowledgement. On error the caller keeps its reference.
func (e *Endpoint) EnqueueView(v *buffer.View, meta any) error {
	e.nowOK = false
	if e.err != nil {
		return e.err
	}
	if e.finQueued || e.closed {
		return ErrClosedForSend
	}
	if !e.state.canSend() {
		return ErrNotConnected
	}
	n := v.Size()
	if n > MaxChunk {
		return ErrChunkTooLarge
	}
	if n > e.sb.free() {
		return ErrWouldBlock
	}
	if n == 0 {
		v.Release()
		return nil
	}
	e.sb.enqueueView(v, meta)
	if e.state.synchronized() {
		e.output()
	}
	e.flushNotify()
	return nil
}

// SendBufferFree returns how many bytes Write or EnqueueChunk can take now.
func (e *Endpoint) SendBufferFree() int { return e.sb.free() }

// ChunkSize returns the chunk size that keeps segments full: the largest
// multiple of the current send MSS within MaxChunk. Write closes its
// chunks at this size; an extension that enqueues chunks of this size
// (EnqueueChunk) gets no short segment at chunk boundaries and, with
// SetGSOMaxSize, whole TSO super-segments.
func (e *Endpoint) ChunkSize() int { return e.sb.plainMax }

// SendBufferSize returns the send buffer's current bound (Config.SendBuffer,
// grown with the congestion window up to Config.MaxSendBuffer).
func (e *Endpoint) SendBufferSize() int { return e.sb.limit }

// Read copies in-order received bytes into p. It returns (0, nil) at EOF
// (the peer's FIN was received and everything read), ErrWouldBlock when
// nothing is available yet, or the connection's error. With a Receiver
// extension all data goes to Deliver and Read only reports EOF and errors.
func (e *Endpoint) Read(p []byte) (int, error) {
	e.nowOK = false
	if n := e.rb.read(p); n > 0 {
		e.info.BytesRead += uint64(n)
		e.afterRead()
		e.flushNotify()
		return n, nil
	}
	if e.finRcvd {
		return 0, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	if e.state == StateClosed {
		return 0, ErrNotConnected
	}
	return 0, ErrWouldBlock
}

// Readable returns the number of bytes Read would return now.
func (e *Endpoint) Readable() int { return e.rb.readable() }

// afterRead sends a window update when reading opened the window by enough
// to matter. Receiver SWS avoidance (RFC 9293 §3.8.6.2.2) sets the least
// increase worth announcing; like Linux (__tcp_cleanup_rbuf) we announce
// only when the window still open to the peer has fallen to half the
// buffer or less and the update at least doubles it, so that a reader does
// not send an ACK after every read while data keeps arriving (the ACKs
// for that data carry the new window anyway).
func (e *Endpoint) afterRead() {
	if !e.state.synchronized() || e.finRcvd {
		return
	}
	e.autoTune()
	open := uint64(0)
	if e.rcvAdvEdge > e.rb.nxt {
		open = e.rcvAdvEdge - e.rb.nxt
	}
	if 2*open > uint64(e.rb.size) {
		return
	}
	w := uint64(e.scaledWindow())
	if w >= 2*open && w-open >= uint64(min(e.rb.size/2, e.cfg.MSS)) {
		e.sendAck()
	}
}

// CloseWrite queues a FIN after the data already queued (half-close,
// RFC 9293 §3.10.4). Reading continues until the peer's FIN.
func (e *Endpoint) CloseWrite() error {
	e.nowOK = false
	if e.err != nil {
		return e.err
	}
	if e.finQueued {
		return nil
	}
	switch e.state {
	case StateClosed, StateSynSent:
		// Nothing was sent that the peer knows of.
		e.closeNow(nil)
		e.flushNotify()
		return nil
	}
	e.finQueued = true
	e.finOff = e.sb.end
	if e.state.synchronized() {
		e.output()
	}
	e.flushNotify()
	return nil
}

// Close releases the connection: like CloseWrite, but the application will
// read no more. If unread data is pending (or arrives later), the
// connection is reset instead (RFC 2525 §2.17, as Linux does).
func (e *Endpoint) Close() error {
	e.nowOK = false
	if e.closed {
		return nil
	}
	e.closed = true
	defer e.rb.releaseHeld() // nobody reads any more
	if e.rb.readable() > 0 && e.state.synchronized() {
		e.Abort()
		return nil
	}
	err := e.CloseWrite()
	if e.state == StateFinWait2 {
		e.finWait2.set(e.now().Add(e.cfg.TimeWait))
	}
	return err
}

// Abort resets the connection (RFC 9293 §3.10.5): a RST is sent in
// synchronized and SYN-RECEIVED states, and the endpoint moves to CLOSED
// with ErrAborted.
func (e *Endpoint) Abort() {
	e.nowOK = false
	if e.state == StateClosed {
		return
	}
	if e.state != StateSynSent && e.state != StateTimeWait {
		e.sendRST(e.seqOf(e.ackSeqOff()), e.rcvNxtSeq(), true)
	}
	e.closeNow(ErrAborted)
	e.flushNotify()
}

// SendAck sends a pure ACK now (with the extension's options: an MPTCP
// layer uses it for DATA_ACKs, ADD_ADDR and the like).
func (e *Endpoint) SendAck() {
	e.nowOK = false
	if e.state.synchronized() {
		e.sendAck()
		e.flushNotify()
	}
}

// SetAckDeferral turns ACK deferral on or off. While it is on, an
// acknowledgment owed only because two full-sized segments' worth of
// in-order data arrived (RFC 9293 §3.8.6.3, RFC 5681 §4.2) is not sent at
// once: the endpoint reports EventAckDue and the ACK leaves with the next
// segment, at FlushAck, or when the delayed-ACK timer fires, whichever
// comes first; and as soon as a quarter of the receive buffer is
// unacknowledged. ACKs for out-of-order data, duplicates, filled holes,
// FINs and window updates are never deferred.
//
// The adapter turns it on while it hands over segments that the link read
// back to back and calls FlushAck when that batch ends (before waiting for
// more), so that a receiver that is behind acknowledges once per batch, as
// stacks with receive offload and interrupt batching do, while one that
// keeps up acknowledges as before.
func (e *Endpoint) SetAckDeferral(on bool) { e.deferAck = on }

// FlushAck sends the acknowledgment held back under SetAckDeferral, if it
// is still owed.
func (e *Endpoint) FlushAck() {
	e.nowOK = false
	if e.ackDue && e.state.synchronized() && e.state != StateTimeWait {
		e.sendAck()
	}
	e.ackDue = false
	e.flushNotify()
}

// Kick retries transmission, e.g. after the extension's receive window
// or congestion state changed.
func (e *Endpoint) Kick() {
	e.nowOK = false
	if e.state.synchronized() {
		e.output()
		e.flushNotify()
	}
}

// now is the current time, read from the clock once per call into the
// endpoint: everything a segment, a timer run or an application call does
// happens at one instant. Every entry point resets it (nowOK), and so does
// flushNotify, which ends them.
func (e *Endpoint) now() tcpip.MonotonicTime {
	if !e.nowOK {
		e.nowAt, e.nowOK = e.clock.NowMonotonic(), true
	}
	return e.nowAt
}

// seqOf converts a send offset to a wire sequence number.
func (e *Endpoint) seqOf(off uint64) seqnum.Value { return e.iss.Add(seqnum.Size(uint32(off))) }

// rseqOf converts a receive offset to a wire sequence number.
func (e *Endpoint) rseqOf(off uint64) seqnum.Value { return e.irs.Add(seqnum.Size(uint32(off))) }

// rcvNxtSeq is RCV.NXT on the wire, counting a received FIN.
func (e *Endpoint) rcvNxtSeq() seqnum.Value { return e.rseqOf(e.rcvNxtOff()) }

func (e *Endpoint) rcvNxtOff() uint64 {
	if e.finRcvd {
		return e.rb.nxt + 1
	}
	return e.rb.nxt
}

// ackOff unwraps an acknowledgment number around SND.UNA.
func (e *Endpoint) ackOff(ack seqnum.Value) int64 {
	return int64(e.sndUna) + int64(int32(uint32(ack)-uint32(e.seqOf(e.sndUna))))
}

// rcvOff unwraps a received sequence number around RCV.NXT.
func (e *Endpoint) rcvOff(seq seqnum.Value) int64 {
	return int64(e.rb.nxt) + int64(int32(uint32(seq)-uint32(e.rseqOf(e.rb.nxt))))
}

func (e *Endpoint) setState(s State) {
	if s == e.state {
		return
	}
	old := e.state
	e.state = s
	if old == StateSynRcvd && e.synq != nil {
		e.synq.leave(e.synYoung)
		e.synq, e.synYoung = nil, false
	}
	if e.ext != nil {
		e.ext.StateChanged(old, s)
	}
	if s == StateEstablished && (old == StateSynSent || old == StateSynRcvd) {
		e.notify(EventEstablished | EventWritable)
	}
}

// closeNow moves to CLOSED, recording err, and releases buffers.
func (e *Endpoint) closeNow(err error) {
	if e.err == nil {
		e.err = err
	}
	e.rtoTimer.stop()
	e.tlpTimer.stop()
	e.reoTimer.stop()
	e.paceTimer.stop()
	e.dack.stop()
	e.persist.stop()
	e.keepalive.stop()
	e.timeWait.stop()
	e.finWait2.stop()
	e.sb.release()
	e.rtx.reset()
	e.setState(StateClosed)
	ev := EventClosed | EventReadable | EventWritable
	if err != nil {
		ev |= EventError
	}
	e.notify(ev)
}

// pendingEvents accumulates events until flushNotify.
func (e *Endpoint) notify(ev Events) { e.info.pending |= ev }

func (e *Endpoint) flushNotify() {
	e.nowOK = false
	// Report a changed earliest deadline.
	at, ok := e.NextDeadline()
	if ok != e.lastNotifiedDeadline.armed || (ok && at != e.lastNotifiedDeadline.at) {
		e.lastNotifiedDeadline = timer{at: at, armed: ok}
		e.info.pending |= EventTimer
	}
	ev := e.info.pending
	e.info.pending = 0
	if ev != 0 && e.cfg.Notify != nil {
		e.cfg.Notify(ev)
	}
}

// SRTT implements SubflowStats.
func (e *Endpoint) SRTT() time.Duration { return e.srtt }

// MSS implements SubflowStats: the current send MSS (payload bytes).
func (e *Endpoint) MSS() int { return e.sndMSS }

// CongestionWindow implements SubflowStats.
func (e *Endpoint) CongestionWindow() int { return e.cc.Cwnd() }

// CongestionControl returns the endpoint's controller (for coupled
// controllers and tests).
func (e *Endpoint) CongestionControl() CongestionControl { return e.cc }

// ISS returns the initial send sequence number; IRS the peer's initial
// sequence number (valid once a SYN was received).
func (e *Endpoint) ISS() seqnum.Value { return e.iss }

// IRS returns the peer's initial sequence number.
func (e *Endpoint) IRS() seqnum.Value { return e.irs }

// HandlePacketTooBig lowers the MSS after an ICMP "packet too big" /
// "fragmentation needed" (RFC 8201, RFC 1191): mss is the largest segment
// (TCP payload plus options) the path now carries, i.e. the reported MTU
// minus the IP and TCP fixed headers. Outstanding data is retransmitted at
// the new size without a congestion response (like Linux's
// tcp_simple_retransmit). Values that do not lower the MSS are ignored.
func (e *Endpoint) HandlePacketTooBig(mss int) {
	e.nowOK = false
	if mss < 64 || mss >= e.effMSS() {
		return
	}
	e.pathMSS = mss
	e.sndMSS = e.effMSS()
	if e.tsOK {
		e.sndMSS -= 12
	}
	e.sndMSS = max(e.sndMSS, 32)
	e.sb.segmentSize(e.sndMSS)
	e.cc.SetMSS(e.sndMSS)
	if e.state.synchronized() && e.sndNxt > e.sndUna {
		// Like Linux's tcp_simple_retransmit: RTO recovery without a
		// congestion response.
		e.markAllLost(false)
		e.ca, e.recoverOff, e.undoValid = caLoss, e.sndNxt, false
		e.tlpTimer.stop()
		e.tlpActive = false
		e.forceRetx = true
		e.output()
	}
	e.flushNotify()
}
