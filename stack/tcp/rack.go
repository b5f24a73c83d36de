package tcp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// RACK-TLP (RFC 8985): time-based loss detection. A segment is deemed lost
// when a segment sent after it has been delivered (cumulatively or
// selectively acknowledged) and it is still not delivered a reordering
// window after the RTT of that delivery. Since retransmissions get a new
// transmission time, lost retransmissions are found the same way. Tail
// loss probes (TLP) provoke the ACK that lets RACK see a loss at the end of
// a flight, instead of waiting for the retransmission timer.
//
// RACK is the loss detector whenever SACK is in use; without SACK, RFC 6582
// NewReno marks the head lost after three duplicate ACKs and after each
// partial ACK (see newRenoMarkLost).

// Constants of RFC 8985.
const (
	// rackReoWndPersist is how many recoveries a reordering window widened
	// by D-SACK persists (RFC 8985 §6.2 step 4: 16).
	rackReoWndPersist = 16
	// tlpWCDelAck is WCDelAckT, the worst-case delayed-ACK time added to
	// the PTO when a single segment is in flight (RFC 8985 §7.2).
	tlpWCDelAck = 200 * time.Millisecond
	// tlpMinSlack is added to 2*SRTT otherwise: on a sub-millisecond path
	// the peer's scheduling alone exceeds twice the RTT (Linux adds 2 ms,
	// TCP_TIMEOUT_MIN).
	tlpMinSlack = 2 * time.Millisecond
	// reoExtentLife is how long a measured reordering extent holds.
	reoExtentLife = 30 * time.Second
	// minRTTWindow is the window of the minimum RTT filter (Linux's
	// tcp_min_rtt_wlen is 300 s; RACK only needs a recent floor).
	minRTTWindow = 30 * time.Second
)

// rackState is RACK's per-connection state (RFC 8985 §5.2).
type rackState struct {
	// xmit and endSeq identify the most recently sent segment among those
	// delivered (RACK.xmit_ts, RACK.end_seq); rtt is that delivery's RTT
	// (RACK.rtt).
	xmit     tcpip.MonotonicTime
	endSeq   uint64
	rtt      time.Duration
	advanced bool // changed since the last loss detection
	// fack is the highest end of a delivered segment (RACK.fack), for
	// reordering detection.
	fack uint64
	// reorderingSeen: a segment was delivered below fack without having
	// been sent again (RACK.reordering_seen).
	reorderingSeen bool
	// extent is the largest reordering measured (see noteLate), at
	// extentAt; it expires after reoExtentLife.
	extent   time.Duration
	extentAt tcpip.MonotonicTime
	// Reordering window adaptation (RFC 8985 §6.2 step 4).
	reoWndMult    int
	reoWndPersist int
	dsackRound    uint64 // D-SACKs before SND.UNA passes it count once
	dsackRoundOn  bool
}

// sentAfter reports whether a segment sent at t1 ending at seq1 was sent
// after one sent at t2 ending at seq2 (RFC 8985 RACK_sent_after).
func sentAfter(t1 tcpip.MonotonicTime, seq1 uint64, t2 tcpip.MonotonicTime, seq2 uint64) bool {
	return t1.After(t2) || (t1 == t2 && seq1 > seq2)
}

// rackAdvance records the delivery of record r (RFC 8985 RACK_update):
// RACK follows the most recently sent of the delivered segments. A segment
// sent more than once whose delivery came sooner than the minimum RTT after
// the last transmission was most likely delivered by an earlier one, and is
// ignored (RFC 8985 §6.2 step 2); so is one the ACK's timestamp shows was
// delivered by an earlier transmission.
func (e *Endpoint) rackAdvance(r *txSeg, tsecr uint32, hasTS bool) {
	now := e.now()
	rtt := now.Sub(r.xmit)
	if r.flags&segEverRetrans != 0 {
		if rtt < e.minRTT.get() {
			return
		}
		if hasTS && int32(tsecr-e.tsOf(r.xmit)) < 0 {
			return
		}
	}
	e.rack.rtt = rtt
	e.rack.advanced = true
	if sentAfter(r.xmit, r.end, e.rack.xmit, e.rack.endSeq) {
		e.rack.xmit, e.rack.endSeq = r.xmit, r.end
	}
}

