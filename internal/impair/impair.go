// Package impair is an in-process replacement for Linux netem: a
// stack.LinkEndpoint that wraps another one and loses, delays, reorders and
// duplicates packets, each direction on its own (Config). Test kernels here
// are built without sch_netem, so "tc qdisc ... netem" is not available;
// wrapping the engine's link endpoint gives the same path impairment to the
// traffic between the engine and its peer, for instance to exercise the
// subflow TCP's loss recovery (RFC 6298, RFC 6675) and, with several paths,
// MPTCP's data-level retransmission and reassembly (RFC 8684 §3.3.4,
// §3.3.6).
//
// # Where it sits
//
// The wrapper sits between the NIC (with its queueing discipline) and the
// child endpoint; it impairs whatever packets cross that boundary, one
// packet at a time. Impairment must act on wire packets, so it belongs below
// any receive coalescing: wrap a tun.Endpoint created with tun.WithGRO(false),
// otherwise each ingress "packet" is a GRO super-segment standing for many
// wire packets and one loss draw drops them all. The Endpoint does not
// implement stack.GSOEndpoint, so the stack never hands it GSO
// super-packets to send. Packets larger than the child's MTU are still
// impaired (as one) but counted in DirStats.Oversize so that a test can
// assert there were none.
//
// # Determinism
//
// Each direction draws from its own PCG generator seeded with (seed,
// direction), under a lock, in the order packets arrive. The same seed and
// the same sequence of packets give the same fates; on a simulated network
// driven by a faketime.ManualClock (WithClock) a failing run replays
// exactly. Over a real device the packet sequence depends on timing, so a
// seed reproduces the statistics, not the exact run.
//
// # Batching and ownership
//
// Packets due at the same time leave together: one timer per direction
// releases every due packet in a single WritePackets call (egress) or a run
// of DeliverNetworkPacket calls (ingress). Packets that are not delayed
// (no delay configured, or picked for reordering) are handed on at once,
// within the call that brought them. The Endpoint takes a reference on every
// packet it holds (PacketBuffer.IncRef, or a Clone for a duplicate) and
// releases it after delivery, on Close, or when dropping a packet released
// while detached; the packets it is given stay owned by the caller, as the
// stack.LinkWriter and stack.NetworkDispatcher contracts say. A duplicate
// is a Clone and shares the original's bytes, which assumes that nobody
// writes into the bytes of a packet being sent or delivered (gVisor's link
// and network layers do not, for locally delivered packets).
package impair

