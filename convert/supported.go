package convert

// SupportedExtensions is the Supported TCP Extensions TLV (RFC 8803
// §4.2.4): the TCP option kinds the converter supports, its answer to an
// Info TLV. Kind 0 (EOL) pads the list to a word boundary and is never
// listed.
type SupportedExtensions struct {
	Kinds []uint8
}

func (*SupportedExtensions) Type() Type { return TypeSupportedExtensions }
func (s *SupportedExtensions) Len() int { return 4 + words(len(s.Kinds)) }
func (s *SupportedExtensions) Append(b []byte) []byte {
	b = append(appendTLVHeader(b, TypeSupportedExtensions, s.Len()), 0, 0)
	return appendPadded(b, s.Kinds, words(len(s.Kinds)))
}

func parseSupportedExtensions(b []byte, off int) (TLV, error) {
	k := b[4:]
	end := len(k)
	for end > 0 && k[end-1] == 0 {
		end--
	}
	for i, x := range k[:end] {
		if x == 0 {
			return nil, &FormatError{Offset: off + 4 + i, Type: TypeSupportedExtensions, Err: ErrMalformed, Detail: "kind 0 amid the list"}
		}
	}
	s := &SupportedExtensions{}
	if end > 0 {
		s.Kinds = append([]byte(nil), k[:end]...)
	}
	return s, nil
}
