package convert

// Message is one Convert message: the fixed header (version 1, the total
// length computed from the TLVs) and its TLVs in order.
type Message struct {
	TLVs []TLV
}

// Len returns the encoded size in bytes.
func (m *Message) Len() int {
	n := HeaderLen
	for _, t := range m.TLVs {
		n += t.Len()
	}
	return n
}

// Append appends the encoded message to b. The message must fit in MaxLen
// bytes (check with Marshal, or keep to what the constructors build).
func (m *Message) Append(b []byte) []byte {
	b = Header{Version: Version, TotalLength: uint8(m.Len() / 4)}.Append(b)
	for _, t := range m.TLVs {
		b = t.Append(b)
	}
	return b
}

// Marshal encodes the message, or fails with ErrTooLong.
func (m *Message) Marshal() ([]byte, error) {
	if m.Len() > MaxLen {
		return nil, &FormatError{Offset: MaxLen, Err: ErrTooLong}
	}
	return m.Append(make([]byte, 0, m.Len())), nil
}

// Parse decodes the message at the start of b and returns it with the
// number of bytes it occupies (its Total Length times four); what follows
// in b is not looked at. Errors are *FormatError values wrapping
// ErrTruncated, ErrBadLength, ErrBadMagic, ErrVersion or ErrMalformed.
func Parse(b []byte) (Message, int, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Message{}, 0, err
	}
	n := h.Bytes()
	if n > len(b) {
		return Message{}, 0, &FormatError{Offset: len(b), Err: ErrTruncated, Detail: "shorter than its Total Length"}
	}
	var m Message
	for off := HeaderLen; off < n; {
		// off and n are multiples of 4, so a whole word is left.
		l := int(b[off+1]) * 4
		switch {
		case l == 0:
			return Message{}, 0, &FormatError{Offset: off + 1, Type: Type(b[off]), Err: ErrBadLength, Detail: "length 0"}
		case off+l > n:
			return Message{}, 0, &FormatError{Offset: off + 1, Type: Type(b[off]), Err: ErrBadLength, Detail: "runs past the end of the message"}
		}
		t, err := parseTLV(b[off:off+l], off)
		if err != nil {
			return Message{}, 0, err
		}
		m.TLVs = append(m.TLVs, t)
		off += l
	}
	return m, n, nil
}

// Find returns the first TLV of type t, or nil.
func (m *Message) Find(t Type) TLV {
	for _, x := range m.TLVs {
		if x.Type() == t {
			return x
		}
	}
	return nil
}

// Err returns the message's Error TLV, or nil.
func (m *Message) Err() *Error {
	e, _ := m.Find(TypeError).(*Error)
	return e
}
