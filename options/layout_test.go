package options

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// checkLayout verifies one Layout.Append result against the Layout: size
// rules, a re-parse that yields exactly the laid-out fields, and that every
// omission was forced by lack of space. It returns nil when all hold.
func checkLayout(l *Layout, out []byte, om Omitted) error {
	space := MaxOptionSpace
	if l.Space > 0 && l.Space <= MaxOptionSpace {
		space = l.Space &^ 3
	}
	if len(out)%4 != 0 || len(out) > space {
		return fmt.Errorf("length %d (space %d)", len(out), space)
	}
	if n := l.Len(); n != len(out) {
		return fmt.Errorf("Len() = %d, Append wrote %d", n, len(out))
	}
	var o TCPOptions
	if err := ParseTCPOptions(out, &o); err != nil {
		return fmt.Errorf("re-parse: %v", err)
	}
	free := space - len(out)

	// Base options: present exactly as asked unless omitted; omission only
	// under Base, and in priority order.
	if !om.Base {
		if o.HasMSS != (l.MSS != 0) || o.HasWindowScale != l.HasWindowScale ||
			o.SACKPermitted != l.SACKPermitted || o.HasTimestamp != l.HasTimestamp {
			return fmt.Errorf("base options %+v do not match layout %+v", o, l)
		}
	} else {
		if (o.HasMSS && l.MSS == 0) || (o.HasWindowScale && !l.HasWindowScale) ||
			(o.SACKPermitted && !l.SACKPermitted) || (o.HasTimestamp && !l.HasTimestamp) {
			return fmt.Errorf("base option present that was not asked for")
		}
		missing := (l.MSS != 0 && !o.HasMSS) || (l.HasWindowScale && !o.HasWindowScale) ||
			(l.SACKPermitted && !o.SACKPermitted) || (l.HasTimestamp && !o.HasTimestamp)
		if !missing {
			return fmt.Errorf("Base set but nothing missing")
		}
		if l.MSS != 0 && !o.HasMSS && (o.HasWindowScale || o.SACKPermitted || o.HasTimestamp) {
			return fmt.Errorf("MSS omitted before a lower-priority option")
		}
		if l.HasWindowScale && !o.HasWindowScale && (o.SACKPermitted || o.HasTimestamp) {
			return fmt.Errorf("window scale omitted before a lower-priority option")
		}
	}
	if o.HasMSS && o.MSS != l.MSS || o.HasWindowScale && o.WindowScale != l.WindowScale ||
		o.HasTimestamp && (o.TSVal != l.TSVal || o.TSEcr != l.TSEcr) {
		return fmt.Errorf("base values %+v do not match layout %+v", o, l)
	}

	// SACK blocks: the first ones, as many as fit.
	n := len(l.SACKBlocks) - om.SACKBlocks
	if n < 0 || n > MaxSACKBlocks || n != o.NumSACKBlocks {
		return fmt.Errorf("%d SACK blocks laid out, %d omitted of %d", o.NumSACKBlocks, om.SACKBlocks, len(l.SACKBlocks))
	}
	for i := range n {
		if o.SACKBlocks[i] != l.SACKBlocks[i] {
			return fmt.Errorf("SACK block %d = %v, want %v", i, o.SACKBlocks[i], l.SACKBlocks[i])
		}
	}
	if om.SACKBlocks > 0 && n < MaxSACKBlocks {
		need := lenSACKBlock
		if n == 0 {
			need += 4
		}
		if free >= need {
			return fmt.Errorf("SACK block omitted with %d bytes free", free)
		}
	}

	// MPTCP options: walk the block, each kind-30 option must be the next
	// non-omitted one, byte for byte, and be padded to 4 bytes with NOPs.
	var laid [][]byte
	for b := out; len(b) > 0; {
		kind, opt, rest, err := NextTCPOption(b)
		if err != nil {
			return err
		}
		if kind == KindMPTCP {
			laid = append(laid, opt)
			for pad := (4 - len(opt)%4) % 4; pad > 0; pad-- {
				if len(rest) == 0 || rest[0] != KindNOP {
					return fmt.Errorf("MPTCP option % x not NOP-padded", opt)
				}
				rest = rest[1:]
			}
		}
		b = rest
	}
	j := 0
	for i, opt := range l.MPTCP {
		if i >= 32 {
			// Documented: entries past the 32 that Omitted can
			// describe are never laid out.
			continue
		}
		if om.MPTCP&(1<<i) != 0 {
			if opt != nil && opt.Len() > 0 && (opt.Len()+3)&^3 <= free {
				return fmt.Errorf("MPTCP[%d] (%d bytes) omitted with %d bytes free", i, opt.Len(), free)
			}
			continue
		}
		if j >= len(laid) || !bytes.Equal(laid[j], opt.Append(nil)) {
			return fmt.Errorf("MPTCP[%d] not laid out as % x", i, opt.Append(nil))
		}
		j++
	}
	if j != len(laid) {
		return fmt.Errorf("%d MPTCP options laid out, %d expected", len(laid), j)
	}
	return nil
}

