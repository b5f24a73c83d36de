package convert

// Info is the Info TLV (RFC 8803 §4.2.1): the client asks the converter
// which TCP extensions it supports; the converter answers with a
// SupportedExtensions TLV. It is one word: type, length 1, two unassigned
// bytes.
type Info struct{}

// infoLen is the one size an Info TLV has.
const infoLen = 4

func (*Info) Type() Type { return TypeInfo }
func (*Info) Len() int   { return infoLen }
func (*Info) Append(b []byte) []byte {
	return append(appendTLVHeader(b, TypeInfo, infoLen), 0, 0)
}

func parseInfo(b []byte, off int) (TLV, error) {
	if len(b) != infoLen {
		return nil, &FormatError{Offset: off + 1, Type: TypeInfo, Err: ErrBadLength, Detail: "an Info TLV is one word"}
	}
	return &Info{}, nil
}
