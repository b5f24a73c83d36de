package options

import "strconv"

// lenMPTCPRst is the MP_TCPRST length (RFC 8684 §3.6).
const lenMPTCPRst = 4

// MPTCPRstTransient is the T flag of MP_TCPRST: the error is transient and
// the subflow may be retried (RFC 8684 §3.6). U, V and W (0x8, 0x4, 0x2) are
// unassigned.
const MPTCPRstTransient = 0x1

// MP_TCPRST reason codes (RFC 8684 §3.6 and the IANA "MPTCP TCPRST Reason
// Codes" registry). They are untyped so that they fit MPTCPRst.Reason (a
// uint8) and RstReason alike.
const (
	RstReasonUnspecified             = 0x0 // unspecified error
	RstReasonMPTCPError              = 0x1 // MPTCP-specific error
	RstReasonResources               = 0x2 // lack of resources
	RstReasonAdminProhibited         = 0x3 // administratively prohibited
	RstReasonTooMuchOutstanding      = 0x4 // too much outstanding data
	RstReasonUnacceptablePerformance = 0x5 // unacceptable performance
	RstReasonMiddlebox               = 0x6 // middlebox interference
)

// RstReason is an MP_TCPRST reason code with a name; convert
// MPTCPRst.Reason to it for printing.
type RstReason uint8

// String returns the RFC 8684 §3.6 description of the reason, or
// "reason(N)" for an unassigned code.
func (r RstReason) String() string {
	switch r {
	case RstReasonUnspecified:
		return "unspecified error"
	case RstReasonMPTCPError:
		return "MPTCP-specific error"
	case RstReasonResources:
		return "lack of resources"
	case RstReasonAdminProhibited:
		return "administratively prohibited"
	case RstReasonTooMuchOutstanding:
		return "too much outstanding data"
	case RstReasonUnacceptablePerformance:
		return "unacceptable performance"
	case RstReasonMiddlebox:
		return "middlebox interference"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// MPTCPRst is the MP_TCPRST option (RFC 8684 §3.6), carried on a RST to say
// why the subflow is reset.
//
// Only length 4 is accepted, as in Linux. Linux also ignores the option on a
// segment without the RST flag; that check is the caller's.
type MPTCPRst struct {
	// Flags is the low nibble of byte 2: U V W T, of which only T
	// (MPTCPRstTransient) is defined. All four bits are kept.
	Flags uint8
	// Reason is one of the RstReason* codes (any byte is kept).
	Reason uint8
}

// Transient reports whether the T flag is set.
func (r MPTCPRst) Transient() bool { return r.Flags&MPTCPRstTransient != 0 }

// ParseMPTCPRst decodes an MP_TCPRST option (RFC 8684 §3.6). It does not
// allocate.
func ParseMPTCPRst(opt []byte) (MPTCPRst, error) {
	o, err := subHeader(opt, SubtypeMPTCPRst)
	if err != nil {
		return MPTCPRst{}, err
	}
	if len(o) != lenMPTCPRst {
		return MPTCPRst{}, ErrBadLength
	}
	return MPTCPRst{Flags: o[2] & 0x0f, Reason: o[3]}, nil
}

// Subtype returns SubtypeMPTCPRst.
func (MPTCPRst) Subtype() Subtype { return SubtypeMPTCPRst }

// Len returns 4.
func (MPTCPRst) Len() int { return lenMPTCPRst }

// Append appends the option; only the low nibble of Flags is written.
func (r MPTCPRst) Append(b []byte) []byte {
	b = appendHeader(b, lenMPTCPRst, SubtypeMPTCPRst, r.Flags)
	return append(b, r.Reason)
}
