package checksum

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refSum is the reference: RFC 1071 one byte at a time over the
// concatenation of chunks, bytes at even offsets in the high octet, folded
// with end-around carry.
func refSum(chunks ...[]byte) uint16 {
	var acc uint64
	var i int
	for _, c := range chunks {
		for _, b := range c {
			if i%2 == 0 {
				acc += uint64(b) << 8
			} else {
				acc += uint64(b)
			}
			i++
		}
	}
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// refHeader builds the DSS checksum pseudo-header bytes (RFC 8684 §3.3.1).
func refHeader(dsn uint64, ssn uint32, dataLen uint16) []byte {
	h := binary.BigEndian.AppendUint64(nil, dsn)
	h = binary.BigEndian.AppendUint32(h, ssn)
	h = binary.BigEndian.AppendUint16(h, dataLen)
	return append(h, 0, 0)
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// Vectors worked by hand, 16-bit big-endian words.
var vectors = []struct {
	name    string
	dsn     uint64
	ssn     uint32
	dataLen uint16
	payload []byte
	value   uint16 // folded sum of pseudo-header and payload
	wire    uint16 // ^value
}{
	{
		// 0102+0304+0506+0708 + 090a+0b0c + 0003+0000 + 0e0f+1000(padded)
		// = 423c
		name: "simple", dsn: 0x0102030405060708, ssn: 0x090a0b0c, dataLen: 3,
		payload: []byte{0x0e, 0x0f, 0x10}, value: 0x423c, wire: 0xbdc3,
	},
	{
		// 7*ffff + 0000 + ff00 = 7fef9 -> fef9+7 = ff00
		name: "carries", dsn: ^uint64(0), ssn: ^uint32(0), dataLen: 0xffff,
		payload: []byte{0xff}, value: 0xff00, wire: 0x00ff,
	},
	{
		// Nothing but zeros sums to zero; its checksum is ffff.
		name: "zero", value: 0x0000, wire: 0xffff,
	},
	{
		// 0002 + fffd = ffff: the sum is ones' complement "negative
		// zero" and the checksum 0000.
		name: "negative zero", dataLen: 2, payload: []byte{0xff, 0xfd}, value: 0xffff, wire: 0x0000,
	},
	{
		// DATA_FIN-only mapping as Linux sends it: DSN, subflow seq 0,
		// length 1, no payload. 0000+0000+0000+002a + 0 + 0001 = 002b
		name: "DATA_FIN", dsn: 0x2a, dataLen: 1, value: 0x002b, wire: 0xffd4,
	},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			if got := refSum(refHeader(v.dsn, v.ssn, v.dataLen), v.payload); got != v.value {
				t.Fatalf("the reference itself gives %#04x, vector says %#04x", got, v.value)
			}
			if got := DSSChecksum(v.dsn, v.ssn, v.dataLen, v.payload); got != v.wire {
				t.Errorf("DSSChecksum = %#04x, want %#04x", got, v.wire)
			}
			s := NewDSS(v.dsn, v.ssn, v.dataLen)
			s.Add(v.payload)
			if s.Value() != v.value || s.Checksum() != v.wire {
				t.Errorf("Sum: Value %#04x Checksum %#04x, want %#04x %#04x", s.Value(), s.Checksum(), v.value, v.wire)
			}
			if !VerifyDSS(v.dsn, v.ssn, v.dataLen, v.payload, v.wire) || !s.Verify(v.wire) {
				t.Error("the correct checksum does not verify")
			}
		})
	}
}

