package options

import (
	"bytes"
	"reflect"
	"testing"
)

// A Linux client SYN (MSS, SACK_PERM+TS, NOP+WS, MP_CAPABLE) and a data
// segment (NOP,NOP,TS, DSS ack64+map64 + NOP,NOP), laid out by hand.
var (
	linuxSYN  = hx("02 04 05 b4 04 02 08 0a 00 00 03 e8 00 00 00 00 01 03 03 07 1e 04 01 81")
	linuxData = hx("01 01 08 0a 00 00 03 e9 00 00 07 d0 1e 1a 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 01 01")
)

// tcpCase is a valid option area and its decoding.
type tcpCase struct {
	name string
	in   []byte
	want TCPOptions
}

var tcpCases = []tcpCase{
	{"empty", nil, TCPOptions{}},
	{"Linux SYN", linuxSYN, TCPOptions{
		HasMSS: true, MSS: 1460, SACKPermitted: true,
		HasTimestamp: true, TSVal: 1000, TSEcr: 0,
		HasWindowScale: true, WindowScale: 7,
		NumMPTCP: 1, MPTCP: [4][]byte{hx("1e 04 01 81")},
	}},
	{"Linux data", linuxData, TCPOptions{
		HasTimestamp: true, TSVal: 1001, TSEcr: 2000,
		NumMPTCP: 1, MPTCP: [4][]byte{hx("1e 1a 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0")},
	}},
	{"SACK two blocks", hx("01 01 05 12 00 00 00 0a 00 00 00 14 00 00 00 1e 00 00 00 28"), TCPOptions{
		NumSACKBlocks: 2, SACKBlocks: [4]SACKBlock{{10, 20}, {30, 40}},
	}},
	{"SACK four blocks", hx("05 22 00 00 00 01 00 00 00 02 00 00 00 03 00 00 00 04 00 00 00 05 00 00 00 06 00 00 00 07 00 00 00 08"), TCPOptions{
		NumSACKBlocks: 4, SACKBlocks: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}},
	}},
	{"window scale above 14 kept", hx("03 03 1e 00"), TCPOptions{HasWindowScale: true, WindowScale: 30}},
	{"EOL stops the walk", hx("01 01 00 00 02 04 05 b4"), TCPOptions{}},
	{"EOL after MSS, garbage after EOL", hx("02 04 05 b4 00 ff 01"), TCPOptions{HasMSS: true, MSS: 1460}},
	{"unknown kind skipped", hx("fe 04 aa bb 02 04 05 b4"), TCPOptions{HasMSS: true, MSS: 1460}},
	{"later MSS wins", hx("02 04 05 b4 02 04 05 dc"), TCPOptions{HasMSS: true, MSS: 1500}},
	{"five MPTCP options", hx("1e 03 51 1e 03 50 1e 04 80 00 1e 03 51 1e 03 50"), TCPOptions{
		NumMPTCP: 4, MPTCP: [4][]byte{hx("1e 03 51"), hx("1e 03 50"), hx("1e 04 80 00"), hx("1e 03 51")},
		DroppedMPTCP: 1,
	}},
	{"MPTCP option with bad subtype length kept raw", hx("1e 05 20 01 00"), TCPOptions{
		NumMPTCP: 1, MPTCP: [4][]byte{hx("1e 05 20 01 00")},
	}},
}

