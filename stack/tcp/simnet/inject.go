package simnet

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Inject delivers a segment that no endpoint sent (a forgery, as an
// attacker on the path or off it would send) to dst after delay, without
// crossing a link: seg is the whole TCP segment (header, options,
// payload), copied. Tests of hostile input use it.
func (n *Network) Inject(src, dst tcpip.Address, seg []byte, delay time.Duration) {
	p := n.packet()
	*p = Packet{Src: src, Dst: dst, Bytes: append(p.Bytes[:0], seg...)}
	if len(seg) >= 4 {
		p.SrcPort = uint16(seg[0])<<8 | uint16(seg[1])
		p.DstPort = uint16(seg[2])<<8 | uint16(seg[3])
	}
	n.push(n.Now().Add(delay), p)
}
