package impair

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestMain(m *testing.M) {
	// Every PacketBuffer and buffer chunk created from now on is tracked;
	// checkLeaks turns what is still alive into a test failure.
	refs.SetLeakMode(refs.LeaksPanic)
	os.Exit(m.Run())
}

// checkLeaks fails t if any reference-counted gVisor object created by the
// test is still alive. Call it when the test holds no packets any more.
func checkLeaks(t *testing.T) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("reference leak: %v", r)
		}
	}()
	refs.DoRepeatedLeakCheck()
}

// testProto is the network protocol number the tests deliver with.
const testProto = header.IPv4ProtocolNumber

// newPkt returns a packet of size bytes (at least 4) whose first four bytes
// are id.
func newPkt(id uint32, size int) *stack.PacketBuffer {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, id)
	for i := 4; i < len(b); i++ {
		b[i] = byte(id) + byte(i)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	pkt.NetworkProtocolNumber = testProto
	return pkt
}

// pktID reads a packet's id and checks the rest of its bytes.
func pktID(pkt *stack.PacketBuffer) (uint32, error) {
	v := pkt.ToView()
	defer v.Release()
	b := v.AsSlice()
	if len(b) < 4 {
		return 0, fmt.Errorf("packet of %d bytes", len(b))
	}
	id := binary.BigEndian.Uint32(b)
	for i := 4; i < len(b); i++ {
		if b[i] != byte(id)+byte(i) {
			return id, fmt.Errorf("packet %d: byte %d corrupted", id, i)
		}
	}
	return id, nil
}

// arrival is one packet seen by a fake endpoint.
type arrival struct {
	id    uint32
	at    time.Time // clock time of arrival
	batch int       // index of the WritePackets call (egress) or 0
}

// recorder collects arrivals from any goroutine.
type recorder struct {
	clock tcpip.Clock
	mu    sync.Mutex
	got   []arrival
	calls int // WritePackets calls
	sizes []int
	errs  []error
}

func (r *recorder) add(pkt *stack.PacketBuffer, batch int) {
	id, err := pktID(pkt)
	if pkt.ReadRefs() <= 0 {
		err = fmt.Errorf("packet %d handed on with %d references", id, pkt.ReadRefs())
	}
	r.got = append(r.got, arrival{id: id, at: r.clock.Now(), batch: batch})
	if err != nil {
		r.errs = append(r.errs, err)
	}
}

func (r *recorder) snapshot() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.got...)
}

func (r *recorder) ids() []uint32 {
	var ids []uint32
	for _, a := range r.snapshot() {
		ids = append(ids, a.id)
	}
	return ids
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, err := range r.errs {
		t.Error(err)
	}
}

// fakeLink is a child link endpoint: WritePackets records what the wrapper
// sends (without keeping the packets, like a device that copies them), and
// inject delivers packets to whatever dispatcher is attached, as a device's
// read loop does (it keeps ownership and drops its reference afterwards).
type fakeLink struct {
	sent recorder
	mtu  uint32

	mu       sync.Mutex
	d        stack.NetworkDispatcher
	closed   bool
	onClose  func()
	closes   int
	writeErr tcpip.Error
}

var _ stack.LinkEndpoint = (*fakeLink)(nil)

func newFakeLink(clock tcpip.Clock) *fakeLink {
	return &fakeLink{sent: recorder{clock: clock}, mtu: 1500}
}

func (f *fakeLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	f.sent.mu.Lock()
	defer f.sent.mu.Unlock()
	f.sent.calls++
	f.sent.sizes = append(f.sent.sizes, pkts.Len())
	for _, p := range pkts.AsSlice() {
		f.sent.add(p, f.sent.calls)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return pkts.Len(), f.writeErr
}

// inject delivers a fresh packet id of size bytes to the dispatcher.
func (f *fakeLink) inject(id uint32, size int) {
	f.mu.Lock()
	d := f.d
	f.mu.Unlock()
	pkt := newPkt(id, size)
	if d != nil {
		d.DeliverNetworkPacket(testProto, pkt)
	}
	pkt.DecRef()
}

func (f *fakeLink) MTU() uint32                                { return f.mtu }
func (f *fakeLink) SetMTU(mtu uint32)                          { f.mtu = mtu }
func (*fakeLink) MaxHeaderLength() uint16                      { return 0 }
func (*fakeLink) LinkAddress() tcpip.LinkAddress               { return "" }
func (*fakeLink) SetLinkAddress(tcpip.LinkAddress)             {}
func (*fakeLink) Capabilities() stack.LinkEndpointCapabilities { return stack.CapabilityNone }
func (*fakeLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (*fakeLink) AddHeader(*stack.PacketBuffer)                {}
func (*fakeLink) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (*fakeLink) Wait()                                        {}
func (f *fakeLink) SetOnCloseAction(fn func())                 { f.mu.Lock(); f.onClose = fn; f.mu.Unlock() }
func (f *fakeLink) Attach(d stack.NetworkDispatcher)           { f.mu.Lock(); f.d = d; f.mu.Unlock() }
func (f *fakeLink) IsAttached() bool                           { f.mu.Lock(); defer f.mu.Unlock(); return f.d != nil }
func (f *fakeLink) dispatcher() stack.NetworkDispatcher        { f.mu.Lock(); defer f.mu.Unlock(); return f.d }
func (f *fakeLink) setWriteErr(err tcpip.Error)                { f.mu.Lock(); f.writeErr = err; f.mu.Unlock() }
func (f *fakeLink) closeCount() int                            { f.mu.Lock(); defer f.mu.Unlock(); return f.closes }
func (f *fakeLink) isClosed() bool                             { f.mu.Lock(); defer f.mu.Unlock(); return f.closed }
func (f *fakeLink) Close() {
	f.mu.Lock()
	fn := f.onClose
	f.onClose = nil
	f.closed = true
	f.closes++
	f.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// fakeStack is the dispatcher above the wrapper: it records what is
// delivered.
type fakeStack struct {
	recv recorder
	// With gate set, a delivery first signals entered, then takes gate's
	// read lock, as gVisor's IPv4 input takes the stack's lock.
	gate    *sync.RWMutex
	entered chan struct{}
}

func (s *fakeStack) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if s.gate != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		s.gate.RLock()
		defer s.gate.RUnlock()
	}
	s.recv.mu.Lock()
	defer s.recv.mu.Unlock()
	s.recv.add(pkt, 0)
	if proto != testProto {
		s.recv.errs = append(s.recv.errs, fmt.Errorf("delivered with protocol %d", proto))
	}
}

func (*fakeStack) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// write sends packets ids[i] (of size bytes) through e in one WritePackets
// call, as the NIC's queueing discipline does, and drops the caller's
// references afterwards.
func write(t *testing.T, e *Endpoint, size int, ids ...uint32) {
	t.Helper()
	var l stack.PacketBufferList
	for _, id := range ids {
		l.PushBack(newPkt(id, size))
	}
	n, err := e.WritePackets(l)
	if n != len(ids) || err != nil {
		t.Errorf("WritePackets(%d packets) = %d, %v", len(ids), n, err)
	}
	l.Reset()
}

// seq returns the ids from..to-1.
func seq(from, to uint32) []uint32 {
	s := make([]uint32, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
