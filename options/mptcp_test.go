package options

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// hx decodes a hex string written with optional spaces, for byte vectors
// copied by hand from the RFC 8684 §3 figures.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic("bad hex in test vector: " + s)
	}
	return b
}

// vector is a valid MPTCP option and its expected decoding.
type vector struct {
	name string
	raw  []byte
	want Option
	// lenient marks a form Linux accepts beyond what RFC 8684 describes
	// (and RFC-strict decoders such as gopacket reject).
	lenient bool
}

// badVector is an MPTCP option every parser must reject with err.
type badVector struct {
	name string
	raw  []byte
	err  error
}

func allVectors() []vector {
	var all []vector
	for _, vs := range [][]vector{
		capableVectors, joinVectors, dssVectors, addAddrVectors,
		removeAddrVectors, prioVectors, failVectors, fastcloseVectors,
		rstVectors, unknownVectors,
	} {
		all = append(all, vs...)
	}
	return all
}

func allBadVectors() []badVector {
	var all []badVector
	for _, vs := range [][]badVector{
		capableBad, joinBad, dssBad, addAddrBad, removeAddrBad,
		prioBad, failBad, fastcloseBad, rstBad, headerBad,
	} {
		all = append(all, vs...)
	}
	return all
}

var unknownVectors = []vector{
	{name: "unassigned subtype 9", raw: hx("1e 05 90 aa bb"),
		want: Unknown{Sub: 9, Raw: hx("1e 05 90 aa bb")}},
	{name: "MP_EXPERIMENTAL", raw: hx("1e 06 f3 01 02 03"),
		want: Unknown{Sub: SubtypeExperimental, Raw: hx("1e 06 f3 01 02 03")}},
	{name: "subtype 0xa, header only", raw: hx("1e 03 a0"),
		want: Unknown{Sub: 0xa, Raw: hx("1e 03 a0")}},
}

// headerBad are errors of the common header, whatever the subtype.
var headerBad = []badVector{
	{"empty", nil, ErrTruncated},
	{"kind only", hx("1e"), ErrTruncated},
	{"not kind 30", hx("02 04 05 b4"), ErrNotMPTCP},
	{"length 0", hx("1e 00 20 01"), ErrBadLength},
	{"length 2", hx("1e 02 20 01"), ErrBadLength},
	{"length past end", hx("1e 08 20 01 00 00"), ErrTruncated},
}

// typedParse calls the typed parser for the subtype of opt, to check it
// agrees with Parse.
func typedParse(opt []byte) (Option, error) {
	st, err := PeekSubtype(opt)
	if err != nil {
		return nil, err
	}
	switch st {
	case SubtypeMPCapable:
		return ParseMPCapable(opt)
	case SubtypeMPJoin:
		return ParseMPJoin(opt)
	case SubtypeDSS:
		return ParseDSS(opt)
	case SubtypeAddAddr:
		return ParseAddAddr(opt)
	case SubtypeRemoveAddr:
		return ParseRemoveAddr(opt)
	case SubtypeMPPrio:
		return ParseMPPrio(opt)
	case SubtypeMPFail:
		return ParseMPFail(opt)
	case SubtypeMPFastclose:
		return ParseMPFastclose(opt)
	case SubtypeMPTCPRst:
		return ParseMPTCPRst(opt)
	}
	return ParseUnknown(opt)
}

// reservedMask returns, for a valid option, a mask of the bits RFC 8684 §3
// marks reserved (ignored on input, zero on output), byte by byte.
func reservedMask(opt []byte) []byte {
	m := make([]byte, len(opt))
	switch Subtype(opt[2] >> 4) {
	case SubtypeMPJoin:
		if len(opt) == lenJoinACK {
			m[2], m[3] = 0x0f, 0xff
		} else {
			m[2] = 0x0e
		}
	case SubtypeDSS:
		m[2], m[3] = 0x0f, 0xe0
	case SubtypeAddAddr, SubtypeMPPrio:
		m[2] = 0x0e
	case SubtypeRemoveAddr:
		m[2] = 0x0f
	case SubtypeMPFail, SubtypeMPFastclose:
		m[2], m[3] = 0x0f, 0xff
	}
	return m
}

func TestSubtypeString(t *testing.T) {
	for _, tc := range []struct {
		s    Subtype
		want string
	}{
		{SubtypeMPCapable, "MP_CAPABLE"},
		{SubtypeMPJoin, "MP_JOIN"},
		{SubtypeDSS, "DSS"},
		{SubtypeAddAddr, "ADD_ADDR"},
		{SubtypeRemoveAddr, "REMOVE_ADDR"},
		{SubtypeMPPrio, "MP_PRIO"},
		{SubtypeMPFail, "MP_FAIL"},
		{SubtypeMPFastclose, "MP_FASTCLOSE"},
		{SubtypeMPTCPRst, "MP_TCPRST"},
		{SubtypeExperimental, "MP_EXPERIMENTAL"},
		{0x9, "subtype(0x9)"},
		{0xe, "subtype(0xe)"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Subtype(%d).String() = %q, want %q", uint8(tc.s), got, tc.want)
		}
	}
}

