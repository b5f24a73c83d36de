package tcp

import (
	"time"
)

// Loss recovery is RFC 6675 (conservative SACK-based recovery) with a SACK
// scoreboard of byte ranges, plus RFC 6582 (NewReno) partial-ACK handling
// so that recovery also works without SACK. The state is:
//
//   - sacked: SACKed ranges above SND.UNA (bounded, maxSACKRanges);
//   - lostFence: every unSACKed byte below it is deemed lost (IsLost of
//     RFC 6675 §4, or everything outstanding after an RTO);
//   - highRxt: the highest byte retransmitted in this recovery (HighRxt);
//   - recoverOff: SND.NXT when recovery started (RecoveryPoint).

// dupThresh is DupThresh of RFC 6675 §2.
const dupThresh = 3

// pipe is RFC 6675's SetPipe in bytes: outstanding bytes neither SACKed nor
// deemed lost, plus lost bytes retransmitted.
func (e *Endpoint) pipe() int {
	if e.sndNxt <= e.sndUna {
		return 0
	}
	out := e.sndNxt - e.sndUna
	sacked := e.sacked.total()
	p := int64(out - sacked)
	if e.inRecovery {
		fence := min(e.lostFence, e.sndNxt)
		if fence > e.sndUna {
			lost := int64(fence-e.sndUna) - int64(e.sacked.bytesIn(e.sndUna, fence))
			var retx int64
			if rx := min(e.highRxt, fence); rx > e.sndUna {
				retx = int64(rx-e.sndUna) - int64(e.sacked.bytesIn(e.sndUna, rx))
			}
			p += retx - lost
		}
		if !e.sackOK {
			p -= min(int64(e.dupAcks*e.sndMSS), p)
		}
	}
	return int(max(p, 0))
}

// computeFence returns the lowest offset below which every unSACKed byte is
// lost per RFC 6675 §4 IsLost: DupThresh discontiguous SACKed ranges above
// it, or more than (DupThresh-1)*SMSS SACKed bytes above it.
func (e *Endpoint) computeFence() uint64 {
	spans := e.sacked.spans()
	var cum uint64
	for i := len(spans) - 1; i >= 0; i-- {
		s := spans[i]
		cum += s.end - s.start
		if len(spans)-i >= dupThresh || cum > uint64((dupThresh-1)*e.sndMSS) {
			return s.start
		}
	}
	return e.sndUna
}

// processSACK merges the segment's SACK blocks (RFC 2018) into the
// scoreboard and reports whether any block SACKed new data.
func (e *Endpoint) processSACK(seg *Segment) bool {
	o := &seg.Options
	newData := false
	for i := 0; i < o.NumSACKBlocks && i < len(o.SACKBlocks); i++ {
		b := o.SACKBlocks[i]
		start := e.ackOff(seqValue(b.Start))
		end := e.ackOff(seqValue(b.End))
		if end <= start || end > int64(e.sndNxt) || end <= int64(e.sndUna) {
			continue // invalid or D-SACK (RFC 2883) below SND.UNA
		}
		s, en := uint64(max(start, int64(e.sndUna))), uint64(end)
		if e.sacked.bytesIn(s, en) == en-s {
			continue
		}
		if e.sacked.add(s, en) {
			newData = true
		}
	}
	return newData
}

// enterRecovery starts fast recovery (RFC 6675 §5 step 4, RFC 6582 §3.2).
func (e *Endpoint) enterRecovery() {
	e.info.FastRecoveries++
	e.cc.OnCongestionEvent(e.now(), e.pipe())
	e.inRecovery, e.rtoLoss = true, false
	e.recoverOff = e.sndNxt
	e.highRxt = e.sndUna
	e.lostFence = max(e.computeFence(), e.sndUna+1)
	e.forceRetx = true
}

// processAck handles the acknowledgment field, window update and SACK
// blocks of an acceptable segment (RFC 9293 §3.10.7.4 fifth step, RFC 5961
// §5.2). It reports false when the segment must be dropped.
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
	sackNew := false
	if e.sackOK && seg.Options.NumSACKBlocks > 0 {
		sackNew = e.processSACK(seg)
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
	if ack > int64(e.sndUna) {
		a := uint64(ack)
		dataAcked := min(a, e.sb.end) - min(e.sndUna, e.sb.end)
		e.sb.ack(a)
		e.sndUna = a
		e.sacked.trimBelow(a)
		e.info.BytesAcked += dataAcked
		e.kaProbes = 0
		var rtt time.Duration
		haveRTT := false
		if e.tsOK && seg.Options.HasTimestamp && seg.Options.TSEcr != 0 {
			if d := int32(e.tsNow() - seg.Options.TSEcr); d >= 0 {
				rtt, haveRTT = time.Duration(d)*time.Millisecond, true
			}
		} else if e.rttTiming && a > e.rttOff {
			rtt, haveRTT = now.Sub(e.rttStart), true
			e.rttTiming = false
		}
		if haveRTT {
			e.updateRTT(rtt)
		}
		e.backoff = 0
		if e.sndUna >= e.sndNxt {
			e.rtoTimer.stop()
		} else {
			e.rtoTimer.set(now.Add(e.rto))
		}
		if e.inRecovery {
			if e.sndUna >= e.recoverOff {
				e.inRecovery = false
				if !e.rtoLoss {
					e.cc.OnRecoveryExit(now)
				}
				e.rtoLoss = false
				e.dupAcks = 0
			} else if !e.rtoLoss && e.highRxt <= e.sndUna {
				// Partial ACK (RFC 6582 §3.2 step 5): the new head is lost.
				e.lostFence = max(e.lostFence, e.sndUna+1)
				e.highRxt = e.sndUna
				e.dupAcks = 0
			}
			if e.rtoLoss {
				// Slow start continues during RTO recovery (RFC 5681 §3.1).
				e.ackSample = AckSample{Now: now, Acked: int(dataAcked), RTT: rtt, InFlight: pipeBefore}
				e.cc.OnAck(&e.ackSample)
			}
		} else {
			e.dupAcks = 0
			e.ackSample = AckSample{Now: now, Acked: int(dataAcked), RTT: rtt, InFlight: pipeBefore, AppLimited: !e.cwndBlocked}
			e.cc.OnAck(&e.ackSample)
		}
		if dataAcked > 0 {
			e.growSendBuffer()
			e.notify(EventWritable)
		}
	} else if outstanding && ack == int64(e.sndUna) && len(seg.Payload) == 0 &&
		seg.Flags&(FlagSYN|FlagFIN) == 0 && (sackNew || (!e.sackOK && !wndChanged)) {
		e.dupAcks++
		e.info.DupAcksIn++
	}
	if outstanding && e.sndNxt > e.sndUna {
		if !e.inRecovery {
			if e.dupAcks >= dupThresh || (e.sackOK && e.computeFence() > e.sndUna) {
				e.enterRecovery()
			}
		} else if e.sackOK {
			e.lostFence = max(e.lostFence, e.computeFence())
		}
	}
	return true
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
