package stack

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoLink is one end of a gVisor pipe posing as a link with segmentation
// offload (stack.HostGSOSupported), as tun.Endpoint is on a Linux TUN: it
// cuts each GSO packet into segments the way the kernel does, after
// checking that the TCP checksum field holds the pseudo-header sum the
// kernel expects (CHECKSUM_PARTIAL), and gives each segment a full
// checksum, which the receiving engine verifies (a pipe declares no
// checksum offload).
type gsoLink struct {
	*pipe.Endpoint
	peer *gsoLink
	// hook is the batch-end hook installed through gsoBatchLink.
	hook atomic.Pointer[func()]

	superPackets atomic.Int64 // GSO packets of more than one segment
	segments     atomic.Int64 // segments written
	badPartial   atomic.Int64 // GSO packets with a wrong partial checksum
	badOptions   atomic.Int64 // GSO packets without NeedsCsum or with a bad MSS
}

var _ stack.GSOEndpoint = (*gsoLink)(nil)

// SupportedGSO implements stack.GSOEndpoint.
func (*gsoLink) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// GSOMaxSize implements stack.GSOEndpoint.
func (*gsoLink) GSOMaxSize() uint32 { return 1<<16 - 1 }

// WritePackets implements stack.LinkWriter: GSO packets are segmented,
// then everything is delivered to the peer, whose batch ends afterwards.
func (l *gsoLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var out stack.PacketBufferList
	for _, pkt := range pkts.AsSlice() {
		if pkt.GSOOptions.Type == stack.GSONone {
			out.PushBack(pkt.IncRef())
			continue
		}
		for _, seg := range l.segment(pkt) {
			p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(seg)})
			p.NetworkProtocolNumber = pkt.NetworkProtocolNumber
			out.PushBack(p)
		}
	}
	n := pkts.Len()
	l.Endpoint.WritePackets(out)
	out.Reset()
	if fn := l.peer.hook.Load(); fn != nil {
		(*fn)()
	}
	return n, nil
}

// segment cuts a GSO packet into wire segments with full checksums.
func (l *gsoLink) segment(pkt *stack.PacketBuffer) [][]byte {
	g := pkt.GSOOptions
	raw := pkt.ToView().AsSlice()
	l3 := len(pkt.NetworkHeader().Slice())
	l4 := len(pkt.TransportHeader().Slice())
	v6 := g.Type == stack.GSOTCPv6
	var src, dst tcpip.Address
	if v6 {
		ip := header.IPv6(raw)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(raw)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	th := header.TCP(raw[l3:])
	if th.Checksum() != header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(raw)-l3)) {
		l.badPartial.Add(1)
	}
	payload := raw[l3+l4:]
	mss := int(g.MSS)
	if !g.NeedsCsum || (mss == 0 && len(payload) > 0 && pkt.Data().Size() > 1500) {
		l.badOptions.Add(1)
	}
	if mss == 0 || mss >= len(payload) {
		mss = max(len(payload), 1)
	} else {
		l.superPackets.Add(1)
	}
	var segs [][]byte
	for off := 0; off == 0 || off < len(payload); off += mss {
		piece := payload[off:min(off+mss, len(payload))]
		b := append(append([]byte(nil), raw[:l3+l4]...), piece...)
		if v6 {
			header.IPv6(b).SetPayloadLength(uint16(len(b) - l3))
		} else {
			ip := header.IPv4(b)
			ip.SetTotalLength(uint16(len(b)))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		}
		t := header.TCP(b[l3:])
		t.SetSequenceNumber(th.SequenceNumber() + uint32(off))
		if off+len(piece) < len(payload) {
			t.SetFlags(uint8(th.Flags() &^ (header.TCPFlagFin | header.TCPFlagPsh)))
		}
		t.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(b)-l3))
		t.SetChecksum(^checksum.Checksum(b[l3:], xsum))
		segs = append(segs, b)
		l.segments.Add(1)
	}
	return segs
}

