package options

import "encoding/binary"

// TCP option kinds this package knows besides KindMPTCP (RFC 9293 §3.1,
// RFC 7323, RFC 2018).
const (
	KindEOL           = 0  // end of option list, RFC 9293 §3.1
	KindNOP           = 1  // no-operation, RFC 9293 §3.1
	KindMSS           = 2  // maximum segment size, RFC 9293 §3.1
	KindWindowScale   = 3  // window scale, RFC 7323 §2
	KindSACKPermitted = 4  // SACK-permitted, RFC 2018 §2
	KindSACK          = 5  // SACK blocks, RFC 2018 §3
	KindTimestamp     = 8  // timestamps, RFC 7323 §3
	KindFastOpen      = 34 // TCP Fast Open cookie, RFC 7413 §4.1.1
)

// Lengths of the fixed-size TCP options.
const (
	lenMSS           = 4
	lenWindowScale   = 3
	lenSACKPermitted = 2
	lenTimestamp     = 10
	lenSACKBlock     = 8
)

// MaxOptionSpace is the most option bytes a TCP header can carry (data
// offset 15 words minus the fixed 20-byte header, RFC 9293 §3.1).
const MaxOptionSpace = 40

// MaxSACKBlocks is the most SACK blocks that fit in the option space
// (RFC 2018 §3: 2 + 4*8 = 34 bytes).
const MaxSACKBlocks = 4

// MaxMPTCPOptions is how many MPTCP options ParseTCPOptions keeps per
// segment. More cannot be meaningful (each is at least 3 bytes, and Linux
// never sends more than three on one segment); extra ones are counted in
// TCPOptions.DroppedMPTCP.
const MaxMPTCPOptions = 4

// SACKBlock is one SACK block (RFC 2018 §3): the left edge (first sequence
// number of the block) and the right edge (the sequence number after it).
type SACKBlock struct {
	Start, End uint32
}

// TCPOptions is the decoded option area of one TCP segment, filled by
// ParseTCPOptions without allocating. Parsing never decides: values are
// returned as received (a window scale above 14, options that only belong
// on a SYN, ...), and which ones apply is the subflow's business.
type TCPOptions struct {
	HasMSS bool
	MSS    uint16

	HasWindowScale bool
	WindowScale    uint8 // shift count as received, not clamped to 14

	SACKPermitted bool

	// SACKBlocks[:NumSACKBlocks] are the SACK blocks in the order received.
	NumSACKBlocks int
	SACKBlocks    [MaxSACKBlocks]SACKBlock

	HasTimestamp bool
	TSVal, TSEcr uint32

	// FastOpen: a TCP Fast Open option (RFC 7413) was present;
	// FastOpenCookieLen is its cookie's length (0: a cookie request).
	FastOpen          bool
	FastOpenCookieLen int

	// MPTCP[:NumMPTCP] are raw views, into the parsed buffer, of each
	// kind-30 option in order: whole options (kind..end) with len == byte 1
	// and capacity cut to the option. Decode them with the typed parsers.
	NumMPTCP int
	MPTCP    [MaxMPTCPOptions][]byte
	// DroppedMPTCP counts kind-30 options after the first MaxMPTCPOptions.
	DroppedMPTCP int

	// Malformed counts the options ParseTCPOptionsLenient passed over: a
	// known kind with a wrong length or an MPTCP option shorter than 3
	// bytes (skipped), or broken framing (the walk stopped there).
	// ParseTCPOptions returns an error instead and leaves it zero.
	Malformed int
}

// SACK returns the received SACK blocks, a slice of o.SACKBlocks.
func (o *TCPOptions) SACK() []SACKBlock { return o.SACKBlocks[:o.NumSACKBlocks] }

// MPTCPOptions returns the raw MPTCP options, a slice of o.MPTCP.
func (o *TCPOptions) MPTCPOptions() [][]byte { return o.MPTCP[:o.NumMPTCP] }

// NextTCPOption splits the first option off the option area b (RFC 9293
// §3.1): it returns the option's kind, the whole option (kind..end; a 1-byte
// slice for EOL and NOP) and the bytes after it. opt has its capacity cut to
// its length. It does not allocate.
//
// An empty b is ErrTruncated, as is an option whose length byte is missing
// or runs past the end of b; a length byte below 2 is ErrBadLength. Lengths
// are not checked against the kind. Walk with:
//
//	for len(b) > 0 {
//		kind, opt, rest, err := NextTCPOption(b)
//		...
//		b = rest
//	}
//
// EOL is returned like any other option; stopping there is the caller's
// choice (ParseTCPOptions stops).
func NextTCPOption(b []byte) (kind uint8, opt []byte, rest []byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil, ErrTruncated
	}
	kind = b[0]
	if kind == KindEOL || kind == KindNOP {
		return kind, b[:1:1], b[1:], nil
	}
	if len(b) < 2 {
		return kind, nil, nil, ErrTruncated
	}
	n := int(b[1])
	if n < 2 {
		return kind, nil, nil, ErrBadLength
	}
	if n > len(b) {
		return kind, nil, nil, ErrTruncated
	}
	return kind, b[:n:n], b[n:], nil
}