func TestParseTCPOptions(t *testing.T) {
	for _, tc := range tcpCases {
		t.Run(tc.name, func(t *testing.T) {
			// Start from a dirty struct: ParseTCPOptions must reset it.
			got := TCPOptions{HasMSS: true, MSS: 1, NumSACKBlocks: 3, NumMPTCP: 2, DroppedMPTCP: 7}
			if err := ParseTCPOptions(tc.in, &got); err != nil {
				t.Fatalf("error %v", err)
			}
			if !equalTCPOptions(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// equalTCPOptions compares the meaningful parts (the MPTCP views by content).
func equalTCPOptions(a, b TCPOptions) bool {
	for i := range a.NumMPTCP {
		if i >= b.NumMPTCP || !bytes.Equal(a.MPTCP[i], b.MPTCP[i]) {
			return false
		}
	}
	a.MPTCP, b.MPTCP = [4][]byte{}, [4][]byte{}
	// Only SACKBlocks[:NumSACKBlocks] is meaningful (a second SACK option
	// leaves the first one's extra blocks behind).
	for i := a.NumSACKBlocks; i >= 0 && i < MaxSACKBlocks; i++ {
		a.SACKBlocks[i] = SACKBlock{}
	}
	for i := b.NumSACKBlocks; i >= 0 && i < MaxSACKBlocks; i++ {
		b.SACKBlocks[i] = SACKBlock{}
	}
	return reflect.DeepEqual(a, b)
}

// tcpErrCase is a malformed option area: the strict parser's error and
// partial result, and what the lenient parser (Linux's tcp_parse_options
// walk) makes of it.
type tcpErrCase struct {
	name    string
	in      []byte
	err     error
	partial TCPOptions // what ParseTCPOptions parsed before the bad option
	lenient TCPOptions // what ParseTCPOptionsLenient returns
}

var tcpErrCases = []tcpErrCase{
	{"kind without length", hx("02"), ErrTruncated, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"length 0", hx("08 00 00 00"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"length 1", hx("01 02 01"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"length past end", hx("02 04 05 b4 08 0a 00 00 00 01"), ErrTruncated, TCPOptions{HasMSS: true, MSS: 1460},
		TCPOptions{HasMSS: true, MSS: 1460, Malformed: 1}},
	{"MSS length 5", hx("02 05 05 b4 00"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"MSS length 2", hx("02 02"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"WS length 4", hx("01 03 04 07 00"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"SACK_PERM length 3", hx("04 03 00"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"TS length 8", hx("02 04 05 b4 08 08 00 00 00 01 00 00"), ErrBadLength, TCPOptions{HasMSS: true, MSS: 1460},
		TCPOptions{HasMSS: true, MSS: 1460, Malformed: 1}},
	{"SACK length 2", hx("05 02"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"SACK length 11", hx("05 0b 00 00 00 01 00 00 00 02 00"), ErrBadLength, TCPOptions{}, TCPOptions{Malformed: 1}},
	{"MPTCP length 2", hx("1e 03 51 1e 02"), ErrBadLength, TCPOptions{NumMPTCP: 1, MPTCP: [4][]byte{hx("1e 03 51")}},
		TCPOptions{NumMPTCP: 1, MPTCP: [4][]byte{hx("1e 03 51")}, Malformed: 1}},
	{"unknown kind past end", hx("03 03 07 fd 09 00"), ErrTruncated, TCPOptions{HasWindowScale: true, WindowScale: 7},
		TCPOptions{HasWindowScale: true, WindowScale: 7, Malformed: 1}},
	// Lenient parsing goes on after a known option with a wrong length
	// and stops at broken framing; the strict parser stops at either.
	{"bad MSS length, later options kept", hx("02 05 05 b4 00 01 03 03 07 04 02 08 0a 00 00 00 09 00 00 00 00"), ErrBadLength, TCPOptions{},
		TCPOptions{HasWindowScale: true, WindowScale: 7, SACKPermitted: true, HasTimestamp: true, TSVal: 9, Malformed: 1}},
	{"MPTCP length 2 between MSS and WS", hx("02 04 05 b4 1e 02 01 03 03 07"), ErrBadLength, TCPOptions{HasMSS: true, MSS: 1460},
		TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7, Malformed: 1}},
	{"MPTCP length 1 stops the walk", hx("02 04 05 b4 1e 01 03 03 07"), ErrBadLength, TCPOptions{HasMSS: true, MSS: 1460},
		TCPOptions{HasMSS: true, MSS: 1460, Malformed: 1}},
	{"MPTCP length 0 stops the walk", hx("04 02 1e 00 03 03 07"), ErrBadLength, TCPOptions{SACKPermitted: true},
		TCPOptions{SACKPermitted: true, Malformed: 1}},
	{"MP_CAPABLE past the end", hx("02 04 05 b4 01 01 04 02 1e 0c 00 81 00 00"), ErrTruncated, TCPOptions{HasMSS: true, MSS: 1460, SACKPermitted: true},
		TCPOptions{HasMSS: true, MSS: 1460, SACKPermitted: true, Malformed: 1}},
	{"two bad lengths, then SACK", hx("03 04 07 00 08 09 00 00 00 00 00 00 00 05 0a 00 00 00 01 00 00 00 02"), ErrBadLength, TCPOptions{},
		TCPOptions{NumSACKBlocks: 1, SACKBlocks: [4]SACKBlock{{1, 2}}, Malformed: 2}},
}

func TestParseTCPOptionsErrors(t *testing.T) {
	for _, tc := range tcpErrCases {
		t.Run(tc.name, func(t *testing.T) {
			var got TCPOptions
			if err := ParseTCPOptions(tc.in, &got); err != tc.err {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if !equalTCPOptions(got, tc.partial) {
				t.Errorf("partial result %+v, want %+v", got, tc.partial)
			}
		})
	}
}

// TestParseTCPOptionsLenient: on valid areas the lenient parser agrees with
// the strict one; on malformed ones it skips a known option with a wrong
// length and stops at broken framing, as Linux's tcp_parse_options does,
// counting each in Malformed.
func TestParseTCPOptionsLenient(t *testing.T) {
	for _, tc := range tcpCases {
		t.Run(tc.name, func(t *testing.T) {
			got := TCPOptions{HasMSS: true, NumSACKBlocks: 3, Malformed: 4}
			ParseTCPOptionsLenient(tc.in, &got)
			if !equalTCPOptions(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for _, tc := range tcpErrCases {
		t.Run(tc.name, func(t *testing.T) {
			var got TCPOptions
			ParseTCPOptionsLenient(tc.in, &got)
			if !equalTCPOptions(got, tc.lenient) {
				t.Errorf("got  %+v\nwant %+v", got, tc.lenient)
			}
		})
	}
}

func TestParseTCPOptionsLenientNoAlloc(t *testing.T) {
	var o TCPOptions
	bad := hx("02 05 05 b4 00 01 03 03 07 1e 02 1e 04 20 01")
	if n := testing.AllocsPerRun(1000, func() { ParseTCPOptionsLenient(bad, &o) }); n != 0 {
		t.Errorf("ParseTCPOptionsLenient allocates %v times", n)
	}
	if o.Malformed != 2 || o.NumMPTCP != 1 || !o.HasWindowScale {
		t.Errorf("unexpected result %+v", o)
	}
}

func TestNextTCPOption(t *testing.T) {
	for _, tc := range []struct {
		in        []byte
		kind      uint8
		opt, rest []byte
		err       error
	}{
		{nil, 0, nil, nil, ErrTruncated},
		{hx("00 01"), KindEOL, hx("00"), hx("01"), nil},
		{hx("01"), KindNOP, hx("01"), hx(""), nil},
		{hx("02 04 05 b4 01"), KindMSS, hx("02 04 05 b4"), hx("01"), nil},
		{hx("1e 03 51"), KindMPTCP, hx("1e 03 51"), hx(""), nil},
		{hx("fd 02 01"), 0xfd, hx("fd 02"), hx("01"), nil},
		{hx("08"), KindTimestamp, nil, nil, ErrTruncated},
		{hx("08 01 00"), KindTimestamp, nil, nil, ErrBadLength},
		{hx("08 0a 00"), KindTimestamp, nil, nil, ErrTruncated},
	} {
		kind, opt, rest, err := NextTCPOption(tc.in)
		if err != tc.err || (err == nil && (kind != tc.kind || !bytes.Equal(opt, tc.opt) || !bytes.Equal(rest, tc.rest))) {
			t.Errorf("NextTCPOption(% x) = %d, % x, % x, %v; want %d, % x, % x, %v",
				tc.in, kind, opt, rest, err, tc.kind, tc.opt, tc.rest, tc.err)
		}
		if err == nil && cap(opt) != len(opt) {
			t.Errorf("NextTCPOption(% x): cap(opt) = %d, want %d", tc.in, cap(opt), len(opt))
		}
	}
}

// TestParseTCPOptionsPrefixes cuts valid option areas at every length: the
// result is an error or a subset of the full parse, and never a panic.
func TestParseTCPOptionsPrefixes(t *testing.T) {
	for _, area := range [][]byte{linuxSYN, linuxData} {
		var full TCPOptions
		if err := ParseTCPOptions(area, &full); err != nil {
			t.Fatal(err)
		}
		for n := range len(area) {
			var o TCPOptions
			err := ParseTCPOptions(area[:n], &o)
			if err != nil && err != ErrTruncated && err != ErrBadLength {
				t.Errorf("prefix %d: %v", n, err)
			}
			if (o.HasMSS && o.MSS != full.MSS) || (o.HasTimestamp && o.TSVal != full.TSVal) ||
				o.NumMPTCP > full.NumMPTCP || (o.HasWindowScale && !full.HasWindowScale) {
				t.Errorf("prefix %d parsed more than the whole: %+v", n, o)
			}
		}
	}
}

func TestParseTCPOptionsNoAlloc(t *testing.T) {
	var o TCPOptions
	if n := testing.AllocsPerRun(1000, func() {
		if err := ParseTCPOptions(linuxData, &o); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ParseTCPOptions allocates %v times", n)
	}
	if o.NumMPTCP != 1 || !o.HasTimestamp {
		t.Errorf("unexpected result %+v", o)
	}
	if got := o.MPTCPOptions(); len(got) != 1 || &got[0][0] != &linuxData[12] {
		t.Error("MPTCP view does not alias the input")
	}
	if len(o.SACK()) != 0 {
		t.Error("SACK() not empty")
	}
}

func BenchmarkParseTCPOptions(b *testing.B) {
	var o TCPOptions
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseTCPOptions(linuxData, &o); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseTCPOptions checks, for any option area: no panic; every MPTCP view
// lies inside the input, is a whole kind-30 option (length == byte 1), and
// the views plus DroppedMPTCP account for every kind-30 option before the
// stop point; the counts are in range. For the lenient parser (see
// checkLenient): the same view properties, agreement with the strict parser
// where that succeeds, and a round trip through Layout.
func FuzzParseTCPOptions(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var o TCPOptions
		err := ParseTCPOptions(b, &o)
		if err != nil && err != ErrTruncated && err != ErrBadLength {
			t.Fatalf("unexpected error %v", err)
		}
		if o.NumMPTCP < 0 || o.NumMPTCP > MaxMPTCPOptions || o.NumSACKBlocks < 0 || o.NumSACKBlocks > MaxSACKBlocks {
			t.Fatalf("counts out of range: %+v", o)
		}
		if o.Malformed != 0 {
			t.Fatalf("strict parser counted %d malformed options", o.Malformed)
		}
		// Walk independently to find the kind-30 options and their offsets.
		var offsets []int
		for off := 0; off < len(b); {
			kind, opt, rest, werr := NextTCPOption(b[off:])
			if werr != nil || kind == KindEOL {
				break
			}
			if kind == KindMPTCP && len(opt) >= 3 {
				offsets = append(offsets, off)
			}
			off = len(b) - len(rest)
		}
		if o.NumMPTCP+o.DroppedMPTCP > len(offsets) {
			t.Fatalf("%d+%d MPTCP options reported, %d in the input", o.NumMPTCP, o.DroppedMPTCP, len(offsets))
		}
		if err == nil && o.NumMPTCP+o.DroppedMPTCP != len(offsets) {
			t.Fatalf("%d+%d MPTCP options reported, %d in the input", o.NumMPTCP, o.DroppedMPTCP, len(offsets))
		}
		checkViews(t, b, &o, offsets)
		checkLenient(t, b, &o, err, offsets)
	})
}

// checkViews checks that o's MPTCP views are the whole kind-30 options of
// b at the given offsets, in order.
func checkViews(t *testing.T, b []byte, o *TCPOptions, offsets []int) {
	t.Helper()
	for i, s := range o.MPTCPOptions() {
		if len(s) < 3 || s[0] != KindMPTCP || int(s[1]) != len(s) || cap(s) != len(s) {
			t.Fatalf("MPTCP[%d] = % x (cap %d)", i, s, cap(s))
		}
		if i >= len(offsets) {
			t.Fatalf("MPTCP[%d] beyond the %d options in the input", i, len(offsets))
		}
		off := offsets[i]
		if &s[0] != &b[off] || off+len(s) > len(b) {
			t.Fatalf("MPTCP[%d] is not the view of the option at offset %d", i, off)
		}
	}
}

// checkLenient checks ParseTCPOptionsLenient against the strict result
// strict (and its error): equal with nothing malformed when the strict
// parser succeeds; otherwise at least one malformed option, and the MPTCP
// options the strict parser found before the error found too. The lenient
// result, laid out again with Layout, parses strictly to the same values
// whenever it fits in the option space.
func checkLenient(t *testing.T, b []byte, strict *TCPOptions, err error, offsets []int) {
	t.Helper()
	var l TCPOptions
	ParseTCPOptionsLenient(b, &l)
	if l.NumMPTCP < 0 || l.NumMPTCP > MaxMPTCPOptions || l.NumSACKBlocks < 0 || l.NumSACKBlocks > MaxSACKBlocks || l.Malformed < 0 {
		t.Fatalf("lenient counts out of range: %+v", l)
	}
	if err == nil {
		if !equalTCPOptions(l, *strict) {
			t.Fatalf("lenient %+v, strict %+v", l, *strict)
		}
	} else {
		if l.Malformed == 0 {
			t.Fatalf("strict error %v, lenient counted nothing malformed: %+v", err, l)
		}
		if l.NumMPTCP < strict.NumMPTCP {
			t.Fatalf("lenient kept %d MPTCP options, strict %d before its error", l.NumMPTCP, strict.NumMPTCP)
		}
	}
	// The lenient walk skips MPTCP options shorter than 3 bytes like the
	// independent walk, so the same offsets apply to its views.
	checkViews(t, b, &l, offsets)

	lay := Layout{
		HasWindowScale: l.HasWindowScale, WindowScale: l.WindowScale,
		SACKPermitted: l.SACKPermitted,
		HasTimestamp:  l.HasTimestamp, TSVal: l.TSVal, TSEcr: l.TSEcr,
		SACKBlocks: l.SACK(),
	}
	if l.HasMSS {
		lay.MSS = l.MSS
	}
	for _, raw := range l.MPTCPOptions() {
		u, uerr := ParseUnknown(raw)
		if uerr != nil {
			t.Fatalf("lenient kept an MPTCP option that does not frame: % x: %v", raw, uerr)
		}
		lay.MPTCP = append(lay.MPTCP, u)
	}
	block, om := lay.Append(nil)
	if om.Any() {
		return // more than 40 bytes once aligned: nothing to compare
	}
	var again TCPOptions
	if rerr := ParseTCPOptions(block, &again); rerr != nil {
		t.Fatalf("lenient result laid out as % x does not parse: %v", block, rerr)
	}
	want := l
	want.Malformed, want.DroppedMPTCP = 0, 0
	if want.HasMSS && want.MSS == 0 {
		want.HasMSS = false // Layout cannot express MSS 0
	}
	if !equalTCPOptions(again, want) {
		t.Fatalf("round trip through % x: %+v, want %+v", block, again, want)
	}
}

// TestFastOpenOption: a SYN layout with FastOpen carries an empty Fast
// Open option (a cookie request, RFC 7413 §4.1.1) that parses back; a
// cookie of 4 to 16 bytes parses, other lengths are refused.
func TestFastOpenOption(t *testing.T) {
	l := Layout{MSS: 1460, SACKPermitted: true, HasTimestamp: true, TSVal: 7, HasWindowScale: true, WindowScale: 7, FastOpen: true}
	b, om := l.Append(nil)
	if om.Base || len(b)%4 != 0 {
		t.Fatalf("layout %x omitted %+v", b, om)
	}
	var o TCPOptions
	if err := ParseTCPOptions(b, &o); err != nil || !o.FastOpen || o.FastOpenCookieLen != 0 || o.MSS != 1460 || o.TSVal != 7 {
		t.Fatalf("parsed %+v: %v", o, err)
	}
	for n := 0; n <= 18; n++ {
		opt := append([]byte{KindFastOpen, byte(2 + n)}, make([]byte, n)...)
		for len(opt)%4 != 0 {
			opt = append(opt, KindNOP)
		}
		var o TCPOptions
		err := ParseTCPOptions(opt, &o)
		valid := n == 0 || (n >= 4 && n <= 16)
		if valid && (err != nil || !o.FastOpen || o.FastOpenCookieLen != n) {
			t.Errorf("cookie of %d bytes: %+v %v", n, o, err)
		}
		if !valid && err == nil {
			t.Errorf("cookie of %d bytes accepted", n)
		}
	}
}
