package options

import "fmt"

// KindMPTCP is the TCP option kind of every MPTCP option (RFC 8684 §3).
const KindMPTCP = 30

// Subtype is the MPTCP option subtype, the high nibble of the third option
// byte (RFC 8684 §3, IANA "MPTCP Option Subtypes").
type Subtype uint8

// MPTCP option subtypes (RFC 8684 §3 and §8).
const (
	SubtypeMPCapable    Subtype = 0x0 // MP_CAPABLE, RFC 8684 §3.1
	SubtypeMPJoin       Subtype = 0x1 // MP_JOIN, RFC 8684 §3.2
	SubtypeDSS          Subtype = 0x2 // Data Sequence Signal, RFC 8684 §3.3
	SubtypeAddAddr      Subtype = 0x3 // ADD_ADDR, RFC 8684 §3.4.1
	SubtypeRemoveAddr   Subtype = 0x4 // REMOVE_ADDR, RFC 8684 §3.4.2
	SubtypeMPPrio       Subtype = 0x5 // MP_PRIO, RFC 8684 §3.3.8
	SubtypeMPFail       Subtype = 0x6 // MP_FAIL, RFC 8684 §3.7
	SubtypeMPFastclose  Subtype = 0x7 // MP_FASTCLOSE, RFC 8684 §3.5
	SubtypeMPTCPRst     Subtype = 0x8 // MP_TCPRST, RFC 8684 §3.6
	SubtypeExperimental Subtype = 0xf // MP_EXPERIMENTAL, RFC 8684 §8
)

// String returns the RFC 8684 name of the subtype, or "subtype(0x9)" for an
// unassigned one.
func (s Subtype) String() string {
	switch s {
	case SubtypeMPCapable:
		return "MP_CAPABLE"
	case SubtypeMPJoin:
		return "MP_JOIN"
	case SubtypeDSS:
		return "DSS"
	case SubtypeAddAddr:
		return "ADD_ADDR"
	case SubtypeRemoveAddr:
		return "REMOVE_ADDR"
	case SubtypeMPPrio:
		return "MP_PRIO"
	case SubtypeMPFail:
		return "MP_FAIL"
	case SubtypeMPFastclose:
		return "MP_FASTCLOSE"
	case SubtypeMPTCPRst:
		return "MP_TCPRST"
	case SubtypeExperimental:
		return "MP_EXPERIMENTAL"
	}
	return fmt.Sprintf("subtype(%#x)", uint8(s))
}

// Option is any decoded MPTCP suboption. Every concrete type in this package
// implements it with value receivers, so both a value and a pointer to it
// are Options; storing a pointer to a long-lived value avoids the allocation
// of boxing the value.
type Option interface {
	// Subtype is the MPTCP subtype the option encodes as.
	Subtype() Subtype
	// Len is the number of bytes Append writes, kind and length included.
	Len() int
	// Append appends the whole option (kind, length, body) to b. It does not
	// allocate when cap(b)-len(b) >= Len().
	Append(b []byte) []byte
}

// Compile-time checks that every suboption type is an Option.
var (
	_ Option = MPCapable{}
	_ Option = MPJoin{}
	_ Option = DSS{}
	_ Option = AddAddr{}
	_ Option = RemoveAddr{}
	_ Option = MPPrio{}
	_ Option = MPFail{}
	_ Option = MPFastclose{}
	_ Option = MPTCPRst{}
	_ Option = Unknown{}
)

// mptcpHeader checks the common MPTCP option header (RFC 8684 §3: kind 30,
// length, subtype nibble) and returns opt cut to the declared length, with
// its capacity cut too so that the result never exposes following bytes.
func mptcpHeader(opt []byte) ([]byte, error) {
	if len(opt) == 0 {
		return nil, ErrTruncated
	}
	if opt[0] != KindMPTCP {
		return nil, ErrNotMPTCP
	}
	if len(opt) < 2 {
		return nil, ErrTruncated
	}
	n := int(opt[1])
	if n < 3 {
		// Too short to hold the subtype nibble.
		return nil, ErrBadLength
	}
	if len(opt) < n {
		return nil, ErrTruncated
	}
	return opt[:n:n], nil
}

