package tcp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Loss recovery, after Linux's tcp_fastretrans_alert and the RFCs it
// implements:
//
//   - Loss detection: RACK-TLP (RFC 8985, rack.go) when the peer does SACK
//     (RFC 2018), RFC 6582 NewReno otherwise (three duplicate ACKs, then
//     each partial ACK marks the head lost). The scoreboard is the
//     retransmission queue (rtxq.go).
//   - Fast recovery: the sending rate follows Proportional Rate Reduction
//     (RFC 6937) from the pipe (RFC 6675 §4) down to the controller's
//     ssthresh; lost segments go first, then new data.
//   - RTO recovery (RFC 6298 §5, RFC 5681 §3.1): everything outstanding not
//     SACKed is deemed lost and sent again in slow start.
//   - D-SACK (RFC 2883): duplicates the peer reports widen RACK's
//     reordering window and count the retransmissions that were needless.
//   - Undo (RFC 3522 Eifel detection with timestamps, RFC 4015 response,
//     D-SACK based detection as RFC 3708): a recovery or timeout whose
//     retransmissions all proved needless is reverted, as Linux's
//     tcp_try_undo_recovery, _dsack, _partial and _loss.

// caState is the sender's congestion state (Linux's tcp_ca_state, without
// Disorder and CWR, which the scoreboard and TLP imply).
type caState uint8

const (
	caOpen     caState = iota // no loss being recovered
	caRecovery                // fast recovery with PRR
	caLoss                    // recovery after a retransmission timeout
)

// dupThresh is DupThresh of RFC 6675 §2 and RFC 5681 §3.2.
const dupThresh = 3

// pipe is the data in flight (RFC 6675's SetPipe; Linux's
// tcp_packets_in_flight) in bytes: outstanding, not SACKed, not deemed lost
// unless sent again; without SACK each duplicate ACK stands for a segment
// that left the network.
func (e *Endpoint) pipe() int {
	p := int64(e.rtx.inflight)
	if e.renoSacked > 0 {
		p -= min(int64(e.renoSacked*e.sndMSS), p)
	}
	return int(max(p, 0))
}

// sendCwnd is the window output may fill: PRR's during fast recovery, the
// controller's otherwise.
func (e *Endpoint) sendCwnd() int {
	if e.ca == caRecovery && e.rateCC == nil {
		return e.prrCwnd
	}
	return e.cc.Cwnd()
}

// markLost marks record i lost (extra is segBeyond for a retreated edge)
// and returns the bytes it takes out of flight: zero if it was SACKed or
// already waiting to be sent again. A retransmission deemed lost again
// counts as TCPLostRetransmit.
func (e *Endpoint) markLost(i int, extra uint8) uint64 {
	q := &e.rtx
	r := q.at(i)
	f := r.flags
	if f&segSACKed != 0 {
		return 0
	}
	if lostUnsent(f) {
		if f|extra != f {
			q.setFlags(i, f|extra)
		}
		return 0
	}
	if f&segRetrans != 0 && extra == 0 {
		e.info.TCPLostRetransmit++
	}
	q.setFlags(i, (f|segLost|extra)&^segRetrans)
	e.lostHint = min(e.lostHint, r.start)
	return r.size()
}

// markAllLost deems lost every record not SACKed (a retransmission
// timeout, a smaller path MTU). With RACK, records sent within the last
// RACK.rtt are spared but the head (Linux's tcp_timeout_mark_lost): they
// may still be on their way.
func (e *Endpoint) markAllLost(rackAware bool) {
	now := e.now()
	q := &e.rtx
	for i := 0; i < q.n(); i++ {
		i = q.nextUnSACKed(i)
		if i >= q.n() {
			break
		}
		r := q.at(i)
		if rackAware && i > 0 && e.sackOK && r.xmit.Add(e.rack.rtt).After(now) {
			continue
		}
		e.markLost(i, 0)
		if r := q.at(i); r.flags&segBeyond != 0 {
			q.setFlags(i, r.flags&^segBeyond)
		}
	}
}