import (
	"fmt"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// PCG stream identifiers of the two directions, so that the directions draw
// independent sequences from one seed.
const (
	egressStream  = 0x6567726573730000 // "egress"
	ingressStream = 0x696e677265737300 // "ingress"
)

// Option configures an Endpoint.
type Option func(*options)

type options struct {
	clock tcpip.Clock
}

// WithClock makes the Endpoint time its delays on c (for tests, a
// faketime.ManualClock, so that delays elapse when the test advances it).
// The default is tcpip.NewStdClock().
func WithClock(c tcpip.Clock) Option {
	return func(o *options) { o.clock = c }
}

// DirStats counts what one direction did. At any quiescent moment
// Packets + Duplicated = Dropped + Overflow + Delivered + Flushed + Queued.
type DirStats struct {
	// Packets offered to the impairment.
	Packets uint64
	// Dropped by the loss draw (Config.Loss).
	Dropped uint64
	// Duplicated: extra copies made (Config.Duplicate).
	Duplicated uint64
	// Reordered: copies that skipped the delay (Config.Reorder).
	Reordered uint64
	// Delayed: copies put in the delay line.
	Delayed uint64
	// Overflow: copies dropped because the delay line held Limit packets.
	Overflow uint64
	// Delivered: copies handed on, to the child (egress) or the stack
	// (ingress).
	Delivered uint64
	// Flushed: copies freed without delivery: queued at Close, offered
	// after Close, or released while no dispatcher was attached.
	Flushed uint64
	// Oversize: packets larger than the child's MTU (GRO or GSO
	// super-packets), each impaired as one; see the package doc.
	Oversize uint64
	// Queued: copies in the delay line now.
	Queued int
}

// Stats is a snapshot of both directions. Fields are read one by one, so a
// snapshot taken while packets flow need not satisfy the DirStats identity.
type Stats struct {
	Egress  DirStats // from the stack to the child (sent)
	Ingress DirStats // from the child to the stack (received)
}

// Endpoint is a stack.LinkEndpoint that impairs the traffic of its child.
// All methods may be called from any goroutine.
type Endpoint struct {
	child stack.LinkEndpoint
	out   *line // egress
	in    *line // ingress

	closed atomic.Bool

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher // guarded by dmu

	txMu   sync.Mutex
	txList stack.PacketBufferList // guarded by txMu; packets passed at once
	rel    stack.PacketBufferList // used by the egress line's release only
}

var (
	_ stack.LinkEndpoint      = (*Endpoint)(nil)
	_ stack.NetworkDispatcher = (*ingress)(nil)
)

// New wraps child so that packets the stack sends are impaired by egress
// and packets child receives are impaired by ingress, with PRNGs seeded
// from seed. The Endpoint owns child from now on: Close closes it. New
// panics if a Config fails Validate (a programming error; Parse validates).
func New(child stack.LinkEndpoint, egress, ingress Config, seed uint64, opts ...Option) *Endpoint {
	for _, c := range []Config{egress, ingress} {
		if err := c.Validate(); err != nil {
			panic(fmt.Sprintf("impair.New: %v", err))
		}
	}
	o := options{clock: tcpip.NewStdClock()}
	for _, f := range opts {
		f(&o)
	}
	e := &Endpoint{child: child}
	// A packet is oversize if it exceeds the MTU plus the link header.
	mtu := func() int { return int(child.MTU()) + int(child.MaxHeaderLength()) }
	e.out = newLine(egress, o.clock, seed, egressStream, mtu, e.releaseEgress)
	e.in = newLine(ingress, o.clock, seed, ingressStream, mtu, e.releaseIngress)
	return e
}

// Child returns the wrapped endpoint.
func (e *Endpoint) Child() stack.LinkEndpoint { return e.child }

// Stats returns a snapshot of both directions' counters.
func (e *Endpoint) Stats() Stats {
	return Stats{Egress: e.out.stats(), Ingress: e.in.stats()}
}

func (l *line) stats() DirStats {
	return DirStats{
		Packets:    l.st.packets.Load(),
		Dropped:    l.st.dropped.Load(),
		Duplicated: l.st.duplicated.Load(),
		Reordered:  l.st.reordered.Load(),
		Delayed:    l.st.delayed.Load(),
		Overflow:   l.st.overflow.Load(),
		Delivered:  l.st.delivered.Load(),
		Flushed:    l.st.flushed.Load(),
		Oversize:   l.st.oversize.Load(),
		Queued:     l.queued(),
	}
}

// WritePackets implements stack.LinkWriter. Every packet counts as
// written, whatever its fate (a lossy wire accepts what it loses); the
// packets that go at once are written to the child in one call, whose
// error, if any, is returned. The caller keeps ownership of pkts.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	e.txMu.Lock()
	defer e.txMu.Unlock()
	for _, p := range all {
		pass, dup := e.out.admit(p.NetworkProtocolNumber, p)
		if pass {
			e.txList.PushBack(p.IncRef())
		}
		if dup != nil {
			e.txList.PushBack(dup)
		}
	}
	var err tcpip.Error
	if n := e.txList.Len(); n > 0 {
		_, err = e.child.WritePackets(e.txList)
		e.out.st.delivered.Add(uint64(n))
		e.txList.Reset() // drops the references taken above
	}
	return len(all), err
}

// releaseEgress writes a batch of due packets to the child in one call and
// drops the line's references. It runs under the egress line's relMu.
func (e *Endpoint) releaseEgress(b []held) {
	for _, h := range b {
		e.rel.PushBack(h.pkt)
	}
	_, _ = e.child.WritePackets(e.rel) // a lossy link has no one to report to
	e.out.st.delivered.Add(uint64(len(b)))
	e.rel.Reset()
}

