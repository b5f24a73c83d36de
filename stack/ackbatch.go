package stack

import (
	"sync"
	"sync/atomic"

	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// batchNotifier is implemented by link endpoints that say when a batch of
// received packets ends (tun.Endpoint.OnReceiveBatchEnd): fn runs on the
// goroutine that delivered the batch, after its last packet.
type batchNotifier interface {
	OnReceiveBatchEnd(fn func())
}

// ackBatch collects the connections that deferred an acknowledgment while
// a NIC's receive batch was being delivered (tcp.Endpoint.SetAckDeferral),
// and sends those ACKs when the batch ends: a receiver that falls behind
// its link acknowledges once per batch of packets instead of once per
// packet, as receive offload plus interrupt batching does in a kernel.
type ackBatch struct {
	mu    sync.Mutex // guards conns and spare; never held while taking Conn.mu
	conns []*subflow
	spare []*subflow
}

// add queues sub, with its Conn's mu held; a subflow is queued once per
// batch.
func (b *ackBatch) add(sub *subflow) {
	if sub.ackQueued {
		return
	}
	sub.ackQueued = true
	b.mu.Lock()
	b.conns = append(b.conns, sub)
	b.mu.Unlock()
}

// flush sends the deferred ACKs; it is the NIC's batch-end hook.
func (b *ackBatch) flush() {
	b.mu.Lock()
	conns := b.conns
	b.conns = b.spare[:0]
	b.mu.Unlock()
	if len(conns) == 0 {
		b.mu.Lock()
		b.spare = conns
		b.mu.Unlock()
		return
	}
	for i, sub := range conns {
		conns[i] = nil
		c := sub.c
		c.mu.Lock()
		sub.ackQueued = false
		if !sub.gone && sub.ep != nil {
			sub.ep.FlushAck()
			c.updateLocked()
			c.flushLocked()
		}
		c.mu.Unlock()
	}
	b.mu.Lock()
	b.spare = conns[:0]
	b.mu.Unlock()
}

// ackBatches maps NIC IDs to their ackBatch, for the NICs whose link
// endpoint reports batch ends. Copy on write: read on every segment
// without a lock.
type ackBatches struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[tcpip.NICID]*ackBatch]
}

// get returns the batch of NIC id, or nil.
func (a *ackBatches) get(id tcpip.NICID) *ackBatch {
	if m := a.m.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// attach gives NIC id an ackBatch if its link endpoint ep reports batch
// ends, and installs the flush as its hook.
func (a *ackBatches) attach(id tcpip.NICID, ep any) {
	n, ok := ep.(batchNotifier)
	if !ok {
		return
	}
	b := &ackBatch{}
	a.mu.Lock()
	m := make(map[tcpip.NICID]*ackBatch)
	if old := a.m.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[id] = b
	a.m.Store(&m)
	a.mu.Unlock()
	n.OnReceiveBatchEnd(b.flush)
}

// detach forgets NIC id; its endpoint's hook is removed.
func (a *ackBatches) detach(id tcpip.NICID, ep any) {
	if n, ok := ep.(batchNotifier); ok {
		n.OnReceiveBatchEnd(nil)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.m.Load()
	if old == nil {
		return
	}
	m := make(map[tcpip.NICID]*ackBatch, len(*old))
	for k, v := range *old {
		if k != id {
			m[k] = v
		}
	}
	a.m.Store(&m)
}

// handleSegmentLocked hands the parsed segment c.seg to the subflow's
// endpoint: with ACK deferral when the packet's NIC reports batch ends,
// queueing the subflow for the batch's flush if it deferred an ACK.
// Called with c.mu held, on the NIC's dispatch goroutine.
func (sub *subflow) handleSegmentLocked(nic tcpip.NICID) {
	c := sub.c
	b := c.eng.ackBatches.get(nic)
	if b == nil {
		sub.ep.HandleSegment(&c.seg)
		return
	}
	sub.ep.SetAckDeferral(true)
	sub.ep.HandleSegment(&c.seg)
	sub.ep.SetAckDeferral(false)
	if c.pending&tcp.EventAckDue != 0 {
		c.pending &^= tcp.EventAckDue
		b.add(sub)
	}
}
