package options

import "encoding/binary"

// Layout describes what one outgoing segment must carry in its TCP options;
// Append lays it out as a complete option block (RFC 9293 §3.1): at most 40
// bytes, padded with NOPs to a multiple of 4, with Linux's alignment so that
// captures look like the kernel's and 32-bit fields stay aligned:
//
//	MSS                 02 04 mss mss
//	SACK-permitted+TS   04 02 08 0a tsval tsecr   (SYNs that carry both)
//	TS                  01 01 08 0a tsval tsecr
//	SACK-permitted      01 01 04 02
//	window scale        01 03 03 ws
//	SACK blocks         01 01 05 len blocks...
//	MPTCP options       each followed by NOPs up to a multiple of 4, as Linux
//	                    pads a 26-byte DSS, a 22-byte MP_CAPABLE, an 18-byte
//	                    ADD_ADDR or a 3-byte MP_PRIO
//
// When space runs out, options are kept in this priority order: MSS, window
// scale, SACK-permitted, timestamp, then the MPTCP options in slice order
// (one that does not fit is skipped and later, smaller ones may still fit,
// as Linux fits MP_PRIO after a DSS), then as many SACK blocks as fit
// (the first ones first). Append reports what was left out.
//
// Allocation: Layout neither allocates nor retains anything, but storing a
// value in the MPTCP []Option slice boxes it, which allocates for the larger
// types (DSS, MPCapable, ...). Hot-path callers keep a reusable slice and
// store pointers to long-lived values (a *DSS is an Option), which costs
// nothing per segment.
//
// A Layout is a plain value: not safe for concurrent mutation, safe for
// concurrent Len/Append calls if nothing mutates it.
type Layout struct {
	MSS uint16 // 0 = absent

	HasWindowScale bool
	WindowScale    uint8

	SACKPermitted bool

	HasTimestamp bool
	TSVal, TSEcr uint32

	// FastOpen adds a TCP Fast Open option without a cookie (a cookie
	// request, RFC 7413 §4.1.1), laid out after the base options: the SYN
	// that carries data for a server that accepts it without a cookie
	// (RFC 8803's Transport Converter).
	FastOpen bool

	// MPTCP are the MPTCP options, in order of priority. Entries at index 32
	// and beyond are never laid out (Omitted has 32 bits; fewer than 11
	// non-empty options fit anyway). A nil entry, or one whose Len is not in
	// 1..40, is left out and reported.
	MPTCP []Option

	// SACKBlocks are the SACK blocks to report, most important first
	// (RFC 2018 §4: the block of the most recent segment first).
	SACKBlocks []SACKBlock

	// Space is the option space to fill, rounded down to a multiple of 4;
	// 0, or any value outside 1..40, means MaxOptionSpace (40). A smaller
	// value reserves room for options laid out by someone else.
	Space int
}

// Omitted reports what a Layout left out for lack of space.
type Omitted struct {
	// MPTCP has bit i set when Layout.MPTCP[i] is not in the block.
	MPTCP uint32
	// SACKBlocks is the number of SACK blocks dropped (from the end of
	// Layout.SACKBlocks).
	SACKBlocks int
	// Base is set when one of MSS, window scale, SACK-permitted or
	// timestamp did not fit. Those take at most 20 bytes, so this only
	// happens when Space is below 20.
	Base bool
}

// Any reports whether anything was left out.
func (o Omitted) Any() bool { return o.MPTCP != 0 || o.SACKBlocks != 0 || o.Base }

// Sizes of the Linux-aligned layout words.
const (
	layoutMSS      = 4  // MSS
	layoutTS       = 12 // NOP,NOP,TS or SACK_PERM,TS
	layoutSACKPerm = 4  // NOP,NOP,SACK_PERM
	layoutWS       = 4  // NOP,WS
	layoutTFO      = 4  // NOP,NOP,TFO
	layoutSACKHdr  = 4  // NOP,NOP,kind,len
	maxLayoutOpts  = 32 // bits in Omitted.MPTCP
)

// layoutPlan is what fits: computed the same way by Len and Append.
type layoutPlan struct {
	tfo                   bool
	mss, ws, sackPerm, ts bool
	nSACK                 int
	include               uint32 // bit i: MPTCP[i] is laid out
	size                  int
	omitted               Omitted
}

func align4(n int) int { return (n + 3) &^ 3 }

