// Package shaper limits the bandwidth of a link: a stack.LinkEndpoint that
// wraps another one and passes packets in each direction at no more than a
// configured rate, for the whole link and, optionally, for each TCP flow
// (each subflow of an MPTCP connection is a flow of its own).
//
// This is the throttling of the "Multipath TCP Proxy" design: when a
// path's (or a subflow's) rate is capped at the proxy, the congestion
// control of the subflows on that path sees the queue build up and the
// MPTCP scheduler shifts the load to the other paths.
//
// # Model
//
// Each direction is a two-stage token-bucket shaper, like tc's tbf with an
// optional per-flow stage in front:
//
//  1. Flow stage (Config.FlowRate > 0): each TCP four-tuple has a bucket
//     and a FIFO; a packet leaves its flow's FIFO when the flow's bucket
//     holds tokens.
//  2. Link stage (Config.Rate > 0): one FIFO and one bucket for the link.
//
// Buckets refill at their rate up to Config.Burst bytes and may go
// negative by one packet (so a packet larger than the burst, a GRO
// super-packet for instance, still passes). A packet that finds its FIFO
// full (Config.Limit bytes, per flow and for the link) is dropped and
// counted, as a tail-drop qdisc does: TCP takes that as congestion.
// Packets are never reordered within a direction. A direction with both
// rates zero passes packets through at once.
//
// # Ownership and threads
//
// The Endpoint takes a reference on every packet it queues and releases it
// once handed on (or at Close). Queued packets leave from a timer
// goroutine; all hand-overs of a direction are serialised, so the child
// (egress) and the stack (ingress) see packets in arrival order. Methods
// may be called from any goroutine.
package shaper

import (
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Config limits one direction. The zero Config limits nothing.
type Config struct {
	// Rate is the link's rate in bytes per second (0: unlimited).
	Rate int64
	// FlowRate is each TCP flow's rate in bytes per second (0:
	// unlimited).
	FlowRate int64
	// Burst is the bucket depth in bytes (0: 5 ms at the rate, at least
	// 4 full-size packets).
	Burst int
	// Limit bounds each FIFO in bytes (0: 100 ms at the rate, at least
	// 64 KiB).
	Limit int
}

// Limits of the flow table.
const (
	// MaxFlows bounds the flows a direction tracks; packets of further
	// flows share one overflow flow.
	MaxFlows = 4096
	// flowIdle is how long an idle flow's state is kept.
	flowIdle = 10 * time.Second
	minBurst = 4 * 1514
	minLimit = 64 << 10
)

func (c Config) burst(rate int64) float64 {
	if c.Burst > 0 {
		return float64(c.Burst)
	}
	return float64(max(rate/200, minBurst))
}

func (c Config) limit(rate int64) int {
	if c.Limit > 0 {
		return c.Limit
	}
	return int(max(rate/10, minLimit))
}

// DirStats counts one direction's packets.
type DirStats struct {
	Packets uint64 // offered
	Bytes   uint64 // offered
	Dropped uint64 // dropped at a full FIFO
	Queued  int    // held now
}

// Stats is a snapshot of both directions.
type Stats struct {
	Egress, Ingress DirStats
}

// Endpoint is a stack.LinkEndpoint that shapes its child's traffic.
type Endpoint struct {
	child  stack.LinkEndpoint
	out    *line
	in     *line
	closed atomic.Bool

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher
}

var (
	_ stack.LinkEndpoint      = (*Endpoint)(nil)
	_ stack.NetworkDispatcher = (*ingress)(nil)
)

// New wraps child; egress limits what the stack sends, ingress what it
// receives. The Endpoint owns child from now on.
func New(child stack.LinkEndpoint, egress, ingress Config) *Endpoint {
	e := &Endpoint{child: child}
	e.out = newLine(egress, e.releaseEgress)
	e.in = newLine(ingress, e.releaseIngress)
	return e
}

// SetConfig changes the limits of both directions; packets already queued
// stay queued.
func (e *Endpoint) SetConfig(egress, ingress Config) {
	e.out.setConfig(egress)
	e.in.setConfig(ingress)
}

// Stats returns the counters.
func (e *Endpoint) Stats() Stats { return Stats{Egress: e.out.stats(), Ingress: e.in.stats()} }

// WritePackets implements stack.LinkWriter: every packet counts as
// written; those that may go now are written to the child in this call.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	e.out.admit(all, 0)
	return len(all), nil
}

func (e *Endpoint) releaseEgress(b []queued) {
	var l stack.PacketBufferList
	for _, q := range b {
		l.PushBack(q.pkt)
	}
	_, _ = e.child.WritePackets(l)
	l.Reset() // drops the references
}

func (e *Endpoint) releaseIngress(b []queued) {
	e.dmu.RLock()
	d := e.dispatcher
	e.dmu.RUnlock()
	for _, q := range b {
		if d != nil && !e.closed.Load() {
			d.DeliverNetworkPacket(q.proto, q.pkt)
		}
		q.pkt.DecRef()
	}
}

type ingress Endpoint

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (i *ingress) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	(*Endpoint)(i).in.admit([]*stack.PacketBuffer{pkt}, proto)
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (i *ingress) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e := (*Endpoint)(i)
	e.dmu.RLock()
	d := e.dispatcher
	e.dmu.RUnlock()
	if d != nil {
		d.DeliverLinkPacket(proto, pkt)
	}
}

// Attach implements stack.LinkEndpoint.
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
func (e *Endpoint) IsAttached() bool {
	e.dmu.RLock()
	defer e.dmu.RUnlock()
	return e.dispatcher != nil
}

// Close implements stack.LinkEndpoint: it frees the queued packets and
// closes the child.
func (e *Endpoint) Close() {
	if !e.closed.CompareAndSwap(false, true) {
		return
	}
	e.out.close()
	e.in.close()
	e.child.Close()
}

// Wait implements stack.LinkEndpoint. It does not wait for an ingress
// release in progress: gVisor's Stack.Wait calls it with the stack's lock
// held, which the packet being delivered up may be waiting for. That
// release hands on its one packet once the lock is free and drops the
// rest of its batch, since Close ran first.
func (e *Endpoint) Wait() {
	e.child.Wait()
	e.out.wait()
}

// The rest of stack.LinkEndpoint is the child's.

func (e *Endpoint) MTU() uint32                                  { return e.child.MTU() }
func (e *Endpoint) SetMTU(mtu uint32)                            { e.child.SetMTU(mtu) }
func (e *Endpoint) MaxHeaderLength() uint16                      { return e.child.MaxHeaderLength() }
func (e *Endpoint) LinkAddress() tcpip.LinkAddress               { return e.child.LinkAddress() }
func (e *Endpoint) SetLinkAddress(a tcpip.LinkAddress)           { e.child.SetLinkAddress(a) }
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return e.child.Capabilities() }
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType      { return e.child.ARPHardwareType() }
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer)            { e.child.AddHeader(pkt) }
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool     { return e.child.ParseHeader(pkt) }
func (e *Endpoint) SetOnCloseAction(fn func())                   { e.child.SetOnCloseAction(fn) }