// noteDelivered updates RACK.fack for a record delivered for the first
// time and reports reordering (RFC 8985 §6.2 step 3): a segment never sent
// again that is delivered below fack, the highest delivered sequence
// (before this ACK for cumulatively acknowledged segments), arrived out of
// order.
func (e *Endpoint) noteDelivered(r *txSeg, fack uint64) bool {
	e.rack.fack = max(e.rack.fack, r.end)
	return r.end < fack && r.flags&segEverRetrans == 0
}

// noteLate measures how late a segment delivered out of order was, as the
// reordering window that would have kept RACK from deeming it lost: the
// time since its first transmission beyond RACK.rtt, the RTT of the most
// recent delivery. Called for a segment sent once and delivered below
// RACK.fack, and for one sent again whose original the timestamps show
// delivered (an original that arrived after it was deemed lost).
func (e *Endpoint) noteLate(r *txSeg) {
	now := e.now()
	need := now.Sub(r.first) - e.rack.rtt
	if need <= 0 {
		return
	}
	if need >= e.rack.extent || now.Sub(e.rack.extentAt) > reoExtentLife {
		e.rack.extent, e.rack.extentAt = need, now
	}
}

// rackReoWnd is the reordering window (RFC 8985 §6.2 step 4,
// RACK_update_reo_wnd): zero while no reordering was seen and recovery is
// under way or DupThresh segments are SACKed (the RFC 6675 rule, so that a
// connection without reordering loses no time); otherwise a quarter of the
// minimum RTT per step, widened by one step per round trip with D-SACKs.
//
// Departures from RFC 8985, for paths that reorder by a large part of the
// RTT, as netem's "delay 10ms reorder 5%" on each direction of a 20 ms
// path does (95% of Linux's retransmissions there are needless):
//
//   - the base is never below half the SRTT: when ACKs are reordered as
//     well as data, min_RTT collapses (a segment that jumped ahead,
//     acknowledged by an ACK that jumped ahead, is delivered in no time),
//     and the window with it; the steps may take the window to
//     SRTT+4*RTTVAR rather than SRTT;
//   - the window also covers the largest reordering measured in the last
//     30 s (noteLate), within the same bound: the D-SACK steps are the
//     RFC's slow way there, a measurement the quick one. A segment is
//     deemed lost RACK.rtt plus the window after it was sent, RACK.rtt
//     being the RTT of the most recent delivery, which may itself have
//     jumped ahead: covering the reordering can take the whole spread of
//     the RTTs.
func (e *Endpoint) rackReoWnd() time.Duration {
	if !e.rack.reorderingSeen {
		if e.ca >= caRecovery {
			return 0
		}
		if e.rtx.sackedSegs >= dupThresh {
			return 0
		}
	}
	base := max(e.minRTT.get(), e.srtt/2)
	w := time.Duration(e.rack.reoWndMult) * base / 4
	if x := e.rack.extent; x > w && e.rack.reorderingSeen && e.now().Sub(e.rack.extentAt) <= reoExtentLife {
		w = x
	}
	return min(w, e.srtt+4*e.rttvar)
}

// rackUpdateReoWnd applies a D-SACK to the reordering window, at most once
// per round trip, and lets a widened window decay after
// rackReoWndPersist recoveries without one (RFC 8985 §6.2 step 4).
func (e *Endpoint) rackUpdateReoWnd(dsack bool) {
	if e.rack.dsackRoundOn && e.sndUna >= e.rack.dsackRound {
		e.rack.dsackRoundOn = false
	}
	if !e.rack.dsackRoundOn && dsack {
		e.rack.dsackRoundOn = true
		e.rack.dsackRound = e.sndNxt
		e.rack.reoWndMult = min(e.rack.reoWndMult+1, 255)
		e.rack.reoWndPersist = rackReoWndPersist
	}
}

