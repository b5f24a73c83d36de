package options

import "encoding/binary"

// DSS flag bits, the fourth option byte (RFC 8684 §3.3, Figure 9). The three
// high bits are reserved.
const (
	DSSFlagDataFIN   = 0x10 // F: DATA_FIN
	DSSFlagDSN64     = 0x08 // m: the DSN is 8 bytes
	DSSFlagMapping   = 0x04 // M: DSN, subflow sequence number and data-level length present
	DSSFlagDataAck64 = 0x02 // a: the Data ACK is 8 bytes
	DSSFlagDataAck   = 0x01 // A: Data ACK present
	dssFlagMask      = 0x1f
)

// DSS field sizes (RFC 8684 §3.3).
const (
	lenDSSBase     = 4
	lenDSSAck32    = 4
	lenDSSAck64    = 8
	lenDSSMap32    = 4 + 4 + 2 // DSN, subflow sequence, data-level length
	lenDSSMap64    = 8 + 4 + 2
	lenDSSChecksum = 2
)

// DSS is the Data Sequence Signal option (RFC 8684 §3.3): a Data ACK, a
// mapping, or both, plus the DATA_FIN flag.
//
// The flag booleans map one-to-one onto the flag bits, even when they are
// meaningless together (DataAck64 without HasDataAck, DSN64 without
// HasMapping, as a peer may send them): Append writes them back as they are,
// and the length only counts the fields whose presence flag is set, exactly
// as Linux computes it.
//
// 4-byte Data ACKs and DSNs are returned as-is in the low 32 bits; expanding
// them to 64 bits against the expected value is dsnmap's job (RFC 8684
// §3.3.1). Append writes only the low 32 bits when the 64-bit flag is clear.
type DSS struct {
	DataFIN    bool // F (RFC 8684 §3.3.3)
	HasDataAck bool // A
	DataAck64  bool // a
	DataAck    uint64
	HasMapping bool // M
	DSN64      bool // m
	DSN        uint64
	SubflowSeq uint32 // relative to the subflow's initial sequence number
	DataLen    uint16 // data-level length; 0 with a mapping is the infinite mapping (§3.3.1)
	// HasChecksum is true when the option carries the 2-byte checksum field,
	// which is inferred from the length: 2 bytes more than the flags require.
	// RFC 8684 §3.3 places it only after a mapping, but Linux also accepts
	// (and ignores) the 2 extra bytes on a DSS without mapping, and so does
	// ParseDSS, which then reports HasChecksum with HasMapping false: check
	// HasMapping first.
	HasChecksum bool
	// Checksum is the DSS checksum (RFC 8684 §3.3.1), read big-endian.
	Checksum uint16
}

// IsInfinite reports whether d carries an infinite mapping: a mapping with a
// data-level length of 0 (RFC 8684 §3.3.1), used on fallback.
func (d DSS) IsInfinite() bool { return d.HasMapping && d.DataLen == 0 }

// Flags returns the flag byte Append writes.
func (d DSS) Flags() uint8 {
	var f uint8
	if d.DataFIN {
		f |= DSSFlagDataFIN
	}
	if d.DSN64 {
		f |= DSSFlagDSN64
	}
	if d.HasMapping {
		f |= DSSFlagMapping
	}
	if d.DataAck64 {
		f |= DSSFlagDataAck64
	}
	if d.HasDataAck {
		f |= DSSFlagDataAck
	}
	return f
}

// flagsLen is the option length the presence flags call for, without the
// optional checksum.
func (d DSS) flagsLen() int {
	n := lenDSSBase
	if d.HasDataAck {
		if d.DataAck64 {
			n += lenDSSAck64
		} else {
			n += lenDSSAck32
		}
	}
	if d.HasMapping {
		if d.DSN64 {
			n += lenDSSMap64
		} else {
			n += lenDSSMap32
		}
	}
	return n
}

// ParseDSS decodes a DSS option (RFC 8684 §3.3). It does not allocate.
//
// The accepted lengths are Linux's: the length the flags call for, or 2 more
// (checksum present). The reserved nibble of byte 2 and the three high bits
// of the flag byte are ignored.
func ParseDSS(opt []byte) (DSS, error) {
	o, err := subHeader(opt, SubtypeDSS)
	if err != nil {
		return DSS{}, err
	}
	if len(o) < lenDSSBase {
		return DSS{}, ErrBadLength
	}
	f := o[3] & dssFlagMask
	d := DSS{
		DataFIN:    f&DSSFlagDataFIN != 0,
		DSN64:      f&DSSFlagDSN64 != 0,
		HasMapping: f&DSSFlagMapping != 0,
		DataAck64:  f&DSSFlagDataAck64 != 0,
		HasDataAck: f&DSSFlagDataAck != 0,
	}
	switch want := d.flagsLen(); len(o) {
	case want:
	case want + lenDSSChecksum:
		d.HasChecksum = true
	default:
		return DSS{}, ErrBadLength
	}
	p := o[lenDSSBase:]
	if d.HasDataAck {
		if d.DataAck64 {
			d.DataAck = binary.BigEndian.Uint64(p)
			p = p[8:]
		} else {
			d.DataAck = uint64(binary.BigEndian.Uint32(p))
			p = p[4:]
		}
	}
	if d.HasMapping {
		if d.DSN64 {
			d.DSN = binary.BigEndian.Uint64(p)
			p = p[8:]
		} else {
			d.DSN = uint64(binary.BigEndian.Uint32(p))
			p = p[4:]
		}
		d.SubflowSeq = binary.BigEndian.Uint32(p)
		d.DataLen = binary.BigEndian.Uint16(p[4:])
		p = p[6:]
	}
	if d.HasChecksum {
		d.Checksum = binary.BigEndian.Uint16(p)
	}
	return d, nil
}

// Subtype returns SubtypeDSS.
func (DSS) Subtype() Subtype { return SubtypeDSS }

// Len returns 4 + Data ACK (0/4/8) + mapping (0/10/14) + checksum (0/2).
func (d DSS) Len() int {
	n := d.flagsLen()
	if d.HasChecksum {
		n += lenDSSChecksum
	}
	return n
}

// Append appends the option with reserved bits zero. It does not allocate
// when cap(b)-len(b) >= d.Len().
func (d DSS) Append(b []byte) []byte {
	b = appendHeader(b, d.Len(), SubtypeDSS, 0)
	b = append(b, d.Flags())
	if d.HasDataAck {
		if d.DataAck64 {
			b = binary.BigEndian.AppendUint64(b, d.DataAck)
		} else {
			b = binary.BigEndian.AppendUint32(b, uint32(d.DataAck))
		}
	}
	if d.HasMapping {
		if d.DSN64 {
			b = binary.BigEndian.AppendUint64(b, d.DSN)
		} else {
			b = binary.BigEndian.AppendUint32(b, uint32(d.DSN))
		}
		b = binary.BigEndian.AppendUint32(b, d.SubflowSeq)
		b = binary.BigEndian.AppendUint16(b, d.DataLen)
	}
	if d.HasChecksum {
		b = binary.BigEndian.AppendUint16(b, d.Checksum)
	}
	return b
}
