package options

import "testing"

// rstVectors follow RFC 8684 §3.6, Figure 15.
var rstVectors = []vector{
	{name: "MP_TCPRST transient middlebox", raw: hx("1e 04 81 06"),
		want: MPTCPRst{Flags: MPTCPRstTransient, Reason: RstReasonMiddlebox}},
	{name: "MP_TCPRST lack of resources", raw: hx("1e 04 80 02"),
		want: MPTCPRst{Reason: RstReasonResources}},
	{name: "MP_TCPRST all flags, unassigned reason", raw: hx("1e 04 8f 7f"),
		want: MPTCPRst{Flags: 0xf, Reason: 0x7f}},
}

var rstBad = []badVector{
	{"MP_TCPRST length 3", hx("1e 03 81"), ErrBadLength},
	{"MP_TCPRST length 5", hx("1e 05 80 02 00"), ErrBadLength},
}

func TestMPTCPRstTransient(t *testing.T) {
	if !(MPTCPRst{Flags: 0x9}).Transient() || (MPTCPRst{Flags: 0x8}).Transient() {
		t.Error("Transient must test bit 0x1 only")
	}
}

func TestRstReasonString(t *testing.T) {
	for _, tc := range []struct {
		r    RstReason
		want string
	}{
		{RstReasonUnspecified, "unspecified error"},
		{RstReasonMPTCPError, "MPTCP-specific error"},
		{RstReasonResources, "lack of resources"},
		{RstReasonAdminProhibited, "administratively prohibited"},
		{RstReasonTooMuchOutstanding, "too much outstanding data"},
		{RstReasonUnacceptablePerformance, "unacceptable performance"},
		{RstReasonMiddlebox, "middlebox interference"},
		{7, "reason(7)"},
		{255, "reason(255)"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("RstReason(%d).String() = %q, want %q", uint8(tc.r), got, tc.want)
		}
	}
	// The constants are untyped so that they fit the uint8 field directly.
	_ = MPTCPRst{Reason: RstReasonMPTCPError}
}
