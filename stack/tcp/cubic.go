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

// cubic implements CUBIC (RFC 9438): window growth as a cubic function of
// the time since the last congestion event, with the Reno-friendly region
// (§4.3) and fast convergence (§4.7). Windows are kept in segments as
// floats internally and reported in bytes.
type cubic struct {
	p        CCParams
	mss      int
	cwnd     float64 // segments
	ssthresh float64 // segments
	wMax     float64 // segments, window before the last reduction
	wLastMax float64
	k        float64 // seconds
	epoch    tcpip.MonotonicTime
	inEpoch  bool
	wEst     float64 // Reno-friendly estimate, segments
	cwndPrev float64 // cwnd_prior: cwnd before the last reduction
}

var _ CongestionControl = (*cubic)(nil)

func newCubic(p CCParams) CongestionControl {
	return &cubic{
		p:        p,
		mss:      p.MSS,
		cwnd:     float64(p.InitialCwnd) / float64(p.MSS),
		ssthresh: math.Inf(1),
	}
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
	// Keep the window in bytes constant.
	ratio := float64(c.mss) / float64(m)
	c.cwnd *= ratio
	c.wMax *= ratio
	c.wEst *= ratio
	if !math.IsInf(c.ssthresh, 1) {
		c.ssthresh *= ratio
	}
	c.mss = m
}

func (c *cubic) OnAck(s *AckSample) {
	if s.AppLimited {
		return
	}
	seg := float64(s.Acked) / float64(c.mss)
	if c.cwnd < c.ssthresh {
		// Slow start (RFC 9438 §4.10 defers to RFC 5681), byte counting
		// with L = 2.
		c.cwnd += min(seg, 2)
		return
	}
	if !c.inEpoch {
		c.inEpoch = true
		c.epoch = s.Now
		if c.cwndPrev == 0 {
			c.cwndPrev = c.cwnd
		}
		if c.wMax < c.cwnd {
			c.k = 0
			c.wMax = c.cwnd
		} else {
			c.k = math.Cbrt((c.wMax - c.cwnd) / cubicC)
		}
		c.wEst = c.cwnd
	}
	t := s.Now.Sub(c.epoch).Seconds()
	// RFC 9438 §4.2: target W_cubic(t + RTT).
	rtt := time.Duration(0)
	if c.p.Subflow != nil {
		rtt = c.p.Subflow.SRTT()
	}
	d := t + rtt.Seconds() - c.k
	target := cubicC*d*d*d + c.wMax
	if target < c.cwnd {
		target = c.cwnd
	} else if target > 1.5*c.cwnd {
		target = 1.5 * c.cwnd
	}
	// Reno-friendly region (§4.3): alpha = 3(1-beta)/(1+beta) until W_est
	// reaches cwnd_prev, then 1.
	alpha := 3 * (1 - cubicBeta) / (1 + cubicBeta)
	if c.wEst >= c.cwndPrev {
		alpha = 1
	}
	c.wEst += alpha * seg / c.cwnd
	if c.wEst > target {
		target = c.wEst
	}
	c.cwnd += (target - c.cwnd) * seg / c.cwnd
}

func (c *cubic) reduce(now tcpip.MonotonicTime) {
	c.cwndPrev = c.cwnd
	// Fast convergence (§4.7).
	if c.cwnd < c.wLastMax {
		c.wLastMax = c.cwnd
		c.wMax = c.cwnd * (1 + cubicBeta) / 2
	} else {
		c.wLastMax = c.cwnd
		c.wMax = c.cwnd
	}
	c.ssthresh = math.Max(c.cwnd*cubicBeta, 2)
	c.inEpoch = false
}

func (c *cubic) OnCongestionEvent(now tcpip.MonotonicTime, inFlight int) {
	// Use the flight size if it is smaller (an app-limited window).
	if fs := float64(inFlight) / float64(c.mss); fs < c.cwnd && fs >= 2 {
		c.cwnd = fs
	}
	c.reduce(now)
	c.cwnd = c.ssthresh
}

func (c *cubic) OnRecoveryExit(tcpip.MonotonicTime) {}

func (c *cubic) OnRTO(now tcpip.MonotonicTime, inFlight int) {
	c.reduce(now)
	c.cwnd = 1
}
