package tcp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/seqnum"

	"github.com/mptund/mptund/options"
)

// pawsIdleLimit: a tsRecent older than this is not trusted for PAWS
// (RFC 7323 §5.5, 24 days).
const pawsIdleLimit = 24 * 24 * time.Hour

// HandleSegment processes one incoming segment addressed to this endpoint
// (RFC 9293 §3.10.7). Segments for a closed endpoint are dropped (the
// adapter answers with a RST, RFC 9293 §3.10.7.1). seg's buffers are not
// retained.
func (e *Endpoint) HandleSegment(seg *Segment) {
	e.nowOK = false
	e.info.SegsIn++
	switch e.state {
	case StateClosed:
		e.info.DroppedSegs++
	case StateSynSent:
		e.handleSynSent(seg)
	default:
		e.handleSynchronized(seg)
	}
	e.flushNotify()
}

// negotiate applies the options of the peer's SYN or SYN-ACK (RFC 9293
// §3.7.1, RFC 7323 §2.2 and §3.2, RFC 2018 §2).
func (e *Endpoint) negotiate(o *options.TCPOptions) {
	e.peerMSS = 536
	if o.HasMSS && o.MSS > 0 {
		e.peerMSS = int(o.MSS)
	}
	e.wsOK = o.HasWindowScale && !e.cfg.DisableWScale
	if e.wsOK {
		e.sndWS = min(o.WindowScale, 14)
	} else {
		e.sndWS, e.rcvWS = 0, 0
	}
	e.sackOK = o.SACKPermitted && !e.cfg.DisableSACK
	e.tsOK = o.HasTimestamp && !e.cfg.DisableTimestamps
	if e.tsOK {
		e.tsRecent, e.tsRecentAt = o.TSVal, e.now()
	}
	e.sndMSS = e.effMSS()
	if e.tsOK {
		e.sndMSS -= 12
	}
	e.sndMSS = max(e.sndMSS, 64)
	e.sb.segmentSize(e.sndMSS)
	e.rcvMSSEst = min(e.cfg.MSS, 536)
	if cc, err := NewCongestionControl(e.cfg.Congestion, CCParams{
		MSS: e.sndMSS, InitialCwnd: e.cfg.InitialCwnd * e.sndMSS, Subflow: e,
	}); err == nil {
		e.setCC(cc)
	}
}

// extVerdict runs the extension's Incoming hook; it reports false when the
// segment must not be processed further.
func (e *Endpoint) extVerdict(seg *Segment) bool {
	if e.ext == nil {
		return true
	}
	switch e.ext.Incoming(seg, e.state) {
	case VerdictDrop:
		e.info.DroppedSegs++
		return false
	case VerdictReset:
		if e.state == StateSynSent {
			e.sendRST(seg.Ack, 0, false)
		} else {
			e.sendRST(e.seqOf(e.ackSeqOff()), e.rcvNxtSeq(), true)
		}
		e.closeNow(ErrAborted)
		return false
	}
	return true
}

// handleSynSent is RFC 9293 §3.10.7.3.
func (e *Endpoint) handleSynSent(seg *Segment) {
	ackOK, accepted := false, 0
	if seg.Flags&FlagACK != 0 {
		// The ACK covers our SYN, and may cover some or all of the data
		// it carried (ConnectData).
		if a := int32(uint32(seg.Ack) - uint32(e.seqOf(e.sndNxt))); a > 0 && int(a) <= e.synDataLen {
			accepted = int(a)
		} else if seg.Ack != e.seqOf(e.sndNxt) {
			if seg.Flags&FlagRST == 0 {
				e.sendRST(seg.Ack, 0, false)
			}
			e.info.DroppedSegs++
			return
		}
		ackOK = true
	}
	if seg.Flags&FlagRST != 0 {
		if ackOK {
			e.closeNow(ErrConnectionRefused)
		}
		return
	}
	if seg.Flags&FlagSYN == 0 {
		e.info.DroppedSegs++
		return
	}
	if accepted > 0 {
		// The accepted bytes are a prefix of the stream: relative
		// sequence numbers start after them (Linux's MPTCP Fast Open
		// counts subflow sequence numbers so too).
		e.iss = e.iss.Add(seqnum.Size(accepted))
		e.synAccepted = accepted
		e.info.SynData = accepted
	}
	e.synData = nil
	if !e.extVerdict(seg) {
		return
	}
	e.irs = seg.Seq
	e.rb.nxt, e.rb.readOff = 1, 1
	e.rcvAdvEdge = 1
	e.negotiate(&seg.Options)
	if !ackOK {
		// Simultaneous open (RFC 9293 §3.5, figure 8).
		e.setState(StateSynRcvd)
		e.sendSYN(true)
		return
	}
	e.synAcked(seg)
	e.sndWnd = uint64(seg.Window) // never scaled in a SYN (RFC 7323 §2.2)
	e.maxSndWnd = e.sndWnd
	e.sndWl1, e.sndWl2 = 0, 1
	e.setState(StateEstablished)
	e.sendAck()
	e.output()
}

