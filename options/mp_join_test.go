package options

import "testing"

// joinVectors follow RFC 8684 §3.2, Figures 5-7.
var joinVectors = []vector{
	{name: "MP_JOIN SYN", raw: hx("1e 0c 10 02 a1 b2 c3 d4 0a 0b 0c 0d"),
		want: MPJoin{Form: JoinSYN, AddrID: 2, Token: 0xa1b2c3d4, Nonce: 0x0a0b0c0d}},
	{name: "MP_JOIN SYN backup", raw: hx("1e 0c 11 05 00 00 00 01 ff ff ff ff"),
		want: MPJoin{Form: JoinSYN, Backup: true, AddrID: 5, Token: 1, Nonce: 0xffffffff}},
	{name: "MP_JOIN SYN/ACK", raw: hx("1e 10 10 03 01 02 03 04 05 06 07 08 c0 ff ee 00"),
		want: MPJoin{Form: JoinSYNACK, AddrID: 3, TruncatedHMAC: 0x0102030405060708, Nonce: 0xc0ffee00}},
	{name: "MP_JOIN SYN/ACK backup", raw: hx("1e 10 11 00 ff ee dd cc bb aa 99 88 00 00 00 07"),
		want: MPJoin{Form: JoinSYNACK, Backup: true, TruncatedHMAC: 0xffeeddccbbaa9988, Nonce: 7}},
	{name: "MP_JOIN ACK", raw: hx("1e 18 10 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13"),
		want: MPJoin{Form: JoinACK, HMAC: [20]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}}},
}

var joinBad = []badVector{
	{"MP_JOIN length 3", hx("1e 03 10"), ErrBadLength},
	{"MP_JOIN length 11", hx("1e 0b 10 02 a1 b2 c3 d4 0a 0b 0c"), ErrBadLength},
	{"MP_JOIN length 13", hx("1e 0d 10 02 a1 b2 c3 d4 0a 0b 0c 0d 0e"), ErrBadLength},
	{"MP_JOIN length 20", hx("1e 14 10 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"), ErrBadLength},
	{"MP_JOIN length 25", hx("1e 19 10 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14"), ErrBadLength},
}

// TestMPJoinACKIgnoresOtherFields checks that the ACK form encodes only the
// HMAC: Backup and AddrID belong to the SYN forms.
func TestMPJoinACKIgnoresOtherFields(t *testing.T) {
	j := MPJoin{Form: JoinACK, Backup: true, AddrID: 9, Token: 1, Nonce: 2, TruncatedHMAC: 3}
	want := hx("1e 18 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")
	if got := j.Append(nil); string(got) != string(want) {
		t.Errorf("Append = % x, want % x", got, want)
	}
	if (MPJoin{Form: 7}).Len() != 0 || len((MPJoin{Form: 7}).Append(nil)) != 0 {
		t.Error("invalid form must encode nothing")
	}
	for f, want := range map[JoinForm]string{JoinSYN: "SYN", JoinSYNACK: "SYN/ACK", JoinACK: "ACK", 5: "form(5)"} {
		if f.String() != want {
			t.Errorf("%d.String() = %q, want %q", f, f.String(), want)
		}
	}
}
