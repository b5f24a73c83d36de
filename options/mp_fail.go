package options

import "encoding/binary"

// lenMPFail is the MP_FAIL length (RFC 8684 §3.7).
const lenMPFail = 12

// MPFail is the MP_FAIL option (RFC 8684 §3.7): the DSN of the start of the
// mapping whose checksum failed. Only length 12 is accepted, as in Linux;
// the reserved 12 bits after the subtype are ignored.
type MPFail struct {
	DSN uint64
}

// ParseMPFail decodes an MP_FAIL option (RFC 8684 §3.7). It does not
// allocate.
func ParseMPFail(opt []byte) (MPFail, error) {
	o, err := subHeader(opt, SubtypeMPFail)
	if err != nil {
		return MPFail{}, err
	}
	if len(o) != lenMPFail {
		return MPFail{}, ErrBadLength
	}
	return MPFail{DSN: binary.BigEndian.Uint64(o[4:12])}, nil
}

// Subtype returns SubtypeMPFail.
func (MPFail) Subtype() Subtype { return SubtypeMPFail }

// Len returns 12.
func (MPFail) Len() int { return lenMPFail }

// Append appends the option with reserved bits zero.
func (f MPFail) Append(b []byte) []byte {
	b = appendHeader(b, lenMPFail, SubtypeMPFail, 0)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, f.DSN)
}