// synAcked records that our SYN was acknowledged.
func (e *Endpoint) synAcked(seg *Segment) {
	now := e.now()
	e.sndUna = 1
	e.rtoTimer.stop()
	o := &seg.Options
	switch {
	case e.backoff == 0:
		e.updateRTT(now.Sub(e.rttStart))
	case e.tsOK && o.HasTimestamp && o.TSEcr != 0:
		// The SYN went out more than once; the timestamp echo tells
		// which copy this answers (RFC 7323 §4.1), so the sample is
		// unambiguous (Linux takes it too). Without it, a lost SYN or
		// SYN-ACK would leave the RTO at its backed-off initial value,
		// and loss probes off, until the first sample from data.
		if d := int32(e.tsNow() - o.TSEcr); d >= 0 {
			e.updateRTT(time.Duration(d) * time.Millisecond)
		}
	}
	// Otherwise (RFC 6298 §5.7) the larger RTO stays until a sample.
	e.backoff = 0
	e.armKeepalive()
}

// disorderedAck reports whether a segment failing the PAWS test is a pure
// ACK that was merely reordered on its way: at RCV.NXT, without data or
// control flags, its timestamp within one RTO of TS.Recent. Such an ACK
// carries SACK and D-SACK information that loss recovery needs, and
// cannot change the connection's state (an older acknowledgment number is
// ignored, the window update rule keeps the newer window). Linux's
// tcp_disordered_ack lets them through likewise (for duplicate ACKs).
func (e *Endpoint) disorderedAck(seg *Segment, seqOff int64) bool {
	if len(seg.Payload) != 0 || seg.Flags&(FlagSYN|FlagFIN|FlagRST) != 0 || seg.Flags&FlagACK == 0 ||
		seqOff != int64(e.rcvNxtOff()) {
		return false
	}
	return time.Duration(e.tsRecent-seg.Options.TSVal)*time.Millisecond <= e.rto
}

// acceptable is the segment acceptability test of RFC 9293 §3.10.7.4.
func (e *Endpoint) acceptable(seqOff int64, segLen uint32) bool {
	nxt := int64(e.rcvNxtOff())
	wnd := max(int64(e.rcvAdvEdge)-nxt, 0)
	if segLen == 0 {
		if wnd == 0 {
			return seqOff == nxt
		}
		return nxt <= seqOff && seqOff < nxt+wnd
	}
	if wnd == 0 {
		return false
	}
	last := seqOff + int64(segLen) - 1
	return (nxt <= seqOff && seqOff < nxt+wnd) || (nxt <= last && last < nxt+wnd)
}