// newRenoMarkLost is loss detection without SACK (RFC 6582, Linux's
// tcp_newreno_mark_lost): the head is lost after DupThresh duplicate ACKs,
// and again after each partial ACK during recovery.
func (e *Endpoint) newRenoMarkLost(advanced bool) uint64 {
	if e.rtx.n() == 0 {
		return 0
	}
	if !(e.ca == caOpen && e.dupAcks >= dupThresh) && !(e.ca == caRecovery && advanced) {
		return 0
	}
	r := e.rtx.at(0)
	if r.flags&segLost != 0 {
		return 0
	}
	if r.size() > uint64(e.sndMSS)+1 {
		e.rtx.split(0, r.start+uint64(e.sndMSS))
	}
	return e.markLost(0, 0)
}

// nextLost returns the index of the first record waiting to be sent again,
// or -1.
func (e *Endpoint) nextLost() int {
	q := &e.rtx
	if q.lost == 0 {
		return -1
	}
	n := q.n()
	for i := q.search(e.lostHint); i < n; i++ {
		i = q.nextUnSACKed(i)
		if i >= n {
			break
		}
		if lostUnsent(q.at(i).flags) {
			e.lostHint = q.at(i).start
			return i
		}
	}
	e.lostHint = e.sndNxt
	return -1
}

// enterRecovery starts fast recovery (RFC 6675 §5 step 4, RFC 6937 §3.1,
// Linux's tcp_enter_recovery): the controller sets ssthresh, PRR starts
// from the window the controller had.
func (e *Endpoint) enterRecovery() {
	now := e.now()
	e.info.FastRecoveries++
	if e.sackOK {
		e.info.TCPSackRecovery++
	} else {
		e.info.TCPRenoRecovery++
	}
	e.initUndo()
	prior := e.cc.Cwnd()
	e.cc.OnCongestionEvent(now, int(e.sndNxt-e.sndUna))
	e.ca = caRecovery
	e.recoverOff = e.sndNxt
	e.tlpActive = false
	e.tlpTimer.stop()
	e.prrDelivered, e.prrOut = 0, 0
	e.prrRecoverFS = max(prior, e.sndMSS)
	e.prrCwnd = e.pipe()
}

// prrUpdate is RFC 6937's per-ACK step (Linux's tcp_cwnd_reduction): while
// the pipe is above ssthresh, send in proportion to what was delivered
// (ssthresh/RecoverFS of it); below it, grow back towards ssthresh no
// faster than slow start (PRR-SSRB), one extra segment when the ACK
// advanced SND.UNA without revealing a new loss. The first step of a
// recovery always allows the fast retransmit.
func (e *Endpoint) prrUpdate(delivered int, safe bool) {
	pipe := e.pipe()
	if delivered <= 0 {
		if e.prrOut == 0 {
			e.prrCwnd = max(e.prrCwnd, pipe+e.sndMSS)
		}
		return
	}
	e.prrDelivered += delivered
	ssthresh := e.cc.Ssthresh()
	var sndcnt int
	if pipe > ssthresh {
		sndcnt = int((int64(e.prrDelivered)*int64(ssthresh)+int64(e.prrRecoverFS)-1)/int64(e.prrRecoverFS)) - e.prrOut
	} else {
		sndcnt = max(e.prrDelivered-e.prrOut, delivered)
		if safe {
			sndcnt += e.sndMSS
		}
		sndcnt = min(ssthresh-pipe, sndcnt)
	}
	if e.prrOut == 0 {
		sndcnt = max(sndcnt, e.sndMSS)
	}
	e.prrCwnd = pipe + max(sndcnt, 0)
}

// initUndo opens an undo episode (Linux's tcp_init_undo): what is
// retransmitted from now on is counted, so that D-SACKs for all of it, or
// an ACK whose timestamp predates the first of it, prove it needless.
func (e *Endpoint) initUndo() {
	e.undoValid = true
	e.undoMarker = e.sndUna
	e.undoRetrans = -1
	if e.rtx.retransN > 0 {
		e.undoRetrans = e.rtx.retransN
	}
	e.retransStampOK = false
}

// packetDelayed is Eifel detection (RFC 3522 §3.2): the ACK echoes a
// timestamp older than our first retransmission of the episode, so what it
// acknowledges arrived from an original transmission.
func (e *Endpoint) packetDelayed(seg *Segment) bool {
	o := &seg.Options
	return e.tsOK && e.retransStampOK && o.HasTimestamp && o.TSEcr != 0 &&
		int32(o.TSEcr-e.retransStamp) < 0
}

