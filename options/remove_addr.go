package options

// lenRemoveAddrBase is the REMOVE_ADDR length without address IDs.
const lenRemoveAddrBase = 3

// RemoveAddr is the REMOVE_ADDR option (RFC 8684 §3.4.2): one or more
// address IDs whose subflows are to be closed.
//
// Linux ignores a REMOVE_ADDR with more than 8 IDs (MPTCP_RM_IDS_MAX); this
// parser accepts any count from 1 up, as RFC 8684 does, and leaves limits to
// the path manager. The reserved nibble of byte 2 is ignored.
type RemoveAddr struct {
	IDs []uint8
}

// ParseRemoveAddr decodes a REMOVE_ADDR option (RFC 8684 §3.4.2). The length
// must be at least 4 (one ID). It does not allocate: IDs aliases opt, so copy
// it to keep it beyond the life of the packet buffer (Parse does copy).
func ParseRemoveAddr(opt []byte) (RemoveAddr, error) {
	o, err := subHeader(opt, SubtypeRemoveAddr)
	if err != nil {
		return RemoveAddr{}, err
	}
	if len(o) < lenRemoveAddrBase+1 {
		return RemoveAddr{}, ErrBadLength
	}
	return RemoveAddr{IDs: o[lenRemoveAddrBase:]}, nil
}

// Subtype returns SubtypeRemoveAddr.
func (RemoveAddr) Subtype() Subtype { return SubtypeRemoveAddr }

// Len returns 3 + len(r.IDs).
func (r RemoveAddr) Len() int { return lenRemoveAddrBase + len(r.IDs) }

// Append appends the option with the reserved nibble zero. It does not check
// r: the caller provides 1 to 37 IDs (what fits in TCP option space); with no
// ID the result is malformed, and beyond 252 IDs the length byte overflows.
func (r RemoveAddr) Append(b []byte) []byte {
	b = appendHeader(b, r.Len(), SubtypeRemoveAddr, 0)
	return append(b, r.IDs...)
}