// handleSynchronized processes a segment in SYN-RECEIVED and every later
// state (RFC 9293 §3.10.7.4 with RFC 5961 and RFC 7323).
func (e *Endpoint) handleSynchronized(seg *Segment) {
	if e.state == StateSynRcvd && seg.Flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN|FlagACK &&
		seg.Seq == e.irs && seg.Ack == e.seqOf(e.sndNxt) {
		// Simultaneous open (RFC 9293 §3.5 figure 8): the peer's SYN-ACK
		// repeats its SYN, already counted in RCV.NXT; its ACK completes
		// our handshake. Process it as the ACK that follows the SYN (as
		// Linux's tcp_validate_incoming lets it pass).
		s := *seg
		s.Flags &^= FlagSYN
		s.Seq++
		seg = &s
	}
	now := e.now()
	segLen := seg.logicalLen()
	seqOff := e.rcvOff(seg.Seq)
	o := &seg.Options

	// PAWS (RFC 7323 §5.3).
	if e.tsOK && o.HasTimestamp && seg.Flags&FlagRST == 0 &&
		int32(o.TSVal-e.tsRecent) < 0 && now.Sub(e.tsRecentAt) < pawsIdleLimit &&
		!e.disorderedAck(seg, seqOff) {
		e.info.PAWSDrops++
		e.info.DroppedSegs++
		if n := int64(len(seg.Payload)); n > 0 && seqOff < int64(e.rb.nxt) && seqOff > 0 {
			// Most likely an original that arrived after its
			// retransmission: report it (RFC 2883), as Linux's
			// tcp_send_dupack does.
			e.setDSACK(uint64(seqOff), uint64(min(seqOff+n, int64(e.rb.nxt))), false)
		}
		e.sendAck()
		return
	}

	if e.state == StateSynRcvd && seg.Flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN && seg.Seq == e.peerSynSeq() &&
		e.tsOK && o.HasTimestamp && int32(o.TSVal-e.tsRecent) >= 0 {
		// The peer retransmitted its SYN: its timestamp becomes
		// TS.Recent (RFC 7323 §4.3: SEG.SEQ is below Last.ACK.sent), so
		// that the SYN-ACK we answer with echoes the copy it answers
		// and gives the peer an RTT sample.
		e.tsRecent, e.tsRecentAt = o.TSVal, now
	}
	if !e.acceptable(seqOff, segLen) {
		e.info.DroppedSegs++
		if seg.Flags&FlagRST != 0 {
			return
		}
		if n := int64(len(seg.Payload)); n > 0 && seqOff+n <= int64(e.rb.nxt) && seqOff+n > 0 {
			// A duplicate: our ACK was lost or the peer's timer fired
			// early (RFC 2883 §4.1.1).
			e.setDSACK(uint64(max(seqOff, 1)), uint64(seqOff+n), false)
		}
		if e.state == StateTimeWait && seg.Flags&FlagFIN != 0 {
			e.timeWait.set(now.Add(e.cfg.TimeWait))
		}
		// Zero-window probes still carry a valid ACK (RFC 9293 §3.10.7.4:
		// "special allowance should be made to accept valid ACKs").
		if seg.Flags&FlagACK != 0 && e.state.synchronized() && seg.Flags&FlagSYN == 0 &&
			seqOff == int64(e.rcvNxtOff()) {
			e.processAck(seg, seqOff)
		}
		e.sendAck()
		e.output()
		return
	}

	// RST (RFC 5961 §3.2): exact match resets, in-window challenges.
	if seg.Flags&FlagRST != 0 {
		if seqOff != int64(e.rcvNxtOff()) {
			e.challengeAck()
			return
		}
		if e.ext != nil {
			// The extension sees the valid RST (MP_FASTCLOSE and
			// MP_TCPRST ride on it, RFC 8684 §3.5-3.6); it cannot veto it.
			e.ext.Incoming(seg, e.state)
		}
		switch e.state {
		case StateSynRcvd:
			e.closeNow(ErrConnectionRefused)
		case StateClosing, StateLastAck, StateTimeWait:
			e.closeNow(nil)
		default:
			e.closeNow(ErrConnectionReset)
		}
		return
	}

	// SYN in a synchronized state (RFC 5961 §4.2).
	if seg.Flags&FlagSYN != 0 {
		if e.state == StateSynRcvd && seg.Seq == e.peerSynSeq() {
			e.sendSYN(true) // the peer retransmitted its SYN
			return
		}
		e.challengeAck()
		return
	}
	if seg.Flags&FlagACK == 0 {
		e.info.DroppedSegs++
		return
	}
	if e.state == StateSynRcvd {
		a := e.ackOff(seg.Ack)
		if a < 1 || a > int64(e.sndNxt) {
			e.sendRST(seg.Ack, 0, false)
			return
		}
	}
	if !e.extVerdict(seg) {
		return
	}

	// Timestamp recording (RFC 7323 §4.3).
	if e.tsOK && o.HasTimestamp && seqOff <= int64(e.lastAckOff) && int32(o.TSVal-e.tsRecent) >= 0 {
		e.tsRecent, e.tsRecentAt = o.TSVal, now
	}
	if e.cfg.Keepalive.Idle > 0 && e.keepalive.armed {
		e.armKeepalive()
	}

	if e.state == StateSynRcvd {
		e.synAcked(seg)
		e.sndWnd = uint64(seg.Window) << e.sndWS
		e.maxSndWnd = e.sndWnd
		e.sndWl1, e.sndWl2 = uint64(seqOff), e.sndUna
		e.setState(StateEstablished)
	}
	if !e.processAck(seg, seqOff) {
		return
	}
	finAcked := e.finQueued && e.sndNxt > e.finOff && e.sndUna > e.finOff
	switch e.state {
	case StateFinWait1:
		if finAcked {
			e.setState(StateFinWait2)
			if e.closed {
				e.finWait2.set(now.Add(e.cfg.TimeWait))
			}
		}
	case StateClosing:
		if finAcked {
			e.enterTimeWait()
		}
		return
	case StateLastAck:
		if finAcked {
			e.closeNow(nil)
		}
		return
	case StateTimeWait:
		if seg.Flags&FlagFIN != 0 {
			e.sendAck()
			e.timeWait.set(now.Add(e.cfg.TimeWait))
		}
		return
	}

	if len(seg.Payload) > 0 {
		switch e.state {
		case StateEstablished, StateFinWait1, StateFinWait2:
			if e.closed && e.rx == nil {
				// New data after Close: nobody will read it (RFC 2525
				// §2.17; a retransmission of data received before never
				// gets here: it is unacceptable, and acknowledged). An
				// extension that takes the payload itself gets it: MPTCP's
				// connection decides what a subflow's data is worth (a
				// data-level retransmission after its close is a
				// duplicate, acknowledged, not a reason to reset).
				e.info.AbortOnData++
				e.sendRST(e.seqOf(e.ackSeqOff()), e.rcvNxtSeq(), true)
				e.closeNow(ErrAborted)
				return
			}
			e.receiveData(seg, seqOff)
		}
	}
	if seg.Flags&FlagFIN != 0 && !e.finRcvd {
		switch e.state {
		case StateEstablished, StateFinWait1, StateFinWait2:
			e.finRcvSeen = true
			e.finRcvOff = uint64(seqOff) + uint64(len(seg.Payload))
			if e.finRcvOff > e.rb.nxt {
				e.ackNow = true // out-of-order FIN
			}
			e.checkFin()
		}
	}
	e.output()
}

