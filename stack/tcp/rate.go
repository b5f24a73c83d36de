package tcp

import "gvisor.dev/gvisor/pkg/tcpip"

// Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation,
// Linux's tcp_rate.c), for controllers that work from the delivery rate
// (RateController, BBR). Each segment records, when sent, how much had
// been delivered and when; the ACK that delivers it yields the rate over
// the interval between: bytes delivered since, over the longer of the send
// and ACK intervals. Samples taken while the sender had less to send than
// its window allowed are marked application-limited.

// rateState is the endpoint's side of delivery rate estimation.
type rateState struct {
	delivered   uint64              // bytes delivered (acknowledged or SACKed) so far
	deliveredAt tcpip.MonotonicTime // when delivered last grew
	firstSentAt tcpip.MonotonicTime // send time of the segment that started the current interval
	// appLimited is the delivered count up to which samples are
	// application-limited, 0 when the sender is not.
	appLimited uint64
}

// rateSent stamps record r, being (re)sent at now, with the delivery state
// (Linux's tcp_rate_skb_sent). outstanding reports whether other data was
// in flight.
func (e *Endpoint) rateSent(r *txSeg, now tcpip.MonotonicTime, outstanding bool) {
	rs := &e.rate
	if !outstanding {
		rs.firstSentAt, rs.deliveredAt = now, now
	}
	r.delivered, r.deliveredAt, r.firstSentAt = rs.delivered, rs.deliveredAt, rs.firstSentAt
	r.appLimited = rs.appLimited != 0
}

// rateDelivered notes record r delivered by the current ACK: the sample
// follows the most recently sent of the records it delivers.
func (st *ackState) rateDelivered(r *txSeg) {
	if st.rateRec.xmit == (tcpip.MonotonicTime{}) || sentAfter(r.xmit, r.end, st.rateRec.xmit, st.rateRec.end) {
		st.rateRec = *r
	}
}

// rateSample completes the ACK's sample (Linux's tcp_rate_gen) into s.
func (e *Endpoint) rateSample(st *ackState, s *AckSample) {
	rs := &e.rate
	now := e.now()
	if st.delivered > 0 {
		rs.delivered += st.delivered
		rs.deliveredAt = now
	}
	if rs.appLimited != 0 && rs.delivered > rs.appLimited {
		rs.appLimited = 0
	}
	s.Delivered = rs.delivered
	p := &st.rateRec
	if p.xmit == (tcpip.MonotonicTime{}) || st.delivered == 0 {
		return
	}
	rs.firstSentAt = p.xmit
	sendElapsed := p.xmit.Sub(p.firstSentAt)
	ackElapsed := now.Sub(p.deliveredAt)
	interval := max(sendElapsed, ackElapsed)
	s.PriorDelivered = p.delivered
	s.RateAppLimited = p.appLimited
	s.RateDelivered = int(rs.delivered - p.delivered)
	// An interval shorter than the minimum RTT is an ACK compression
	// artefact: no sample (Linux discards it too).
	if interval <= 0 || interval < e.minRTT.get() {
		return
	}
	s.RateInterval = interval
}

// checkAppLimited marks the samples to come application-limited when the
// sender has nothing to send while its window has room (Linux's
// tcp_rate_check_app_limited).
func (e *Endpoint) checkAppLimited() {
	if e.rateCC == nil || e.sndNxt < e.sb.end || (e.finQueued && e.sndNxt <= e.finOff) ||
		e.rtx.lost > 0 || e.pipe() >= e.sendCwnd() {
		return
	}
	e.rate.appLimited = max(e.rate.delivered+uint64(e.pipe()), 1)
}