// ParseTCPOptions walks the option area b (the bytes after the fixed 20-byte
// TCP header) into o, which it resets first. It never allocates, and the
// MPTCP views in o alias b.
//
// It stops at EOL or at the end of b. On a malformed option — bad framing
// (see NextTCPOption), a wrong length for MSS (4), window scale (3),
// SACK-permitted (2), timestamps (10) or SACK (2 + 8n, n >= 1), or an MPTCP
// option shorter than 3 bytes — it returns the error and o holds what was
// parsed before that option. ParseTCPOptionsLenient is the receive path's
// variant that, like Linux, gets past such options. Unknown kinds are
// skipped. When an option appears twice, the last one wins (as in Linux),
// except that MPTCP options accumulate. SACK blocks beyond MaxSACKBlocks
// (impossible within 40 bytes) are ignored.
func ParseTCPOptions(b []byte, o *TCPOptions) error {
	return parseTCPOptions(b, o, false)
}

// ParseTCPOptionsLenient is ParseTCPOptions as Linux's tcp_parse_options
// walks the option area of a segment it is about to process: a known option
// with a wrong length (including an MPTCP option shorter than 3 bytes) is
// ignored and the walk goes on; a length byte below 2, or an option running
// past the end of b ("don't parse partial options"), ends the walk, keeping
// what was parsed before it. Each is counted in o.Malformed; nothing else
// distinguishes the result from a clean parse, so the segment can be
// processed with the options that were well formed. It never allocates.
func ParseTCPOptionsLenient(b []byte, o *TCPOptions) {
	parseTCPOptions(b, o, true)
}

func parseTCPOptions(b []byte, o *TCPOptions, lenient bool) error {
	*o = TCPOptions{}
	for len(b) > 0 {
		kind, opt, rest, err := NextTCPOption(b)
		if err != nil {
			if lenient {
				o.Malformed++
				return nil
			}
			return err
		}
		if kind == KindEOL {
			return nil
		}
		if err := o.add(kind, opt); err != nil {
			if !lenient {
				return err
			}
			o.Malformed++
		}
		b = rest
	}
	return nil
}

// add records one well-framed option; it returns ErrBadLength, recording
// nothing, when a known kind has a length it does not allow.
func (o *TCPOptions) add(kind uint8, opt []byte) error {
	switch kind {
	case KindMSS:
		if len(opt) != lenMSS {
			return ErrBadLength
		}
		o.HasMSS = true
		o.MSS = binary.BigEndian.Uint16(opt[2:])
	case KindWindowScale:
		if len(opt) != lenWindowScale {
			return ErrBadLength
		}
		o.HasWindowScale = true
		o.WindowScale = opt[2]
	case KindSACKPermitted:
		if len(opt) != lenSACKPermitted {
			return ErrBadLength
		}
		o.SACKPermitted = true
	case KindSACK:
		if len(opt) < 2+lenSACKBlock || (len(opt)-2)%lenSACKBlock != 0 {
			return ErrBadLength
		}
		o.NumSACKBlocks = 0
		for p := opt[2:]; len(p) > 0 && o.NumSACKBlocks < MaxSACKBlocks; p = p[lenSACKBlock:] {
			o.SACKBlocks[o.NumSACKBlocks] = SACKBlock{
				Start: binary.BigEndian.Uint32(p),
				End:   binary.BigEndian.Uint32(p[4:]),
			}
			o.NumSACKBlocks++
		}
	case KindTimestamp:
		if len(opt) != lenTimestamp {
			return ErrBadLength
		}
		o.HasTimestamp = true
		o.TSVal = binary.BigEndian.Uint32(opt[2:])
		o.TSEcr = binary.BigEndian.Uint32(opt[6:])
	case KindFastOpen:
		// RFC 7413 §4.1.1: an empty cookie (a request) or 4..16 bytes.
		if n := len(opt) - 2; n != 0 && (n < 4 || n > 16) {
			return ErrBadLength
		}
		o.FastOpen, o.FastOpenCookieLen = true, len(opt)-2
	case KindMPTCP:
		if len(opt) < 3 {
			return ErrBadLength
		}
		if o.NumMPTCP < MaxMPTCPOptions {
			o.MPTCP[o.NumMPTCP] = opt
			o.NumMPTCP++
		} else {
			o.DroppedMPTCP++
		}
	}
	return nil
}
