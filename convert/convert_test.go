package convert

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// hexBytes decodes space-separated hex bytes.
func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b []byte
	for _, f := range strings.Fields(s) {
		var x byte
		for _, c := range f {
			x <<= 4
			switch {
			case c >= '0' && c <= '9':
				x |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				x |= byte(c-'a') + 10
			default:
				t.Fatalf("bad hex %q", f)
			}
		}
		b = append(b, x)
	}
	return b
}

// Known encodings, written out by hand from RFC 8803 §4.
var vectors = []struct {
	name string
	hex  string
	msg  Message
}{
	{"header only (converter's plain accept)", "01 01 22 63", Message{}},
	{"connect IPv4", "01 06 22 63  0a 05 1f 90  00 00 00 00 00 00 00 00 00 00 ff ff 0a 32 00 02",
		Message{TLVs: []TLV{&Connect{Port: 8080, Addr: netip.MustParseAddr("10.50.0.2")}}}},
	{"connect IPv6 with MSS option", "01 07 22 63  0a 06 01 bb  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01  02 04 05 b4",
		Message{TLVs: []TLV{&Connect{Port: 443, Addr: netip.MustParseAddr("2001:db8::1"), Options: []byte{2, 4, 5, 0xb4}}}}},
	{"info", "01 02 22 63  01 01 00 00", Message{TLVs: []TLV{&Info{}}}},
	{"supported extensions MPTCP, SACK-permitted", "01 03 22 63  15 02 00 00  1e 04 00 00",
		Message{TLVs: []TLV{&SupportedExtensions{Kinds: []byte{30, 4}}}}},
	{"cookie", "01 03 22 63  16 02 00 00  de ad be ef", Message{TLVs: []TLV{&Cookie{Data: []byte{0xde, 0xad, 0xbe, 0xef}}}}},
	{"error not authorized", "01 02 22 63  1e 01 20 00", Message{TLVs: []TLV{&Error{Code: ErrorNotAuthorized}}}},
	{"error unsupported message (type 99)", "01 02 22 63  1e 01 02 63", Message{TLVs: []TLV{&Error{Code: ErrorUnsupportedMessage, Value: []byte{99}}}}},
	{"error with a 6-byte value", "01 04 22 63  1e 03 21 1e 22 05 06 07 08 00 00 00", Message{TLVs: []TLV{&Error{Code: ErrorUnsupportedTCPOption, Value: []byte{30, 34, 5, 6, 7, 8}}}}},
	{"extended TCP header, 24 bytes", "01 08 22 63  14 07 00 00  1f 90 c0 01 00 00 00 01 00 00 00 02 60 12 ff ff 00 00 00 00 02 04 05 b4",
		Message{TLVs: []TLV{&ExtendedTCPHeader{Header: []byte{0x1f, 0x90, 0xc0, 0x01, 0, 0, 0, 1, 0, 0, 0, 2, 0x60, 0x12, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 5, 0xb4}}}}},
	{"unknown type kept raw", "01 03 22 63  63 02 aa bb cc dd ee ff", Message{TLVs: []TLV{&Unknown{T: 99, Body: []byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}}}}},
	{"connect then cookie", "01 08 22 63  0a 05 00 50  00 00 00 00 00 00 00 00 00 00 ff ff c0 00 02 01  16 02 00 00 01 02 03 04",
		Message{TLVs: []TLV{&Connect{Port: 80, Addr: netip.MustParseAddr("192.0.2.1")}, &Cookie{Data: []byte{1, 2, 3, 4}}}}},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			b := hexBytes(t, v.hex)
			m, n, err := Parse(append(b, 0xff, 0xff)) // trailing application bytes are not read
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if n != len(b) {
				t.Errorf("consumed %d, want %d", n, len(b))
			}
			if !reflect.DeepEqual(m, v.msg) {
				t.Errorf("Parse = %#v, want %#v", m, v.msg)
			}
			if got := v.msg.Append(nil); !bytes.Equal(got, b) {
				t.Errorf("Append = % x, want % x", got, b)
			}
			if v.msg.Len() != len(b) {
				t.Errorf("Len = %d, want %d", v.msg.Len(), len(b))
			}
			for _, x := range v.msg.TLVs {
				if l := len(x.Append(nil)); l != x.Len() || l%4 != 0 {
					t.Errorf("%v: Len %d, Append wrote %d", x.Type(), x.Len(), l)
				}
			}
		})
	}
}