// releaseIngress delivers a batch of due packets to the stack, in order,
// and drops the line's references. It runs under the ingress line's relMu.
// Once the endpoint is closed, the rest of the batch is flushed (see Wait).
func (e *Endpoint) releaseIngress(b []held) {
	d := e.currentDispatcher()
	for _, h := range b {
		if e.closed.Load() {
			e.in.st.flushed.Add(1)
		} else {
			e.deliverUp(d, h.proto, h.pkt)
		}
		h.pkt.DecRef()
	}
}

// ingress is the dispatcher the child delivers to; it impairs and passes
// packets on to the stack's dispatcher.
type ingress Endpoint

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (i *ingress) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e := (*Endpoint)(i)
	pass, dup := e.in.admit(proto, pkt)
	if !pass && dup == nil {
		return
	}
	d := e.currentDispatcher()
	if pass {
		e.deliverUp(d, proto, pkt)
	}
	if dup != nil {
		e.deliverUp(d, proto, dup)
		dup.DecRef()
	}
}

// deliverUp hands one ingress packet to the stack, or counts it as flushed
// when detached. The caller keeps its reference.
func (e *Endpoint) deliverUp(d stack.NetworkDispatcher, proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d == nil {
		e.in.st.flushed.Add(1)
		return
	}
	d.DeliverNetworkPacket(proto, pkt)
	e.in.st.delivered.Add(1)
}

// DeliverLinkPacket implements stack.NetworkDispatcher; packets for packet
// sockets are not impaired.
func (i *ingress) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d := (*Endpoint)(i).currentDispatcher(); d != nil {
		d.DeliverLinkPacket(proto, pkt)
	}
}

func (e *Endpoint) currentDispatcher() stack.NetworkDispatcher {
	e.dmu.RLock()
	defer e.dmu.RUnlock()
	return e.dispatcher
}

// Attach implements stack.LinkEndpoint. The child is attached to the
// Endpoint's impairing dispatcher, or detached when d is nil; delayed
// ingress packets released while detached are freed (DirStats.Flushed).
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.dmu.Lock()
	e.dispatcher = d
	e.dmu.Unlock()
	if d == nil {
		e.child.Attach(nil)
		return
	}
	e.child.Attach((*ingress)(e))
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.currentDispatcher() != nil }

// Close implements stack.LinkEndpoint: it stops both delay lines, frees the
// packets they hold and closes the child. It may be called more than once,
// also from the child's on-close action.
func (e *Endpoint) Close() {
	if !e.closed.CompareAndSwap(false, true) {
		return
	}
	e.out.close()
	e.in.close()
	e.child.Close()
}

// Wait implements stack.LinkEndpoint: it waits for the child's goroutines
// and for an egress release in progress to finish. It does not wait for an
// ingress release: gVisor's Stack.Wait calls it with the stack's lock
// held, and a packet being delivered up may be waiting for that lock (in
// IPv4 input). Such a release delivers that one packet once the lock is
// free (to a NIC the stack has removed, which drops it) and flushes the
// rest of its batch, since Close ran first.
func (e *Endpoint) Wait() {
	e.child.Wait()
	e.out.wait()
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.child.MTU() }

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.child.SetMTU(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *Endpoint) MaxHeaderLength() uint16 { return e.child.MaxHeaderLength() }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress { return e.child.LinkAddress() }

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(a tcpip.LinkAddress) { e.child.SetLinkAddress(a) }

// Capabilities implements stack.LinkEndpoint: the child's. Delaying and
// reordering do not change what a checksum-offload capability promises.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return e.child.Capabilities() }

// ARPHardwareType implements stack.LinkEndpoint.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType { return e.child.ARPHardwareType() }

// AddHeader implements stack.LinkEndpoint.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) { e.child.AddHeader(pkt) }

// ParseHeader implements stack.LinkEndpoint.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool { return e.child.ParseHeader(pkt) }

// SetOnCloseAction implements stack.LinkEndpoint; the action runs when the
// child closes (which Close causes).
func (e *Endpoint) SetOnCloseAction(fn func()) { e.child.SetOnCloseAction(fn) }