// receiveData stores payload and hands in-order bytes on.
func (e *Endpoint) receiveData(seg *Segment, seqOff int64) {
	p := seg.Payload
	off := uint64(max(seqOff, 0))
	if seqOff < 0 {
		p = p[-seqOff:]
	}
	// The estimate of the peer's segment size never exceeds the largest
	// segment it may send us: a longer payload is several segments
	// coalesced on the way in (GRO, a TSO super-packet), and must count as
	// several for the every-second-segment rule (RFC 9293 §3.8.6.3), as
	// with Linux's rcv_mss.
	if l := min(len(p), e.rcvMSSMax()); l > e.rcvMSSEst {
		e.rcvMSSEst = l
	}
	before := e.rb.nxt
	hadOOO := !e.rb.ooo.empty()
	if e.sackOK && len(p) > 0 {
		e.checkDuplicate(seqOff, off, uint64(len(p)))
	}
	e.measureRcvRTT(seg)
	var advanced uint64
	ok, delivered := true, false
	switch {
	case e.rx != nil && off == e.rb.nxt && !hadOOO && e.rb.readable() == 0 && off+uint64(len(p)) <= e.rb.limit():
		// In order, nothing buffered: hand it straight to the receiver.
		e.rb.nxt += uint64(len(p))
		e.rb.readOff = e.rb.nxt
		advanced, delivered = uint64(len(p)), true
		e.info.BytesReceived += advanced
		e.rx.Deliver(uint32(off), p)
	case e.rx == nil && seqOff >= 0 && e.rb.holdable(off, len(p), seg.PayloadView):
		// In order, nothing buffered before it: keep the packet's bytes.
		e.rb.hold(seg.PayloadView)
		advanced = uint64(len(p))
	default:
		advanced, ok = e.rb.store(off, p)
	}
	if !ok {
		e.info.DroppedSegs++
	}
	now := e.now()
	if !e.dataSeen || now.Sub(e.lastRcvAt) > e.rto {
		// The first data, or data after an idle period: the sender is
		// in slow start, ACK it promptly (Linux's tcp_event_data_recv).
		e.dataSeen = true
		e.enterQuickAck(false)
	}
	e.lastRcvAt = now
	if off > before {
		e.info.OutOfOrderSegs++
		e.noteSACKBlock(off)
		e.ackNow = true // RFC 5681 §4.2: out-of-order data is ACKed at once
		e.enterQuickAck(true)
	} else if advanced == 0 {
		e.ackNow = true // duplicate
		e.enterQuickAck(true)
	} else if hadOOO {
		e.ackNow = true // filled (part of) a hole
	}
	if advanced == 0 {
		return
	}
	switch {
	case delivered:
	case e.rx != nil:
		e.info.BytesReceived += advanced
		a, b := e.rb.peek(int(advanced))
		e.rx.Deliver(uint32(e.rb.readOff), a)
		if len(b) > 0 {
			e.rx.Deliver(uint32(e.rb.readOff+uint64(len(a))), b)
		}
		e.rb.consume(int(advanced))
	default:
		e.info.BytesReceived += advanced
		e.notify(EventReadable)
	}
	e.unackedBytes += int(advanced)
	if e.cfg.DelayedAck < 0 {
		e.ackNow = true
	} else if e.unackedBytes >= 2*e.rcvMSSEst {
		// Deferred at most up to a quarter of the receive buffer, so that
		// the peer's window never waits on a batch.
		if e.deferAck && e.unackedBytes < max(e.rb.size/4, 4*e.rcvMSSEst) {
			e.ackDue = true
			if !e.dack.armed { // in case FlushAck never comes
				e.dack.set(e.now().Add(e.cfg.DelayedAck))
			}
		} else {
			e.ackNow = true
		}
	} else {
		if e.quickAcks > 0 {
			e.ackQuick = true
		}
		if !e.dack.armed {
			e.dack.set(e.now().Add(e.cfg.DelayedAck))
		}
	}
	e.autoTune()
	e.checkFin()
}

