package tcp

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// AckSample is what a congestion controller learns from one ACK.
type AckSample struct {
	Now tcpip.MonotonicTime
	// Acked is the number of bytes newly acknowledged, cumulatively or by
	// SACK.
	Acked int
	// RTT is the sample taken from this ACK, zero when none (Karn's rule).
	RTT time.Duration
	// InFlight is the sender's estimate of bytes in flight before the ACK.
	InFlight int
	// AppLimited is set when the sender was not using its whole cwnd: a
	// controller should not grow the window then (RFC 7661).
	AppLimited bool
	// MinRTT is the connection's minimum RTT over a recent window, zero
	// when unknown.
	MinRTT time.Duration
	// NewRound is set on the first ACK of a new round trip: the first to
	// acknowledge data sent after the previous round began (RFC 9406 §4.2:
	// the ACK covers windowEnd, SND.NXT at the start of the round).
	NewRound bool

	// The rest is filled in for a RateController only.

	// Delivered is the total of bytes delivered (acknowledged or SACKed)
	// so far, this ACK's included; PriorDelivered the total when the most
	// recently sent segment this ACK delivers was sent.
	Delivered, PriorDelivered uint64
	// RateDelivered bytes were delivered over RateInterval: the delivery
	// rate sample (draft-cheng-iccrg-delivery-rate-estimation), zero
	// interval when there is none; RateAppLimited marks a sample taken
	// while the sender had less to send than its window allowed.
	RateDelivered  int
	RateInterval   time.Duration
	RateAppLimited bool
	// Lost is the bytes this ACK made the sender deem lost.
	Lost int
	// InFlightAfter is the data in flight once the ACK is processed.
	InFlightAfter int
	// Recovery and Loss report the sender's state after the ACK: fast
	// recovery, or recovery after a timeout.
	Recovery, Loss bool
	// Reordering reports that the path was seen to reorder segments
	// (RFC 8985's RACK.reordering_seen): RTT samples may then come from
	// segments or ACKs that jumped ahead, far below the path's RTT.
	Reordering bool
}

// CongestionControl computes the congestion window of one subflow
// (RFC 5681). All amounts are bytes. The endpoint calls it synchronously;
// it is not safe for concurrent use. Loss recovery itself (which bytes to
// retransmit, pipe) is the endpoint's (RFC 6675); the controller only sets
// cwnd and ssthresh.
type CongestionControl interface {
	// Name is the registered name.
	Name() string
	// OnAck is called for every ACK that acknowledges new data outside
	// loss recovery.
	OnAck(s *AckSample)
	// OnCongestionEvent is called once when fast recovery starts (three
	// duplicate ACKs or SACK loss detection): it must set ssthresh and the
	// cwnd to use during recovery.
	OnCongestionEvent(now tcpip.MonotonicTime, inFlight int)
	// OnRecoveryExit is called when fast recovery or the recovery after a
	// timeout ends (the recovery point is cumulatively acknowledged), or
	// right after OnCongestionEvent when a tail loss probe repaired a
	// loss (RFC 8985 §7.4), unless the episode was undone (OnUndo).
	OnRecoveryExit(now tcpip.MonotonicTime)
	// OnRTO is called when the retransmission timer expires (RFC 5681 §3.1:
	// ssthresh from flight size, cwnd to one segment).
	OnRTO(now tcpip.MonotonicTime, inFlight int)
	// SetMSS changes the segment size (after negotiation or PMTU change).
	SetMSS(mss int)
	// Cwnd and Ssthresh return the current values in bytes.
	Cwnd() int
	Ssthresh() int
}

// CongestionUndoer is implemented by a controller that can revert its
// window reductions once they prove spurious: the retransmissions were not
// needed (RFC 3522 Eifel detection, RFC 4015 response; D-SACKs, RFC 2883
// and RFC 3708; RFC 9438 §4.9 for CUBIC). An episode is a run of
// OnCongestionEvent and OnRTO calls up to OnRecoveryExit; OnUndo returns
// the controller to the state it had before the first reduction of the
// last episode, keeping the current window if that is larger (as Linux's
// tcp_undo_cwnd_reduction), also after OnRecoveryExit (D-SACKs come in
// after the recovery they undo); a second OnUndo does nothing.
// Controllers without it keep their reductions.
type CongestionUndoer interface {
	OnUndo(now tcpip.MonotonicTime)
}

// RateController is implemented by a controller that works from delivery
// rate samples and sets its window in every state, as BBR does: the
// endpoint then fills in the rate fields of AckSample and calls OnAck for
// every ACK, during recovery too, does not impose PRR (RFC 6937) on it,
// and paces transmissions at PacingRate (bytes per second; zero: no
// pacing). OnCongestionEvent and OnRTO still mark the start of a recovery
// (a controller may keep its window then and adjust it in OnAck).
type RateController interface {
	CongestionControl
	PacingRate() int64
}

