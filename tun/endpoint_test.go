package tun

import (
	"bytes"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func newTestEndpoint(t *testing.T, dev *fakeDevice, opts ...Option) *Endpoint {
	t.Helper()
	ep, err := New(dev, int(dev.mtu.Load()), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ep.Close()
		waitOrFail(t, "Wait", 10*time.Second, ep.Wait)
	})
	return ep
}

func receive(t *testing.T, d *recordingDispatcher, n int) []delivered {
	t.Helper()
	var got []delivered
	for len(got) < n {
		select {
		case p := <-d.c:
			got = append(got, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d packets, want %d", len(got), n)
		}
	}
	select {
	case p := <-d.c:
		t.Fatalf("unexpected extra packet of %d bytes", len(p.data))
	case <-time.After(20 * time.Millisecond):
	}
	return got
}

func TestNewRejects(t *testing.T) {
	for _, mtu := range []int{0, 67, 65536} {
		if _, err := New(newFakeDevice(4, 1500), mtu); err == nil {
			t.Errorf("New with MTU %d succeeded", mtu)
		}
	}
	if _, err := New(newFakeDevice(0, 1500), 1500); err == nil {
		t.Error("New with batch size 0 succeeded")
	}
}

// TestReceiveVerifies feeds one batch of good and bad packets and checks
// which reach the stack and how they are counted.
func TestReceiveVerifies(t *testing.T) {
	badTCP := tcp4(1, header.TCPFlagAck, payload(100, 1))
	badTCP[len(badTCP)-1] ^= 0x40
	badIPHdr := tcp4(1, header.TCPFlagAck, payload(100, 2))
	badIPHdr[8]-- // TTL changed, header checksum not updated
	frag := tcp4(1, header.TCPFlagAck, payload(100, 3))
	frag[6] = 0x20 // MF
	frag[10], frag[11] = 0, 0
	header.IPv4(frag).SetChecksum(^header.IPv4(frag).CalculateChecksum())
	frag[len(frag)-1] ^= 1 // a fragment's transport checksum is not checked
	version5 := tcp4(1, header.TCPFlagAck, payload(10, 4))
	version5[0] = 0x55
	badUDP6 := udp6(payload(20, 5))
	badUDP6[50] ^= 1

	good := [][]byte{
		tcp4(100, header.TCPFlagAck|header.TCPFlagPsh, payload(100, 6)),
		tcp6(100, header.TCPFlagAck|header.TCPFlagPsh, payload(100, 7)),
		udp4(payload(30, 8)),
		udp6(payload(30, 9)),
	}
	batch := append(slices.Clone(good), badTCP, badIPHdr, frag, version5, badUDP6)

	for _, groOn := range []bool{true, false} {
		t.Run(map[bool]string{true: "gro", false: "nogro"}[groOn], func(t *testing.T) {
			dev := newFakeDevice(16, 1500)
			ep := newTestEndpoint(t, dev, WithGRO(groOn))
			wantCaps := stack.CapabilityNone
			if groOn {
				wantCaps = stack.CapabilityRXChecksumOffload
			}
			if got := ep.Capabilities(); got != wantCaps {
				t.Errorf("Capabilities() = %v, want %v", got, wantCaps)
			}
			d := newRecordingDispatcher()
			ep.Attach(d)
			dev.reads <- batch

			if !groOn {
				// Without GRO the stack verifies: everything with a
				// known version is delivered, unvalidated.
				got := receive(t, d, len(batch)-1)
				for _, p := range got {
					if p.validated {
						t.Error("packet delivered as validated with GRO off")
					}
				}
				st := ep.Stats()
				if st.RXPackets != uint64(len(batch)-1) || st.RXMalformed != 1 || st.RXDrops != 1 {
					t.Errorf("stats %+v", st)
				}
				return
			}
			want := append(slices.Clone(good), frag)
			got := receive(t, d, len(want))
			for i, p := range got {
				if !bytes.Equal(p.data, want[i]) {
					t.Errorf("packet %d differs from what was read", i)
				}
				wantProto := header.IPv4ProtocolNumber
				if want[i][0]>>4 == 6 {
					wantProto = header.IPv6ProtocolNumber
				}
				if p.proto != wantProto {
					t.Errorf("packet %d delivered as protocol %d, want %d", i, p.proto, wantProto)
				}
				if !p.validated {
					t.Errorf("packet %d not marked validated", i)
				}
			}
			st := ep.Stats()
			want2 := Stats{
				RXPackets: uint64(len(want)), RXBatches: 1, RXDelivered: uint64(len(want)),
				RXDrops: 4, RXBadChecksum: 3, RXMalformed: 1, RXUnverified: 1,
			}
			for _, p := range want {
				want2.RXBytes += uint64(len(p))
			}
			if st != want2 {
				t.Errorf("stats\n got %+v\nwant %+v", st, want2)
			}
		})
	}
}

// TestReceiveGRO checks that consecutive segments of one flow read in one
// batch reach the stack as one merged segment, IPv4 and IPv6, and that the
// merge is undone by turning GRO off.
func TestReceiveGRO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		mk, hl := tcp4, header.IPv4MinimumSize
		if v6 {
			mk, hl = tcp6, header.IPv6MinimumSize
		}
		const seg, n = 1000, 4
		var batch [][]byte
		var all []byte
		for i := range n {
			p := payload(seg, byte(i))
			all = append(all, p...)
			batch = append(batch, mk(uint32(1+i*seg), header.TCPFlagAck, p))
		}
		for _, groOn := range []bool{true, false} {
			dev := newFakeDevice(8, 1500)
			ep := newTestEndpoint(t, dev, WithGRO(groOn))
			d := newRecordingDispatcher()
			ep.Attach(d)
			dev.reads <- batch
			if !groOn {
				receive(t, d, n)
				continue
			}
			got := receive(t, d, 1)[0]
			tcpOff := hl + header.TCPMinimumSize + 12
			if len(got.data) != tcpOff+n*seg || !bytes.Equal(got.data[tcpOff:], all) {
				t.Errorf("v6=%v: merged segment of %d bytes does not carry the %d payload bytes in order", v6, len(got.data), n*seg)
			}
			if st := ep.Stats(); st.RXPackets != n || st.RXDelivered != 1 {
				t.Errorf("v6=%v: RXPackets %d RXDelivered %d, want %d and 1", v6, st.RXPackets, st.RXDelivered, n)
			}
		}
	}
}