// TestVectors checks every valid vector: Parse and the typed parser decode
// the expected value, the expected value encodes to the vector's bytes, and
// Len agrees.
func TestVectors(t *testing.T) {
	for _, v := range allVectors() {
		t.Run(v.name, func(t *testing.T) {
			got, err := Parse(v.raw)
			if err != nil {
				t.Fatalf("Parse(% x): %v", v.raw, err)
			}
			if !reflect.DeepEqual(got, v.want) {
				t.Errorf("Parse(% x) =\n %#v\nwant\n %#v", v.raw, got, v.want)
			}
			typed, err := typedParse(v.raw)
			if err != nil || !reflect.DeepEqual(typed, v.want) {
				t.Errorf("typed parse = %#v, %v; want %#v", typed, err, v.want)
			}
			if got.Subtype() != Subtype(v.raw[2]>>4) {
				t.Errorf("Subtype() = %v, want %v", got.Subtype(), Subtype(v.raw[2]>>4))
			}
			if st, err := PeekSubtype(v.raw); err != nil || st != got.Subtype() {
				t.Errorf("PeekSubtype = %v, %v", st, err)
			}
			if n := v.want.Len(); n != len(v.raw) {
				t.Errorf("Len() = %d, want %d", n, len(v.raw))
			}
			if enc := v.want.Append(nil); !bytes.Equal(enc, v.raw) {
				t.Errorf("Append =\n % x\nwant\n % x", enc, v.raw)
			}
			// Append must append, not overwrite.
			prefix := []byte{0xde, 0xad}
			if enc := v.want.Append(prefix); !bytes.Equal(enc, append([]byte{0xde, 0xad}, v.raw...)) {
				t.Errorf("Append after prefix = % x", enc)
			}
			// Trailing bytes beyond the length byte are not part of the option.
			longer := append(append([]byte{}, v.raw...), 0x01, 0x01, 0xff)
			if got2, err := Parse(longer); err != nil || !reflect.DeepEqual(got2, v.want) {
				t.Errorf("Parse with trailing bytes = %#v, %v", got2, err)
			}
		})
	}
}

// TestParseDoesNotAlias checks that Parse copies what the typed parsers
// alias, so tools may reuse their packet buffers.
func TestParseDoesNotAlias(t *testing.T) {
	for _, raw := range [][]byte{hx("1e 06 40 01 02 03"), hx("1e 05 90 aa bb")} {
		buf := append([]byte{}, raw...)
		got, err := Parse(buf)
		if err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = 0xff
		}
		if enc := got.Append(nil); !bytes.Equal(enc, raw) {
			t.Errorf("after overwriting the input, Parse result encodes % x, want % x", enc, raw)
		}
	}
}

func TestBadVectors(t *testing.T) {
	for _, v := range allBadVectors() {
		t.Run(v.name, func(t *testing.T) {
			got, err := Parse(v.raw)
			if err != v.err {
				t.Fatalf("Parse(% x) error = %v, want %v", v.raw, err, v.err)
			}
			if err == ErrBadVersion {
				if _, ok := got.(MPCapable); !ok {
					t.Errorf("ErrBadVersion without the decoded MPCapable: %#v", got)
				}
			} else if got != nil {
				t.Errorf("Parse returned %#v with error %v", got, err)
			}
			if _, err := typedParse(v.raw); err != v.err {
				t.Errorf("typed parser error = %v, want %v", err, v.err)
			}
		})
	}
}