// TestTruncation: every proper prefix of a valid message fails to parse
// as truncated, never anything else and never a panic.
func TestTruncation(t *testing.T) {
	for _, v := range vectors {
		b := hexBytes(t, v.hex)
		for i := 0; i < len(b); i++ {
			_, _, err := Parse(b[:i])
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("%s: prefix of %d bytes: %v, want ErrTruncated", v.name, i, err)
			}
		}
	}
}

// TestMalformed: hostile and broken messages each fail with the expected
// sentinel.
func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, hex string
		want      error
	}{
		{"bad magic", "01 01 22 64", ErrBadMagic},
		{"version 0", "00 01 22 63", ErrVersion},
		{"version 2", "02 01 22 63", ErrVersion},
		{"total length 0", "01 00 22 63", ErrBadLength},
		{"total length past the bytes", "01 03 22 63 01 01 00 00", ErrTruncated},
		{"TLV length 0", "01 02 22 63 01 00 00 00", ErrBadLength},
		{"TLV past the message", "01 02 22 63 01 02 00 00 00 00 00 00", ErrBadLength},
		{"TLV past the message, unknown type", "01 02 22 63 77 09 00 00", ErrBadLength},
		{"info of two words", "01 03 22 63 01 02 00 00 00 00 00 00", ErrBadLength},
		{"connect of 4 words", "01 05 22 63 0a 04 00 50 00 00 00 00 00 00 00 00 00 00 ff ff", ErrBadLength},
		{"connect with a truncated option", "01 07 22 63 0a 06 00 50 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 02 08 00 00", ErrMalformed},
		{"connect with option length 1", "01 07 22 63 0a 06 00 50 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 08 01 00 00", ErrMalformed},
		{"connect with junk after EOL", "01 07 22 63 0a 06 00 50 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 00 01 00 00", ErrMalformed},
		{"extended header too short", "01 03 22 63 14 02 00 00 00 00 00 00", ErrBadLength},
		{"extended header offset mismatch", "01 07 22 63 14 06 00 00 00 50 00 50 00 00 00 01 00 00 00 02 60 12 ff ff 00 00 00 00", ErrMalformed},
		{"supported with kind 0 amid", "01 03 22 63 15 02 00 00 1e 00 04 00", ErrMalformed},
		{"cookie without data", "01 02 22 63 16 01 00 00", ErrBadLength},
		{"second TLV past the end", "01 03 22 63 01 01 00 00 1e 02 20 00", ErrBadLength},
	} {
		_, _, err := Parse(hexBytes(t, tc.hex))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		var fe *FormatError
		if err != nil && !errors.As(err, &fe) {
			t.Errorf("%s: %T is not a *FormatError", tc.name, err)
		}
	}
}

func TestParseRequest(t *testing.T) {
	dst := netip.MustParseAddrPort("10.50.0.2:8080")
	supported := []uint8{2, 3, 4, 8}
	for _, tc := range []struct {
		name string
		msg  Message
		want *Error
	}{
		{"connect", NewRequest(dst, nil), nil},
		{"connect with cookie", NewRequest(dst, []byte("abcd")), nil},
		{"info only", Message{TLVs: []TLV{&Info{}}}, nil},
		{"empty", Message{}, &Error{Code: ErrorMalformedMessage}},
		{"two connects", Message{TLVs: []TLV{&Connect{Port: 1, Addr: dst.Addr()}, &Connect{Port: 2, Addr: dst.Addr()}}}, &Error{Code: ErrorMalformedMessage}},
		{"port 0", Message{TLVs: []TLV{&Connect{Addr: dst.Addr()}}}, &Error{Code: ErrorMalformedMessage}},
		{"unspecified", Message{TLVs: []TLV{&Connect{Port: 80, Addr: netip.IPv6Unspecified()}}}, &Error{Code: ErrorMalformedMessage}},
		{"multicast", Message{TLVs: []TLV{&Connect{Port: 80, Addr: netip.MustParseAddr("224.0.0.1")}}}, &Error{Code: ErrorMalformedMessage}},
		{"unknown TLV", Message{TLVs: []TLV{&Connect{Port: 80, Addr: dst.Addr()}, &Unknown{T: 77, Body: []byte{0, 0}}}}, &Error{Code: ErrorUnsupportedMessage, Value: []byte{77}}},
		{"error TLV from a client", Message{TLVs: []TLV{&Error{Code: 1}}}, &Error{Code: ErrorUnsupportedMessage, Value: []byte{30}}},
		{"MPTCP and TFO options", Message{TLVs: []TLV{&Connect{Port: 80, Addr: dst.Addr(), Options: []byte{30, 4, 0, 0, 34, 2, 1, 0}}}}, &Error{Code: ErrorUnsupportedTCPOption, Value: []byte{30, 34}}},
		{"MSS option", Message{TLVs: []TLV{&Connect{Port: 80, Addr: dst.Addr(), Options: []byte{2, 4, 5, 0xb4}}}}, nil},
	} {
		b, err := tc.msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r, e := ParseRequest(m, supported)
		if !reflect.DeepEqual(e, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, e, tc.want)
		}
		if e == nil && tc.msg.Find(TypeConnect) != nil && r.Dest.Port() == 0 {
			t.Errorf("%s: no destination", tc.name)
		}
	}
}

