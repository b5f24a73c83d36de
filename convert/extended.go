package convert

// ExtendedTCPHeader is the Extended TCP Header TLV (RFC 8803 §4.2.3): the
// converter returns to the client the TCP header, options included, of the
// SYN+ACK it received from the destination, so that the client learns
// which extensions the destination agreed to.
type ExtendedTCPHeader struct {
	// Header is the TCP header: at least 20 bytes, its data offset field
	// equal to its length.
	Header []byte
}

// tcpMinHeader is the fixed part of a TCP header.
const tcpMinHeader = 20

func (*ExtendedTCPHeader) Type() Type { return TypeExtendedTCPHeader }
func (e *ExtendedTCPHeader) Len() int { return 4 + words(len(e.Header)) }
func (e *ExtendedTCPHeader) Append(b []byte) []byte {
	b = append(appendTLVHeader(b, TypeExtendedTCPHeader, e.Len()), 0, 0)
	return appendPadded(b, e.Header, words(len(e.Header)))
}

func parseExtendedTCPHeader(b []byte, off int) (TLV, error) {
	h := b[4:]
	if len(h) < tcpMinHeader {
		return nil, &FormatError{Offset: off + 1, Type: TypeExtendedTCPHeader, Err: ErrBadLength, Detail: "shorter than a TCP header"}
	}
	if doff := int(h[12]>>4) * 4; doff != len(h) {
		return nil, &FormatError{Offset: off + 4 + 12, Type: TypeExtendedTCPHeader, Err: ErrMalformed, Detail: "TCP data offset disagrees with the TLV length"}
	}
	if err := checkTCPOptions(h[tcpMinHeader:]); err != nil {
		return nil, &FormatError{Offset: off + 4 + tcpMinHeader, Type: TypeExtendedTCPHeader, Err: ErrMalformed, Detail: "TCP options: " + err.Error()}
	}
	return &ExtendedTCPHeader{Header: append([]byte(nil), h...)}, nil
}
