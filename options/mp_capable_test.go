package options

import "testing"

// Keys used in the MP_CAPABLE vectors.
const (
	testKeyA = 0x0102030405060708 // "01 02 03 04 05 06 07 08"
	testKeyB = 0x1112131415161718 // "11 12 13 14 15 16 17 18"
)

// capableVectors follow RFC 8684 §3.1, Figure 4.
var capableVectors = []vector{
	{name: "MP_CAPABLE SYN A,H", raw: hx("1e 04 01 81"),
		want: MPCapable{Form: CapableSYN, Version: 1, Flags: 0x81}},
	{name: "MP_CAPABLE SYN H,C", raw: hx("1e 04 01 21"),
		want: MPCapable{Form: CapableSYN, Version: 1, Flags: CapableFlagNoNewSubflowsToSource | CapableFlagHMACSHA256}},
	{name: "MP_CAPABLE SYN/ACK", raw: hx("1e 0c 01 01 01 02 03 04 05 06 07 08"),
		want: MPCapable{Form: CapableSYNACK, Version: 1, Flags: 0x01, SenderKey: testKeyA}},
	{name: "MP_CAPABLE ACK", raw: hx("1e 14 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18"),
		want: MPCapable{Form: CapableACK, Version: 1, Flags: 0x01, SenderKey: testKeyA, ReceiverKey: testKeyB}},
	{name: "MP_CAPABLE ACK+data 22", raw: hx("1e 16 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 05 a0"),
		want: MPCapable{Form: CapableACKData, Version: 1, Flags: 0x01, SenderKey: testKeyA, ReceiverKey: testKeyB, DataLen: 1440}},
	{name: "MP_CAPABLE ACK+data 24 checksum", raw: hx("1e 18 01 81 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 05 a0 b3 4f"),
		want: MPCapable{Form: CapableACKData, Version: 1, Flags: 0x81, SenderKey: testKeyA, ReceiverKey: testKeyB, DataLen: 1440, HasChecksum: true, Checksum: 0xb34f}},
	{name: "MP_CAPABLE ACK+data, all flags", raw: hx("1e 16 01 ff 11 12 13 14 15 16 17 18 01 02 03 04 05 06 07 08 00 01"),
		want: MPCapable{Form: CapableACKData, Version: 1, Flags: 0xff, SenderKey: testKeyB, ReceiverKey: testKeyA, DataLen: 1}},
}

var capableBad = []badVector{
	{"MP_CAPABLE length 3", hx("1e 03 01"), ErrBadLength},
	{"MP_CAPABLE length 5", hx("1e 05 01 81 00"), ErrBadLength},
	{"MP_CAPABLE length 13", hx("1e 0d 01 01 01 02 03 04 05 06 07 08 00"), ErrBadLength},
	{"MP_CAPABLE length 21", hx("1e 15 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 00"), ErrBadLength},
	{"MP_CAPABLE length 23", hx("1e 17 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 00 01 02"), ErrBadLength},
	{"MP_CAPABLE length 25", hx("1e 19 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 00 01 02 03 04"), ErrBadLength},
	{"MP_CAPABLE v0 SYN (RFC 6824, with key)", hx("1e 0c 00 81 01 02 03 04 05 06 07 08"), ErrBadVersion},
	{"MP_CAPABLE v2 SYN", hx("1e 04 02 81"), ErrBadVersion},
}

func TestMPCapableBadVersionKeepsValue(t *testing.T) {
	for _, tc := range []struct {
		raw  []byte
		want MPCapable
	}{
		{hx("1e 0c 00 81 01 02 03 04 05 06 07 08"), MPCapable{Form: CapableSYNACK, Version: 0, Flags: 0x81, SenderKey: testKeyA}},
		{hx("1e 04 02 81"), MPCapable{Form: CapableSYN, Version: 2, Flags: 0x81}},
		{hx("1e 04 0f 01"), MPCapable{Form: CapableSYN, Version: 15, Flags: 0x01}},
	} {
		got, err := ParseMPCapable(tc.raw)
		if err != ErrBadVersion || got != tc.want {
			t.Errorf("ParseMPCapable(% x) = %+v, %v; want %+v, ErrBadVersion", tc.raw, got, err, tc.want)
		}
	}
}

func TestMPCapableLenIgnoresChecksumOutsideACKData(t *testing.T) {
	for _, f := range []CapableForm{CapableSYN, CapableSYNACK, CapableACK} {
		m := MPCapable{Form: f, Version: 1, HasChecksum: true, Checksum: 0xffff}
		plain := MPCapable{Form: f, Version: 1}
		if m.Len() != plain.Len() || string(m.Append(nil)) != string(plain.Append(nil)) {
			t.Errorf("%v: HasChecksum changed the encoding", f)
		}
	}
}

func TestMPCapableInvalidFormEncodesNothing(t *testing.T) {
	m := MPCapable{Form: 9, Version: 1}
	if m.Len() != 0 || len(m.Append(nil)) != 0 {
		t.Errorf("invalid form: Len %d, Append % x", m.Len(), m.Append(nil))
	}
	if got := CapableForm(9).String(); got != "form(9)" {
		t.Errorf("String = %q", got)
	}
	for f, want := range map[CapableForm]string{CapableSYN: "SYN", CapableSYNACK: "SYN/ACK", CapableACK: "ACK", CapableACKData: "ACK+data"} {
		if f.String() != want {
			t.Errorf("%d.String() = %q, want %q", f, f.String(), want)
		}
	}
}
