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

	// With raw device access (Endpoint.raw), each read goes to rawView, a
	// pooled view of rawReadSize bytes, and its virtio header to rawHdr.
	rawHdr  [virtioNetHdrLen]byte
	rawView *buffer.View
	// sinceEnd counts packets delivered since the last batch end; idle
	// is endBatch as a func value, made once.
	sinceEnd int
	idle     func()
}

// maxRxBatch bounds a receive batch (see Endpoint.OnReceiveBatchEnd), and
// so how long a stack may hold back what it does at the end of one.
const maxRxBatch = 8

// endBatch runs the batch-end hook.
func (r *rxState) endBatch() {
	r.sinceEnd = 0
	if fn := r.e.batchEnd.Load(); fn != nil {
		(*fn)()
	}
}

// rawReadSize is the size of a raw read: the largest IP packet (a kernel
// super-packet is at most 64 KiB), the largest pooled view.
const rawReadSize = buffer.MaxChunkSize

// rawCopyMax: a raw packet at most this long is copied into a view of its
// own size, so that small packets (ACKs) do not each pin a 64 KiB view.
const rawCopyMax = 2048

func (r *rxState) init(e *Endpoint) {
	r.e = e
	r.views = make([]*buffer.View, e.batch)
	r.bufs = make([][]byte, e.batch)
	r.sizes = make([]int, e.batch)
	r.gro.Init(e.cfg.gro)
	r.dsp.stats = &e.stats
	r.idle = r.endBatch
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
	if r.rawView != nil {
		r.rawView.Release()
		r.rawView = nil
	}
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
		var n int
		var err error
		if e.raw != nil {
			if r.rawView == nil {
				r.rawView = buffer.NewViewSize(rawReadSize)
			}
			n, err = e.raw.read(r.rawHdr[:], r.rawView.AsSlice(), r.idle)
			if err == nil {
				r.deliverRaw(n)
				if r.sinceEnd++; r.sinceEnd >= maxRxBatch {
					r.endBatch()
				}
			}
		} else {
			r.refill()
			n, err = r.safeRead()
			if n > 0 {
				r.deliver(n)
				r.endBatch()
			}
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

// deliverRaw checks the n-byte packet just read into rawView with its
// virtio header (classifyOffloaded) and delivers it, whole, to the stack.
func (r *rxState) deliverRaw(n int) {
	e := r.e
	st := &e.stats
	st.rxBatches.Add(1)
	d := e.currentDispatcher()
	if d == nil {
		st.rxDrops.Add(1)
		return
	}
	var h virtioNetHdr
	h.decode(r.rawHdr[:])
	b := r.rawView.AsSlice()[:n]
	o, err := classifyOffloaded(&h, b)
	switch err {
	case nil:
	case ErrBadChecksum:
		st.rxBadChecksum.Add(1)
		st.rxDrops.Add(1)
		return
	default:
		st.rxMalformed.Add(1)
		st.rxDrops.Add(1)
		return
	}
	var payload buffer.Buffer
	switch {
	case n <= rawCopyMax:
		payload = buffer.MakeWithView(buffer.NewViewWithData(b))
	case o.hdrLen > 0:
		// The headers go in a view of their own: the stack takes
		// references to its header views (ipv4 does while it handles the
		// packet) and pulling up a header whose chunk is shared copies the
		// whole chunk, here 64 KiB.
		// (Merge, not Append: Append would fill the header view's spare
		// capacity with payload bytes.)
		payload = buffer.MakeWithView(buffer.NewViewWithData(b[:o.hdrLen]))
		v := r.rawView
		r.rawView = nil
		v.CapLength(n)
		v.TrimFront(o.hdrLen)
		rest := buffer.MakeWithView(v)
		payload.Merge(&rest)
	default:
		v := r.rawView
		r.rawView = nil
		v.CapLength(n)
		payload = buffer.MakeWithView(v)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: payload,
	})
	pkt.NetworkProtocolNumber = o.proto
	pkt.RXChecksumValidated = true
	st.rxPackets.Add(uint64(o.segs))
	st.rxBytes.Add(uint64(n))
	if o.gso {
		st.rxGSO.Add(1)
	}
	if o.unverified {
		st.rxUnverified.Add(1)
	}
	st.rxDelivered.Add(1)
	d.DeliverNetworkPacket(o.proto, pkt)
	pkt.DecRef()
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