// SubflowStats is the read-only view of an endpoint a controller may use;
// coupled controllers (LIA, RFC 6356; OLIA) keep the views of every
// subflow of a connection and read their windows and RTTs.
type SubflowStats interface {
	SRTT() time.Duration
	MSS() int
	CongestionWindow() int
}

// CCParams is given to a controller factory.
type CCParams struct {
	MSS         int
	InitialCwnd int // bytes
	Subflow     SubflowStats
}

// CCFactory builds a congestion controller.
type CCFactory func(p CCParams) CongestionControl

var ccRegistry = struct {
	sync.RWMutex
	m map[string]CCFactory
}{m: map[string]CCFactory{
	"newreno": newNewReno,
	"reno":    newNewReno,
	"cubic":   newCubic,
	"bbr":     newBBR,
}}

// RegisterCongestionControl makes a controller available by name to
// Config.Congestion. Registering a name twice replaces the factory.
func RegisterCongestionControl(name string, f CCFactory) {
	ccRegistry.Lock()
	ccRegistry.m[name] = f
	ccRegistry.Unlock()
}

// CongestionControls returns the registered names, sorted.
func CongestionControls() []string {
	ccRegistry.RLock()
	defer ccRegistry.RUnlock()
	names := make([]string, 0, len(ccRegistry.m))
	for n := range ccRegistry.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewCongestionControl builds the named controller.
func NewCongestionControl(name string, p CCParams) (CongestionControl, error) {
	ccRegistry.RLock()
	f, ok := ccRegistry.m[name]
	ccRegistry.RUnlock()
	if !ok {
		return nil, fmt.Errorf("tcp: unknown congestion control %q", name)
	}
	return f(p), nil
}

// newReno is RFC 5681 congestion avoidance with RFC 3465 appropriate byte
// counting (L = 2*SMSS) in slow start; fast recovery is RFC 6582's, driven
// by the endpoint.
type newReno struct {
	mss      int
	cwnd     int
	ssthresh int
	acc      int // bytes acknowledged since the last cwnd increase (CA)
	// prior is the state before the first reduction of the episode
	// (CongestionUndoer).
	prior      struct{ cwnd, ssthresh int }
	inEpisode  bool // the next reduction belongs to the episode
	priorValid bool // prior may be restored
}

var (
	_ CongestionControl = (*newReno)(nil)
	_ CongestionUndoer  = (*newReno)(nil)
)

// save keeps the state before the first reduction of an episode.
func (r *newReno) save() {
	if !r.inEpisode {
		r.prior.cwnd, r.prior.ssthresh = r.cwnd, r.ssthresh
		r.inEpisode, r.priorValid = true, true
	}
}

// OnUndo implements CongestionUndoer.
func (r *newReno) OnUndo(tcpip.MonotonicTime) {
	if !r.priorValid {
		return
	}
	r.cwnd = max(r.cwnd, r.prior.cwnd)
	r.ssthresh = max(r.ssthresh, r.prior.ssthresh)
	r.inEpisode, r.priorValid = false, false
}

func newNewReno(p CCParams) CongestionControl {
	return &newReno{mss: p.MSS, cwnd: p.InitialCwnd, ssthresh: 1 << 30}
}

func (r *newReno) Name() string  { return "newreno" }
func (r *newReno) Cwnd() int     { return r.cwnd }
func (r *newReno) Ssthresh() int { return r.ssthresh }
func (r *newReno) SetMSS(m int)  { r.mss = m }

func (r *newReno) OnAck(s *AckSample) {
	if s.AppLimited {
		return
	}
	if r.cwnd < r.ssthresh {
		r.cwnd += min(s.Acked, 2*r.mss)
		return
	}
	r.acc += s.Acked
	if r.acc >= r.cwnd {
		r.acc -= r.cwnd
		r.cwnd += r.mss
	}
}

func (r *newReno) OnCongestionEvent(_ tcpip.MonotonicTime, inFlight int) {
	r.save()
	r.ssthresh = max(inFlight/2, 2*r.mss)
	r.cwnd = r.ssthresh
	r.acc = 0
}

func (r *newReno) OnRecoveryExit(tcpip.MonotonicTime) { r.inEpisode = false }

func (r *newReno) OnRTO(_ tcpip.MonotonicTime, inFlight int) {
	r.save()
	r.ssthresh = max(inFlight/2, 2*r.mss)
	r.cwnd = r.mss
	r.acc = 0
}