// subHeader is mptcpHeader plus a check of the subtype.
func subHeader(opt []byte, want Subtype) ([]byte, error) {
	o, err := mptcpHeader(opt)
	if err != nil {
		return nil, err
	}
	if Subtype(o[2]>>4) != want {
		return nil, ErrWrongSubtype
	}
	return o, nil
}

// appendHeader appends kind, length and the subtype byte (subtype in the high
// nibble, low nibble given).
func appendHeader(b []byte, length int, s Subtype, low uint8) []byte {
	return append(b, KindMPTCP, byte(length), byte(s)<<4|low&0x0f)
}

// PeekSubtype returns the subtype of the MPTCP option opt after checking its
// common header (kind, a length of at least 3, enough bytes). It does not
// check the subtype-specific length.
func PeekSubtype(opt []byte) (Subtype, error) {
	o, err := mptcpHeader(opt)
	if err != nil {
		return 0, err
	}
	return Subtype(o[2] >> 4), nil
}

// Parse decodes any MPTCP option, dispatching on its subtype to the typed
// parsers. Unassigned subtypes and MP_EXPERIMENTAL decode to Unknown.
//
// The returned value never aliases opt: REMOVE_ADDR IDs and Unknown bytes are
// copied. Parse therefore allocates (and boxing into Option allocates too):
// it is meant for tools and tests, not for the per-segment receive path.
//
// On error the Option is nil, except for ErrBadVersion, which comes with the
// decoded MPCapable (see ParseMPCapable).
func Parse(opt []byte) (Option, error) {
	st, err := PeekSubtype(opt)
	if err != nil {
		return nil, err
	}
	switch st {
	case SubtypeMPCapable:
		m, err := ParseMPCapable(opt)
		if err != nil && err != ErrBadVersion {
			return nil, err
		}
		return m, err
	case SubtypeMPJoin:
		return box(ParseMPJoin(opt))
	case SubtypeDSS:
		return box(ParseDSS(opt))
	case SubtypeAddAddr:
		return box(ParseAddAddr(opt))
	case SubtypeRemoveAddr:
		r, err := ParseRemoveAddr(opt)
		if err != nil {
			return nil, err
		}
		r.IDs = append([]uint8(nil), r.IDs...)
		return r, nil
	case SubtypeMPPrio:
		return box(ParseMPPrio(opt))
	case SubtypeMPFail:
		return box(ParseMPFail(opt))
	case SubtypeMPFastclose:
		return box(ParseMPFastclose(opt))
	case SubtypeMPTCPRst:
		return box(ParseMPTCPRst(opt))
	}
	u, err := ParseUnknown(opt)
	if err != nil {
		return nil, err
	}
	u.Raw = append([]byte(nil), u.Raw...)
	return u, nil
}

// box turns a typed parser result into Parse's result, with a nil Option on
// error.
func box[T Option](v T, err error) (Option, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Unknown is an MPTCP option this package does not decode: an unassigned
// subtype or MP_EXPERIMENTAL (RFC 8684 §8). It is kept raw so that tools can
// show it and so that it survives re-encoding.
type Unknown struct {
	// Sub is the subtype nibble of Raw, kept for convenience; Append writes
	// Raw unchanged, so Raw is authoritative.
	Sub Subtype
	// Raw is the whole option, kind and length bytes included.
	Raw []byte
}

// ParseUnknown wraps any well-framed MPTCP option (whatever its subtype) as
// Unknown. Raw aliases opt (cut to the option's length); copy it to keep it
// beyond the life of the packet buffer.
func ParseUnknown(opt []byte) (Unknown, error) {
	o, err := mptcpHeader(opt)
	if err != nil {
		return Unknown{}, err
	}
	return Unknown{Sub: Subtype(o[2] >> 4), Raw: o}, nil
}

// Subtype returns u.Sub.
func (u Unknown) Subtype() Subtype { return u.Sub }

// Len returns len(u.Raw).
func (u Unknown) Len() int { return len(u.Raw) }

// Append appends u.Raw.
func (u Unknown) Append(b []byte) []byte { return append(b, u.Raw...) }