// mayUndo reports whether the episode's reduction can be reverted
// (Linux's tcp_may_undo): every retransmission was D-SACKed, or the ACK
// shows an original transmission got through.
func (e *Endpoint) mayUndo(seg *Segment) bool {
	return e.undoValid && (e.undoRetrans == 0 || e.packetDelayed(seg))
}

// undo reverts the episode's window reduction (RFC 4015 §2; Linux's
// tcp_undo_cwnd_reduction with unmark_loss): the controller returns to its
// state before the reduction, and segments deemed lost but not yet sent
// again are taken back into flight; RACK finds them again if they really
// are lost. Segments sent beyond a retreated edge stay marked.
func (e *Endpoint) undo() {
	if u, ok := e.cc.(CongestionUndoer); ok {
		u.OnUndo(e.now())
	}
	q := &e.rtx
	if q.lost > 0 {
		for i := 0; i < q.n(); i++ {
			if f := q.at(i).flags; f&segLost != 0 && f&segBeyond == 0 {
				q.setFlags(i, f&^segLost)
			}
		}
	}
	e.undoValid = false
	e.rackScanFrom = e.sndUna
	e.ca = caOpen
	e.forceRetx = false
	e.dupAcks = 0
}

// exitRecovery ends fast or RTO recovery once the recovery point is
// acknowledged (RFC 6675 §5, RFC 6582 §3.2 step 4): undone if it proved
// spurious (TCPFullUndo, TCPLossUndo), otherwise the controller's reduced
// window stands, until D-SACKs for all its retransmissions come in.
func (e *Endpoint) exitRecovery(seg *Segment) {
	if e.mayUndo(seg) {
		if e.ca == caLoss {
			e.info.TCPLossUndo++
			e.info.TCPSpuriousRTOs++
		} else {
			e.info.TCPFullUndo++
		}
		e.undo()
	} else {
		e.cc.OnRecoveryExit(e.now())
		e.rackRecoveryDone()
	}
	e.ca = caOpen
	e.renoSacked, e.dupAcks = 0, 0
}

// ackState is what one ACK revealed, gathered while the scoreboard is
// updated.
type ackState struct {
	delivered uint64        // bytes newly acknowledged or SACKed
	seqRTT    time.Duration // from the oldest newly delivered segment sent once
	caRTT     time.Duration // from the newest one
	haveRTT   bool
	dsack     bool
	dsackTLP  bool // the D-SACK covers the loss probe
	sackNew   bool
	priorFack uint64
	reordered bool  // a segment sent once was delivered below RACK.fack
	rateRec   txSeg // the most recently sent segment delivered (rate.go)
}

// sackBlock is a SACK block as send offsets.
type sackBlock struct{ start, end int64 }

// processSACK takes an ACK's SACK blocks (RFC 2018) into the scoreboard,
// lowest first: newly SACKed records count as delivered for RACK, PRR and
// RTT. A first block below the cumulative acknowledgment, or within the
// second block, is a D-SACK (RFC 2883 §4).
func (e *Endpoint) processSACK(seg *Segment, ack int64, st *ackState) {
	o := &seg.Options
	n := min(o.NumSACKBlocks, len(o.SACKBlocks))
	var raw [4]sackBlock
	for i := 0; i < n; i++ {
		b := o.SACKBlocks[i]
		raw[i] = sackBlock{e.ackOff(seqValue(b.Start)), e.ackOff(seqValue(b.End))}
	}
	blocks := raw[:n]
	if n > 0 {
		d := blocks[0]
		if d.start < d.end && d.end <= int64(e.sndNxt) &&
			(d.start < ack || (n > 1 && blocks[1].start <= d.start && d.end <= blocks[1].end)) {
			st.dsack = true
			e.dsackSeen(d)
			if e.tlpActive && e.tlpRetrans && d.start < int64(e.tlpEnd) && d.end >= int64(e.tlpEnd) {
				st.dsackTLP = true
			}
			if d.end <= ack {
				blocks = blocks[1:]
			}
		}
	}
	var buf [4]sackBlock
	sorted := buf[:copy(buf[:], blocks)]
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].start < sorted[j-1].start; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	q := &e.rtx
	now := e.now()
	for _, b := range sorted {
		if b.end <= b.start || b.end > int64(e.sndNxt) || b.end <= int64(e.sndUna) {
			continue // invalid, or entirely acknowledged
		}
		s, en := uint64(max(b.start, int64(e.sndUna))), uint64(b.end)
		i := q.search(s)
		if i < q.n() && q.at(i).start < s {
			q.split(i, s)
			i++
		}
		for i < q.n() {
			i = q.nextUnSACKed(i)
			if i >= q.n() || q.at(i).start >= en {
				break
			}
			if q.at(i).end > en {
				q.split(i, en)
			}
			r := q.at(i)
			st.delivered += r.size()
			st.sackNew = true
			if e.noteDelivered(r, e.rack.fack) {
				st.reordered = true
				e.noteLate(r)
			}
			// (The timestamp echo of an ACK is that of the last
			// in-order segment, not of the SACKed ones.)
			e.rackAdvance(r, 0, false)
			if r.flags&segEverRetrans == 0 {
				st.rttSample(now.Sub(r.xmit))
			}
			if e.rateCC != nil {
				st.rateDelivered(r)
			}
			q.setFlags(i, r.flags|segSACKed)
			i++
		}
	}
}