// TestReceiveDetached: packets read while no dispatcher is attached are
// dropped and counted, and delivery resumes on the next Attach.
func TestReceiveDetached(t *testing.T) {
	dev := newFakeDevice(4, 1500)
	ep := newTestEndpoint(t, dev)
	d := newRecordingDispatcher()
	ep.Attach(d)
	if !ep.IsAttached() {
		t.Fatal("IsAttached false after Attach")
	}
	ep.Attach(nil)
	dev.reads <- [][]byte{udp4(payload(10, 1)), udp4(payload(10, 2))}
	waitFor(t, "drops", func() bool { return ep.Stats().RXDrops == 2 })
	ep.Attach(d)
	dev.reads <- [][]byte{udp4(payload(10, 3))}
	if got := receive(t, d, 1); len(got[0].data) != 38 {
		t.Errorf("delivered %d bytes, want 38", len(got[0].data))
	}
}

// TestReceiveOversize: a device returning more than the slots hold (MTU
// raised behind the Endpoint's back) costs packets, counted, not the reader.
func TestReceiveOversize(t *testing.T) {
	dev := newFakeDevice(2, 1280)
	ep := newTestEndpoint(t, dev)
	d := newRecordingDispatcher()
	ep.Attach(d)
	dev.reads <- [][]byte{udp4(payload(1400, 1))}
	dev.reads <- [][]byte{udp4(payload(10, 1)), udp4(payload(10, 2)), udp4(payload(10, 3))}
	receive(t, d, 2)
	st := ep.Stats()
	if st.RXErrors != 2 || st.RXOversize != 1 {
		t.Errorf("stats %+v, want 2 read errors, 1 oversize", st)
	}
	// After SetMTU the slots grow and the large packet fits.
	ep.SetMTU(1500)
	if ep.MTU() != 1500 {
		t.Errorf("MTU() = %d after SetMTU(1500)", ep.MTU())
	}
	dev.reads <- [][]byte{udp4(payload(1400, 1))} // picked up by the read already pending
	dev.reads <- [][]byte{udp4(payload(1400, 2))}
	got := receive(t, d, 1)
	if len(got[0].data) != 1428 {
		t.Errorf("delivered %d bytes, want 1428", len(got[0].data))
	}
}

