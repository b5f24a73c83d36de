package tcp

import "time"

// Accessors used by the MPTCP layer (stack/mptcp), which needs a few
// figures of the subflow beyond what Info reports, on every segment and
// without building an Info.

// SendWindowScale returns the shift applied to the peer's advertised
// window (RFC 7323 §2.3), 0 when window scaling is not in use. The MPTCP
// layer scales the window field itself to track the connection-level
// window, which is relative to the Data ACK (RFC 8684 §3.3.4).
func (e *Endpoint) SendWindowScale() uint8 {
	if e.wsOK {
		return e.sndWS
	}
	return 0
}

// SndUnaRel returns the relative subflow sequence number (RFC 8684 §3.3.1:
// the first payload byte is 1) of the oldest unacknowledged byte: every
// payload byte below it has been acknowledged by the peer.
func (e *Endpoint) SndUnaRel() uint32 {
	return uint32(max(e.sndUna, 1))
}

// RTO returns the current retransmission timeout (RFC 6298), backoff
// included: the MPTCP layer sizes its data-level retransmission timer
// from its subflows'.
func (e *Endpoint) RTO() time.Duration { return e.rto }