// rttSample notes an RTT sample from a delivered segment sent once; ACK
// processing sees segments oldest first.
func (st *ackState) rttSample(d time.Duration) {
	if !st.haveRTT {
		st.seqRTT, st.haveRTT = d, true
	}
	st.caRTT = d
}

// dsackSeen accounts for a D-SACK block: the peer received those bytes
// twice. When they were retransmitted during the current undo episode, one
// needless retransmission fewer stands between us and an undo.
func (e *Endpoint) dsackSeen(d sackBlock) {
	e.info.TCPDSACKRecv++
	if d.start >= int64(e.sndUna) {
		e.info.TCPDSACKOfoRecv++
	}
	if !e.undoValid || e.undoRetrans <= 0 || uint64(d.end) <= e.undoMarker {
		return
	}
	if d.end <= int64(e.sndUna) {
		// Already acknowledged: the records are gone, count segments.
		segs := (d.end - d.start + int64(e.sndMSS) - 1) / int64(e.sndMSS)
		e.undoRetrans = max(e.undoRetrans-int(segs), 0)
		return
	}
	q := &e.rtx
	for i := q.search(uint64(max(d.start, int64(e.sndUna)))); i < q.n() && q.at(i).start < uint64(d.end); i++ {
		if q.at(i).flags&segEverRetrans != 0 && e.undoRetrans > 0 {
			e.undoRetrans--
		}
	}
}

// ackRecords removes the records below the new SND.UNA a, noting each
// delivery (RACK, reordering, RTT) for those not SACKed before.
func (e *Endpoint) ackRecords(a uint64, seg *Segment, st *ackState) {
	o := &seg.Options
	hasTS := e.tsOK && o.HasTimestamp && o.TSEcr != 0
	now := e.now()
	e.rtx.popTo(a, func(r *txSeg) {
		if r.flags&segSACKed != 0 {
			return
		}
		st.delivered += r.size()
		if e.noteDelivered(r, st.priorFack) {
			st.reordered = true
			e.noteLate(r)
		} else if r.flags&segEverRetrans != 0 && hasTS && int32(o.TSEcr-e.tsOf(r.xmit)) < 0 {
			// The original got there first: it was late, not lost.
			e.noteLate(r)
		}
		e.rackAdvance(r, o.TSEcr, hasTS)
		if r.flags&segEverRetrans == 0 {
			st.rttSample(now.Sub(r.xmit))
		}
		if e.rateCC != nil {
			st.rateDelivered(r)
		}
	})
	e.lostHint = max(e.lostHint, a)
	e.rackScanFrom = max(e.rackScanFrom, a)
}

