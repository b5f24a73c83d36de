package options

import (
	"encoding/binary"
	"strconv"
)

// JoinForm tells which MP_JOIN layout of RFC 8684 §3.2 an option uses. The
// form is decided by the option's length.
type JoinForm uint8

// MP_JOIN forms (RFC 8684 §3.2, Figures 5-7).
const (
	JoinSYN    JoinForm = iota // SYN: backup, address ID, receiver's token, sender's nonce; length 12
	JoinSYNACK                 // SYN/ACK: backup, address ID, truncated HMAC, sender's nonce; length 16
	JoinACK                    // third ACK: full 160-bit HMAC; length 24
)

// String returns "SYN", "SYN/ACK", "ACK" or "form(N)".
func (f JoinForm) String() string {
	switch f {
	case JoinSYN:
		return "SYN"
	case JoinSYNACK:
		return "SYN/ACK"
	case JoinACK:
		return "ACK"
	}
	return "form(" + strconv.Itoa(int(f)) + ")"
}

// MP_JOIN option lengths (RFC 8684 §3.2).
const (
	lenJoinSYN    = 12
	lenJoinSYNACK = 16
	lenJoinACK    = 24
)

// joinFlagBackup is the B bit in the low nibble of byte 2 (SYN and SYN/ACK).
const joinFlagBackup = 0x01

// MPJoin is the MP_JOIN option (RFC 8684 §3.2). Which fields are meaningful
// depends on Form; the others are zero after parsing and ignored by Append.
//
// Accepted lengths are Linux's: 12, 16 and 24. The three reserved bits next
// to B, and the reserved nibble and byte of the ACK form, are ignored.
type MPJoin struct {
	Form JoinForm
	// Backup is the B bit (JoinSYN, JoinSYNACK).
	Backup bool
	// AddrID is the sender's address ID (JoinSYN, JoinSYNACK).
	AddrID uint8
	// Token is the receiver's token (JoinSYN).
	Token uint32
	// Nonce is the sender's random number (JoinSYN, JoinSYNACK).
	Nonce uint32
	// TruncatedHMAC is the leftmost 64 bits of the sender's HMAC, as a
	// big-endian integer (JoinSYNACK).
	TruncatedHMAC uint64
	// HMAC is the leftmost 160 bits of the sender's HMAC (JoinACK).
	HMAC [20]byte
}

// ParseMPJoin decodes an MP_JOIN option (RFC 8684 §3.2). It does not
// allocate.
func ParseMPJoin(opt []byte) (MPJoin, error) {
	o, err := subHeader(opt, SubtypeMPJoin)
	if err != nil {
		return MPJoin{}, err
	}
	var j MPJoin
	switch len(o) {
	case lenJoinSYN:
		j.Form = JoinSYN
		j.Backup = o[2]&joinFlagBackup != 0
		j.AddrID = o[3]
		j.Token = binary.BigEndian.Uint32(o[4:8])
		j.Nonce = binary.BigEndian.Uint32(o[8:12])
	case lenJoinSYNACK:
		j.Form = JoinSYNACK
		j.Backup = o[2]&joinFlagBackup != 0
		j.AddrID = o[3]
		j.TruncatedHMAC = binary.BigEndian.Uint64(o[4:12])
		j.Nonce = binary.BigEndian.Uint32(o[12:16])
	case lenJoinACK:
		j.Form = JoinACK
		copy(j.HMAC[:], o[4:24])
	default:
		return MPJoin{}, ErrBadLength
	}
	return j, nil
}

// Subtype returns SubtypeMPJoin.
func (MPJoin) Subtype() Subtype { return SubtypeMPJoin }

// Len returns 12, 16 or 24 according to Form, and 0 for a Form that is not
// one of the JoinForm constants (Append then writes nothing).
func (j MPJoin) Len() int {
	switch j.Form {
	case JoinSYN:
		return lenJoinSYN
	case JoinSYNACK:
		return lenJoinSYNACK
	case JoinACK:
		return lenJoinACK
	}
	return 0
}

// Append appends the option in the layout of j.Form, reserved bits zero.
func (j MPJoin) Append(b []byte) []byte {
	var flags uint8
	if j.Backup {
		flags = joinFlagBackup
	}
	switch j.Form {
	case JoinSYN:
		b = appendHeader(b, lenJoinSYN, SubtypeMPJoin, flags)
		b = append(b, j.AddrID)
		b = binary.BigEndian.AppendUint32(b, j.Token)
		b = binary.BigEndian.AppendUint32(b, j.Nonce)
	case JoinSYNACK:
		b = appendHeader(b, lenJoinSYNACK, SubtypeMPJoin, flags)
		b = append(b, j.AddrID)
		b = binary.BigEndian.AppendUint64(b, j.TruncatedHMAC)
		b = binary.BigEndian.AppendUint32(b, j.Nonce)
	case JoinACK:
		b = appendHeader(b, lenJoinACK, SubtypeMPJoin, 0)
		b = append(b, 0)
		b = append(b, j.HMAC[:]...)
	}
	return b
}
