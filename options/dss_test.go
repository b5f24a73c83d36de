package options

import (
	"bytes"
	"testing"
)

// Values used in the DSS vectors.
const (
	testAck64 = 0x0000000100001000 // "00 00 00 01 00 00 10 00"
	testDSN64 = 0x00000002aabbccdd // "00 00 00 02 aa bb cc dd"
)

// dssVectors follow RFC 8684 §3.3, Figure 9: [kind][len][2|rsv][flags]
// [Data ACK 4/8][DSN 4/8][subflow seq 4][data-level length 2][checksum 2].
var dssVectors = []vector{
	{name: "DSS no flags", raw: hx("1e 04 20 00"), want: DSS{}},
	{name: "DSS ack32", raw: hx("1e 08 20 01 00 00 12 34"),
		want: DSS{HasDataAck: true, DataAck: 0x1234}},
	{name: "DSS ack64", raw: hx("1e 0c 20 03 00 00 00 01 00 00 10 00"),
		want: DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64}},
	{name: "DSS map32", raw: hx("1e 0e 20 04 aa bb cc dd 00 00 00 01 05 a0"),
		want: DSS{HasMapping: true, DSN: 0xaabbccdd, SubflowSeq: 1, DataLen: 1440}},
	{name: "DSS map32 checksum", raw: hx("1e 10 20 04 aa bb cc dd 00 00 00 01 05 a0 12 34"),
		want: DSS{HasMapping: true, DSN: 0xaabbccdd, SubflowSeq: 1, DataLen: 1440, HasChecksum: true, Checksum: 0x1234}},
	{name: "DSS map64", raw: hx("1e 12 20 0c 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0"),
		want: DSS{HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440}},
	{name: "DSS map64 checksum", raw: hx("1e 14 20 0c 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 fe dc"),
		want: DSS{HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440, HasChecksum: true, Checksum: 0xfedc}},
	{name: "DSS ack32 map32", raw: hx("1e 12 20 05 00 00 12 34 aa bb cc dd 00 01 00 00 00 10"),
		want: DSS{HasDataAck: true, DataAck: 0x1234, HasMapping: true, DSN: 0xaabbccdd, SubflowSeq: 0x10000, DataLen: 16}},
	{name: "DSS ack32 map32 checksum", raw: hx("1e 14 20 05 00 00 12 34 aa bb cc dd 00 01 00 00 00 10 00 00"),
		want: DSS{HasDataAck: true, DataAck: 0x1234, HasMapping: true, DSN: 0xaabbccdd, SubflowSeq: 0x10000, DataLen: 16, HasChecksum: true}},
	{name: "DSS ack32 map64", raw: hx("1e 16 20 0d ff ff ff ff 00 00 00 02 aa bb cc dd ff ff ff ff ff ff"),
		want: DSS{HasDataAck: true, DataAck: 0xffffffff, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 0xffffffff, DataLen: 0xffff}},
	{name: "DSS ack64 map32", raw: hx("1e 16 20 07 00 00 00 01 00 00 10 00 aa bb cc dd 00 00 00 01 05 a0"),
		want: DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN: 0xaabbccdd, SubflowSeq: 1, DataLen: 1440}},
	{name: "DSS ack64 map64 (Linux data)", raw: hx("1e 1a 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0"),
		want: DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440}},
	{name: "DSS ack64 map64 checksum (28 bytes)", raw: hx("1e 1c 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab cd"),
		want: DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440, HasChecksum: true, Checksum: 0xabcd}},
	{name: "DSS DATA_FIN without data", raw: hx("1e 1a 20 1f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 00 00 01"),
		want: DSS{DataFIN: true, HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 0, DataLen: 1}},
	{name: "DSS DATA_FIN on data, map64 ack32", raw: hx("1e 16 20 1d 00 00 12 34 00 00 00 02 aa bb cc dd 00 00 00 01 05 a1"),
		want: DSS{DataFIN: true, HasDataAck: true, DataAck: 0x1234, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1441}},
	{name: "DSS DATA_FIN with ack only", raw: hx("1e 08 20 11 00 00 12 34"),
		want: DSS{DataFIN: true, HasDataAck: true, DataAck: 0x1234}},
	{name: "DSS infinite mapping", raw: hx("1e 12 20 0c 00 00 00 02 aa bb cc dd 00 00 00 00 00 00"),
		want: DSS{HasMapping: true, DSN64: true, DSN: testDSN64}},
	{name: "DSS infinite mapping checksum 0", raw: hx("1e 1c 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 00 00 00 00 00"),
		want: DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, HasChecksum: true}},
	{name: "DSS a without A", raw: hx("1e 04 20 02"),
		want: DSS{DataAck64: true}},
	{name: "DSS m without M, ack32", raw: hx("1e 08 20 09 00 00 00 05"),
		want: DSS{DSN64: true, HasDataAck: true, DataAck: 5}},
	{name: "DSS ack32 + 2 bytes without mapping (Linux accepts)", raw: hx("1e 0a 20 01 00 00 12 34 ab cd"),
		want: DSS{HasDataAck: true, DataAck: 0x1234, HasChecksum: true, Checksum: 0xabcd}, lenient: true},
}