// enterQuickAck lets the next ACKs of new data go out at once: up to 16,
// fewer when the receive window holds fewer than 32 segments (Linux's
// tcp_incr_quickack); after out-of-order data or a duplicate, pingpong
// mode ends too (tcp_enter_quickack_mode).
func (e *Endpoint) enterQuickAck(disorder bool) {
	n := e.rb.size / (2 * max(e.rcvMSSEst, 1))
	n = min(max(n, 2), 16)
	e.quickAcks = max(e.quickAcks, n)
	if disorder {
		e.pingpong = false
	}
}

// noteSACKBlock puts the out-of-order block holding off first in the
// SACK history, dropping the entries it now covers and the oldest.
func (e *Endpoint) noteSACKBlock(off uint64) {
	ooo := &e.rb.ooo
	cur := ooo.holding(off)
	n := 0
	var keep [4]uint64
	keep[n], n = off, 1
	for i := 0; i < e.sackHistN && n < len(keep); i++ {
		h := e.sackHist[i]
		j := ooo.holding(h)
		if j < 0 || j == cur {
			continue // acknowledged, or the same block
		}
		dup := false
		for k := 1; k < n; k++ {
			dup = dup || ooo.holding(keep[k]) == j
		}
		if !dup {
			keep[n] = h
			n++
		}
	}
	e.sackHist, e.sackHistN = keep, n
}

// checkDuplicate reports, with a D-SACK block (RFC 2883 §4), payload
// arriving at off (seqOff before trimming below RCV.NXT) that was received
// before: below RCV.NXT, or overlapping out-of-order data already held.
func (e *Endpoint) checkDuplicate(seqOff int64, off, n uint64) {
	if seqOff < int64(off) {
		e.setDSACK(uint64(max(seqOff, 1)), off, false)
		return
	}
	if off < e.rb.nxt {
		e.setDSACK(off, min(off+n, e.rb.nxt), false)
		return
	}
	if d, ok := e.rb.ooo.overlap(off, off+n); ok {
		e.setDSACK(d.start, d.end, true)
	}
}

