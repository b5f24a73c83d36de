package options

// MP_PRIO constants (RFC 8684 §3.3.8).
const (
	lenMPPrio        = 3
	mpPrioFlagBackup = 0x01
)

// MPPrio is the MP_PRIO option (RFC 8684 §3.3.8): a change of the backup
// priority of the subflow it is sent on.
//
// Only the RFC 8684 length 3 is accepted, as in Linux; the 4-byte form of
// RFC 6824 (with an address ID) is ErrBadLength. The three reserved bits next
// to B are ignored.
type MPPrio struct {
	Backup bool // B
}

// ParseMPPrio decodes an MP_PRIO option (RFC 8684 §3.3.8). It does not
// allocate.
func ParseMPPrio(opt []byte) (MPPrio, error) {
	o, err := subHeader(opt, SubtypeMPPrio)
	if err != nil {
		return MPPrio{}, err
	}
	if len(o) != lenMPPrio {
		return MPPrio{}, ErrBadLength
	}
	return MPPrio{Backup: o[2]&mpPrioFlagBackup != 0}, nil
}

// Subtype returns SubtypeMPPrio.
func (MPPrio) Subtype() Subtype { return SubtypeMPPrio }

// Len returns 3.
func (MPPrio) Len() int { return lenMPPrio }

// Append appends the 3-byte option with reserved bits zero.
func (p MPPrio) Append(b []byte) []byte {
	var flags uint8
	if p.Backup {
		flags = mpPrioFlagBackup
	}
	return appendHeader(b, lenMPPrio, SubtypeMPPrio, flags)
}