// processAck handles the acknowledgment field, window update and SACK
// blocks of an acceptable segment (RFC 9293 §3.10.7.4 fifth step, RFC 5961
// §5.2), then loss detection, recovery and congestion control. It reports
// false when the segment must be dropped.
func (e *Endpoint) processAck(seg *Segment, seqOff int64) bool {
	ack := e.ackOff(seg.Ack)
	if ack > int64(e.sndNxt) {
		// ACK of unsent data: answer with an ACK and drop.
		e.info.DroppedSegs++
		e.challengeAck()
		return false
	}
	if ack < int64(e.sndUna)-int64(e.maxSndWnd) {
		e.info.DroppedSegs++
		e.challengeAck()
		return false
	}
	now := e.now()
	pipeBefore := e.pipe()
	edgeBefore := e.sndUna + e.sndWnd
	e.probesOut = 0 // the peer answers
	st := ackState{priorFack: e.rack.fack}
	if e.sackOK && seg.Options.NumSACKBlocks > 0 {
		e.processSACK(seg, ack, &st)
	}
	// Window update (SND.WL1/SND.WL2 rule).
	wnd := uint64(seg.Window) << e.sndWS
	wndChanged := false
	so := uint64(max(seqOff, 0))
	if e.sndWl1 < so || (e.sndWl1 == so && int64(e.sndWl2) <= ack) {
		wndChanged = wnd != e.sndWnd
		e.sndWnd, e.sndWl1, e.sndWl2 = wnd, so, uint64(max(ack, 0))
		e.maxSndWnd = max(e.maxSndWnd, wnd)
		if wnd > 0 {
			e.persistShift = 0
		}
	}
	outstanding := e.sndNxt > e.sndUna
	advanced := ack > int64(e.sndUna)
	var dataAcked uint64
	if advanced {
		a := uint64(ack)
		dataAcked = min(a, e.sb.end) - min(e.sndUna, e.sb.end)
		e.ackRecords(a, seg, &st)
		e.sb.ack(a)
		ackedSegs := int((a - e.sndUna + uint64(e.sndMSS) - 1) / uint64(e.sndMSS))
		e.sndUna = a
		e.info.BytesAcked += dataAcked
		e.kaProbes = 0
		e.backoff = 0
		if e.sndUna >= e.sndNxt {
			e.rtoTimer.stop()
		} else {
			e.rtoTimer.set(now.Add(e.rto))
		}
		e.tlpRearm = true
		if e.renoSacked > 0 {
			if e.ca == caRecovery {
				// One segment filled the hole, the rest had been
				// counted by duplicate ACKs (Linux's
				// tcp_remove_reno_sacks).
				eaten := min(e.renoSacked, max(ackedSegs-1, 0))
				e.renoSacked -= eaten
				st.delivered -= min(st.delivered, uint64(eaten*e.sndMSS))
			} else {
				e.renoSacked = 0
			}
		}
		if e.sndUna >= e.roundEnd {
			e.roundEnd = e.sndNxt
			e.newRound = true
		}
	} else if outstanding && ack == int64(e.sndUna) && len(seg.Payload) == 0 && e.sndWnd > 0 &&
		seg.Flags&(FlagSYN|FlagFIN) == 0 && (st.sackNew || (!e.sackOK && !wndChanged)) {
		// (With the window shut, the peer's ACKs answer probes: they
		// tell nothing of losses.)
		e.dupAcks++
		e.info.DupAcksIn++
		if !e.sackOK {
			outSegs := int((e.sndNxt - e.sndUna + uint64(e.sndMSS) - 1) / uint64(e.sndMSS))
			if e.renoSacked < outSegs-1 {
				e.renoSacked++
				st.delivered += uint64(e.sndMSS)
			}
		}
	}
	if advanced && e.ca == caOpen {
		e.dupAcks = 0
	}
	if st.reordered {
		e.rack.reorderingSeen = true
		e.info.TCPSACKReorder++
	}
	e.rttUpdate(seg, &st, advanced)
	end := e.sndUna + e.sndWnd
	if end < edgeBefore {
		e.info.WindowRetreats++
	}
	if end < e.sndNxt && !e.edgeRounded(end) {
		e.retreat(end)
	}
	if outstanding || st.dsack {
		e.lossRecovery(seg, &st, advanced, pipeBefore)
	}
	if dataAcked > 0 {
		e.growSendBuffer()
		e.notify(EventWritable)
	}
	return true
}