var dssBad = []badVector{
	{"DSS length 3", hx("1e 03 20"), ErrBadLength},
	{"DSS no flags, length 5", hx("1e 05 20 00 00"), ErrBadLength},
	{"DSS ack32 length 9", hx("1e 09 20 01 00 00 12 34 00"), ErrBadLength},
	{"DSS ack32 length 11", hx("1e 0b 20 01 00 00 12 34 00 00 00"), ErrBadLength},
	{"DSS ack64 length 8", hx("1e 08 20 03 00 00 12 34"), ErrBadLength},
	{"DSS map32 length 13", hx("1e 0d 20 04 aa bb cc dd 00 00 00 01 05"), ErrBadLength},
	{"DSS map64 length 14 (map32 size)", hx("1e 0e 20 0c aa bb cc dd 00 00 00 01 05 a0"), ErrBadLength},
	{"DSS ack64 map64 length 27", hx("1e 1b 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab"), ErrBadLength},
	{"DSS ack64 map64 length 30", hx("1e 1e 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab cd ef 01"), ErrBadLength},
}

// dssLenByRFC is the option length RFC 8684 §3.3 gives for a flag byte,
// computed from the figure independently of the implementation.
func dssLenByRFC(flags byte) int {
	n := 4
	if flags&0x01 != 0 { // A
		n += 4
		if flags&0x02 != 0 { // a
			n += 4
		}
	}
	if flags&0x04 != 0 { // M: DSN + subflow seq + data-level length
		n += 4 + 4 + 2
		if flags&0x08 != 0 { // m
			n += 4
		}
	}
	return n
}

// TestDSSAllFlagBytes tries every flag byte (reserved bits included) with
// every length from 3 to 40: exactly the RFC length and the RFC length + 2
// are accepted, and an accepted option round-trips with reserved bits
// cleared.
func TestDSSAllFlagBytes(t *testing.T) {
	for f := 0; f < 256; f++ {
		want := dssLenByRFC(byte(f))
		for n := 3; n <= 40; n++ {
			opt := make([]byte, n)
			opt[0], opt[1], opt[2] = 30, byte(n), 0x20
			if n > 3 {
				opt[3] = byte(f)
			}
			for i := 4; i < n; i++ {
				opt[i] = byte(i * 37)
			}
			d, err := ParseDSS(opt)
			accept := n > 3 && (n == want || n == want+2)
			if accept != (err == nil) {
				t.Fatalf("flags %#02x length %d: err %v, want accepted=%v", f, n, err, accept)
			}
			if err != nil {
				if err != ErrBadLength {
					t.Fatalf("flags %#02x length %d: err %v, want ErrBadLength", f, n, err)
				}
				continue
			}
			if d.HasChecksum != (n == want+2) {
				t.Errorf("flags %#02x length %d: HasChecksum %v", f, n, d.HasChecksum)
			}
			if d.Flags() != byte(f)&0x1f {
				t.Errorf("flags %#02x: Flags() = %#02x", f, d.Flags())
			}
			clean := append([]byte{}, opt...)
			clean[3] &= 0x1f
			if enc := d.Append(nil); !bytes.Equal(enc, clean) || d.Len() != n {
				t.Errorf("flags %#02x length %d: re-encoded % x, want % x", f, n, enc, clean)
			}
		}
	}
}

func TestDSSIsInfinite(t *testing.T) {
	for _, tc := range []struct {
		d    DSS
		want bool
	}{
		{DSS{HasMapping: true, DSN64: true, DSN: 5}, true},
		{DSS{HasMapping: true, DataLen: 1}, false},
		{DSS{HasDataAck: true}, false}, // no mapping at all
		{DSS{DataFIN: true, HasMapping: true, DataLen: 1}, false},
	} {
		if got := tc.d.IsInfinite(); got != tc.want {
			t.Errorf("%+v.IsInfinite() = %v", tc.d, got)
		}
	}
}

// TestDSS32BitTruncation checks that Append writes only the low 32 bits of
// values whose 64-bit flag is clear.
func TestDSS32BitTruncation(t *testing.T) {
	d := DSS{HasDataAck: true, DataAck: 0x1122334455667788, HasMapping: true, DSN: 0x99aabbccddeeff00, SubflowSeq: 7, DataLen: 9}
	want := hx("1e 12 20 05 55 66 77 88 dd ee ff 00 00 00 00 07 00 09")
	if got := d.Append(nil); !bytes.Equal(got, want) {
		t.Errorf("Append = % x, want % x", got, want)
	}
}

func TestDSSNoAlloc(t *testing.T) {
	raw := hx("1e 1c 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab cd")
	var sink DSS
	if n := testing.AllocsPerRun(1000, func() {
		d, err := ParseDSS(raw)
		if err != nil {
			t.Fatal(err)
		}
		sink = d
	}); n != 0 {
		t.Errorf("ParseDSS allocates %v times", n)
	}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(1000, func() {
		buf = sink.Append(buf[:0])
	}); n != 0 {
		t.Errorf("DSS.Append allocates %v times", n)
	}
	if !bytes.Equal(buf, raw) {
		t.Errorf("Append = % x", buf)
	}
}

func BenchmarkParseDSS(b *testing.B) {
	raw := hx("1e 1c 20 0f 00 00 00 01 00 00 10 00 00 00 00 02 aa bb cc dd 00 00 00 01 05 a0 ab cd")
	b.ReportAllocs()
	var sink DSS
	for b.Loop() {
		d, err := ParseDSS(raw)
		if err != nil {
			b.Fatal(err)
		}
		sink = d
	}
	_ = sink
}

func BenchmarkAppendDSS(b *testing.B) {
	d := DSS{HasDataAck: true, DataAck64: true, DataAck: testAck64, HasMapping: true, DSN64: true, DSN: testDSN64, SubflowSeq: 1, DataLen: 1440, HasChecksum: true, Checksum: 0xabcd}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = d.Append(buf[:0])
	}
}
