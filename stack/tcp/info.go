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
	// AbortOnData counts resets for new data that arrived after Close
	// (RFC 2525 §2.17; Linux's TCPAbortOnData).
	AbortOnData uint64
	// BytesBeyondEdge counts bytes outstanding beyond the peer's right
	// edge when it retreated: taken out of flight and sent again once
	// the window allowed it, without a congestion response.
	BytesBeyondEdge uint64
	// SynData is the data in the SYN (TCP Fast Open) that this endpoint
	// sent and the peer acknowledged (active open), or that it accepted
	// (passive open): Linux's TCPFastOpenActive / TCPFastOpenPassive.
	SynData int

	// Loss recovery (RFC 8985 RACK-TLP, RFC 2883 D-SACK, RFC 3522 and
	// RFC 4015 undo, RFC 6937 PRR), named after Linux's TcpExt counters.

	// MinRTT is the minimum RTT over the last 30 s; ReoWnd is RACK's
	// current reordering window (RFC 8985 §6.2).
	MinRTT, ReoWnd time.Duration
	// PacingRate is the rate a pacing controller (RateController, BBR)
	// sends at, bytes per second; zero without pacing.
	PacingRate int64
	// TCPSackRecovery counts fast recoveries with SACK (RACK-detected
	// losses), TCPRenoRecovery those without (three duplicate ACKs,
	// RFC 6582); FastRecoveries is their sum.
	TCPSackRecovery uint64
	TCPRenoRecovery uint64
	// TCPFastRetrans counts segments sent again during fast recovery,
	// TCPSlowStartRetrans during RTO recovery.
	TCPFastRetrans      uint64
	TCPSlowStartRetrans uint64
	// TCPLostRetransmit counts retransmissions that RACK found lost in
	// turn and sent again, without waiting for a timeout.
	TCPLostRetransmit uint64
	// TCPSACKReorder counts ACKs showing reordering: a segment sent once
	// delivered below one delivered before (RFC 8985 §6.2 step 3).
	TCPSACKReorder uint64
	// TCPLossProbes counts tail loss probes sent (RFC 8985 §7.3).
	TCPLossProbes uint64
	// TCPLossProbeRecovery counts probes that repaired a loss, each with
	// a congestion window reduction (RFC 8985 §7.4).
	TCPLossProbeRecovery uint64
	// TCPDSACKRecv counts D-SACK blocks received (RFC 2883);
	// TCPDSACKOfoRecv those of them above SND.UNA.
	TCPDSACKRecv    uint64
	TCPDSACKOfoRecv uint64
	// TCPDSACKOldSent counts D-SACKs sent for duplicate data below
	// RCV.NXT, TCPDSACKOfoSent for duplicates of out-of-order data.
	TCPDSACKOldSent uint64
	TCPDSACKOfoSent uint64
	// TCPFullUndo counts fast recoveries undone at their end because
	// the timestamps showed an original transmission got through or
	// every retransmission was D-SACKed (Linux's tcp_try_undo_recovery).
	TCPFullUndo uint64
	// TCPPartialUndo counts fast recoveries undone by a partial ACK whose
	// timestamp shows the hole was filled by the original (reordering).
	TCPPartialUndo uint64
	// TCPDSACKUndo counts fast recoveries undone when D-SACKs covered
	// every retransmission.
	TCPDSACKUndo uint64
	// TCPLossUndo counts retransmission timeouts undone (Eifel, RFC 3522,
	// or D-SACKs for every retransmission).
	TCPLossUndo uint64
	// TCPSpuriousRTOs counts retransmission timeouts found spurious
	// (Linux counts F-RTO's; here the timestamp echo of the first ACK
	// after the timeout, RFC 3522, or D-SACKs), each one undone.
	TCPSpuriousRTOs uint64

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
	i.InRecovery = e.ca != caOpen
	i.MinRTT = e.minRTT.get()
	e.nowOK = false // Info is no call into the protocol: do not keep the time
	i.ReoWnd = e.rackReoWnd()
	e.nowOK = false
	if e.rateCC != nil {
		i.PacingRate = e.rateCC.PacingRate()
	}
	return i
}
