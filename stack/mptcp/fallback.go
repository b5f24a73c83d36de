package mptcp

// FallbackReason says why a connection runs as plain TCP (RFC 8684 §3.7).
type FallbackReason uint8

// Fallback reasons.
const (
	FallbackNone FallbackReason = iota
	// FallbackSynAckNoMPCapable: the SYN/ACK carried no usable MP_CAPABLE
	// (a peer without MPTCP, or a middlebox stripped it).
	FallbackSynAckNoMPCapable
	// FallbackSynNoMPCapable: (server) the SYN carried no MP_CAPABLE.
	FallbackSynNoMPCapable
	// FallbackAckNoMPCapable: (server) the ACK completing the handshake
	// carried neither MP_CAPABLE nor DSS: options stripped after the SYN.
	FallbackAckNoMPCapable
	// FallbackDataNoDSS: data arrived that no mapping covers before any
	// mapping did: MPTCP options stripped from data after the handshake.
	FallbackDataNoDSS
	// FallbackInfiniteMapping: the peer sent an infinite mapping.
	FallbackInfiniteMapping
	// FallbackAckNoDSS: our data was acknowledged without a Data ACK:
	// MPTCP options stripped from the peer's segments.
	FallbackAckNoDSS
)

var fallbackNames = [...]string{
	FallbackNone:              "",
	FallbackSynAckNoMPCapable: "SYN/ACK without MP_CAPABLE",
	FallbackSynNoMPCapable:    "SYN without MP_CAPABLE",
	FallbackAckNoMPCapable:    "handshake ACK without MP_CAPABLE",
	FallbackDataNoDSS:         "data without DSS mapping",
	FallbackInfiniteMapping:   "infinite mapping received",
	FallbackAckNoDSS:          "data acknowledged without DSS",
}

func (r FallbackReason) String() string {
	if int(r) < len(fallbackNames) {
		return fallbackNames[r]
	}
	return "unknown fallback"
}