// rackRecoveryDone counts a recovery towards the decay of a widened
// reordering window.
func (e *Endpoint) rackRecoveryDone() {
	if e.rack.reoWndPersist > 0 {
		e.rack.reoWndPersist--
	}
	if e.rack.reoWndPersist == 0 {
		e.rack.reoWndMult = 1
	}
}

// rackDetectLoss marks lost every segment sent before the most recently
// delivered one that has not been delivered within RACK.rtt plus the
// reordering window (RFC 8985 §6.2 step 5, RACK_detect_loss). It returns
// the bytes newly marked, and arms the reordering timer for the earliest
// segment still waiting (RFC 8985 §6.3).
func (e *Endpoint) rackDetectLoss() uint64 {
	now := e.now()
	reo := e.rackReoWnd()
	var wait time.Duration
	var newly uint64
	q := &e.rtx
	i := q.search(e.rackScanFrom)
	first := -1
	for n := q.n(); i < n; i++ {
		i = q.nextUnSACKed(i)
		if i >= n {
			break
		}
		r := q.at(i)
		if lostUnsent(r.flags) {
			continue
		}
		if first < 0 {
			first = i
		}
		// A segment sent again is compared by time alone: it may share
		// a timestamp with segments above it sent before it.
		if !sentAfter(e.rack.xmit, e.rack.endSeq, r.xmit, r.end) ||
			(r.flags&segEverRetrans != 0 && !e.rack.xmit.After(r.xmit)) {
			if r.flags&segEverRetrans == 0 {
				// Sent after RACK's segment; so is every record above
				// that was sent only once, and every record sent again
				// was sent again later still.
				break
			}
			continue
		}
		remaining := e.rack.rtt + reo - now.Sub(r.xmit)
		if remaining <= 0 {
			newly += e.markLost(i, 0)
			continue
		}
		wait = max(wait, remaining)
	}
	if first >= 0 {
		e.rackScanFrom = q.at(first).start
	} else if q.n() > 0 {
		e.rackScanFrom = q.last().end
	}
	e.rack.advanced = false
	if wait > 0 {
		e.reoTimer.set(now.Add(wait))
	} else {
		e.reoTimer.stop()
	}
	return newly
}

// onReorderTimeout is RACK's reordering timer (RFC 8985 §6.3): segments
// that waited out the reordering window are lost; recovery starts if it
// had not.
func (e *Endpoint) onReorderTimeout() {
	if !e.state.synchronized() || e.sndNxt <= e.sndUna {
		return
	}
	if e.rackDetectLoss() > 0 {
		if e.ca < caRecovery {
			e.enterRecovery()
			e.prrUpdate(e.sndMSS, false)
		}
		e.output()
	}
}

// tlpPTO is the probe timeout (RFC 8985 §7.2): 2*SRTT, plus the peer's
// worst-case delayed ACK when a single segment is in flight.
func (e *Endpoint) tlpPTO() time.Duration {
	if !e.hasRTT {
		return time.Second
	}
	pto := 2 * e.srtt
	if e.sndNxt-e.sndUna <= uint64(e.sndMSS) {
		pto += tlpWCDelAck
	} else {
		pto += tlpMinSlack
	}
	return pto
}

// scheduleTLP (re)arms the loss probe timer after new data went out or an
// ACK advanced SND.UNA (RFC 8985 §7.2), when a probe is allowed: SACK in
// use, data outstanding, no loss recovery, nothing SACKed or deemed lost
// (Linux's TCP_CA_Open), no probe outstanding, and the probe would come
// before the retransmission timer.
func (e *Endpoint) scheduleTLP() {
	e.tlpTimer.stop()
	if !e.sackOK || e.ca != caOpen || e.tlpActive || e.sndNxt <= e.sndUna ||
		e.rtx.sackedSegs > 0 || e.rtx.lost > 0 || e.dupAcks > 0 || e.sndWnd == 0 {
		return
	}
	switch e.state {
	case StateEstablished, StateCloseWait, StateFinWait1, StateClosing, StateLastAck:
	default:
		return
	}
	at := e.now().Add(e.tlpPTO())
	if e.rtoTimer.armed && !at.Before(e.rtoTimer.at) {
		return
	}
	e.tlpTimer.set(at)
}

