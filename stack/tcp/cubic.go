package tcp

import (
	"math"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// CUBIC constants (RFC 9438 §4.1, §5).
const (
	cubicC    = 0.4
	cubicBeta = 0.7
)

// HyStart++ constants (RFC 9406 §4.3).
const (
	hsMinRTTThresh    = 4 * time.Millisecond
	hsMaxRTTThresh    = 16 * time.Millisecond
	hsMinRTTDivisor   = 8
	hsNRTTSample      = 8
	hsCSSGrowthDiv    = 4
	hsCSSRounds       = 5
	hsL               = 8 // segments per ACK at most, without pacing
	cubicMinWindowSeg = 2
)

// cubic implements CUBIC (RFC 9438): window growth as a cubic function of
// the time since the last congestion event, with the Reno-friendly region
// (§4.3), fast convergence (§4.7), the timeout rule (§4.8) and undo of
// spurious congestion events (§4.9, CongestionUndoer). Its slow start is
// HyStart++ (RFC 9406): a round's minimum RTT rising by more than an
// eighth (4 to 16 ms) over the previous round's moves it to Conservative
// Slow Start, which grows a quarter as fast and ends slow start after five
// rounds unless the RTT falls back. HyStart++ is used in the initial slow
// start only, as RFC 9406 §4.3 recommends. Windows are kept in segments as
// floats and reported in bytes.
type cubic struct {
	p   CCParams
	mss int
	cubicState
	// prior is the state before the first reduction of the current
	// episode, for OnUndo.
	prior      cubicState
	inEpisode  bool // the next reduction belongs to the episode
	priorValid bool // prior may be restored
	hs         hystart
}

// cubicState is what a congestion event changes and an undo restores.
type cubicState struct {
	cwnd      float64 // segments
	ssthresh  float64 // segments
	wMax      float64 // segments: window before the last reduction (W_max)
	k         float64 // seconds
	epoch     tcpip.MonotonicTime
	inEpoch   bool
	wEst      float64 // Reno-friendly estimate, segments
	cwndPrior float64 // cwnd before the last reduction (cwnd_prior)
	afterRTO  bool    // the next epoch is the first after a timeout (§4.8)
}

// hystart is RFC 9406's state.
type hystart struct {
	off                 bool // after the first congestion event or timeout
	lastRoundMinRTT     time.Duration
	currentRoundMinRTT  time.Duration
	rttSampleCount      int
	css                 bool
	cssBaselineMinRTT   time.Duration
	cssRounds           int
	lastValid, curValid bool
}

var (
	_ CongestionControl = (*cubic)(nil)
	_ CongestionUndoer  = (*cubic)(nil)
)

func newCubic(p CCParams) CongestionControl {
	c := &cubic{p: p, mss: p.MSS}
	c.cwnd = float64(p.InitialCwnd) / float64(p.MSS)
	c.ssthresh = math.Inf(1)
	return c
}

func (c *cubic) Name() string { return "cubic" }
func (c *cubic) Cwnd() int    { return int(c.cwnd * float64(c.mss)) }
func (c *cubic) Ssthresh() int {
	if math.IsInf(c.ssthresh, 1) {
		return math.MaxInt32
	}
	return int(c.ssthresh * float64(c.mss))
}

func (c *cubic) SetMSS(m int) {
	if m <= 0 {
		return
	}
	// Keep the windows in bytes constant.
	ratio := float64(c.mss) / float64(m)
	for _, s := range []*cubicState{&c.cubicState, &c.prior} {
		s.cwnd *= ratio
		s.wMax *= ratio
		s.wEst *= ratio
		s.cwndPrior *= ratio
		if !math.IsInf(s.ssthresh, 1) {
			s.ssthresh *= ratio
		}
	}
	c.mss = m
}

func (c *cubic) OnAck(s *AckSample) {
	if c.cwnd < c.ssthresh {
		c.slowStart(s)
		return
	}
	if s.AppLimited {
		return
	}
	seg := float64(s.Acked) / float64(c.mss)
	if !c.inEpoch {
		c.inEpoch = true
		c.epoch = s.Now
		if c.afterRTO || c.wMax < c.cwnd {
			// After a timeout, or past the last saturation point (slow
			// start ended without a loss): the plateau is here (§4.8,
			// §4.10).
			c.k = 0
			c.wMax = c.cwnd
			c.afterRTO = false
		} else {
			c.k = math.Cbrt((c.wMax - c.cwnd) / cubicC)
		}
		c.wEst = c.cwnd
		if c.cwndPrior == 0 {
			c.cwndPrior = c.cwnd
		}
	}
	t := s.Now.Sub(c.epoch).Seconds()
	rtt := time.Duration(0)
	if c.p.Subflow != nil {
		rtt = c.p.Subflow.SRTT()
	}
	// Reno-friendly estimate (§4.3): alpha = 3(1-beta)/(1+beta) until
	// W_est reaches cwnd_prior, then 1.
	alpha := 3 * (1 - cubicBeta) / (1 + cubicBeta)
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * seg / c.cwnd
	d := t - c.k
	if wCubic := cubicC*d*d*d + c.wMax; wCubic < c.wEst {
		// Reno-friendly region.
		c.cwnd = c.wEst
		return
	}
	// Concave and convex regions (§4.4, §4.5): towards W_cubic(t+RTT),
	// between cwnd and 1.5 cwnd.
	d = t + rtt.Seconds() - c.k
	target := cubicC*d*d*d + c.wMax
	target = min(max(target, c.cwnd), 1.5*c.cwnd)
	c.cwnd += (target - c.cwnd) * seg / c.cwnd
}

// slowStart grows the window by what was acknowledged, at most hsL
// segments per ACK, with HyStart++ (RFC 9406 §4.2) in the initial slow
// start.
func (c *cubic) slowStart(s *AckSample) {
	h := &c.hs
	if !h.off && s.NewRound {
		h.lastRoundMinRTT, h.lastValid = h.currentRoundMinRTT, h.curValid
		h.currentRoundMinRTT, h.curValid = 0, false
		h.rttSampleCount = 0
		if h.css {
			h.cssRounds++
			if h.cssRounds >= hsCSSRounds {
				// Slow start ends (RFC 9406 §4.2: enter congestion
				// avoidance with ssthresh = cwnd).
				c.ssthresh = c.cwnd
				h.off, h.css = true, false
				return
			}
		}
	}
	if !h.off && s.RTT > 0 {
		if !h.curValid || s.RTT < h.currentRoundMinRTT {
			h.currentRoundMinRTT, h.curValid = s.RTT, true
		}
		h.rttSampleCount++
	}
	if s.AppLimited {
		return
	}
	n := min(float64(s.Acked)/float64(c.mss), hsL)
	if h.css {
		n /= hsCSSGrowthDiv
	}
	c.cwnd += n
	if h.off || h.rttSampleCount < hsNRTTSample || !h.curValid {
		return
	}
	if !h.css {
		if !h.lastValid {
			return
		}
		thresh := min(max(h.lastRoundMinRTT/hsMinRTTDivisor, hsMinRTTThresh), hsMaxRTTThresh)
		if h.currentRoundMinRTT >= h.lastRoundMinRTT+thresh {
			h.css, h.cssBaselineMinRTT, h.cssRounds = true, h.currentRoundMinRTT, 0
		}
	} else if h.currentRoundMinRTT < h.cssBaselineMinRTT {
		// A spurious exit: the delay came down again.
		h.css = false
	}
}

// reduce is the congestion event (§4.6) with fast convergence (§4.7).
func (c *cubic) reduce(inFlight int) {
	if !c.inEpisode {
		c.prior, c.inEpisode, c.priorValid = c.cubicState, true, true
	}
	c.hs.off, c.hs.css = true, false
	w := c.cwnd
	if fs := float64(inFlight) / float64(c.mss); fs < w && fs >= cubicMinWindowSeg {
		w = fs // an application-limited window
	}
	c.cwndPrior = w
	if w < c.wMax {
		c.wMax = w * (1 + cubicBeta) / 2
	} else {
		c.wMax = w
	}
	c.ssthresh = math.Max(w*cubicBeta, cubicMinWindowSeg)
	c.inEpoch = false
}

func (c *cubic) OnCongestionEvent(_ tcpip.MonotonicTime, inFlight int) {
	c.reduce(inFlight)
	c.cwnd = c.ssthresh
}

func (c *cubic) OnRecoveryExit(tcpip.MonotonicTime) { c.inEpisode = false }

// OnRTO follows Reno (cwnd one segment) with CUBIC's ssthresh; the first
// congestion avoidance after it starts its own plateau (§4.8).
func (c *cubic) OnRTO(_ tcpip.MonotonicTime, inFlight int) {
	c.reduce(inFlight)
	c.cwnd = 1
	c.afterRTO = true
}

// OnUndo implements CongestionUndoer (RFC 9438 §4.9): the state before
// the episode's first reduction comes back, epoch included, so that the
// window goes on as if the event had not happened.
func (c *cubic) OnUndo(tcpip.MonotonicTime) {
	if !c.priorValid {
		return
	}
	cwnd := c.cwnd
	c.cubicState = c.prior
	c.cwnd = max(c.cwnd, cwnd)
	c.inEpisode, c.priorValid = false, false
}