// setDSACK records a D-SACK block for the next ACK, which goes out at once.
func (e *Endpoint) setDSACK(start, end uint64, ofo bool) {
	if !e.sackOK || end <= start {
		return
	}
	e.dsack, e.dsackOn = span{start, end}, true
	e.ackNow = true
	if ofo {
		e.info.TCPDSACKOfoSent++
	} else {
		e.info.TCPDSACKOldSent++
	}
}

// rcvMSSMax is the largest payload the peer may put in one segment: the
// MSS we advertised less the timestamp option it carries on every segment
// when timestamps are in use (RFC 7323 §3.2).
func (e *Endpoint) rcvMSSMax() int {
	if e.tsOK {
		return e.cfg.MSS - 12
	}
	return e.cfg.MSS
}

// checkFin consumes the peer's FIN once all data before it arrived
// (RFC 9293 §3.10.7.4, eighth step).
func (e *Endpoint) checkFin() {
	if !e.finRcvSeen || e.finRcvd || e.rb.nxt != e.finRcvOff {
		return
	}
	e.finRcvd = true
	e.notify(EventReadable)
	switch e.state {
	case StateEstablished, StateSynRcvd:
		// The peer closed first. Its FIN's ACK is delayed, as Linux
		// does (tcp_fin enters pingpong mode), so that the FIN of an
		// application that closes on reading EOF carries it: one
		// segment instead of a pure ACK followed a few microseconds
		// later by a FIN, which a Linux peer in FIN-WAIT-1 may process
		// concurrently with the ACK and drop (its socket turning into
		// a timewait one), leaving our FIN to the retransmission timer.
		e.setState(StateCloseWait)
		e.pingpong = true
		if e.cfg.DelayedAck < 0 {
			e.ackNow = true
		} else if !e.dack.armed {
			e.dack.set(e.now().Add(e.cfg.DelayedAck))
		}
		return
	}
	e.ackNow = true
	switch e.state {
	case StateFinWait1:
		if e.sndUna > e.finOff {
			e.enterTimeWait()
		} else {
			e.setState(StateClosing)
		}
	case StateFinWait2:
		e.enterTimeWait()
	}
}

// enterTimeWait starts the 2*MSL wait (RFC 9293 §3.10.7.4).
func (e *Endpoint) enterTimeWait() {
	e.setState(StateTimeWait)
	e.rtoTimer.stop()
	e.tlpTimer.stop()
	e.reoTimer.stop()
	e.paceTimer.stop()
	e.persist.stop()
	e.keepalive.stop()
	e.finWait2.stop()
	e.sb.release()
	e.rtx.reset()
	e.timeWait.set(e.now().Add(e.cfg.TimeWait))
	e.ackNow = true
	e.sendAck()
	e.notify(EventClosed | EventReadable)
}

// measureRcvRTT estimates the RTT on the receive side from the echoed
// timestamp (Linux's tcp_rcv_rtt_measure_ts), for auto-tuning.
func (e *Endpoint) measureRcvRTT(seg *Segment) {
	if !e.tsOK || !seg.Options.HasTimestamp || seg.Options.TSEcr == 0 {
		return
	}
	d := int32(e.tsNow() - seg.Options.TSEcr)
	if d < 0 {
		return
	}
	r := time.Duration(d) * time.Millisecond
	if e.rcvRTT == 0 || r < e.rcvRTT {
		e.rcvRTT = r
	} else {
		e.rcvRTT = (7*e.rcvRTT + r) / 8
	}
}

// autoTune grows the receive buffer when the peer sends more than half of
// it per round trip (dynamic right-sizing, like Linux's tcp_rcv_space_adjust),
// bounded by MaxReceiveBuffer.
func (e *Endpoint) autoTune() {
	if e.rb.size >= e.cfg.MaxReceiveBuffer {
		return
	}
	rtt := e.rcvRTT
	if rtt == 0 {
		rtt = e.srtt
	}
	rtt = max(rtt, time.Millisecond)
	now := e.now()
	if now.Sub(e.rcvEpochAt) < rtt {
		return
	}
	got := e.rb.nxt - e.rcvEpochOff
	e.rcvEpochAt, e.rcvEpochOff = now, e.rb.nxt
	if 2*got <= uint64(e.rb.size) {
		return
	}
	size := min(e.cfg.MaxReceiveBuffer, max(2*e.rb.size, int(4*got)))
	e.rb.grow(size)
}
