package tcp

import (
	"math"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// bbr is BBR version 1 (draft-cardwell-iccrg-bbr-congestion-control-00,
// as Linux's tcp_bbr.c): a model of the path from the delivery rate
// (bottleneck bandwidth, the maximum over 10 round trips) and the minimum
// RTT (over 10 s), which sets the pacing rate (a gain times the bandwidth)
// and the window (twice the bandwidth-delay product). Random loss does not
// shrink the model, so a lossy path keeps its rate; losses only make the
// window follow the data in flight during fast recovery (packet
// conservation). States: STARTUP (gain 2/ln 2 until the bandwidth stops
// growing by 25% for three rounds), DRAIN (empty the queue STARTUP built),
// PROBE_BW (gains 5/4, 3/4, then 1 for six round trips, in turn),
// PROBE_RTT (four segments for 200 ms when the minimum RTT is 10 s old).
//
// It is a RateController: the endpoint measures the delivery rate, paces
// at PacingRate and leaves the window to it during recovery. Windows are
// in bytes, bandwidth in bytes per second.
type bbr struct {
	mss  int
	cwnd int
	mode bbrMode

	bw          bwFilter
	minRTT      time.Duration
	minRTTOK    bool
	minRTTStamp tcpip.MonotonicTime

	roundCount       uint64
	nextRTTDelivered uint64
	roundStart       bool

	pacingGain, cwndGain float64
	pacingRate           float64
	initRate             float64 // before a bandwidth sample: initial window over the SRTT

	fullBW        float64
	fullBWCount   int
	fullBWReached bool

	cycleIdx   int
	cycleStamp tcpip.MonotonicTime
	rnd        uint32

	probeRTTDone      tcpip.MonotonicTime
	probeRTTDoneSet   bool
	probeRTTRoundDone bool

	// ACK aggregation (Linux's bbr_update_ack_aggregation): data
	// acknowledged beyond what the bandwidth explains, the maximum of
	// two windows of 5 rounds, added to the window.
	aggEpoch    tcpip.MonotonicTime
	aggAcked    int
	extraAcked  [2]int
	extraIdx    int
	extraRounds int

	priorCwnd    int
	conservation bool
	prevRecovery bool // in fast recovery at the last ACK
	prevLossy    bool // in fast or RTO recovery at the last ACK
	initCwnd     int
	subflow      SubflowStats
}

type bbrMode uint8

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

// BBR's constants (Linux's tcp_bbr.c).
const (
	bbrHighGain       = 2.885 // 2/ln(2): doubles the delivery rate each round
	bbrDrainGain      = 1 / bbrHighGain
	bbrCwndGain       = 2
	bbrBWRounds       = 10
	bbrMinRTTWin      = 10 * time.Second
	bbrProbeRTTTime   = 200 * time.Millisecond
	bbrFullBWThresh   = 1.25
	bbrFullBWCount    = 3
	bbrMinCwndSeg     = 4
	bbrPacingMargin   = 0.99 // pace 1% below the estimated bandwidth
	bbrCycleLen       = 8
	bbrMaxTSOBytes    = 64 << 10
	bbrMinTSOSegments = 2
	bbrExtraRounds    = 5
	bbrExtraMax       = 100 * time.Millisecond // at most this much of the bandwidth
	bbrAggResetBytes  = 1 << 20
)

var bbrPacingGains = [bbrCycleLen]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

var (
	_ CongestionControl = (*bbr)(nil)
	_ RateController    = (*bbr)(nil)
)

func newBBR(p CCParams) CongestionControl {
	b := &bbr{mss: p.MSS, cwnd: p.InitialCwnd, initCwnd: p.InitialCwnd, subflow: p.Subflow, rnd: 0x9e3779b9}
	b.resetStartup()
	b.setPacingRate(0, bbrHighGain)
	return b
}

func (b *bbr) Name() string                       { return "bbr" }
func (b *bbr) Cwnd() int                          { return b.cwnd }
func (b *bbr) Ssthresh() int                      { return math.MaxInt32 }
func (b *bbr) PacingRate() int64                  { return int64(b.pacingRate) }
func (b *bbr) SetMSS(m int)                       { b.mss = max(m, 1) }
func (b *bbr) maxBW() float64                     { return b.bw.get() }
func (b *bbr) OnRecoveryExit(tcpip.MonotonicTime) {}

func (b *bbr) resetStartup() {
	b.mode = bbrStartup
	b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
}

// OnCongestionEvent keeps the window (BBR's ssthresh hook only saves it):
// the next OnAck, in recovery, switches to packet conservation.
func (b *bbr) OnCongestionEvent(tcpip.MonotonicTime, int) { b.saveCwnd() }

// OnRTO saves the window and restarts from one segment; the bandwidth
// model stays, the timeout ends a round (Linux's CA_EVENT_LOSS).
func (b *bbr) OnRTO(tcpip.MonotonicTime, int) {
	b.saveCwnd()
	b.cwnd = b.mss
	b.fullBW, b.fullBWCount = 0, 0
	b.roundStart = true
	b.prevLossy = true
}

func (b *bbr) saveCwnd() {
	if !b.prevLossy && b.mode != bbrProbeRTT {
		b.priorCwnd = b.cwnd
	} else {
		b.priorCwnd = max(b.priorCwnd, b.cwnd)
	}
}

// OnAck is BBR's per-ACK step (Linux's bbr_main).
func (b *bbr) OnAck(s *AckSample) {
	b.updateBW(s)
	b.updateAckAggregation(s)
	b.updateCyclePhase(s)
	b.checkFullBWReached(s)
	b.checkDrain(s)
	b.updateMinRTT(s)
	b.setPacingRate(b.maxBW(), b.pacingGain)
	b.setCwnd(s)
}

// updateBW counts round trips and feeds the bandwidth filter.
func (b *bbr) updateBW(s *AckSample) {
	b.roundStart = false
	if s.RateInterval <= 0 {
		return
	}
	if s.PriorDelivered >= b.nextRTTDelivered {
		b.nextRTTDelivered = s.Delivered
		b.roundCount++
		b.roundStart = true
		b.conservation = false
	}
	bw := float64(s.RateDelivered) / s.RateInterval.Seconds()
	// An application-limited sample only counts if it raises the
	// estimate: it is a lower bound.
	if !s.RateAppLimited || bw >= b.maxBW() {
		b.bw.update(bbrBWRounds, b.roundCount, bw)
	}
}

// updateAckAggregation measures how much more data ACKs acknowledge than
// the bandwidth explains over an epoch (ACKs held back and released at
// once by delayed or stretch ACKs, GRO, a busy receiver), so that the
// window covers it and the sender is not starved between such bursts.
func (b *bbr) updateAckAggregation(s *AckSample) {
	if s.Acked <= 0 || s.RateInterval <= 0 {
		return
	}
	if b.roundStart {
		b.extraRounds++
		if b.extraRounds >= bbrExtraRounds {
			b.extraRounds = 0
			b.extraIdx ^= 1
			b.extraAcked[b.extraIdx] = 0
		}
	}
	expected := int(b.maxBW() * s.Now.Sub(b.aggEpoch).Seconds())
	if b.aggAcked <= expected || b.aggAcked+s.Acked >= bbrAggResetBytes {
		b.aggAcked, b.aggEpoch, expected = 0, s.Now, 0
	}
	b.aggAcked += s.Acked
	extra := min(b.aggAcked-expected, b.cwnd)
	if extra > b.extraAcked[b.extraIdx] {
		b.extraAcked[b.extraIdx] = extra
	}
}

// aggregationCwnd is the window's allowance for ACK aggregation, once
// STARTUP is over.
func (b *bbr) aggregationCwnd() int {
	if !b.fullBWReached {
		return 0
	}
	return min(max(b.extraAcked[0], b.extraAcked[1]), int(b.maxBW()*bbrExtraMax.Seconds()))
}

// bdp is the bandwidth-delay product times gain, in bytes; the initial
// window before an RTT is known.
func (b *bbr) bdp(bw, gain float64) int {
	if !b.minRTTOK || bw == 0 {
		return b.initCwnd
	}
	return int(math.Ceil(bw * b.minRTT.Seconds() * gain))
}

// inflight is the window for gain: the BDP plus room for the bursts
// segmentation offload and ACK aggregation make (Linux's
// bbr_quantization_budget), in whole, even segments.
func (b *bbr) inflight(bw, gain float64) int {
	w := b.bdp(bw, gain)
	tso := min(max(int(b.pacingRate/1000)/b.mss, bbrMinTSOSegments), bbrMaxTSOBytes/b.mss)
	w += 3 * tso * b.mss
	segs := (w + b.mss - 1) / b.mss
	segs += segs & 1
	if b.mode == bbrProbeBW && b.cycleIdx == 0 {
		segs += 2 // probing: room for the queue it builds
	}
	return segs * b.mss
}

// updateCyclePhase moves PROBE_BW's gain cycle on: each phase lasts a
// minimum RTT; probing up also waits for the extra data to be in flight
// (or for a loss), probing down ends as soon as the queue is gone.
func (b *bbr) updateCyclePhase(s *AckSample) {
	if b.mode != bbrProbeBW {
		return
	}
	full := s.Now.Sub(b.cycleStamp) > b.minRTT
	bw := b.maxBW()
	next := full
	switch {
	case b.pacingGain > 1:
		next = full && (s.Lost > 0 || s.InFlight >= b.inflight(bw, b.pacingGain))
	case b.pacingGain < 1:
		next = full || s.InFlight <= b.inflight(bw, 1)
	}
	if next {
		b.cycleIdx = (b.cycleIdx + 1) % bbrCycleLen
		b.cycleStamp = s.Now
		b.pacingGain = bbrPacingGains[b.cycleIdx]
	}
}

// checkFullBWReached ends STARTUP once three rounds in a row failed to
// raise the bandwidth by 25%.
func (b *bbr) checkFullBWReached(s *AckSample) {
	if b.fullBWReached || !b.roundStart || s.RateAppLimited {
		return
	}
	if bw := b.maxBW(); bw >= b.fullBW*bbrFullBWThresh {
		b.fullBW, b.fullBWCount = bw, 0
		return
	}
	b.fullBWCount++
	b.fullBWReached = b.fullBWCount >= bbrFullBWCount
}

func (b *bbr) checkDrain(s *AckSample) {
	if b.mode == bbrStartup && b.fullBWReached {
		b.mode = bbrDrain
		b.pacingGain, b.cwndGain = bbrDrainGain, bbrHighGain
	}
	if b.mode == bbrDrain && s.InFlightAfter <= b.inflight(b.maxBW(), 1) {
		b.resetProbeBW(s.Now)
	}
}

// resetProbeBW enters PROBE_BW at a random phase other than the one that
// drains (Linux's bbr_reset_probe_bw_mode).
func (b *bbr) resetProbeBW(now tcpip.MonotonicTime) {
	b.mode = bbrProbeBW
	b.cwndGain = bbrCwndGain
	b.rnd ^= b.rnd << 13
	b.rnd ^= b.rnd >> 17
	b.rnd ^= b.rnd << 5
	b.cycleIdx = (bbrCycleLen - 1 - int(b.rnd%7) + 1) % bbrCycleLen
	b.cycleStamp = now
	b.pacingGain = bbrPacingGains[b.cycleIdx]
}

func (b *bbr) resetMode(now tcpip.MonotonicTime) {
	if !b.fullBWReached {
		b.resetStartup()
	} else {
		b.resetProbeBW(now)
	}
}

// updateMinRTT keeps the minimum RTT of the last 10 s; when it expires,
// PROBE_RTT drains the pipe to four segments for 200 ms and a round trip
// to measure it again.
//
// On a path that reorders data and ACKs, a segment that jumped ahead,
// acknowledged by an ACK that jumped ahead, yields an RTT near zero; the
// window (twice bandwidth times minimum RTT) falls below the path's BDP,
// the delivery rate with it, and the bandwidth estimate spirals down. So
// once reordering was seen, samples below the SRTT count as the SRTT
// (Linux's BBR takes them, and crawls on such a path).
func (b *bbr) updateMinRTT(s *AckSample) {
	expired := b.minRTTOK && s.Now.Sub(b.minRTTStamp) > bbrMinRTTWin
	rtt := s.RTT
	if s.Reordering && b.subflow != nil {
		rtt = max(rtt, b.subflow.SRTT())
	}
	if rtt > 0 && (!b.minRTTOK || rtt < b.minRTT || expired) {
		b.minRTT, b.minRTTStamp, b.minRTTOK = rtt, s.Now, true
	}
	if expired && b.mode != bbrProbeRTT {
		b.mode = bbrProbeRTT
		b.pacingGain, b.cwndGain = 1, 1
		b.saveCwnd()
		b.probeRTTDoneSet = false
	}
	if b.mode != bbrProbeRTT {
		return
	}
	if !b.probeRTTDoneSet && s.InFlightAfter <= bbrMinCwndSeg*b.mss {
		b.probeRTTDone, b.probeRTTDoneSet = s.Now.Add(bbrProbeRTTTime), true
		b.probeRTTRoundDone = false
		b.nextRTTDelivered = s.Delivered
	} else if b.probeRTTDoneSet {
		if b.roundStart {
			b.probeRTTRoundDone = true
		}
		if b.probeRTTRoundDone && s.Now.After(b.probeRTTDone) {
			b.minRTTStamp = s.Now
			b.cwnd = max(b.cwnd, b.priorCwnd)
			b.resetMode(s.Now)
		}
	}
}

// setPacingRate paces at gain times bw, 1% below; in STARTUP it only goes
// up. Before a bandwidth sample, the initial window per SRTT (or per ms).
func (b *bbr) setPacingRate(bw, gain float64) {
	if bw == 0 {
		rtt := time.Millisecond
		if b.subflow != nil && b.subflow.SRTT() > 0 {
			rtt = b.subflow.SRTT()
		}
		bw = float64(b.initCwnd) / rtt.Seconds()
	}
	rate := gain * bw * bbrPacingMargin
	if b.fullBWReached || rate > b.pacingRate {
		b.pacingRate = rate
	}
}

// setCwnd sets the window from the model (Linux's bbr_set_cwnd): towards
// twice the BDP, growing by what is acknowledged; in fast recovery,
// packet conservation for a round (the window follows the data in
// flight), and the window of before the recovery once it ends.
func (b *bbr) setCwnd(s *AckSample) {
	acked := s.Acked
	if acked > 0 {
		cwnd := b.cwnd
		if s.Lost > 0 {
			cwnd = max(cwnd-s.Lost, b.mss)
		}
		lossy := s.Recovery || s.Loss
		switch {
		case s.Recovery && !b.prevRecovery:
			b.conservation = true
			b.nextRTTDelivered = s.Delivered
			cwnd = s.InFlightAfter + acked
		case b.prevLossy && !lossy:
			cwnd = max(cwnd, b.priorCwnd)
			b.conservation = false
		}
		b.prevRecovery, b.prevLossy = s.Recovery, lossy
		if b.conservation {
			cwnd = max(cwnd, s.InFlightAfter+acked)
		} else {
			target := b.inflight(b.maxBW(), b.cwndGain) + b.aggregationCwnd()
			if b.fullBWReached {
				cwnd = min(cwnd+acked, target)
			} else if cwnd < target || s.Delivered < uint64(b.initCwnd) {
				cwnd += acked
			}
			cwnd = max(cwnd, bbrMinCwndSeg*b.mss)
		}
		b.cwnd = cwnd
	}
	if b.mode == bbrProbeRTT {
		b.cwnd = min(b.cwnd, bbrMinCwndSeg*b.mss)
	}
}

// bwFilter is a windowed maximum over round trips (Kathleen Nichols'
// algorithm, as lib/minmax.c): the best of three samples from successive
// parts of the window.
type bwFilter struct {
	s [3]struct {
		t uint64
		v float64
	}
}

func (f *bwFilter) get() float64 { return f.s[0].v }

func (f *bwFilter) update(win, t uint64, v float64) {
	type sample = struct {
		t uint64
		v float64
	}
	n := sample{t, v}
	if v >= f.s[0].v || t-f.s[2].t > win {
		f.s[0], f.s[1], f.s[2] = n, n, n
		return
	}
	if v >= f.s[1].v {
		f.s[1], f.s[2] = n, n
	} else if v >= f.s[2].v {
		f.s[2] = n
	}
	switch dt := t - f.s[0].t; {
	case dt > win:
		f.s[0], f.s[1], f.s[2] = f.s[1], f.s[2], n
		if t-f.s[0].t > win {
			f.s[0], f.s[1], f.s[2] = f.s[1], f.s[2], n
		}
	case f.s[1].t == f.s[0].t && dt > win/4:
		f.s[1], f.s[2] = n, n
	case f.s[2].t == f.s[1].t && dt > win/2:
		f.s[2] = n
	}
}