// TestVerifyAcceptsBothZeros: a sender may write either ones' complement
// form of a zero checksum; the kernel accepts both, and so do we. Where the
// sum is all zeros, only ffff is right.
func TestVerifyAcceptsBothZeros(t *testing.T) {
	p := []byte{0xff, 0xfd} // sum ffff with the pseudo-header below
	if !VerifyDSS(0, 0, 2, p, 0x0000) || !VerifyDSS(0, 0, 2, p, 0xffff) {
		t.Error("a mapping summing to ffff must verify with 0000 and ffff")
	}
	if VerifyDSS(0, 0, 0, nil, 0x0000) {
		t.Error("an all-zero mapping verifies with checksum 0000 (its sum is +0, so only ffff is right)")
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 10000 {
		dsn, ssn, l := rng.Uint64(), rng.Uint32(), uint16(rng.Uint32())
		switch rng.IntN(4) { // stress the carries
		case 0:
			dsn |= 0xffff_ffff_ffff_0000
		case 1:
			ssn, l = ^uint32(0), 0xffff
		}
		if got, want := PseudoHeaderSum(dsn, ssn, l), refSum(refHeader(dsn, ssn, l)); got != want {
			t.Fatalf("PseudoHeaderSum(%#x, %#x, %#x) = %#04x, want %#04x", dsn, ssn, l, got, want)
		}
	}
}

// addChunks adds payload to s in the given chunk lengths (the last chunk
// takes the rest), using AddPartial for every third chunk.
func addChunks(s *Sum, payload []byte, cuts []int) {
	for i, c := range cuts {
		c = min(c, len(payload))
		if i%3 == 2 {
			var part Sum
			part.Add(payload[:c])
			s.AddPartial(part.Value(), part.Len())
		} else {
			s.Add(payload[:c])
		}
		payload = payload[c:]
	}
	s.Add(payload)
}

func TestSumRandomChunkings(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for range 2000 {
		n := rng.IntN(3000)
		payload := randBytes(rng, n)
		dsn, ssn, l := rng.Uint64(), rng.Uint32(), uint16(n)
		want := refSum(refHeader(dsn, ssn, l), payload)

		var cuts []int
		for k := rng.IntN(12); k > 0; k-- {
			cuts = append(cuts, rng.IntN(300)) // zero-length and odd chunks included
		}
		s := NewDSS(dsn, ssn, l)
		addChunks(&s, payload, cuts)
		if s.Value() != want || s.Len() != uint64(n) {
			t.Fatalf("len %d cuts %v: Value %#04x Len %d, want %#04x %d", n, cuts, s.Value(), s.Len(), want, n)
		}
		if one := DSSChecksum(dsn, ssn, l, payload); one != ^want || s.Checksum() != one {
			t.Fatalf("len %d: one shot %#04x, incremental %#04x, want %#04x", n, one, s.Checksum(), ^want)
		}
	}
}

// TestOddSplits cuts short payloads at every pair of points, so every chunk
// starts at every parity and alignment.
func TestOddSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for n := 0; n <= 40; n++ {
		buf := randBytes(rng, n+1)
		for _, payload := range [][]byte{buf[:n], buf[1:]} { // two base alignments
			want := refSum(payload)
			for i := 0; i <= n; i++ {
				for j := i; j <= n; j++ {
					var s Sum
					s.Add(payload[:i])
					s.Add(payload[i:j])
					s.Add(payload[j:])
					if s.Value() != want || s.Len() != uint64(n) {
						t.Fatalf("len %d split %d,%d: %#04x (len %d), want %#04x", n, i, j, s.Value(), s.Len(), want)
					}
				}
			}
		}
	}
}

func TestZeroSum(t *testing.T) {
	var s Sum
	if s.Value() != 0 || s.Len() != 0 || s.Checksum() != 0xffff {
		t.Fatalf("zero Sum: Value %#04x Len %d Checksum %#04x", s.Value(), s.Len(), s.Checksum())
	}
	s.Add(nil)
	s.AddPartial(0x1234, 0) // zero bytes: no effect
	if s != (Sum{}) {
		t.Fatalf("adding nothing changed the sum: %+v", s)
	}
}

