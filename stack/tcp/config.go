package tcp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultMSS            = 1460 // IPv4 over Ethernet, no options
	DefaultSendBuffer     = 1 << 20
	DefaultMaxSendBuffer  = 4 << 20 // Linux's tcp_wmem[2]
	DefaultReceiveBuffer  = 128 << 10
	DefaultMaxReceiveBuf  = 6 << 20
	DefaultTimeWait       = 60 * time.Second // 2*MSL with MSL = 30 s, as Linux
	DefaultMinRTO         = 200 * time.Millisecond
	DefaultMaxRTO         = 120 * time.Second
	DefaultInitialRTO     = time.Second // RFC 6298 §2.1
	DefaultDelayedAck     = 40 * time.Millisecond
	DefaultSynRetries     = 6
	DefaultDataRetries    = 15
	DefaultCongestion     = "cubic"
	DefaultInitialCwndSeg = 10 // RFC 6928
	// MaxChunk is the largest chunk EnqueueChunk accepts and the block size
	// of the send buffer (a DSS data-level length is 16 bits, RFC 8684 §3.3).
	MaxChunk = 1<<16 - 1
	// maxOOORanges bounds the out-of-order range list of the receiver: the
	// holes it can keep open (beyond, out-of-order data is dropped). Loss
	// in a queue that overflows under slow start takes every second or
	// third segment of a window of hundreds.
	maxOOORanges = 1024
)

// Keepalive configures TCP keepalive (RFC 9293 §3.8.4; RFC 1122 §4.2.3.6).
// Idle zero disables it.
type Keepalive struct {
	Idle     time.Duration // idle time before the first probe
	Interval time.Duration // time between unanswered probes
	Count    int           // unanswered probes before the connection dies
}

// Config parameterises an Endpoint. The zero value of every field except
// Clock and Output selects a default. A Config is copied by NewEndpoint.
type Config struct {
	// Clock supplies time: NowMonotonic for RTT, timers and timestamps.
	// The core never calls AfterFunc; timers are deadlines reported by
	// NextDeadline. Required.
	Clock tcpip.Clock
	// Output transmits segments. Required.
	Output Output
	// Notify, if set, is called synchronously with readiness events (within
	// the call that caused them). It must not call back into the endpoint.
	Notify func(Events)
	// Extension hooks MPTCP into the subflow; nil for plain TCP.
	Extension Extension

	// ISS is the initial send sequence number (RFC 9293 §3.4.1). The
	// adapter computes it (RFC 6528); for passive opens the Listener does.
	ISS seqnum.Value
	// TSOffset is added to the timestamp clock (RFC 7323 §5.4 suggests a
	// per-connection random offset).
	TSOffset uint32

	// MSS is the largest payload this endpoint can receive, advertised in
	// the SYN (RFC 9293 §3.7.1): the path MTU minus IP and TCP headers.
	MSS int
	// SendBuffer bounds the bytes queued and not yet acknowledged, at
	// first: the bound grows with the congestion window (twice cwnd, as
	// Linux's tcp_sndbuf_expand) up to MaxSendBuffer, so that a sender is
	// not held back by its own buffer once the path carries more.
	SendBuffer int
	// MaxSendBuffer caps send-buffer growth; equal to SendBuffer to
	// disable it.
	MaxSendBuffer int
	// ReceiveBuffer is the initial receive buffer (and advertised window).
	ReceiveBuffer int
	// MaxReceiveBuffer caps receive-buffer auto-tuning; the window scale is
	// chosen so it can be advertised (RFC 7323 §2.3). Equal to ReceiveBuffer
	// to disable auto-tuning.
	MaxReceiveBuffer int

	// Disable* switch off negotiation of the named options.
	DisableSACK       bool
	DisableTimestamps bool
	DisableWScale     bool

	// NoDelay disables Nagle's algorithm (RFC 9293 §3.7.4).
	NoDelay bool
	// DelayedAck is the delayed-ACK timeout (RFC 9293 §3.8.6.3, Linux uses
	// 40 ms); negative disables delayed ACKs (every segment is ACKed).
	DelayedAck time.Duration
	// MinRTO, MaxRTO and InitialRTO bound the retransmission timer
	// (RFC 6298; Linux's minimum of 200 ms by default).
	MinRTO, MaxRTO, InitialRTO time.Duration
	// SynRetries and DataRetries bound retransmissions of the SYN and of
	// data before the connection fails with ErrTimeout.
	SynRetries, DataRetries int
	// TimeWait is the TIME-WAIT duration, 2*MSL (RFC 9293 §3.4.2).
	TimeWait time.Duration
	// Keepalive enables keepalive probes.
	Keepalive Keepalive

	// Congestion names a registered congestion controller ("cubic",
	// "newreno", or one added with RegisterCongestionControl).
	Congestion string
	// InitialCwnd is the initial window in segments (RFC 6928: 10).
	InitialCwnd int
	// ChallengeAckLimit bounds RFC 5961 challenge ACKs per second (Linux's
	// tcp_challenge_ack_limit); zero selects 1000.
	ChallengeAckLimit int
}

func (c *Config) setDefaults() {
	if c.MSS <= 0 {
		c.MSS = DefaultMSS
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.MaxSendBuffer <= 0 {
		c.MaxSendBuffer = max(DefaultMaxSendBuffer, c.SendBuffer)
	}
	if c.MaxSendBuffer < c.SendBuffer {
		c.MaxSendBuffer = c.SendBuffer
	}
	if c.ReceiveBuffer <= 0 {
		c.ReceiveBuffer = DefaultReceiveBuffer
	}
	if c.MaxReceiveBuffer <= 0 {
		c.MaxReceiveBuffer = DefaultMaxReceiveBuf
	}
	if c.MaxReceiveBuffer < c.ReceiveBuffer {
		c.MaxReceiveBuffer = c.ReceiveBuffer
	}
	if c.ReceiveBuffer < 2*c.MSS {
		c.ReceiveBuffer = 2 * c.MSS
	}
	if c.DelayedAck == 0 {
		c.DelayedAck = DefaultDelayedAck
	}
	if c.MinRTO <= 0 {
		c.MinRTO = DefaultMinRTO
	}
	if c.MaxRTO <= 0 {
		c.MaxRTO = DefaultMaxRTO
	}
	if c.InitialRTO <= 0 {
		c.InitialRTO = DefaultInitialRTO
	}
	if c.SynRetries <= 0 {
		c.SynRetries = DefaultSynRetries
	}
	if c.DataRetries <= 0 {
		c.DataRetries = DefaultDataRetries
	}
	if c.TimeWait <= 0 {
		c.TimeWait = DefaultTimeWait
	}
	if c.Congestion == "" {
		c.Congestion = DefaultCongestion
	}
	if c.InitialCwnd <= 0 {
		c.InitialCwnd = DefaultInitialCwndSeg
	}
	if c.ChallengeAckLimit <= 0 {
		c.ChallengeAckLimit = 1000
	}
	if c.Keepalive.Idle > 0 {
		if c.Keepalive.Interval <= 0 {
			c.Keepalive.Interval = 75 * time.Second
		}
		if c.Keepalive.Count <= 0 {
			c.Keepalive.Count = 9
		}
	}
}

// windowScaleFor returns the smallest shift such that buf fits in a 16-bit
// window (RFC 7323 §2.3, at most 14).
func windowScaleFor(buf int) uint8 {
	var s uint8
	for s < 14 && buf > 0xffff<<s {
		s++
	}
	return s
}