// TestTypedParsersCheckHeader runs every typed parser on header errors and on
// another subtype.
func TestTypedParsersCheckHeader(t *testing.T) {
	parsers := map[Subtype]func([]byte) error{
		SubtypeMPCapable:   func(b []byte) error { _, err := ParseMPCapable(b); return err },
		SubtypeMPJoin:      func(b []byte) error { _, err := ParseMPJoin(b); return err },
		SubtypeDSS:         func(b []byte) error { _, err := ParseDSS(b); return err },
		SubtypeAddAddr:     func(b []byte) error { _, err := ParseAddAddr(b); return err },
		SubtypeRemoveAddr:  func(b []byte) error { _, err := ParseRemoveAddr(b); return err },
		SubtypeMPPrio:      func(b []byte) error { _, err := ParseMPPrio(b); return err },
		SubtypeMPFail:      func(b []byte) error { _, err := ParseMPFail(b); return err },
		SubtypeMPFastclose: func(b []byte) error { _, err := ParseMPFastclose(b); return err },
		SubtypeMPTCPRst:    func(b []byte) error { _, err := ParseMPTCPRst(b); return err },
	}
	for st, parse := range parsers {
		for _, h := range headerBad {
			if err := parse(h.raw); err != h.err {
				t.Errorf("%v parser on %s: %v, want %v", st, h.name, err, h.err)
			}
		}
		// A valid option of each other subtype is ErrWrongSubtype.
		for _, v := range allVectors() {
			if v.want.Subtype() == st {
				continue
			}
			if err := parse(v.raw); err != ErrWrongSubtype {
				t.Errorf("%v parser on %s: %v, want ErrWrongSubtype", st, v.name, err)
			}
		}
	}
}

// TestTruncation cuts every valid vector two ways: a proper prefix with the
// original length byte must be ErrTruncated; a prefix whose length byte is
// rewritten to match must be ErrBadLength, or else a valid shorter form that
// re-encodes to exactly those bytes. Neither may panic.
func TestTruncation(t *testing.T) {
	for _, v := range allVectors() {
		for n := 0; n < len(v.raw); n++ {
			prefix := append([]byte{}, v.raw[:n]...)
			if _, err := Parse(prefix); err != ErrTruncated && err != ErrBadLength {
				t.Errorf("%s: Parse(prefix %d) error = %v", v.name, n, err)
			}
			if _, err := typedParse(prefix); err != ErrTruncated && err != ErrBadLength {
				t.Errorf("%s: typed parse(prefix %d) error = %v", v.name, n, err)
			}
			if n < 3 {
				continue
			}
			prefix[1] = byte(n)
			got, err := Parse(prefix)
			switch {
			case err == ErrBadLength:
			case err == nil:
				if enc := got.Append(nil); !bytes.Equal(enc, prefix) || got.Len() != n {
					t.Errorf("%s: shortened to %d parses as %#v, which encodes % x", v.name, n, got, enc)
				}
			default:
				t.Errorf("%s: shortened to %d: error %v", v.name, n, err)
			}
		}
	}
}

// TestReservedBitsIgnored sets every reserved bit of every vector: the
// decoded value must not change, and Append writes the bits as zero.
func TestReservedBitsIgnored(t *testing.T) {
	for _, v := range allVectors() {
		mask := reservedMask(v.raw)
		dirty := append([]byte{}, v.raw...)
		for i := range dirty {
			dirty[i] |= mask[i]
		}
		got, err := Parse(dirty)
		if err != nil {
			t.Errorf("%s: with reserved bits % x: %v", v.name, dirty, err)
			continue
		}
		if !reflect.DeepEqual(got, v.want) {
			t.Errorf("%s: reserved bits changed the decoding: %#v", v.name, got)
		}
		if enc := got.Append(nil); !bytes.Equal(enc, v.raw) {
			t.Errorf("%s: re-encoding with reserved bits = % x, want % x", v.name, enc, v.raw)
		}
	}
}

// FuzzParse checks, for any input: no panic; Parse and the typed parser
// agree; on success Len equals the length byte, Append reproduces the input
// with reserved bits cleared, and parsing that gives the same value.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, opt []byte) {
		v, err := Parse(opt)
		typed, terr := typedParse(opt)
		if terr != err {
			t.Fatalf("Parse error %v, typed parser error %v", err, terr)
		}
		switch err {
		case nil, ErrBadVersion:
		case ErrTruncated, ErrBadLength, ErrNotMPTCP:
			if v != nil {
				t.Fatalf("value %#v with error %v", v, err)
			}
			return
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if v == nil {
			t.Fatalf("nil value with error %v", err)
		}
		if !reflect.DeepEqual(v, typed) {
			t.Fatalf("Parse %#v, typed parser %#v", v, typed)
		}
		n := int(opt[1])
		if v.Len() != n {
			t.Fatalf("Len() = %d, length byte %d", v.Len(), n)
		}
		enc := v.Append(nil)
		if len(enc) != n {
			t.Fatalf("Append wrote %d bytes, Len %d", len(enc), n)
		}
		mask := reservedMask(opt[:n])
		for i := range enc {
			if enc[i] != opt[i]&^mask[i] {
				t.Fatalf("re-encoded\n % x\nfrom\n % x", enc, opt[:n])
			}
		}
		v2, err2 := Parse(enc)
		if err2 != err || !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip: %#v, %v; want %#v, %v", v2, err2, v, err)
		}
	})
}
