package convert

// Cookie is the Cookie TLV (RFC 8803 §4.2.5): opaque validation data the
// converter gave the client out of band (or in an earlier Error TLV), which
// the client returns so that the converter serves it.
type Cookie struct {
	// Data is the opaque value, at least one byte; Append pads it to a
	// word boundary with zeros, so a cookie's meaning must not depend on
	// trailing zero bytes.
	Data []byte
}

func (*Cookie) Type() Type { return TypeCookie }
func (c *Cookie) Len() int { return 4 + words(len(c.Data)) }
func (c *Cookie) Append(b []byte) []byte {
	b = append(appendTLVHeader(b, TypeCookie, c.Len()), 0, 0)
	return appendPadded(b, c.Data, words(len(c.Data)))
}

func parseCookie(b []byte, off int) (TLV, error) {
	if len(b) < 8 {
		return nil, &FormatError{Offset: off + 1, Type: TypeCookie, Err: ErrBadLength, Detail: "a Cookie TLV carries at least one word of data"}
	}
	return &Cookie{Data: append([]byte(nil), b[4:]...)}, nil
}