// TestVerifyRejectsEveryBitFlip: a ones' complement sum detects any single
// bit error, in the payload, the pseudo-header or the checksum itself.
func TestVerifyRejectsEveryBitFlip(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{0, 1, 2, 7, 64, 301} {
		payload := randBytes(rng, n)
		dsn, ssn, l := rng.Uint64(), rng.Uint32(), uint16(n)
		wire := DSSChecksum(dsn, ssn, l, payload)
		if !VerifyDSS(dsn, ssn, l, payload, wire) {
			t.Fatalf("len %d: correct checksum rejected", n)
		}
		for bit := range 8 * n {
			payload[bit/8] ^= 1 << (bit % 8)
			if VerifyDSS(dsn, ssn, l, payload, wire) {
				t.Fatalf("len %d: payload bit %d flipped, still verifies", n, bit)
			}
			s := NewDSS(dsn, ssn, l)
			s.Add(payload[:bit/8])
			s.Add(payload[bit/8:])
			if s.Verify(wire) {
				t.Fatalf("len %d: payload bit %d flipped, incremental sum still verifies", n, bit)
			}
			payload[bit/8] ^= 1 << (bit % 8)
		}
		for bit := range 64 {
			if VerifyDSS(dsn^1<<bit, ssn, l, payload, wire) {
				t.Fatalf("len %d: DSN bit %d flipped, still verifies", n, bit)
			}
		}
		for bit := range 32 {
			if VerifyDSS(dsn, ssn^1<<bit, l, payload, wire) {
				t.Fatalf("len %d: subflow seq bit %d flipped, still verifies", n, bit)
			}
		}
		for bit := range 16 {
			if VerifyDSS(dsn, ssn, l^1<<bit, payload, wire) {
				t.Fatalf("len %d: data length bit %d flipped, still verifies", n, bit)
			}
			if VerifyDSS(dsn, ssn, l, payload, wire^1<<bit) {
				t.Fatalf("len %d: checksum bit %d flipped, still verifies", n, bit)
			}
		}
	}
}

func TestNoAllocs(t *testing.T) {
	payload := make([]byte, 1449)
	var sink uint16
	if n := testing.AllocsPerRun(100, func() {
		s := NewDSS(1, 2, 1449)
		s.Add(payload[:501])
		s.Add(payload[501:])
		sink += s.Checksum() + DSSChecksum(1, 2, 1449, payload)
		_ = VerifyDSS(1, 2, 1449, payload, sink)
	}); n != 0 {
		t.Errorf("%v allocations per mapping", n)
	}
}

func FuzzIncremental(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{3, 0, 5}, uint64(1), uint32(1), uint16(12))
	f.Fuzz(func(t *testing.T, payload, cutBytes []byte, dsn uint64, ssn uint32, dataLen uint16) {
		var cuts []int
		for _, c := range cutBytes {
			cuts = append(cuts, int(c))
		}
		want := ^refSum(refHeader(dsn, ssn, dataLen), payload)
		one := DSSChecksum(dsn, ssn, dataLen, payload)
		s := NewDSS(dsn, ssn, dataLen)
		addChunks(&s, payload, cuts)
		if one != want || s.Checksum() != want {
			t.Fatalf("one shot %#04x, incremental %#04x (cuts %v), reference %#04x", one, s.Checksum(), cuts, want)
		}
		if s.Len() != uint64(len(payload)) {
			t.Fatalf("Len %d, want %d", s.Len(), len(payload))
		}
		if !VerifyDSS(dsn, ssn, dataLen, payload, one) || !s.Verify(one) {
			t.Fatal("the computed checksum does not verify")
		}
		if VerifyDSS(dsn, ssn, dataLen, payload, one^0x0100) || s.Verify(one^0x0001) {
			t.Fatal("a checksum with one bit flipped verifies")
		}
	})
}

// BenchmarkDSSChecksum measures one-shot mapping checksums. (A mapping is at
// most 65535 bytes; the 64 KiB case wraps the length field, which does not
// change the cost.)
func BenchmarkDSSChecksum(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1448", 1448}, {"16KiB", 16 << 10}, {"64KiB", 64 << 10}} {
		payload := randBytes(rand.New(rand.NewPCG(5, 5)), size.n)
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			var sink uint16
			for b.Loop() {
				sink += DSSChecksum(1<<40, 1, uint16(size.n), payload)
			}
			_ = sink
		})
	}
}

// BenchmarkSumAdd64KiB sums a 64 KiB mapping arriving in 1449-byte segments
// (odd boundaries, so every other chunk is byte-swapped).
func BenchmarkSumAdd64KiB(b *testing.B) {
	payload := randBytes(rand.New(rand.NewPCG(6, 6)), 64<<10)
	b.SetBytes(int64(len(payload)))
	var sink uint16
	for b.Loop() {
		s := NewDSS(1<<40, 1, 0)
		for p := payload; len(p) > 0; {
			c := min(1449, len(p))
			s.Add(p[:c])
			p = p[c:]
		}
		sink += s.Checksum()
	}
	_ = sink
}