var (
	fullDSS = DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64,
		HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440,
		HasChecksum: true, Checksum: 0xabcd}
	threeSACK = []SACKBlock{{100, 200}, {300, 400}, {500, 600}}
)

// layoutCase is a Layout and the exact block Append must produce.
type layoutCase struct {
	name    string
	l       Layout
	want    []byte
	omitted Omitted
}

var layoutCases = []layoutCase{
	{name: "empty", l: Layout{}, want: nil},
	{name: "SYN with MP_CAPABLE", l: Layout{
		MSS: 1460, SACKPermitted: true, HasTimestamp: true, TSVal: 1000,
		HasWindowScale: true, WindowScale: 7,
		MPTCP: []Option{MPCapable{Form: CapableSYN, Version: 1, Flags: 0x81}},
	}, want: linuxSYN},
	{name: "SYN/ACK with MP_CAPABLE key", l: Layout{
		MSS: 1460, SACKPermitted: true, HasTimestamp: true, TSVal: 5, TSEcr: 1000,
		HasWindowScale: true, WindowScale: 7,
		MPTCP: []Option{MPCapable{Form: CapableSYNACK, Version: 1, Flags: 0x01, SenderKey: testKeyA}},
	}, want: hx("02 04 05 b4 04 02 08 0a 00 00 00 05 00 00 03 e8 01 03 03 07 1e 0c 01 01 01 02 03 04 05 06 07 08")},
	{name: "MP_JOIN SYN/ACK fills 36", l: Layout{
		MSS: 1460, SACKPermitted: true, HasTimestamp: true, HasWindowScale: true, WindowScale: 7,
		MPTCP: []Option{MPJoin{Form: JoinSYNACK, AddrID: 1, TruncatedHMAC: 2, Nonce: 3}},
	}, want: hx("02 04 05 b4 04 02 08 0a 00 00 00 00 00 00 00 00 01 03 03 07 1e 10 10 01 00 00 00 00 00 00 00 02 00 00 00 03")},
	{name: "SYN without TS", l: Layout{MSS: 1400, SACKPermitted: true, HasWindowScale: true, WindowScale: 2},
		want: hx("02 04 05 78 01 01 04 02 01 03 03 02")},
	{name: "data: TS + DSS 28 drops all SACK blocks", l: Layout{
		HasTimestamp: true, TSVal: 1001, TSEcr: 2000,
		MPTCP: []Option{fullDSS}, SACKBlocks: threeSACK,
	}, want: hx("01 01 08 0a 00 00 03 e9 00 00 07 d0 1e 1c 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab cd"),
		omitted: Omitted{SACKBlocks: 3}},
	{name: "data: TS + DSS 26 padded like Linux", l: Layout{
		HasTimestamp: true, TSVal: 1001, TSEcr: 2000,
		MPTCP: []Option{DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440}},
	}, want: linuxData},
	{name: "ack: TS + DSS ack64 keeps one SACK block", l: Layout{
		HasTimestamp: true, TSVal: 1, TSEcr: 2,
		MPTCP: []Option{DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64}}, SACKBlocks: threeSACK,
	}, want: hx("01 01 08 0a 00 00 00 01 00 00 00 02 01 01 05 0a 00 00 00 64 00 00 00 c8 1e 0c 20 03 00 00 00 01 00 00 10 00"),
		omitted: Omitted{SACKBlocks: 2}},
	{name: "no TS: DSS ack64 + 3 of 5 SACK blocks", l: Layout{
		MPTCP:      []Option{DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64}},
		SACKBlocks: []SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}},
	}, want: hx("01 01 05 1a 00 00 00 01 00 00 00 02 00 00 00 03 00 00 00 04 00 00 00 05 00 00 00 06 1e 0c 20 03 00 00 00 01 00 00 10 00"),
		omitted: Omitted{SACKBlocks: 2}},
	{name: "four SACK blocks alone", l: Layout{SACKBlocks: []SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}},
		want: hx("01 01 05 22 00 00 00 01 00 00 00 02 00 00 00 03 00 00 00 04 00 00 00 05 00 00 00 06 00 00 00 07 00 00 00 08")},
	{name: "MPTCP option too big is skipped, later one fits", l: Layout{
		HasTimestamp: true,
		MPTCP: []Option{
			DSS{HasDataAck: true, DataAck: 7},
			AddAddr{AddrID: 4, Addr: netip.MustParseAddr("2001:db8::1"), HasPort: true, Port: 1, HMAC: 2},
			MPPrio{Backup: true},
		},
	}, want: hx("01 01 08 0a 00 00 00 00 00 00 00 00 1e 08 20 01 00 00 00 07 1e 03 51 01"),
		omitted: Omitted{MPTCP: 1 << 1}},
	{name: "MP_CAPABLE ACK+data 22 padded, REMOVE_ADDR padded", l: Layout{
		MPTCP: []Option{
			MPCapable{Form: CapableACKData, Version: 1, Flags: 1, SenderKey: testKeyA, ReceiverKey: testKeyB, DataLen: 100},
			RemoveAddr{IDs: []uint8{1, 2}},
		},
	}, want: hx("1e 16 01 01 01 02 03 04 05 06 07 08 11 12 13 14 15 16 17 18 00 64 01 01 1e 05 40 01 02 01 01 01")},
	{name: "nil and empty MPTCP entries are reported", l: Layout{
		MPTCP: []Option{nil, MPPrio{}, AddAddr{}},
	}, want: hx("1e 03 50 01"), omitted: Omitted{MPTCP: 1<<0 | 1<<2}},
	{name: "Space 16 squeezes the base options", l: Layout{
		Space: 16, MSS: 1460, HasWindowScale: true, WindowScale: 7, SACKPermitted: true, HasTimestamp: true,
		MPTCP: []Option{MPCapable{Form: CapableSYN, Version: 1, Flags: 1}},
	}, want: hx("02 04 05 b4 01 01 04 02 01 03 03 07 1e 04 01 01"),
		omitted: Omitted{Base: true}},
	{name: "Space 2 leaves room for nothing", l: Layout{Space: 2, MSS: 1460},
		want: nil, omitted: Omitted{Base: true}},
}

