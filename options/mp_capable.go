package options

import (
	"encoding/binary"
	"strconv"
)

// CapableForm tells which of the MP_CAPABLE layouts of RFC 8684 §3.1 an
// option uses. The form is decided by the option's length.
type CapableForm uint8

// MP_CAPABLE forms (RFC 8684 §3.1, Figure 4).
const (
	CapableSYN     CapableForm = iota // SYN: no key; length 4
	CapableSYNACK                     // SYN/ACK: sender's key; length 12
	CapableACK                        // third ACK: sender's and receiver's keys; length 20
	CapableACKData                    // first data: both keys + data-level length; length 22, 24 with checksum
)

// String returns "SYN", "SYN/ACK", "ACK", "ACK+data" or "form(N)".
func (f CapableForm) String() string {
	switch f {
	case CapableSYN:
		return "SYN"
	case CapableSYNACK:
		return "SYN/ACK"
	case CapableACK:
		return "ACK"
	case CapableACKData:
		return "ACK+data"
	}
	return "form(" + strconv.Itoa(int(f)) + ")"
}

// MP_CAPABLE flag bits, the fourth option byte (RFC 8684 §3.1).
const (
	CapableFlagChecksum              = 0x80 // A: DSS checksums required by the sender
	CapableFlagExtensibility         = 0x40 // B: must be 0 in MPTCP v1
	CapableFlagNoNewSubflowsToSource = 0x20 // C: do not open subflows to this packet's source address
	CapableFlagHMACSHA256            = 0x01 // H: HMAC-SHA256, the only defined algorithm
)

// MP_CAPABLE option lengths (RFC 8684 §3.1).
const (
	lenCapableSYN         = 4
	lenCapableSYNACK      = 12
	lenCapableACK         = 20
	lenCapableACKData     = 22
	lenCapableACKDataCsum = 24
)

// capableVersion is the only MP_CAPABLE version this package accepts.
const capableVersion = 1

// MPCapable is the MP_CAPABLE option (RFC 8684 §3.1).
//
// Accepted lengths are exactly Linux's: 4, 12, 20, 22 and 24. Linux picks the
// form it expects from the TCP flags and the payload, while this parser picks
// it from the length; checking that the form matches the segment (SYN, SYN/ACK,
// ACK, ACK with data) is the caller's job. Likewise the flags are returned
// as they are: Linux ignores an MP_CAPABLE without H or with B set, and
// treats A on either side as "checksums in use"; those decisions belong to
// the handshake code.
type MPCapable struct {
	Form    CapableForm
	Version uint8 // low nibble of byte 2; 1 for MPTCP v1
	Flags   uint8 // CapableFlag* bits; all 8 bits are kept
	// SenderKey is present in CapableSYNACK, CapableACK and CapableACKData.
	SenderKey uint64
	// ReceiverKey is present in CapableACK and CapableACKData.
	ReceiverKey uint64
	// DataLen is the data-level length of the mapping carried by
	// CapableACKData (DSN = the sender's IDSN + 1, subflow sequence 1).
	DataLen uint16
	// HasChecksum is true for the 24-byte CapableACKData form; it is
	// ignored by Len and Append for the other forms.
	HasChecksum bool
	// Checksum is the DSS checksum of the mapping, read big-endian.
	Checksum uint16
}

// ParseMPCapable decodes an MP_CAPABLE option (RFC 8684 §3.1). It does not
// allocate.
//
// A version other than 1 yields ErrBadVersion together with the fully
// decoded value. Linux accepts a SYN (length 4) with a version above 1 and
// answers with version 1, as RFC 8684 §3.1 allows; a caller that wants the
// same checks m.Version when err == ErrBadVersion.
func ParseMPCapable(opt []byte) (MPCapable, error) {
	o, err := subHeader(opt, SubtypeMPCapable)
	if err != nil {
		return MPCapable{}, err
	}
	var m MPCapable
	switch len(o) {
	case lenCapableSYN:
		m.Form = CapableSYN
	case lenCapableSYNACK:
		m.Form = CapableSYNACK
	case lenCapableACK:
		m.Form = CapableACK
	case lenCapableACKData:
		m.Form = CapableACKData
	case lenCapableACKDataCsum:
		m.Form = CapableACKData
		m.HasChecksum = true
	default:
		return MPCapable{}, ErrBadLength
	}
	m.Version = o[2] & 0x0f
	m.Flags = o[3]
	if len(o) >= lenCapableSYNACK {
		m.SenderKey = binary.BigEndian.Uint64(o[4:12])
	}
	if len(o) >= lenCapableACK {
		m.ReceiverKey = binary.BigEndian.Uint64(o[12:20])
	}
	if len(o) >= lenCapableACKData {
		m.DataLen = binary.BigEndian.Uint16(o[20:22])
	}
	if m.HasChecksum {
		m.Checksum = binary.BigEndian.Uint16(o[22:24])
	}
	if m.Version != capableVersion {
		return m, ErrBadVersion
	}
	return m, nil
}

// Subtype returns SubtypeMPCapable.
func (MPCapable) Subtype() Subtype { return SubtypeMPCapable }

// Len returns 4, 12, 20, 22 or 24 according to Form and HasChecksum, and 0
// for a Form that is not one of the CapableForm constants (Append then writes
// nothing).
func (m MPCapable) Len() int {
	switch m.Form {
	case CapableSYN:
		return lenCapableSYN
	case CapableSYNACK:
		return lenCapableSYNACK
	case CapableACK:
		return lenCapableACK
	case CapableACKData:
		if m.HasChecksum {
			return lenCapableACKDataCsum
		}
		return lenCapableACKData
	}
	return 0
}

// Append appends the option in the layout of m.Form. Only the low nibble of
// Version is written.
func (m MPCapable) Append(b []byte) []byte {
	n := m.Len()
	if n == 0 {
		return b
	}
	b = appendHeader(b, n, SubtypeMPCapable, m.Version)
	b = append(b, m.Flags)
	if n >= lenCapableSYNACK {
		b = binary.BigEndian.AppendUint64(b, m.SenderKey)
	}
	if n >= lenCapableACK {
		b = binary.BigEndian.AppendUint64(b, m.ReceiverKey)
	}
	if n >= lenCapableACKData {
		b = binary.BigEndian.AppendUint16(b, m.DataLen)
	}
	if n == lenCapableACKDataCsum {
		b = binary.BigEndian.AppendUint16(b, m.Checksum)
	}
	return b
}