// TestWritePackets writes more packets than the device batch and checks the
// bytes the device got, the split into calls, and the counters.
func TestWritePackets(t *testing.T) {
	dev := newFakeDevice(4, 1500)
	ep := newTestEndpoint(t, dev)
	var raws [][]byte
	var pkts stack.PacketBufferList
	for i := range 10 {
		var raw []byte
		var hl int
		if i%2 == 0 {
			raw, hl = tcp4(uint32(i), header.TCPFlagAck, payload(100+i, byte(i))), header.IPv4MinimumSize
		} else {
			raw, hl = tcp6(uint32(i), header.TCPFlagAck, payload(100+i, byte(i))), header.IPv6MinimumSize
		}
		raws = append(raws, raw)
		pkts.PushBack(packetBuffer(raw, hl))
	}
	defer pkts.Reset()
	n, err := ep.WritePackets(pkts)
	if n != 10 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	calls := dev.recorded()
	if len(calls) != 3 || len(calls[0]) != 4 || len(calls[1]) != 4 || len(calls[2]) != 2 {
		t.Fatalf("device calls of sizes %v, want [4 4 2]", lens(calls))
	}
	var got [][]byte
	for _, c := range calls {
		got = append(got, c...)
	}
	var bytesOut uint64
	for i := range raws {
		if !bytes.Equal(got[i], raws[i]) {
			t.Errorf("packet %d written as %x, want %x", i, got[i], raws[i])
		}
		bytesOut += uint64(len(raws[i]))
	}
	st := ep.Stats()
	if st.TXPackets != 10 || st.TXBatches != 3 || st.TXBytes != bytesOut || st.TXDrops != 0 {
		t.Errorf("stats %+v", st)
	}

	// A failing device: the error surfaces, the packets count as dropped.
	dev.setWriteErr(errors.New("EIO"))
	n, err = ep.WritePackets(pkts)
	if n != 0 || err == nil {
		t.Errorf("WritePackets on a failing device = %d, %v", n, err)
	}
	if _, ok := err.(*tcpip.ErrAborted); !ok {
		t.Errorf("error %v, want ErrAborted", err)
	}
	if st := ep.Stats(); st.TXErrors != 1 || st.TXDrops != 10 {
		t.Errorf("after a failed write: %+v", st)
	}

	ep.Close()
	n, err = ep.WritePackets(pkts)
	if _, ok := err.(*tcpip.ErrClosedForSend); n != 0 || !ok {
		t.Errorf("WritePackets after Close = %d, %v", n, err)
	}
}

func lens(calls [][][]byte) []int {
	var l []int
	for _, c := range calls {
		l = append(l, len(c))
	}
	return l
}

// TestWritePacketsNoAllocs: the transmit path reuses its buffers.
func TestWritePacketsNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	dev := newFakeDevice(64, 1500)
	dev.discard = true
	ep := newTestEndpoint(t, dev)
	var pkts stack.PacketBufferList
	for i := range 32 {
		pkts.PushBack(packetBuffer(tcp4(uint32(i*1400), header.TCPFlagAck, payload(1400, byte(i))), header.IPv4MinimumSize))
	}
	defer pkts.Reset()
	ep.WritePackets(pkts) // first use allocates the slots
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ep.WritePackets(pkts); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("WritePackets allocates %v times per call of 32 packets", allocs)
	}
}