// rttUpdate takes the ACK's RTT sample (Linux's tcp_ack_update_rtt): from
// the oldest segment it delivered that was sent only once (Karn's rule),
// else from its timestamp echo (RFC 7323 §4) when it acknowledged new
// data; the minimum RTT filter takes the newest segment's.
func (e *Endpoint) rttUpdate(seg *Segment, st *ackState, advanced bool) {
	now := e.now()
	o := &seg.Options
	rtt, caRTT, ok := st.seqRTT, st.caRTT, st.haveRTT
	if !ok && advanced && e.tsOK && o.HasTimestamp && o.TSEcr != 0 {
		if d := int32(e.tsNow() - o.TSEcr); d >= 0 {
			rtt, caRTT, ok = time.Duration(d)*time.Millisecond, time.Duration(d)*time.Millisecond, true
		}
	}
	e.ackRTT = 0
	if !ok {
		return
	}
	e.ackRTT = caRTT
	e.minRTT.update(minRTTWindow, now, caRTT)
	e.updateRTT(rtt)
}

// lossRecovery is the congestion state machine run for each ACK while
// data was outstanding (Linux's tcp_fastretrans_alert and
// tcp_cong_control): undo checks, end of recovery, loss detection,
// recovery entry, then PRR or the controller.
func (e *Endpoint) lossRecovery(seg *Segment, st *ackState, advanced bool, pipeBefore int) {
	now := e.now()
	if e.sackOK {
		e.rackUpdateReoWnd(st.dsack)
	}
	e.tlpProcessAck(e.sndUna, st.dsackTLP, advanced, st.sackNew)

	// Undo a reduction that proves spurious.
	switch e.ca {
	case caOpen:
		// D-SACKs for the retransmissions of a recovery that ended
		// arrive after its end: the originals arrived first.
		if st.dsack && e.undoValid && e.undoRetrans == 0 {
			e.info.TCPDSACKUndo++
			e.undo()
		}
	case caLoss:
		// Eifel (RFC 3522) for the timeout: an ACK for data sent before
		// the retransmission (Linux's tcp_try_undo_loss).
		if advanced && e.mayUndo(seg) {
			e.info.TCPLossUndo++
			e.info.TCPSpuriousRTOs++
			e.undo()
		}
	case caRecovery:
		switch {
		case st.dsack && e.undoValid && e.undoRetrans == 0:
			// Every retransmission of the recovery was D-SACKed
			// (Linux's tcp_try_undo_dsack).
			e.info.TCPDSACKUndo++
			e.undo()
			e.rack.reoWndPersist = min(e.rack.reoWndPersist+1, rackReoWndPersist)
		case advanced && e.sndUna < e.recoverOff && e.rtx.retransN == 0 && e.packetDelayed(seg):
			// The hole was filled by the original: reordering, not
			// loss (Linux's tcp_try_undo_partial).
			e.info.TCPPartialUndo++
			e.undo()
		}
	}
	if e.ca != caOpen && e.sndUna >= e.recoverOff {
		e.exitRecovery(seg)
	}

	// Loss detection.
	var newly uint64
	if e.sackOK {
		if e.rack.advanced {
			newly = e.rackDetectLoss()
		}
	} else {
		newly = e.newRenoMarkLost(advanced)
	}
	if e.ca == caOpen && newly > 0 {
		e.enterRecovery()
	}

	if e.rateCC != nil {
		// The controller sets its window in every state.
		e.ackSample = AckSample{Now: now, Acked: int(st.delivered), RTT: e.ackRTT, InFlight: pipeBefore,
			MinRTT: e.minRTT.get(), NewRound: e.takeNewRound(), Lost: int(newly), InFlightAfter: e.pipe(),
			Recovery: e.ca == caRecovery, Loss: e.ca == caLoss, Reordering: e.rack.reorderingSeen}
		e.rateSample(st, &e.ackSample)
		e.cc.OnAck(&e.ackSample)
	} else {
		switch e.ca {
		case caRecovery:
			e.prrUpdate(int(st.delivered), advanced && newly == 0)
		case caLoss:
			if advanced {
				// Slow start continues during RTO recovery (RFC 5681 §3.1).
				e.ackSample = AckSample{Now: now, Acked: int(st.delivered), RTT: e.ackRTT, InFlight: pipeBefore,
					MinRTT: e.minRTT.get(), NewRound: e.takeNewRound()}
				e.cc.OnAck(&e.ackSample)
			}
		default:
			if advanced && st.delivered > 0 {
				e.ackSample = AckSample{Now: now, Acked: int(st.delivered), RTT: e.ackRTT, InFlight: pipeBefore,
					AppLimited: !e.cwndBlocked, MinRTT: e.minRTT.get(), NewRound: e.takeNewRound()}
				e.cc.OnAck(&e.ackSample)
			}
		}
	}
	if e.ca == caOpen && e.rtx.retransN == 0 {
		e.retransStampOK = false
	}
}

