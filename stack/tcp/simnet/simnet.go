// Package simnet is a deterministic simulated network for the sans-I/O TCP
// core in stack/tcp (and, later, MPTCP subflows over it): hosts joined by
// one-way links with propagation delay, serialisation rate, a bounded
// queue, random loss (seeded), reordering and duplication, all on a
// faketime.ManualClock. Run loops jump virtual time from event to event,
// so a lossy ten-second transfer runs in milliseconds and fails the same
// way every time.
//
// Segments cross links as real TCP header bytes (tcp.OutSegment.AppendHeader
// then tcp.ParseSegment), so the option encoding is exercised end to end.
//
// A Network is not safe for concurrent use; tests drive it from one
// goroutine.
package simnet

import (
	"math/rand"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// ipHeaderLen is added to each segment for rate accounting.
const ipHeaderLen = 20

// LinkConfig describes one direction of a link.
type LinkConfig struct {
	Delay        time.Duration // one-way propagation delay
	Rate         int64         // bytes per second; 0 means infinitely fast
	QueueLimit   int           // bytes waiting for serialisation; 0: unbounded
	Loss         float64       // probability a packet is dropped
	Reorder      float64       // probability a packet gets ReorderDelay extra
	ReorderDelay time.Duration
	// Jump is the probability that a packet skips Delay, arriving ahead
	// of the packets being delayed: netem's "reorder" (tc-netem(8)), as
	// internal/impair has it ("delay 10ms reorder 5%" is Delay 10 ms,
	// Jump 0.05).
	Jump      float64
	Duplicate float64 // probability a packet is delivered twice
	// Drop, if set, is consulted for every packet (after random loss):
	// returning true drops it. Tests use it for deterministic losses.
	Drop func(p *Packet) bool
}

// LinkStats counts a link's packets.
type LinkStats struct {
	Sent, Delivered, Lost, QueueDrops, Duplicated, Reordered uint64
	Bytes                                                    uint64
}

// Link is one direction between two addresses.
type Link struct {
	Config    LinkConfig
	Stats     LinkStats
	busyUntil tcpip.MonotonicTime
}

// Packet is a segment in flight.
type Packet struct {
	Src, Dst tcpip.Address
	SrcPort  uint16
	DstPort  uint16
	// Bytes is the TCP segment (header, options, payload).
	Bytes []byte
	Seg   tcp.Segment // decoded on delivery
	// injected marks a packet from Inject, which crossed no link.
	injected bool
}

type event struct {
	at  tcpip.MonotonicTime
	seq uint64
	pkt *Packet
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

// push and pop are container/heap's algorithms without the interface
// boxing (which allocates per packet).
func (h *eventHeap) push(ev event) {
	*h = append(*h, ev)
	for j := len(*h) - 1; j > 0; {
		i := (j - 1) / 2
		if !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		j = i
	}
}

func (h *eventHeap) pop() event {
	old := *h
	n := len(old) - 1
	old.Swap(0, n)
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && old.Less(r, l) {
			j = r
		}
		if !old.Less(j, i) {
			break
		}
		old.Swap(i, j)
		i = j
	}
	ev := old[n]
	*h = old[:n]
	return ev
}

// Network is the simulation: a clock, hosts, links and packets in flight.
type Network struct {
	Clock *faketime.ManualClock
	rng   *rand.Rand
	q     eventHeap
	seq   uint64
	hosts map[tcpip.Address]*Host
	links map[[2]tcpip.Address]*Link
	// Trace, if set, sees every packet as it is delivered (after decoding).
	Trace func(p *Packet)
	// Tap, if set, sees every packet as it is sent, before loss; returning
	// false drops it.
	Tap   func(p *Packet) bool
	free  []*Packet
	order []*Host
}

// New returns an empty network whose randomness is seeded with seed.
func New(seed int64) *Network {
	return &Network{
		Clock: faketime.NewManualClock(),
		rng:   rand.New(rand.NewSource(seed)),
		hosts: make(map[tcpip.Address]*Host),
		links: make(map[[2]tcpip.Address]*Link),
	}
}

// Now is the current virtual time.
func (n *Network) Now() tcpip.MonotonicTime { return n.Clock.NowMonotonic() }

// Link returns the link from a to b, or nil.
func (n *Network) Link(a, b tcpip.Address) *Link { return n.links[[2]tcpip.Address{a, b}] }

// Connect joins a and b with a link in each direction.
func (n *Network) Connect(a, b tcpip.Address, ab, ba LinkConfig) (*Link, *Link) {
	l1, l2 := &Link{Config: ab}, &Link{Config: ba}
	n.links[[2]tcpip.Address{a, b}] = l1
	n.links[[2]tcpip.Address{b, a}] = l2
	return l1, l2
}

func (n *Network) packet() *Packet {
	if k := len(n.free); k > 0 {
		p := n.free[k-1]
		n.free = n.free[:k-1]
		p.injected = false
		return p
	}
	return &Packet{Bytes: make([]byte, 0, 1600)}
}

// send puts a packet on the link from p.Src to p.Dst.
func (n *Network) send(p *Packet) {
	l := n.Link(p.Src, p.Dst)
	if l == nil || (n.Tap != nil && !n.Tap(p)) {
		n.free = append(n.free, p)
		return
	}
	c := &l.Config
	l.Stats.Sent++
	if c.Loss > 0 && n.rng.Float64() < c.Loss || c.Drop != nil && c.Drop(p) {
		l.Stats.Lost++
		n.free = append(n.free, p)
		return
	}
	now := n.Now()
	depart := now
	if l.busyUntil.After(now) {
		depart = l.busyUntil
	}
	size := len(p.Bytes) + ipHeaderLen
	if c.Rate > 0 {
		if c.QueueLimit > 0 && int64(depart.Sub(now))*c.Rate/int64(time.Second) > int64(c.QueueLimit) {
			l.Stats.QueueDrops++
			n.free = append(n.free, p)
			return
		}
		depart = depart.Add(time.Duration(int64(size) * int64(time.Second) / c.Rate))
		l.busyUntil = depart
	}
	at := depart.Add(c.Delay)
	if c.Jump > 0 && n.rng.Float64() < c.Jump {
		l.Stats.Reordered++
		at = depart
	}
	if c.Reorder > 0 && n.rng.Float64() < c.Reorder {
		l.Stats.Reordered++
		at = at.Add(c.ReorderDelay)
	}
	l.Stats.Bytes += uint64(size)
	n.push(at, p)
	if c.Duplicate > 0 && n.rng.Float64() < c.Duplicate {
		l.Stats.Duplicated++
		d := n.packet()
		*d = Packet{Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort, Bytes: append(d.Bytes[:0], p.Bytes...)}
		n.push(at.Add(time.Microsecond), d)
	}
}

// Inject schedules the raw TCP segment b (header, options, payload) for
// delivery to dst after d, as if sent from src:srcPort to dst:dstPort,
// without a link: the source may be any address (spoofed SYNs) and the
// bytes anything (malformed options). Replies to a source with no link are
// lost, as to an address that never answers. b is copied.
func (n *Network) Inject(d time.Duration, src tcpip.Address, srcPort uint16, dst tcpip.Address, dstPort uint16, b []byte) {
	p := &Packet{Src: src, Dst: dst, SrcPort: srcPort, DstPort: dstPort, Bytes: append([]byte(nil), b...), injected: true}
	n.push(n.Now().Add(max(d, 0)), p)
}

func (n *Network) push(at tcpip.MonotonicTime, p *Packet) {
	n.seq++
	n.q.push(event{at: at, seq: n.seq, pkt: p})
}

// nextEvent returns the earliest packet arrival or endpoint deadline.
func (n *Network) nextEvent() (tcpip.MonotonicTime, bool) {
	var at tcpip.MonotonicTime
	ok := false
	if len(n.q) > 0 {
		at, ok = n.q[0].at, true
	}
	for _, h := range n.hostList() {
		for _, c := range h.conns {
			if d, armed := c.ep.NextDeadline(); armed && (!ok || d.Before(at)) {
				at, ok = d, true
			}
		}
	}
	return at, ok
}

// hostList returns hosts in creation order (deterministic).
func (n *Network) hostList() []*Host { return n.order }

// step runs everything due at the next event time, if that is not after
// limit. It reports false when nothing was due by limit.
func (n *Network) step(limit tcpip.MonotonicTime) bool {
	at, ok := n.nextEvent()
	if !ok || at.After(limit) {
		return false
	}
	if now := n.Now(); at.After(now) {
		n.Clock.Advance(at.Sub(now))
	}
	now := n.Now()
	for len(n.q) > 0 && !n.q[0].at.After(now) {
		ev := n.q.pop()
		n.deliver(ev.pkt)
	}
	for _, h := range n.hostList() {
		for i := 0; i < len(h.conns); i++ {
			c := h.conns[i]
			if d, armed := c.ep.NextDeadline(); armed && !d.After(now) {
				c.ep.HandleTimers()
			}
		}
		h.prune()
	}
	return true
}

// RunUntil advances virtual time event by event until cond holds or d has
// elapsed; it reports whether cond held.
func (n *Network) RunUntil(cond func() bool, d time.Duration) bool {
	limit := n.Now().Add(d)
	for !cond() {
		if !n.step(limit) {
			if now := n.Now(); limit.After(now) {
				n.Clock.Advance(limit.Sub(now))
			}
			return cond()
		}
	}
	return true
}

// RunFor advances virtual time by d, processing every event.
func (n *Network) RunFor(d time.Duration) {
	n.RunUntil(func() bool { return false }, d)
}

func (n *Network) deliver(p *Packet) {
	defer func() { n.free = append(n.free, p) }()
	if l := n.Link(p.Src, p.Dst); l != nil && !p.injected {
		l.Stats.Delivered++
	}
	h := n.hosts[p.Dst]
	if h == nil {
		return
	}
	if _, _, err := tcp.ParseSegment(p.Bytes, &p.Seg); err != nil {
		return
	}
	if h.Ingress != nil && !h.Ingress(p) {
		return
	}
	if n.Trace != nil {
		n.Trace(p)
	}
	h.receive(p)
}
