package tcp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

func seqValue(v uint32) seqnum.Value { return seqnum.Value(v) }

// NextDeadline returns the earliest armed timer (retransmission, delayed
// ACK, persist, keepalive, FIN-WAIT-2, TIME-WAIT), or false when none is.
// The caller arranges to call HandleTimers at (or after) that time, e.g.
// with one clock.AfterFunc per endpoint re-armed after every call that
// reports EventTimer.
func (e *Endpoint) NextDeadline() (tcpip.MonotonicTime, bool) {
	var best timer
	for _, t := range [...]*timer{&e.rtoTimer, &e.tlpTimer, &e.reoTimer, &e.paceTimer, &e.dack, &e.persist, &e.keepalive, &e.timeWait, &e.finWait2} {
		if t.armed && (!best.armed || t.at.Before(best.at)) {
			best = *t
		}
	}
	return best.at, best.armed
}

// HandleTimers runs every timer whose deadline has passed at the clock's
// current time. Calling it early is harmless.
func (e *Endpoint) HandleTimers() {
	e.nowOK = false
	now := e.now()
	if e.timeWait.due(now) {
		e.timeWait.stop()
		e.closeNow(nil)
	}
	if e.finWait2.due(now) {
		e.finWait2.stop()
		e.closeNow(nil)
	}
	if e.rtoTimer.due(now) {
		e.rtoTimer.stop()
		e.onRTO()
	}
	if e.reoTimer.due(now) {
		e.reoTimer.stop()
		e.onReorderTimeout()
	}
	if e.tlpTimer.due(now) {
		e.tlpTimer.stop()
		e.onTLP()
	}
	if e.paceTimer.due(now) {
		e.paceTimer.stop()
		if e.state.synchronized() {
			e.output()
		}
	}
	if e.persist.due(now) {
		e.persist.stop()
		e.onPersist()
	}
	if e.keepalive.due(now) {
		e.keepalive.stop()
		e.onKeepalive()
	}
	if e.dack.due(now) {
		e.dack.stop()
		// A delayed ACK timed out: the exchange is not interactive
		// after all (Linux leaves pingpong mode then).
		e.pingpong = false
		if e.state.synchronized() && e.state != StateTimeWait {
			e.sendAck()
		}
	}
	e.flushNotify()
}

// onRTO is the retransmission timeout (RFC 6298 §5.4-5.6, RFC 5681 §3.1):
// back off, reduce the window, deem everything outstanding lost and
// retransmit from SND.UNA.
func (e *Endpoint) onRTO() {
	if e.sndNxt <= e.sndUna {
		return
	}
	if e.state.synchronized() && e.windowStalled() {
		// Nothing in flight, the window shut: not a loss. Probe it
		// with the persist timer instead, which does not give up on a
		// peer that answers (Linux's tcp_retransmit_timer likewise
		// does not count timeouts against a zero window).
		e.output()
		return
	}
	now := e.now()
	e.info.RTOs++
	e.backoff++
	e.rto = min(2*e.rto, e.cfg.MaxRTO)
	switch e.state {
	case StateSynSent, StateSynRcvd:
		limit := e.cfg.SynRetries
		if q := e.synq; q != nil {
			// A Listener's half-open endpoint: fewer retries while the
			// SYN queue is clogged (synQueue.retries), reckoned while
			// it still counts as young, as Linux does.
			limit = q.retries(limit)
			if e.synYoung {
				e.synYoung = false
				q.young.Add(-1)
			}
			if e.backoff > limit && limit < e.cfg.SynRetries {
				q.pruned.Add(1)
			}
		}
		if e.backoff > limit {
			e.closeNow(ErrTimeout)
			return
		}
		e.sendSYN(e.state == StateSynRcvd)
		e.rtoTimer.set(now.Add(e.rto))
		return
	}
	if e.backoff > e.cfg.DataRetries {
		e.closeNow(ErrTimeout)
		return
	}
	e.tlpTimer.stop()
	e.reoTimer.stop()
	e.tlpActive = false
	if e.ca == caOpen || e.sndUna >= e.recoverOff {
		// A new episode (Linux's tcp_enter_loss): a timeout during
		// fast recovery keeps that recovery's undo state.
		e.initUndo()
	}
	if e.backoff == 1 {
		e.cc.OnRTO(now, int(e.sndNxt-e.sndUna))
	}
	e.ca = caLoss
	e.recoverOff = e.sndNxt
	e.markAllLost(true)
	e.dupAcks, e.renoSacked = 0, 0
	e.forceRetx = true
	e.rtoTimer.set(now.Add(e.rto))
	e.output()
}

// persistInterval is the persist timer with exponential backoff
// (RFC 9293 §3.8.6.1), bounded by MaxRTO.
func (e *Endpoint) persistInterval() (d time.Duration) {
	d = e.rto << min(e.persistShift, 16)
	return min(max(d, e.cfg.MinRTO), e.cfg.MaxRTO)
}

// onPersist sends a zero-window probe and re-arms with backoff. Probing
// goes on as long as the peer answers (RFC 9293 §3.8.6.1, RFC 1122
// §4.2.2.17), also when bytes sent beyond a right edge that retreated wait
// for the window (windowStalled); after DataRetries probes in a row without
// any ACK the peer is deemed gone (Linux's tcp_probe_timer, tcp_retries2).
func (e *Endpoint) onPersist() {
	if !e.state.synchronized() || e.state == StateTimeWait {
		return
	}
	if !e.windowStalled() {
		if e.swsBlocked && e.sndNxt == e.sndUna {
			// A window too small for sender-side SWS avoidance: send
			// what fits, a probe that carries data (Linux's
			// tcp_write_wakeup).
			e.swsOverride = true
			e.output()
			e.swsOverride = false
			return
		}
		e.output()
		return
	}
	if e.probesOut >= e.cfg.DataRetries {
		e.closeNow(ErrTimeout)
		return
	}
	e.probesOut++
	e.info.ZeroWindowProbes++
	e.sendProbe()
	e.persistShift++
	e.persist.set(e.now().Add(e.persistInterval()))
}

// armKeepalive (re)starts the keepalive idle timer (RFC 1122 §4.2.3.6).
func (e *Endpoint) armKeepalive() {
	if e.cfg.Keepalive.Idle <= 0 {
		return
	}
	e.kaProbes = 0
	e.keepalive.set(e.now().Add(e.cfg.Keepalive.Idle))
}

// onKeepalive sends a probe or gives up after Count unanswered ones.
func (e *Endpoint) onKeepalive() {
	switch e.state {
	case StateEstablished, StateCloseWait, StateFinWait2:
	default:
		return
	}
	now := e.now()
	if e.sndNxt > e.sndUna || e.sndNxt < e.sb.end {
		// Data in flight: the retransmission timer watches the peer.
		e.keepalive.set(now.Add(e.cfg.Keepalive.Idle))
		return
	}
	if e.kaProbes >= e.cfg.Keepalive.Count {
		e.closeNow(ErrTimeout)
		return
	}
	e.kaProbes++
	e.info.KeepaliveProbes++
	e.sendProbe()
	e.keepalive.set(now.Add(e.cfg.Keepalive.Interval))
}