func TestReply(t *testing.T) {
	for _, tc := range []struct {
		msg     Message
		wantErr bool
	}{
		{Accept(nil), false},
		{Accept(&ExtendedTCPHeader{Header: make([]byte, 20)}), false},
		{Supported([]uint8{30}), false},
		{Refuse(&Error{Code: ErrorDestinationUnreachable}), true},
		{Message{TLVs: []TLV{&Connect{Port: 1, Addr: netip.MustParseAddr("::1")}}}, true},
	} {
		_, err := ParseReply(tc.msg)
		if (err != nil) != tc.wantErr {
			t.Errorf("%v: %v", tc.msg, err)
		}
	}
	if _, err := ParseReply(Refuse(&Error{Code: ErrorNotAuthorized})); err.Error() != "convert: not authorized" {
		t.Errorf("error text %q", err)
	}
}

func TestErrorFor(t *testing.T) {
	_, err := ParseHeader([]byte{2, 1, 0x22, 0x63})
	if e := ErrorFor(err); e.Code != ErrorUnsupportedVersion || !bytes.Equal(e.Value, []byte{Version}) {
		t.Errorf("version 2: %v", e)
	}
	_, err = ParseHeader([]byte{1, 1, 0, 0})
	if e := ErrorFor(err); e.Code != ErrorMalformedMessage {
		t.Errorf("bad magic: %v", e)
	}
}

func TestMarshalTooLong(t *testing.T) {
	m := Message{TLVs: []TLV{&Cookie{Data: make([]byte, MaxLen)}}}
	if _, err := m.Marshal(); !errors.Is(err, ErrTooLong) {
		t.Errorf("Marshal: %v", err)
	}
}

// TestReadMessage: exactly the message is consumed, the application's
// bytes after it stay in the stream; a bad header is reported without
// waiting for more bytes.
func TestReadMessage(t *testing.T) {
	req := NewRequest(netip.MustParseAddrPort("[2001:db8::7]:22"), []byte("k"))
	stream := append(req.Append(nil), "GET / HTTP/1.0\r\n"...)
	r := bytes.NewReader(stream)
	m, raw, err := ReadMessage(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != req.Len() || len(m.TLVs) != 2 {
		t.Errorf("read %d bytes, %d TLVs", len(raw), len(m.TLVs))
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "GET / HTTP/1.0\r\n" {
		t.Errorf("left %q", rest)
	}
	// A bad header: only 4 bytes are read.
	br := &countingReader{r: bytes.NewReader([]byte{1, 9, 0, 0, 1, 2, 3})}
	if _, _, err := ReadMessage(br, nil); !errors.Is(err, ErrBadMagic) || br.n != 4 {
		t.Errorf("bad magic: %v after %d bytes", err, br.n)
	}
	if _, _, err := ReadMessage(bytes.NewReader([]byte{1, 3, 0x22, 0x63, 1, 1}), nil); err != io.ErrUnexpectedEOF {
		t.Errorf("short stream: %v", err)
	}
	if _, _, err := ReadMessage(bytes.NewReader(nil), nil); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}
