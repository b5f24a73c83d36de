package shaper

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// queued is a packet held by a line, with the reference the line took.
type queued struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
	size  int
}

// bucket is a token bucket; tokens may go negative by one packet.
type bucket struct {
	tokens float64
	last   time.Time
}

// refill adds the tokens earned since the last refill, up to depth.
func (b *bucket) refill(now time.Time, rate int64, depth float64) {
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * float64(rate)
	} else {
		b.tokens = depth
	}
	b.tokens = min(b.tokens, depth)
	b.last = now
}

// wait returns how long until the bucket holds a positive amount.
func (b *bucket) wait(rate int64) time.Duration {
	if b.tokens > 0 {
		return 0
	}
	return time.Duration((-b.tokens + 1) / float64(rate) * float64(time.Second))
}

// fifo is a queue of packets with its byte count.
type fifo struct {
	q     []queued
	bytes int
}

func (f *fifo) push(q queued) { f.q = append(f.q, q); f.bytes += q.size }
func (f *fifo) pop() queued {
	q := f.q[0]
	f.q[0] = queued{}
	f.q = f.q[1:]
	f.bytes -= q.size
	if len(f.q) == 0 {
		f.q = f.q[:0:0]
	}
	return q
}

// flowKey identifies a TCP flow by its addresses and ports.
type flowKey struct {
	src, dst [16]byte
	ports    uint32
}

type flow struct {
	b    bucket
	q    fifo
	seen time.Time
}

// line shapes one direction. admit and fire compute, under mu, what may
// leave, and hand it on under relMu, which they take first: releases
// happen in admission order.
type line struct {
	deliver func([]queued)

	relMu sync.Mutex
	mu    sync.Mutex
	cfg   Config
	link  bucket
	q     fifo
	flows map[flowKey]*flow
	// active lists the flows with packets queued, in round-robin order.
	active []*flow
	timer  *time.Timer
	armed  time.Time
	closed bool
	out    []queued // scratch, guarded by relMu

	packets, bytes, dropped atomic.Uint64
	held                    atomic.Int64
}

func newLine(cfg Config, deliver func([]queued)) *line {
	return &line{cfg: cfg, deliver: deliver, flows: make(map[flowKey]*flow)}
}

func (l *line) setConfig(c Config) {
	l.mu.Lock()
	l.cfg = c
	l.mu.Unlock()
	l.fire()
}

func (l *line) stats() DirStats {
	return DirStats{Packets: l.packets.Load(), Bytes: l.bytes.Load(), Dropped: l.dropped.Load(), Queued: int(l.held.Load())}
}

// admit takes packets (owned by the caller, who keeps its references) and
// hands on those that may leave now.
func (l *line) admit(pkts []*stack.PacketBuffer, proto tcpip.NetworkProtocolNumber) {
	l.relMu.Lock()
	defer l.relMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	for _, p := range pkts {
		size := p.Size()
		l.packets.Add(1)
		l.bytes.Add(uint64(size))
		pr := proto
		if pr == 0 {
			pr = p.NetworkProtocolNumber
		}
		q := queued{proto: pr, pkt: p, size: size}
		if l.cfg.Rate <= 0 && l.cfg.FlowRate <= 0 {
			l.out = append(l.out, queued{proto: pr, pkt: p.IncRef(), size: size})
			l.held.Add(1)
			continue
		}
		if l.cfg.FlowRate > 0 {
			f := l.flowOf(p, pr, now)
			f.b.refill(now, l.cfg.FlowRate, l.cfg.burst(l.cfg.FlowRate))
			if len(f.q.q) > 0 || f.b.tokens <= 0 {
				if f.q.bytes+size > l.cfg.limit(l.cfg.FlowRate) {
					l.dropped.Add(1)
					continue
				}
				if len(f.q.q) == 0 {
					l.active = append(l.active, f)
				}
				q.pkt = p.IncRef()
				f.q.push(q)
				l.held.Add(1)
				continue
			}
			f.b.tokens -= float64(size)
		}
		q.pkt = p.IncRef()
		l.held.Add(1)
		l.enqueueLinkLocked(q)
	}
	l.releaseLocked(now)
	l.mu.Unlock()
	l.flushOut()
}

// flowOf returns the flow of pkt, creating it (or the overflow flow).
func (l *line) flowOf(pkt *stack.PacketBuffer, proto tcpip.NetworkProtocolNumber, now time.Time) *flow {
	k := keyOf(pkt, proto)
	f := l.flows[k]
	if f == nil {
		if len(l.flows) >= MaxFlows {
			l.expireLocked(now)
		}
		if len(l.flows) >= MaxFlows {
			k = flowKey{}
			if f = l.flows[k]; f != nil {
				f.seen = now
				return f
			}
		}
		f = &flow{}
		l.flows[k] = f
	}
	f.seen = now
	return f
}

// expireLocked forgets idle flows with nothing queued.
func (l *line) expireLocked(now time.Time) {
	for k, f := range l.flows {
		if len(f.q.q) == 0 && now.Sub(f.seen) > flowIdle {
			delete(l.flows, k)
		}
	}
}