// TestReceiveNoAllocs: verifying, wrapping and delivering a batch draws
// only on gVisor's pools, not the Go heap.
func TestReceiveNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	for _, groOn := range []bool{true, false} {
		dev := newFakeDevice(64, 1500)
		ep, err := New(dev, 1500, WithGRO(groOn))
		if err != nil {
			t.Fatal(err)
		}
		var batch [][]byte
		for i := range 32 {
			batch = append(batch, tcp4(uint32(1+i*1400), header.TCPFlagAck, payload(1400, byte(i))))
		}
		d := &discardDispatcher{}
		ep.dispatcher = d // the reader goroutine is not started
		r := &ep.rx
		round := func() {
			r.refill()
			for i, p := range batch {
				r.sizes[i] = copy(r.bufs[i], p)
			}
			r.deliver(len(batch))
		}
		round()
		allocs := testing.AllocsPerRun(100, round)
		if allocs != 0 {
			t.Errorf("gro=%v: receiving a batch of 32 allocates %v times", groOn, allocs)
		}
		if d.n == 0 {
			t.Errorf("gro=%v: nothing delivered", groOn)
		}
		r.release()
		ep.Close()
		ep.Wait()
	}
}

// TestEvents: device events become Endpoint events, once per change.
func TestEvents(t *testing.T) {
	dev := newFakeDevice(4, 1500)
	events := make(chan Event, 16)
	ep := newTestEndpoint(t, dev, WithEventHandler(func(ev Event) { events <- ev }))
	expect := func(w Event) {
		t.Helper()
		select {
		case got := <-events:
			if got != w {
				t.Errorf("event %+v, want %+v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %+v not reported", w)
		}
	}
	dev.events <- wgtun.EventUp
	dev.events <- wgtun.EventUp
	dev.events <- wgtun.EventMTUUpdate // MTU unchanged: nothing
	dev.events <- wgtun.EventDown
	dev.events <- wgtun.EventDown
	expect(Event{Kind: LinkUp, MTU: 1500})
	expect(Event{Kind: LinkDown, MTU: 1500})
	dev.mtu.Store(1400)
	dev.events <- wgtun.EventMTUUpdate
	dev.events <- wgtun.EventUp
	expect(Event{Kind: MTUChanged, MTU: 1400})
	expect(Event{Kind: LinkUp, MTU: 1400})
	select {
	case ev := <-events:
		t.Errorf("extra event %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
	if ep.MTU() != 1400 || !ep.LinkUp() {
		t.Errorf("MTU() %d LinkUp() %v, want 1400 true", ep.MTU(), ep.LinkUp())
	}
	if got := (EventKind(9)).String(); got != "EventKind(9)" {
		t.Errorf("String() = %q", got)
	}
}

// TestClose: Close runs the on-close action once, tolerates being called
// from it, stops the reader, and Wait returns.
func TestClose(t *testing.T) {
	dev := newFakeDevice(4, 1500)
	ep, err := New(dev, 1500)
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(newRecordingDispatcher())
	var calls atomic.Int32
	ep.SetOnCloseAction(func() {
		calls.Add(1)
		ep.Close() // as stack.RemoveNIC does
	})
	ep.Close()
	ep.Close()
	waitOrFail(t, "Wait", 5*time.Second, ep.Wait)
	if calls.Load() != 1 {
		t.Errorf("on-close action ran %d times", calls.Load())
	}
	if !ep.Closed() {
		t.Error("Closed() false")
	}
	// Attach after Close starts nothing.
	ep.Attach(newRecordingDispatcher())
	waitOrFail(t, "Wait", time.Second, ep.Wait)
}

// TestDeviceGone: when the device closes by itself the Endpoint closes too,
// so the stack can remove the NIC.
func TestDeviceGone(t *testing.T) {
	dev := newFakeDevice(4, 1500)
	ep, err := New(dev, 1500)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	ep.SetOnCloseAction(func() { close(closed) })
	ep.Attach(newRecordingDispatcher())
	dev.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("on-close action not run after the device went away")
	}
	waitOrFail(t, "Wait", 5*time.Second, ep.Wait)
}