func TestLayout(t *testing.T) {
	for _, tc := range layoutCases {
		t.Run(tc.name, func(t *testing.T) {
			got, om := tc.l.Append(nil)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("Append =\n % x\nwant\n % x", got, tc.want)
			}
			if om != tc.omitted {
				t.Errorf("omitted %+v, want %+v", om, tc.omitted)
			}
			if om.Any() != (tc.omitted != Omitted{}) {
				t.Errorf("Any() = %v", om.Any())
			}
			if err := checkLayout(&tc.l, got, om); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestLayoutIndexBeyond32 checks that entries past the Omitted bitmap are
// never laid out.
func TestLayoutIndexBeyond32(t *testing.T) {
	opts := make([]Option, 40)
	for i := range opts {
		opts[i] = MPPrio{}
	}
	l := Layout{MPTCP: opts}
	out, om := l.Append(nil)
	if len(out) != 40 || om.MPTCP != 0xfffffc00 {
		t.Errorf("len %d, omitted %#x", len(out), om.MPTCP)
	}
	if err := checkLayout(&l, out, om); err != nil {
		t.Error(err)
	}
}

func dataLayout(d *DSS) Layout {
	return Layout{
		HasTimestamp: true, TSVal: 1001, TSEcr: 2000,
		MPTCP:      []Option{d},
		SACKBlocks: threeSACK[:1],
	}
}

func TestLayoutDataNoAlloc(t *testing.T) {
	d := DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440}
	l := dataLayout(&d)
	buf := make([]byte, 0, MaxOptionSpace)
	var om Omitted
	if n := testing.AllocsPerRun(1000, func() {
		d.DSN += 1440
		buf, om = l.Append(buf[:0])
	}); n != 0 {
		t.Errorf("Layout.Append allocates %v times", n)
	}
	if err := checkLayout(&l, buf, om); err != nil {
		t.Error(err)
	}
}

func BenchmarkLayoutData(b *testing.B) {
	d := DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440}
	l := dataLayout(&d)
	buf := make([]byte, 0, MaxOptionSpace)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = l.Append(buf[:0])
	}
}

