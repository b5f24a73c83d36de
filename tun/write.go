package tun

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txState is the transmit side, guarded by Endpoint.txMu.
//
// Each slot is a buffer of writeOffset+maxPacket bytes, allocated the first
// time a batch is that long and reused ever after: wireguard/tun coalesces
// segments by appending to the first one in place, which it does only when
// that buffer has room for the whole super-packet. vec is the slice of
// packet views handed to Device.Write, rebuilt for every call because the
// device may reorder and extend its elements. vhdr and iov build the
// writev of a GSO packet (raw device access only).
type txState struct {
	slots [][]byte
	vec   [][]byte
	vhdr  [virtioNetHdrLen]byte
	iov   [][]byte
}

func (t *txState) slot(i int) []byte {
	for len(t.slots) <= i {
		t.slots = append(t.slots, make([]byte, writeOffset+maxPacket))
	}
	return t.slots[i]
}

// WritePackets implements stack.LinkWriter. It copies the packets into the
// device's batch buffers and writes them with as few device calls as the
// device's batch size allows; a packet with GSO options (see "Segmentation
// offload" in Endpoint) is written on its own, in order, without copying.
// It does not take references: the caller keeps ownership of pkts. On a
// device error the packets of the failed call and of the calls not made are
// counted as dropped, and the error is returned: ErrClosedForSend once the
// endpoint is closed, ErrAborted otherwise (for example while the link is
// down).
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	if e.closed.Load() {
		e.stats.txDrops.Add(uint64(len(list)))
		return 0, &tcpip.ErrClosedForSend{}
	}
	e.txMu.Lock()
	defer e.txMu.Unlock()
	t := &e.tx
	sent := 0
	t.vec = t.vec[:0]
	var batchPkts, batchBytes uint64
	// flush writes the batch in t.vec through the device.
	flush := func() error {
		if len(t.vec) == 0 {
			return nil
		}
		// The device's count is not reliable (wireguard/tun returns
		// bytes, not packets); success means every packet went out.
		_, err := e.dev.Write(t.vec, writeOffset)
		n := len(t.vec)
		clear(t.vec) // drop references to slots the device may have swapped
		t.vec = t.vec[:0]
		if err != nil {
			e.stats.txErrors.Add(1)
			e.stats.txDrops.Add(uint64(n))
			return err
		}
		sent += n
		e.stats.txPackets.Add(batchPkts)
		e.stats.txBytes.Add(batchBytes)
		e.stats.txBatches.Add(1)
		batchPkts, batchBytes = 0, 0
		return nil
	}
	for i, pkt := range list {
		var err error
		if e.raw != nil && pkt.GSOOptions.Type != stack.GSONone {
			if err = flush(); err == nil {
				if err = e.writeGSO(pkt); err == nil {
					sent++
				}
			}
		} else {
			s := t.slot(len(t.vec))
			n, ok := copyPacket(s[writeOffset:], pkt)
			if !ok {
				e.stats.txDrops.Add(1)
				continue
			}
			t.vec = append(t.vec, s[:writeOffset+n])
			batchPkts++
			batchBytes += uint64(n)
			if len(t.vec) == e.batch || i == len(list)-1 {
				err = flush()
			}
		}
		if err != nil {
			e.stats.txDrops.Add(uint64(len(list) - 1 - i))
			if e.closed.Load() || isClosedErr(err) {
				return sent, &tcpip.ErrClosedForSend{}
			}
			return sent, &tcpip.ErrAborted{}
		}
	}
	if err := flush(); err != nil {
		if e.closed.Load() || isClosedErr(err) {
			return sent, &tcpip.ErrClosedForSend{}
		}
		return sent, &tcpip.ErrAborted{}
	}
	return sent, nil
}

// writeGSO writes one packet with GSO options through the raw device: its
// virtio header (gsoHeader) followed by the packet's views, in one writev.
// A failed write is counted (TXErrors, TXDrops) and returned.
func (e *Endpoint) writeGSO(pkt *stack.PacketBuffer) error {
	t := &e.tx
	size := pkt.Size()
	if size > maxPacket {
		e.stats.txDrops.Add(1)
		return nil
	}
	h := gsoHeader(pkt)
	h.encode(t.vhdr[:])
	t.iov = append(t.iov[:0], t.vhdr[:])
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		t.iov = append(t.iov, s[off:])
		off = 0
	}
	if len(t.iov) > maxIovecs {
		// Too many views for one writev: gather them first.
		s := t.slot(0)
		n, _ := copyPacket(s, pkt)
		t.iov = append(t.iov[:1], s[:n])
	}
	err := e.raw.writev(t.iov)
	clear(t.iov)
	if err != nil {
		e.stats.txErrors.Add(1)
		e.stats.txDrops.Add(1)
		return err
	}
	e.stats.txPackets.Add(uint64(gsoSegments(&h, pkt.Data().Size())))
	e.stats.txBytes.Add(uint64(size))
	e.stats.txBatches.Add(1)
	if h.gsoType != virtioGSONone {
		e.stats.txGSO.Add(1)
	}
	return nil
}

// copyPacket copies pkt's bytes (headers and payload) into dst and returns
// their length; ok is false if they do not fit. It does not allocate.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (n int, ok bool) {
	if pkt.Size() > len(dst) {
		return 0, false
	}
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:], s[off:])
		off = 0
	}
	return n, true
}
