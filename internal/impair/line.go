package impair

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// line impairs one direction: it draws the fate of each packet and holds
// the delayed ones until they are due, then releases every due packet in
// one batch from a single timer.
//
// Reference counting: a packet offered to admit belongs to the caller; the
// line takes its own reference (IncRef, or a Clone for a duplicate) on each
// copy it holds, and hands that reference to deliver, or drops it at close.
//
// admit may be called from any goroutine. fire runs on the clock's timer
// goroutine; releases are serialised by relMu, so delayed packets leave in
// due-time order.
type line struct {
	cfg     Config
	limit   int
	clock   tcpip.Clock
	mtu     func() int
	deliver func(b []held) // consumes the references of b

	mu      sync.Mutex
	rng     *rand.Rand // guarded by mu
	q       delayHeap  // guarded by mu
	seq     uint64     // guarded by mu; orders equal due times FIFO
	timer   tcpip.Timer
	armed   bool // guarded by mu; timer set to fire at armedAt
	armedAt tcpip.MonotonicTime
	closed  bool // guarded by mu

	relMu sync.Mutex // serialises fire; guards out
	out   []held

	st dirCounters
}

// held is a packet in the delay line.
type held struct {
	due   tcpip.MonotonicTime
	seq   uint64
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer
}

func newLine(cfg Config, clock tcpip.Clock, seed, stream uint64, mtu func() int, deliver func([]held)) *line {
	return &line{
		cfg:     cfg,
		limit:   cfg.limit(),
		clock:   clock,
		mtu:     mtu,
		deliver: deliver,
		rng:     rand.New(rand.NewPCG(seed, stream)),
	}
}

// admit applies the impairment to pkt (owned by the caller, who keeps its
// reference). It reports whether pkt itself must be handed on at once, and
// returns a clone to hand on at once too (a duplicate), or nil; the caller
// owns that clone's reference.
func (l *line) admit(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) (pass bool, dup *stack.PacketBuffer) {
	l.st.packets.Add(1)
	if pkt.Size() > l.mtu() {
		l.st.oversize.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.st.flushed.Add(1)
		return false, nil
	}
	if l.cfg.Loss > 0 && l.rng.Float64() < l.cfg.Loss {
		l.st.dropped.Add(1)
		return false, nil
	}
	copies := 1
	if l.cfg.Duplicate > 0 && l.rng.Float64() < l.cfg.Duplicate {
		copies = 2
		l.st.duplicated.Add(1)
	}
	var now tcpip.MonotonicTime
	haveNow := false
	for c := range copies {
		d := l.delayLocked()
		if d <= 0 {
			if c == 0 {
				pass = true
			} else {
				dup = pkt.Clone()
			}
			continue
		}
		if l.q.Len() >= l.limit {
			l.st.overflow.Add(1)
			continue
		}
		p := pkt
		if c == 0 {
			p.IncRef()
		} else {
			p = pkt.Clone()
		}
		if !haveNow {
			now, haveNow = l.clock.NowMonotonic(), true
		}
		l.seq++
		h := held{due: now.Add(d), seq: l.seq, proto: proto, pkt: p}
		l.q.push(h)
		l.st.delayed.Add(1)
		l.armLocked(now, h.due)
	}
	return pass, dup
}

// delayLocked draws how long one copy is held; zero or less means at once.
func (l *line) delayLocked() time.Duration {
	c := &l.cfg
	if c.Delay == 0 && c.Jitter == 0 {
		return 0
	}
	if c.Reorder > 0 && l.rng.Float64() < c.Reorder {
		l.st.reordered.Add(1)
		return 0
	}
	d := c.Delay
	if c.Jitter > 0 {
		// Uniform in [Delay-Jitter, Delay+Jitter], as netem without a
		// distribution table.
		d += time.Duration(l.rng.Int64N(2*int64(c.Jitter)+1)) - c.Jitter
	}
	return d
}

// armLocked makes sure the timer fires no later than due.
func (l *line) armLocked(now, due tcpip.MonotonicTime) {
	if l.armed && !due.Before(l.armedAt) {
		return
	}
	d := due.Sub(now)
	if l.timer == nil {
		l.timer = l.clock.AfterFunc(d, l.fire)
	} else {
		l.timer.Stop()
		l.timer.Reset(d)
	}
	l.armed, l.armedAt = true, due
}

// fire releases every packet that is due, in due-time order, in one batch,
// and re-arms the timer for the next one.
func (l *line) fire() {
	l.relMu.Lock()
	defer l.relMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.armed = false
	now := l.clock.NowMonotonic()
	for l.q.Len() > 0 && !now.Before(l.q.min().due) {
		l.out = append(l.out, l.q.pop())
	}
	if l.q.Len() > 0 {
		l.armLocked(now, l.q.min().due)
	}
	l.mu.Unlock()
	if len(l.out) == 0 {
		return
	}
	l.deliver(l.out)
	clear(l.out)
	l.out = l.out[:0]
}

// close stops the timer and frees the queued packets; later admits drop
// everything. It does not wait for a release in progress (see wait).
func (l *line) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	for _, h := range l.q.h {
		h.pkt.DecRef()
	}
	l.st.flushed.Add(uint64(l.q.Len()))
	clear(l.q.h)
	l.q.h = l.q.h[:0]
}

// wait returns once no release is in progress.
func (l *line) wait() {
	l.relMu.Lock()
	l.relMu.Unlock() //nolint:staticcheck // an empty critical section is the point
}

func (l *line) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.q.Len()
}

// delayHeap is a binary min-heap of held packets ordered by (due, seq). It
// is typed rather than built on container/heap so that push and pop do not
// allocate.
type delayHeap struct{ h []held }

func (q *delayHeap) Len() int   { return len(q.h) }
func (q *delayHeap) min() *held { return &q.h[0] }

func (a *held) before(b *held) bool {
	if a.due != b.due {
		return a.due.Before(b.due)
	}
	return a.seq < b.seq
}

func (q *delayHeap) push(x held) {
	q.h = append(q.h, x)
	for i := len(q.h) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.h[i].before(&q.h[p]) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
}

func (q *delayHeap) pop() held {
	top := q.h[0]
	n := len(q.h) - 1
	q.h[0] = q.h[n]
	q.h[n] = held{}
	q.h = q.h[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q.h[l].before(&q.h[m]) {
			m = l
		}
		if r < n && q.h[r].before(&q.h[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
	return top
}

// dirCounters are the live counters behind DirStats.
type dirCounters struct {
	packets, dropped, duplicated, reordered, delayed atomic.Uint64
	overflow, delivered, flushed, oversize           atomic.Uint64
}
