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
// device may reorder and extend its elements.
type txState struct {
	slots [][]byte
	vec   [][]byte
}

func (t *txState) slot(i int) []byte {
	for len(t.slots) <= i {
		t.slots = append(t.slots, make([]byte, writeOffset+maxPacket))
	}
	return t.slots[i]
}

// WritePackets implements stack.LinkWriter. It copies the packets into the
// device's batch buffers and writes them with as few device calls as the
// device's batch size allows. It does not take references: the caller keeps
// ownership of pkts. On a device error the packets of the failed call and of
// the calls not made are counted as dropped, and the error is returned:
// ErrClosedForSend once the endpoint is closed, ErrAborted otherwise (for
// example while the link is down).
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
	for len(list) > 0 {
		k := min(len(list), e.batch)
		chunk := list[:k]
		list = list[k:]
		t.vec = t.vec[:0]
		var bytes uint64
		for _, pkt := range chunk {
			s := t.slot(len(t.vec))
			n, ok := copyPacket(s[writeOffset:], pkt)
			if !ok {
				e.stats.txDrops.Add(1)
				continue
			}
			t.vec = append(t.vec, s[:writeOffset+n])
			bytes += uint64(n)
		}
		if len(t.vec) == 0 {
			continue
		}
		// The device's count is not reliable (wireguard/tun returns
		// bytes, not packets); success means every packet went out.
		if _, err := e.dev.Write(t.vec, writeOffset); err != nil {
			e.stats.txErrors.Add(1)
			e.stats.txDrops.Add(uint64(len(t.vec) + len(list)))
			clear(t.vec)
			if e.closed.Load() || isClosedErr(err) {
				return sent, &tcpip.ErrClosedForSend{}
			}
			return sent, &tcpip.ErrAborted{}
		}
		clear(t.vec) // drop references to slots the device may have swapped
		sent += len(t.vec)
		e.stats.txPackets.Add(uint64(len(t.vec)))
		e.stats.txBytes.Add(bytes)
		e.stats.txBatches.Add(1)
	}
	return sent, nil
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
