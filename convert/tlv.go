package convert

import "strconv"

// Type is a TLV type (RFC 8803 §4.2 and §7.3).
type Type uint8

// TLV types.
const (
	TypeInfo                Type = 1
	TypeConnect             Type = 10
	TypeExtendedTCPHeader   Type = 20
	TypeSupportedExtensions Type = 21
	TypeCookie              Type = 22
	TypeError               Type = 30
)

func (t Type) String() string {
	switch t {
	case TypeInfo:
		return "Info"
	case TypeConnect:
		return "Connect"
	case TypeExtendedTCPHeader:
		return "Extended TCP Header"
	case TypeSupportedExtensions:
		return "Supported TCP Extensions"
	case TypeCookie:
		return "Cookie"
	case TypeError:
		return "Error"
	}
	return "type " + strconv.Itoa(int(t))
}

// TLV is one decoded TLV: *Info, *Connect, *ExtendedTCPHeader,
// *SupportedExtensions, *Cookie, *Error or *Unknown.
type TLV interface {
	// Type returns the TLV's type.
	Type() Type
	// Len returns the encoded size in bytes, a multiple of 4 (what
	// Append writes).
	Len() int
	// Append appends the encoded TLV, padded to a word boundary, to b.
	Append(b []byte) []byte
}

var (
	_ TLV = (*Info)(nil)
	_ TLV = (*Connect)(nil)
	_ TLV = (*ExtendedTCPHeader)(nil)
	_ TLV = (*SupportedExtensions)(nil)
	_ TLV = (*Cookie)(nil)
	_ TLV = (*Error)(nil)
	_ TLV = (*Unknown)(nil)
)

// tlvHeaderLen is the type and length bytes of every TLV.
const tlvHeaderLen = 2

// words rounds n bytes up to whole 32-bit words and returns the byte
// count.
func words(n int) int { return (n + 3) &^ 3 }

// appendTLVHeader appends the type and the length byte for a TLV of n
// bytes (already a multiple of 4).
func appendTLVHeader(b []byte, t Type, n int) []byte {
	return append(b, byte(t), byte(n/4))
}

// appendPadded appends v and zero bytes up to a total of n bytes.
func appendPadded(b, v []byte, n int) []byte {
	b = append(b, v...)
	for i := len(v); i < n; i++ {
		b = append(b, 0)
	}
	return b
}

// parseTLV decodes one TLV; b is exactly the TLV's bytes (its length
// field times four, at least 4) and off its offset in the message.
func parseTLV(b []byte, off int) (TLV, error) {
	t := Type(b[0])
	switch t {
	case TypeInfo:
		return parseInfo(b, off)
	case TypeConnect:
		return parseConnect(b, off)
	case TypeExtendedTCPHeader:
		return parseExtendedTCPHeader(b, off)
	case TypeSupportedExtensions:
		return parseSupportedExtensions(b, off)
	case TypeCookie:
		return parseCookie(b, off)
	case TypeError:
		return parseError(b, off)
	}
	return &Unknown{T: t, Body: append([]byte(nil), b[tlvHeaderLen:]...)}, nil
}

// Unknown is a TLV of a type this package does not know, kept raw. A
// converter answers it with ErrorUnsupportedMessage.
type Unknown struct {
	T Type
	// Body is everything after the type and length bytes, padding
	// included.
	Body []byte
}

func (u *Unknown) Type() Type { return u.T }
func (u *Unknown) Len() int   { return words(tlvHeaderLen + len(u.Body)) }
func (u *Unknown) Append(b []byte) []byte {
	n := u.Len()
	b = appendTLVHeader(b, u.T, n)
	return appendPadded(b, u.Body, n-tlvHeaderLen)
}
