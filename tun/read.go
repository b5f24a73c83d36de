package tun

import (
	"errors"
	"fmt"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// errReadPanic reports a panic inside Device.Read, recovered; see safeRead.
var errReadPanic = errors.New("tun: device read panicked")

// rxState is the receive side. It is owned by the reader goroutine.
//
// Packets are read straight into pooled gVisor views (one per batch slot),
// which then become the packets' payload: a slot whose packet was delivered
// gets a fresh view from the pool before the next read, so the steady state
// allocates nothing from the Go heap.
type rxState struct {
	e     *Endpoint
	views []*buffer.View
	bufs  [][]byte
	sizes []int
	gro   gro.GRO
	dsp   countingDispatcher
}

func (r *rxState) init(e *Endpoint) {
	r.e = e
	r.views = make([]*buffer.View, e.batch)
	r.bufs = make([][]byte, e.batch)
	r.sizes = make([]int, e.batch)
	r.gro.Init(e.cfg.gro)
	r.dsp.stats = &e.stats
}

// refill gives every slot a view of at least the current receive size.
func (r *rxState) refill() {
	want := int(r.e.readMTU.Load())
	for i, v := range r.views {
		if v != nil && v.Size() >= want {
			continue
		}
		if v != nil {
			v.Release()
		}
		v = buffer.NewViewSize(want)
		r.views[i] = v
		r.bufs[i] = v.AsSlice()
	}
}

func (r *rxState) release() {
	for i, v := range r.views {
		if v != nil {
			v.Release()
			r.views[i] = nil
		}
		r.bufs[i] = nil
	}
}

// readLoop reads batches until the device closes.
func (e *Endpoint) readLoop() {
	defer e.wg.Done()
	r := &e.rx
	defer r.release()
	failures := 0
	for {
		r.refill()
		n, err := r.safeRead()
		if n > 0 {
			r.deliver(n)
		}
		if err == nil {
			failures = 0
			continue
		}
		if e.closed.Load() || isClosedErr(err) {
			// The device went away by itself: close the endpoint so
			// the stack removes the NIC.
			e.Close()
			return
		}
		e.stats.rxErrors.Add(1)
		if errors.Is(err, wgtun.ErrTooManySegments) || errors.Is(err, errReadPanic) {
			// Part of a super-packet did not fit the slots.
			e.stats.rxOversize.Add(1)
			e.stats.rxDrops.Add(1)
		}
		if n == 0 {
			// Do not spin on an error that persists.
			if failures++; failures > 100 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// safeRead calls Device.Read, turning a panic into an error. wireguard/tun
// slices each slot up to the segment size the kernel chose; if the kernel
// MTU was raised beyond our slots before the MTU event reached us, that can
// exceed a slot's capacity. Its lock is released by defer, so it is safe
// to go on.
func (r *rxState) safeRead() (n int, err error) {
	defer func() {
		if p := recover(); p != nil {
			n, err = 0, fmt.Errorf("%w: %v", errReadPanic, p)
		}
	}()
	return r.e.dev.Read(r.bufs, r.sizes, 0)
}

// deliver verifies the first n packets of the batch, feeds them to GRO and
// flushes it, so that everything read is delivered before the next read.
func (r *rxState) deliver(n int) {
	e := r.e
	st := &e.stats
	st.rxBatches.Add(1)
	d := e.currentDispatcher()
	r.dsp.d = d
	r.gro.Dispatcher = &r.dsp
	var pkts, bytes, drops, bad, malformed, oversize, unverified uint64
	for i := 0; i < n; i++ {
		size := r.sizes[i]
		if size <= 0 || size > len(r.bufs[i]) {
			oversize++
			continue
		}
		if d == nil {
			drops++
			continue
		}
		b := r.bufs[i][:size]
		var proto tcpip.NetworkProtocolNumber
		if e.cfg.gro {
			var err error
			proto, err = verifyPacket(b)
			switch err {
			case nil:
			case ErrUnverifiable:
				unverified++
			case ErrBadChecksum:
				bad++
				continue
			default:
				malformed++
				continue
			}
		} else {
			switch b[0] >> 4 {
			case 4:
				proto = header.IPv4ProtocolNumber
			case 6:
				proto = header.IPv6ProtocolNumber
			default:
				malformed++
				continue
			}
		}
		v := r.views[i]
		r.views[i] = nil
		v.CapLength(size)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithView(v),
		})
		pkt.NetworkProtocolNumber = proto
		// With GRO on we verified above, so GRO need not check again.
		// The NIC overwrites this flag from Capabilities anyway.
		pkt.RXChecksumValidated = e.cfg.gro
		pkts++
		bytes += uint64(size)
		r.gro.Enqueue(pkt)
		pkt.DecRef()
	}
	r.gro.Flush()
	st.rxPackets.Add(pkts)
	st.rxBytes.Add(bytes)
	st.rxBadChecksum.Add(bad)
	st.rxMalformed.Add(malformed)
	st.rxOversize.Add(oversize)
	st.rxUnverified.Add(unverified)
	st.rxDrops.Add(drops + bad + malformed + oversize)
}

// countingDispatcher sits between GRO and the stack and counts what is
// delivered.
type countingDispatcher struct {
	d     stack.NetworkDispatcher
	stats *counters
}

func (c *countingDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.stats.rxDelivered.Add(1)
	c.d.DeliverNetworkPacket(p, pkt)
}

func (c *countingDispatcher) DeliverLinkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.d.DeliverLinkPacket(p, pkt)
}
