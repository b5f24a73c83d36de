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
	// Bytes sent beyond a retreated right edge were dropped or will be:
	// not in flight until sent again.
	if start := e.rewindStart(); start < e.rwEnd {
		p -= int64(e.rwEnd-start) - int64(e.sacked.bytesIn(start, e.rwEnd))
	}
	return int(max(p, 0))
}

// rewindStart is where the bytes still to send again after a retreat of
// the right edge begin: past what was acknowledged, and past what loss
// recovery deems lost (it resends those itself).
func (e *Endpoint) rewindStart() uint64 {
	start := max(e.rwNext, e.sndUna)
	if e.inRecovery {
		start = max(start, min(e.lostFence, e.sndNxt))
	}
	return start
}

// retreat handles the peer's right edge moving back to end, below SND.NXT.
// RFC 9293 §3.8.6.2.2 asks a sender to be robust against such a shrinking
// window: not to send new data, to go on retransmitting what lies inside
// it, and not to time out for what lies beyond; a window shrunk to zero is
// probed. Kernel MPTCP subflows advertise one (their receive window is the
// connection's, shared), and Linux drops everything that arrives beyond
// the window it advertised last. So the bytes outstanding beyond the edge,
// not SACKed, are taken out of flight and sent again once the window
// reaches them (retransmitOne), before new data and without a congestion
// response: they were not lost to congestion. Retransmissions of loss
// recovery beyond the edge are undone likewise. While the window is zero
// and nothing is left in flight, the persist timer probes it
// (windowStalled).
//
// It is called for every ACK that leaves the edge below SND.NXT (but for
// rounding, see edgeRounded), and marks only what is not marked yet.
func (e *Endpoint) retreat(end uint64) {
	edge := max(end, e.sndUna)
	if edge >= e.sndNxt {
		return
	}
	newly := e.sndNxt - edge - e.sacked.bytesIn(edge, e.sndNxt)
	if e.rwNext < e.rwEnd {
		if s := max(e.rwNext, edge); s < e.rwEnd {
			newly -= e.rwEnd - s - e.sacked.bytesIn(s, e.rwEnd)
		}
		e.rwNext = min(e.rwNext, edge)
	} else {
		e.rwNext = edge
	}
	e.rwEnd = e.sndNxt
	e.info.BytesBeyondEdge += newly
	if e.inRecovery && e.highRxt > edge {
		e.highRxt = edge
	}
	if e.rttTiming && e.rttOff >= edge {
		e.rttTiming = false // that segment is sent again: Karn's rule
	}
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

// clearRewind forgets the bytes to send again after a retreat (they are
// acknowledged or sent again, or loss recovery took them over).
func (e *Endpoint) clearRewind() { e.rwNext, e.rwEnd = 0, 0 }

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
	edgeBefore := e.sndUna + e.sndWnd
	e.probesOut = 0 // the peer answers
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
	} else if outstanding && ack == int64(e.sndUna) && len(seg.Payload) == 0 && e.sndWnd > 0 &&
		seg.Flags&(FlagSYN|FlagFIN) == 0 && (sackNew || (!e.sackOK && !wndChanged)) {
		// (With the window shut, the peer's ACKs answer probes: they
		// tell nothing of losses.)
		e.dupAcks++
		e.info.DupAcksIn++
	}
	end := e.sndUna + e.sndWnd
	if end < edgeBefore {
		e.info.WindowRetreats++
	}
	if end < e.sndNxt && !e.edgeRounded(end) {
		e.retreat(end)
	}
	if e.rwNext < e.rwEnd && max(e.rwNext, e.sndUna) >= e.rwEnd {
		e.clearRewind()
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
