package convert

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParse: Parse never panics; whatever it accepts re-encodes to a
// message that parses to the same value, with Len equal to the bytes
// Append writes and no longer than what was consumed; when the input's
// padding and unassigned bytes were zero, the re-encoding is the input
// itself. ReadMessage agrees with Parse, and ParseRequest and ParseReply
// never panic on what Parse accepts.
func FuzzParse(f *testing.F) {
	for _, v := range vectors {
		f.Add(hexBytes(f, v.hex))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := Parse(b)
		rm, raw, rerr := ReadMessage(bytes.NewReader(b), nil)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Parse: %v, ReadMessage: %v", err, rerr)
		}
		if err != nil {
			if _, ok := err.(*FormatError); !ok {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		if n < HeaderLen || n > len(b) || n%4 != 0 || n > MaxLen {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		if !reflect.DeepEqual(m, rm) || len(raw) != n {
			t.Fatalf("ReadMessage disagrees: %#v vs %#v", rm, m)
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if len(enc) != m.Len() || len(enc) > n {
			t.Fatalf("re-encoded %d bytes, Len %d, consumed %d", len(enc), m.Len(), n)
		}
		m2, n2, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-parse: %v\n% x", err, enc)
		}
		if n2 != len(enc) || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%#v\n%#v", m, m2)
		}
		if len(enc) == n && !bytes.Equal(enc, b[:n]) && canonical(b[:n]) {
			t.Fatalf("canonical input re-encoded differently:\n% x\n% x", b[:n], enc)
		}
		_, _ = ParseRequest(m, []uint8{2, 4})
		_, _ = ParseReply(m)
	})
}

// canonical reports whether the unassigned bytes of b's TLVs (Info,
// Extended TCP Header, Supported TCP Extensions, Cookie) are zero: the
// only bytes Parse does not keep.
func canonical(b []byte) bool {
	for off := HeaderLen; off < len(b); off += int(b[off+1]) * 4 {
		switch Type(b[off]) {
		case TypeInfo, TypeExtendedTCPHeader, TypeSupportedExtensions, TypeCookie:
			if b[off+2] != 0 || b[off+3] != 0 {
				return false
			}
		}
	}
	return true
}