// takeNewRound reports (once) that a new round trip began.
func (e *Endpoint) takeNewRound() bool {
	r := e.newRound
	e.newRound = false
	return r
}

// retreat handles the peer's right edge moving back to end, below SND.NXT.
// RFC 9293 §3.8.6.2.2 asks a sender to be robust against such a shrinking
// window: not to send new data, to go on retransmitting what lies inside
// it, and not to time out for what lies beyond; a window shrunk to zero is
// probed. Kernel MPTCP subflows advertise one (their receive window is the
// connection's, shared), and Linux drops everything that arrives beyond
// the window it advertised last. So the segments outstanding beyond the
// edge, not SACKed, are taken out of flight (marked lost and segBeyond)
// and sent again once the window reaches them (retransmitOne), without a
// congestion response: they were not lost to congestion. Retransmissions
// beyond the edge are taken back likewise. While the window is zero and
// nothing is left in flight, the persist timer probes it (windowStalled).
//
// It is called for every ACK that leaves the edge below SND.NXT (but for
// rounding, see edgeRounded), and marks only what is not marked yet.
func (e *Endpoint) retreat(end uint64) {
	edge := max(end, e.sndUna)
	if edge >= e.sndNxt {
		return
	}
	q := &e.rtx
	i := q.search(edge)
	if i < q.n() && q.at(i).start < edge {
		q.split(i, edge)
		i++
	}
	var newly uint64
	for ; i < q.n(); i++ {
		f := q.at(i).flags
		if f&(segSACKed|segBeyond) != 0 {
			continue
		}
		newly += q.at(i).size()
		e.markLost(i, segBeyond)
	}
	e.info.BytesBeyondEdge += newly
}

// edgeRounded reports whether a right edge end short of SND.NXT may be the
// peer rounding its window rather than shrinking it: the window is open and
// falls short by less than one unit of the peer's window scale (RFC 7323
// §2.3). The advertised window is the peer's rounded down, so the window
// it enforces may still cover SND.NXT, as Linux's tcp_acceptable_seq
// allows; kernel MPTCP subflows retreat by such amounts all the time
// (seen: 18 retreats of a few dozen bytes in 15 s). Those bytes stay in
// flight, and pure ACKs keep SEQ = SND.NXT. A shut window gets no such
// allowance: the peer's may be exactly zero.
func (e *Endpoint) edgeRounded(end uint64) bool {
	return e.sndWnd > 0 && e.sndNxt-end < 1<<e.sndWS
}

// updateRTT folds an RTT sample into SRTT/RTTVAR and recomputes the RTO
// (RFC 6298 §2), with Linux's form RTO = SRTT + max(4*RTTVAR, MinRTO).
func (e *Endpoint) updateRTT(r time.Duration) {
	if r < 0 {
		return
	}
	if !e.hasRTT {
		e.srtt, e.rttvar, e.hasRTT = r, r/2, true
	} else {
		d := e.srtt - r
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + r) / 8
	}
	e.rto = min(e.srtt+max(4*e.rttvar, e.cfg.MinRTO), e.cfg.MaxRTO)
}

// growSendBuffer raises the send buffer's bound to twice the congestion
// window (Linux's tcp_sndbuf_expand), within MaxSendBuffer: the buffer
// holds what is in flight plus what the application queues meanwhile, so a
// bound at the window would make the sender application-limited and keep
// cwnd from growing (RFC 7661).
func (e *Endpoint) growSendBuffer() {
	want := min(2*e.cc.Cwnd(), e.cfg.MaxSendBuffer)
	if want > e.sb.limit {
		e.sb.limit = want
	}
}

// tsOf is the timestamp value (RFC 7323) a segment sent at t carried.
func (e *Endpoint) tsOf(t tcpip.MonotonicTime) uint32 {
	return uint32(t.Milliseconds()) + e.cfg.TSOffset
}