// keyOf reads the flow key of an IP packet carrying TCP (other packets
// share the zero key). It copies at most the headers.
func keyOf(pkt *stack.PacketBuffer, proto tcpip.NetworkProtocolNumber) flowKey {
	var k flowKey
	var b []byte
	if nh := pkt.NetworkHeader().Slice(); len(nh) > 0 {
		b = append(append(b, nh...), pkt.TransportHeader().Slice()...)
	} else {
		r := pkt.Data().AsRange()
		b = r.Capped(64).ToSlice()
	}
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		if b[9] != uint8(header.TCPProtocolNumber) || len(b) < ihl+4 {
			return k
		}
		copy(k.src[:], b[12:16])
		copy(k.dst[:], b[16:20])
		k.ports = binary.BigEndian.Uint32(b[ihl:])
	case len(b) >= header.IPv6MinimumSize+4 && b[0]>>4 == 6:
		if b[6] != uint8(header.TCPProtocolNumber) {
			return k
		}
		copy(k.src[:], b[8:24])
		copy(k.dst[:], b[24:40])
		k.ports = binary.BigEndian.Uint32(b[40:])
	}
	_ = proto
	return k
}

// enqueueLinkLocked puts a packet that passed the flow stage in the link
// FIFO, or drops it when that is full (releasing its reference).
func (l *line) enqueueLinkLocked(q queued) bool {
	if l.cfg.Rate > 0 && l.q.bytes+q.size > l.cfg.limit(l.cfg.Rate) {
		q.pkt.DecRef()
		l.held.Add(-1)
		l.dropped.Add(1)
		return false
	}
	l.q.push(q)
	return true
}

// releaseLocked moves what the buckets allow: from the flows' FIFOs (round
// robin) to the link FIFO, and from there to out; then arms the timer for
// the next packet.
func (l *line) releaseLocked(now time.Time) {
	var next time.Duration
	if l.cfg.FlowRate > 0 && len(l.active) > 0 {
		depth := l.cfg.burst(l.cfg.FlowRate)
		for progress := true; progress; {
			progress = false
			j := 0
			for _, f := range l.active {
				f.b.refill(now, l.cfg.FlowRate, depth)
				if f.b.tokens > 0 && len(f.q.q) > 0 {
					q := f.q.pop()
					f.b.tokens -= float64(q.size)
					l.enqueueLinkLocked(q)
					progress = true
				}
				if len(f.q.q) > 0 {
					l.active[j] = f
					j++
					if w := f.b.wait(l.cfg.FlowRate); w > 0 && (next == 0 || w < next) {
						next = w
					}
				}
			}
			clear(l.active[j:])
			l.active = l.active[:j]
		}
	} else if len(l.active) > 0 {
		// Flow limit removed: everything moves on.
		for _, f := range l.active {
			for len(f.q.q) > 0 {
				l.enqueueLinkLocked(f.q.pop())
			}
		}
		clear(l.active)
		l.active = l.active[:0]
	}
	if l.cfg.Rate > 0 {
		l.link.refill(now, l.cfg.Rate, l.cfg.burst(l.cfg.Rate))
		for len(l.q.q) > 0 && l.link.tokens > 0 {
			q := l.q.pop()
			l.link.tokens -= float64(q.size)
			l.out = append(l.out, q)
		}
		if len(l.q.q) > 0 {
			if w := l.link.wait(l.cfg.Rate); next == 0 || w < next {
				next = w
			}
		}
	} else {
		for len(l.q.q) > 0 {
			l.out = append(l.out, l.q.pop())
		}
	}
	if next > 0 {
		l.armLocked(now, max(next, 200*time.Microsecond))
	}
}

func (l *line) armLocked(now time.Time, d time.Duration) {
	at := now.Add(d)
	if !l.armed.IsZero() && !at.Before(l.armed) {
		return
	}
	l.armed = at
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.fire)
	} else {
		l.timer.Reset(d)
	}
}

// fire runs on the timer: it releases what may leave now.
func (l *line) fire() {
	l.relMu.Lock()
	defer l.relMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.armed = time.Time{}
	l.releaseLocked(time.Now())
	l.mu.Unlock()
	l.flushOut()
}

// flushOut hands out on. Called with relMu held.
func (l *line) flushOut() {
	if len(l.out) == 0 {
		return
	}
	l.held.Add(-int64(len(l.out)))
	l.deliver(l.out)
	clear(l.out)
	l.out = l.out[:0]
}

// close frees everything queued; later admits drop.
func (l *line) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	for _, q := range l.q.q {
		q.pkt.DecRef()
	}
	l.q = fifo{}
	for _, f := range l.active {
		for _, q := range f.q.q {
			q.pkt.DecRef()
		}
		f.q = fifo{}
	}
	l.active = nil
	l.held.Store(0)
}

// wait waits for a release in progress.
func (l *line) wait() {
	l.relMu.Lock()
	defer l.relMu.Unlock()
}