// gsoBatchLink is a gsoLink that also reports receive-batch ends, as
// tun.Endpoint does: every WritePackets call of its peer is one batch.
type gsoBatchLink struct{ *gsoLink }

// OnReceiveBatchEnd implements batchNotifier.
func (l gsoBatchLink) OnReceiveBatchEnd(fn func()) {
	if fn == nil {
		l.hook.Store(nil)
		return
	}
	l.hook.Store(&fn)
}

// newGSOPair returns two engines joined by gsoLinks, reporting batch ends
// or not.
func newGSOPair(t *testing.T, opts Options, batches bool) (a, b *Engine, la, lb *gsoLink) {
	pa, pb := pipe.New("", "", 1500)
	la, lb = &gsoLink{Endpoint: pa}, &gsoLink{Endpoint: pb}
	la.peer, lb.peer = lb, la
	a, b = newEngine(t, opts), newEngine(t, opts)
	var ea, eb stack.LinkEndpoint = la, lb
	if batches {
		ea, eb = gsoBatchLink{la}, gsoBatchLink{lb}
	}
	if _, err := a.AddNIC(ea, addrA4, addrA6); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddNIC(eb, addrB4, addrB6); err != nil {
		t.Fatal(err)
	}
	return a, b, la, lb
}

// TestSegmentationOffload: over a link with segmentation offload the
// engine sends TSO super-segments as GSO packets with a correct partial
// checksum, the link's segments verify and reassemble into the exact
// stream, both families, plain TCP and MPTCP; with batch ends reported,
// the receiver acknowledges once per batch instead of every second
// segment.
func TestSegmentationOffload(t *testing.T) {
	for _, mptcp := range []bool{false, true} {
		for _, batches := range []bool{false, true} {
			t.Run(fmt.Sprintf("mptcp=%v/batches=%v", mptcp, batches), func(t *testing.T) {
				var opts Options
				opts.MPTCP.Disabled = !mptcp
				a, b, la, lb := newGSOPair(t, opts, batches)
				// IPv4 from A to B, IPv6 from B to A: each link carries
				// data one way and ACKs the other.
				for i, addr := range []netip.Addr{addrB4.Addr(), addrB6.Addr()} {
					d, c := connectPair(t, a, b, addr)
					w, r := d, c
					if i == 1 {
						w, r = c, d
					}
					transferVerified(t, w, r, 8<<20, uint64(i+1))
					si, ri := w.Info(), r.Info()
					t.Logf("%v: sender %d segments out, receiver %d in, %d out", addr, si.SegsOut, ri.SegsIn, ri.SegsOut)
					if si.SegsOut < (8<<20)/1500 {
						t.Errorf("sender counted %d segments for 8 MiB", si.SegsOut)
					}
					if batches && ri.SegsOut*4 > ri.SegsIn {
						t.Errorf("receiver sent %d ACKs for %d segments with batch ends reported", ri.SegsOut, ri.SegsIn)
					}
					if !batches && ri.SegsOut*4 < ri.SegsIn {
						t.Errorf("receiver sent %d ACKs for %d segments without batch ends", ri.SegsOut, ri.SegsIn)
					}
				}
				for _, l := range []*gsoLink{la, lb} {
					if l.badPartial.Load() != 0 || l.badOptions.Load() != 0 {
						t.Errorf("GSO packets with a wrong partial checksum: %d, bad options: %d", l.badPartial.Load(), l.badOptions.Load())
					}
				}
				if la.superPackets.Load() == 0 || lb.superPackets.Load() == 0 {
					t.Errorf("no TSO super-segments: %d and %d", la.superPackets.Load(), lb.superPackets.Load())
				}
				if st := b.Stats(); st.ChecksumErrors != 0 || st.Malformed != 0 {
					t.Errorf("receiver dropped segments: %+v", st)
				}
			})
		}
	}
}