func (l *Layout) plan() layoutPlan {
	var p layoutPlan
	room := l.Space &^ 3
	if l.Space <= 0 || l.Space > MaxOptionSpace {
		room = MaxOptionSpace
	}
	total := room
	take := func(n int) bool {
		if n > room {
			return false
		}
		room -= n
		return true
	}

	if l.MSS != 0 {
		p.mss = take(layoutMSS)
		p.omitted.Base = p.omitted.Base || !p.mss
	}
	if l.HasWindowScale {
		p.ws = take(layoutWS)
		p.omitted.Base = p.omitted.Base || !p.ws
	}
	switch {
	case l.SACKPermitted && l.HasTimestamp:
		// Packed together in one 12-byte run when both fit; otherwise
		// SACK-permitted has the higher priority.
		if take(layoutTS) {
			p.sackPerm, p.ts = true, true
		} else {
			p.sackPerm = take(layoutSACKPerm)
			p.omitted.Base = true
		}
	case l.SACKPermitted:
		p.sackPerm = take(layoutSACKPerm)
		p.omitted.Base = p.omitted.Base || !p.sackPerm
	case l.HasTimestamp:
		p.ts = take(layoutTS)
		p.omitted.Base = p.omitted.Base || !p.ts
	}

	if l.FastOpen {
		p.tfo = take(layoutTFO)
		p.omitted.Base = p.omitted.Base || !p.tfo
	}
	for i, opt := range l.MPTCP {
		if i >= maxLayoutOpts {
			break
		}
		if opt != nil {
			if n := opt.Len(); n > 0 && n <= MaxOptionSpace && take(align4(n)) {
				p.include |= 1 << i
				continue
			}
		}
		p.omitted.MPTCP |= 1 << i
	}

	if want := min(len(l.SACKBlocks), MaxSACKBlocks); want > 0 && room >= layoutSACKHdr+lenSACKBlock {
		p.nSACK = min(want, (room-layoutSACKHdr)/lenSACKBlock)
		take(layoutSACKHdr + p.nSACK*lenSACKBlock)
	}
	p.omitted.SACKBlocks = len(l.SACKBlocks) - p.nSACK
	p.size = total - room
	return p
}

// Len returns the number of bytes Append writes: a multiple of 4, at most
// 40 (and at most Space).
func (l *Layout) Len() int { return l.plan().size }

// Append appends the option block to b and reports what did not fit. It does
// not allocate when cap(b)-len(b) >= l.Len(), provided the MPTCP options'
// own Append methods do not (those of this package do not).
//
// The MPTCP options' Len must equal what their Append writes, as it does
// for every type in this package.
func (l *Layout) Append(b []byte) ([]byte, Omitted) {
	p := l.plan()
	if p.mss {
		b = append(b, KindMSS, lenMSS)
		b = binary.BigEndian.AppendUint16(b, l.MSS)
	}
	switch {
	case p.sackPerm && p.ts:
		b = append(b, KindSACKPermitted, lenSACKPermitted, KindTimestamp, lenTimestamp)
	case p.ts:
		b = append(b, KindNOP, KindNOP, KindTimestamp, lenTimestamp)
	case p.sackPerm:
		b = append(b, KindNOP, KindNOP, KindSACKPermitted, lenSACKPermitted)
	}
	if p.ts {
		b = binary.BigEndian.AppendUint32(b, l.TSVal)
		b = binary.BigEndian.AppendUint32(b, l.TSEcr)
	}
	if p.ws {
		b = append(b, KindNOP, KindWindowScale, lenWindowScale, l.WindowScale)
	}
	if p.tfo {
		b = append(b, KindNOP, KindNOP, KindFastOpen, 2)
	}
	if p.nSACK > 0 {
		b = append(b, KindNOP, KindNOP, KindSACK, byte(2+p.nSACK*lenSACKBlock))
		for _, s := range l.SACKBlocks[:p.nSACK] {
			b = binary.BigEndian.AppendUint32(b, s.Start)
			b = binary.BigEndian.AppendUint32(b, s.End)
		}
	}
	for i, opt := range l.MPTCP {
		if i >= maxLayoutOpts {
			break
		}
		if p.include&(1<<i) == 0 {
			continue
		}
		start := len(b)
		b = opt.Append(b)
		for (len(b)-start)%4 != 0 {
			b = append(b, KindNOP)
		}
	}
	return b, p.omitted
}
