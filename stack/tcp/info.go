package tcp

import "time"

// Info is a snapshot of an endpoint's state and counters, in the spirit of
// Linux's struct tcp_info.
type Info struct {
	State                State
	SRTT, RTTVar, RTO    time.Duration
	SndMSS, RcvMSS       int
	Cwnd, Ssthresh       int
	BytesInFlight        int
	SndWnd, RcvWnd       int
	SndBuffer, RcvBuffer int // current bounds of the send and receive buffers
	SndWScale, RcvWScale uint8
	SACK, Timestamps     bool
	InRecovery           bool

	SegsOut, SegsIn  uint64
	BytesSent        uint64 // payload bytes transmitted, retransmissions included
	BytesRetrans     uint64 // payload bytes retransmitted
	BytesAcked       uint64
	BytesReceived    uint64 // in-order payload bytes received
	BytesRead        uint64
	Retransmits      uint64 // retransmitted segments
	RTOs             uint64 // retransmission timer expirations
	FastRecoveries   uint64
	DupAcksIn        uint64
	OutOfOrderSegs   uint64
	ChallengeAcks    uint64
	PAWSDrops        uint64
	ZeroWindowProbes uint64 // persist-timer probes sent (Linux's TCPWinProbe)
	KeepaliveProbes  uint64
	DroppedSegs      uint64 // unacceptable or invalid segments dropped

	// WindowRetreats counts ACKs that moved the peer's right edge
	// (SND.UNA+SND.WND) back: a shrinking window (RFC 9293 §3.8.6.2.2),
	// which kernel MPTCP subflows advertise since they share one
	// connection-level window; Linux only logs it ("Peer ... unexpectedly
	// shrunk window").
	WindowRetreats uint64
	// SeqClamped counts pure ACKs and RSTs sent with SEQ at the peer's
	// right edge instead of SND.NXT, which lay beyond it and would be
	// dropped (TcpExtBeyondWindow at a Linux peer): Linux's
	// tcp_acceptable_seq.
	SeqClamped uint64
	// BytesBeyondEdge counts bytes outstanding beyond the peer's right
	// edge when it retreated: taken out of flight and sent again once
	// the window allowed it, without a congestion response.
	BytesBeyondEdge uint64

	pending Events
}

// Info returns a snapshot of the endpoint's state and counters.
func (e *Endpoint) Info() Info {
	i := e.info
	i.pending = 0
	i.State = e.state
	i.SRTT, i.RTTVar, i.RTO = e.srtt, e.rttvar, e.rto
	i.SndMSS, i.RcvMSS = e.sndMSS, e.cfg.MSS
	i.Cwnd, i.Ssthresh = e.cc.Cwnd(), e.cc.Ssthresh()
	i.BytesInFlight = e.pipe()
	i.SndWnd = int(e.sndWnd)
	if e.rcvAdvEdge > e.rb.nxt {
		i.RcvWnd = int(e.rcvAdvEdge - e.rb.nxt)
	}
	i.SndBuffer, i.RcvBuffer = e.sb.limit, e.rb.size
	i.SndWScale, i.RcvWScale = e.sndWS, e.rcvWS
	if !e.wsOK {
		i.SndWScale, i.RcvWScale = 0, 0
	}
	i.SACK, i.Timestamps = e.sackOK, e.tsOK
	i.InRecovery = e.inRecovery
	return i
}
