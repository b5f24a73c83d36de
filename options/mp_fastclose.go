package options

import "encoding/binary"

// lenMPFastclose is the MP_FASTCLOSE length (RFC 8684 §3.5).
const lenMPFastclose = 12

// MPFastclose is the MP_FASTCLOSE option (RFC 8684 §3.5): an abort of the
// whole connection, authenticated by the option receiver's key. Only length
// 12 is accepted, as in Linux; the reserved 12 bits after the subtype are
// ignored.
type MPFastclose struct {
	Key uint64 // the receiver's key
}

// ParseMPFastclose decodes an MP_FASTCLOSE option (RFC 8684 §3.5). It does
// not allocate.
func ParseMPFastclose(opt []byte) (MPFastclose, error) {
	o, err := subHeader(opt, SubtypeMPFastclose)
	if err != nil {
		return MPFastclose{}, err
	}
	if len(o) != lenMPFastclose {
		return MPFastclose{}, ErrBadLength
	}
	return MPFastclose{Key: binary.BigEndian.Uint64(o[4:12])}, nil
}

// Subtype returns SubtypeMPFastclose.
func (MPFastclose) Subtype() Subtype { return SubtypeMPFastclose }

// Len returns 12.
func (MPFastclose) Len() int { return lenMPFastclose }

// Append appends the option with reserved bits zero.
func (f MPFastclose) Append(b []byte) []byte {
	b = appendHeader(b, lenMPFastclose, SubtypeMPFastclose, 0)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, f.Key)
}
