package convert

import "encoding/binary"

// Protocol constants of RFC 8803 §4.1.
const (
	// Version is the protocol version this package speaks; version 0 is
	// reserved.
	Version = 1
	// Magic is the value of the fixed header's Magic Number field
	// (0x2263, 8803 in decimal).
	Magic = 0x2263
	// HeaderLen is the size of the fixed header.
	HeaderLen = 4
	// MaxLen is the largest Convert message: Total Length is an 8-bit
	// count of 32-bit words.
	MaxLen = 255 * 4
	// DefaultPort is the TCP port a converter listens on by default (the
	// port Wireshark's Convert dissector decodes).
	DefaultPort = 5124
)

// Header is the fixed header that starts every Convert message (RFC 8803
// §4.1).
type Header struct {
	// Version of the protocol; Version for this package.
	Version uint8
	// TotalLength is the length of the whole message, header included, in
	// 32-bit words; at least 1.
	TotalLength uint8
}

// Bytes returns the message length the header announces.
func (h Header) Bytes() int { return int(h.TotalLength) * 4 }

// ParseHeader decodes the fixed header at the start of b. It checks the
// magic number (ErrBadMagic), a Total Length of zero (ErrBadLength) and the
// version (ErrVersion: the Header is returned too, so that the caller can
// answer with ErrorUnsupportedVersion). It does not require the rest of
// the message to be present.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, &FormatError{Offset: len(b), Err: ErrTruncated}
	}
	h := Header{Version: b[0], TotalLength: b[1]}
	if binary.BigEndian.Uint16(b[2:4]) != Magic {
		return h, &FormatError{Offset: 2, Err: ErrBadMagic}
	}
	if h.TotalLength == 0 {
		return h, &FormatError{Offset: 1, Err: ErrBadLength}
	}
	if h.Version != Version {
		return h, &FormatError{Offset: 0, Err: ErrVersion}
	}
	return h, nil
}

// Append appends the encoded header to b.
func (h Header) Append(b []byte) []byte {
	return append(b, h.Version, h.TotalLength, Magic>>8, Magic&0xff)
}