// Fuzz input for FuzzLayout, decoded by decodeFuzzLayout:
//
//	byte 0      bit 0 MSS, bit 1 window scale, bit 2 SACK-permitted,
//	            bit 3 timestamp, bits 4-6 number of SACK blocks (0-7)
//	bytes 1-2   MSS          byte 3     window scale
//	bytes 4-11  TSval, TSecr byte 12    Space
//	then 8 bytes per SACK block, then an option area whose kind-30 options
//	(those Parse accepts) become Layout.MPTCP, and whose kind 0xfe options
//	become nil entries.
const fuzzLayoutHeader = 13

func decodeFuzzLayout(data []byte) Layout {
	var h [fuzzLayoutHeader]byte
	n := copy(h[:], data)
	data = data[n:]
	var l Layout
	if h[0]&1 != 0 {
		l.MSS = binary.BigEndian.Uint16(h[1:])
	}
	l.HasWindowScale, l.WindowScale = h[0]&2 != 0, h[3]
	l.SACKPermitted = h[0]&4 != 0
	l.HasTimestamp = h[0]&8 != 0
	l.TSVal, l.TSEcr = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:])
	l.Space = int(int8(h[12]))
	for range int(h[0]>>4) & 7 {
		if len(data) < 8 {
			break
		}
		l.SACKBlocks = append(l.SACKBlocks, SACKBlock{binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:])})
		data = data[8:]
	}
	for len(data) > 0 {
		kind, opt, rest, err := NextTCPOption(data)
		if err != nil {
			break
		}
		switch kind {
		case KindMPTCP:
			if v, err := Parse(opt); v != nil && (err == nil || err == ErrBadVersion) {
				l.MPTCP = append(l.MPTCP, v)
			}
		case 0xfe:
			l.MPTCP = append(l.MPTCP, nil)
		}
		data = rest
	}
	return l
}

// encodeFuzzLayout is the inverse of decodeFuzzLayout, for seeding.
func encodeFuzzLayout(l Layout) []byte {
	var h [fuzzLayoutHeader]byte
	if l.MSS != 0 {
		h[0] |= 1
	}
	if l.HasWindowScale {
		h[0] |= 2
	}
	if l.SACKPermitted {
		h[0] |= 4
	}
	if l.HasTimestamp {
		h[0] |= 8
	}
	nSACK := min(len(l.SACKBlocks), 7)
	h[0] |= byte(nSACK) << 4
	binary.BigEndian.PutUint16(h[1:], l.MSS)
	h[3] = l.WindowScale
	binary.BigEndian.PutUint32(h[4:], l.TSVal)
	binary.BigEndian.PutUint32(h[8:], l.TSEcr)
	h[12] = byte(l.Space)
	b := h[:]
	for _, s := range l.SACKBlocks[:nSACK] {
		b = binary.BigEndian.AppendUint32(b, s.Start)
		b = binary.BigEndian.AppendUint32(b, s.End)
	}
	for _, o := range l.MPTCP {
		if o == nil {
			b = append(b, 0xfe, 2)
			continue
		}
		b = o.Append(b)
	}
	return b
}

// FuzzLayout derives a Layout from the input and checks the laid-out block
// with checkLayout: at most 40 bytes (and Space), a multiple of 4, equal to
// Len, re-parsing to exactly the fields laid out, omissions only for lack of
// space. Append must also append to a non-empty buffer unchanged.
func FuzzLayout(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		l := decodeFuzzLayout(data)
		out, om := l.Append(nil)
		if err := checkLayout(&l, out, om); err != nil {
			t.Fatalf("%v\nlayout %+v\nblock % x\nomitted %+v", err, l, out, om)
		}
		prefixed, om2 := l.Append([]byte{0xaa})
		if om2 != om || !bytes.Equal(prefixed[1:], out) || prefixed[0] != 0xaa {
			t.Fatalf("Append after a prefix differs")
		}
	})
}

func TestFuzzLayoutEncoding(t *testing.T) {
	for _, tc := range layoutCases {
		l := decodeFuzzLayout(encodeFuzzLayout(tc.l))
		a, _ := l.Append(nil)
		b, _ := tc.l.Append(nil)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: fuzz encoding does not round-trip:\n % x\n % x", tc.name, a, b)
		}
	}
}