// onTLP sends a loss probe (RFC 8985 §7.3): one segment of new data if the
// peer's window allows, else the last segment sent again, then restarts
// the retransmission timer.
func (e *Endpoint) onTLP() {
	if !e.state.synchronized() || e.state == StateTimeWait || e.sndNxt <= e.sndUna || e.ca != caOpen || e.tlpActive {
		return
	}
	sent := false
	e.tlpProbe = true
	if e.sndNxt < e.sb.end || (e.finQueued && e.sndNxt <= e.finOff) {
		sent = e.sendNewOne()
		e.tlpRetrans = false
	}
	if !sent {
		r := e.rtx.last()
		if r == nil {
			e.tlpProbe = false
			return
		}
		i := e.rtx.n() - 1
		if r.size() > uint64(e.sndMSS) && !(e.finQueued && r.end == e.finOff+1 && r.size() <= uint64(e.sndMSS)+1) {
			e.rtx.split(i, r.end-uint64(e.sndMSS))
			i++
		}
		sent = e.resend(i, true)
		e.tlpRetrans = true
	}
	e.tlpProbe = false
	if !sent {
		return
	}
	e.info.TCPLossProbes++
	e.tlpActive, e.tlpEnd = true, e.sndNxt
	e.rtoTimer.set(e.now().Add(e.rto))
}

// tlpProcessAck decides what the ACK says of an outstanding probe
// (RFC 8985 §7.4): a D-SACK for the probe or a plain duplicate ACK mean
// the probed segment was not lost; an ACK beyond the probe without either
// means the probe repaired a loss, which calls for a congestion response.
func (e *Endpoint) tlpProcessAck(ack uint64, dsackTLP, advanced, newSACK bool) {
	if !e.tlpActive || ack < e.tlpEnd {
		return
	}
	switch {
	case !e.tlpRetrans, dsackTLP:
		e.tlpActive = false
	case ack > e.tlpEnd:
		e.tlpActive = false
		e.info.TCPLossProbeRecovery++
		if e.ca == caOpen {
			// Linux's tcp_enter_cwr: a reduction, not undoable.
			now := e.now()
			e.undoValid = false
			e.cc.OnCongestionEvent(now, int(e.sndNxt-e.sndUna))
			e.cc.OnRecoveryExit(now)
		}
	case !advanced && !newSACK:
		e.tlpActive = false
	}
}

// minMax is a windowed minimum (Kathleen Nichols' algorithm as in Linux's
// lib/minmax.c): the best of three samples from successive thirds of the
// window, so that old minima expire.
type minMax struct {
	s [3]struct {
		t tcpip.MonotonicTime
		v time.Duration
	}
	ok bool
}

func (m *minMax) get() time.Duration {
	if !m.ok {
		return 0
	}
	return m.s[0].v
}

func (m *minMax) reset(t tcpip.MonotonicTime, v time.Duration) {
	for i := range m.s {
		m.s[i].t, m.s[i].v = t, v
	}
	m.ok = true
}

// update adds sample v taken at t, for a window win.
func (m *minMax) update(win time.Duration, t tcpip.MonotonicTime, v time.Duration) {
	if !m.ok || v <= m.s[0].v || t.Sub(m.s[2].t) > win {
		m.reset(t, v)
		return
	}
	if v <= m.s[1].v {
		m.s[1].t, m.s[1].v = t, v
		m.s[2] = m.s[1]
	} else if v <= m.s[2].v {
		m.s[2].t, m.s[2].v = t, v
	}
	dt := t.Sub(m.s[0].t)
	switch {
	case dt > win:
		m.s[0], m.s[1] = m.s[1], m.s[2]
		m.s[2].t, m.s[2].v = t, v
		if t.Sub(m.s[0].t) > win {
			m.s[0], m.s[1] = m.s[1], m.s[2]
		}
	case m.s[1].t == m.s[0].t && dt > win/4:
		m.s[1].t, m.s[1].v = t, v
		m.s[2] = m.s[1]
	case m.s[2].t == m.s[1].t && dt > win/2:
		m.s[2].t, m.s[2].v = t, v
	}
}
