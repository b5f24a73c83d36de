package shaper

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpPacket returns an IPv4/TCP packet of size bytes from port sport.
func tcpPacket(size int, sport uint16) *stack.PacketBuffer {
	b := make([]byte, size)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(size))
	b[9] = uint8(header.TCPProtocolNumber)
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], 80)
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// sink counts what the child link receives from the shaper.
type sink struct {
	mu    sync.Mutex
	bytes map[uint16]int
	first map[uint16]time.Time
	last  map[uint16]time.Time
}

func (s *sink) drain(ep *channel.Endpoint, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		pkt := ep.Read()
		if pkt == nil {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		v := pkt.ToView().AsSlice()
		port := binary.BigEndian.Uint16(v[20:])
		now := time.Now()
		s.mu.Lock()
		if s.first[port].IsZero() {
			s.first[port] = now
		}
		s.last[port] = now
		s.bytes[port] += len(v)
		s.mu.Unlock()
		pkt.DecRef()
	}
}

// offer writes n packets of size bytes for each port, as fast as it can,
// spread over d.
func offer(e *Endpoint, ports []uint16, n, size int, d time.Duration) {
	for i := range n {
		var l stack.PacketBufferList
		for _, p := range ports {
			pkt := tcpPacket(size, p)
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
			l.PushBack(pkt)
		}
		e.WritePackets(l)
		l.Reset()
		time.Sleep(d / time.Duration(n))
		_ = i
	}
}

func TestLinkRate(t *testing.T) {
	child := channel.New(100000, 1500, "")
	e := New(child, Config{Rate: 1 << 20, Limit: 4 << 20}, Config{})
	s := &sink{bytes: map[uint16]int{}, first: map[uint16]time.Time{}, last: map[uint16]time.Time{}}
	done := make(chan struct{})
	go s.drain(child, done)
	// Offer 2 MiB at once: at 1 MiB/s it takes about 2 s to leave.
	start := time.Now()
	offer(e, []uint16{1000}, 1400, 1500, 0)
	for e.Stats().Egress.Queued > 0 && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(done)
	s.mu.Lock()
	defer s.mu.Unlock()
	el := s.last[1000].Sub(start).Seconds()
	rate := float64(s.bytes[1000]) / el
	if s.bytes[1000] != 1400*1500 || rate > 1.15*(1<<20) || rate < 0.85*(1<<20) {
		t.Errorf("%d bytes in %.2f s: %.0f B/s, want about %d", s.bytes[1000], el, rate, 1<<20)
	}
	e.Close()
}

func TestFlowRateAndDrops(t *testing.T) {
	child := channel.New(100000, 1500, "")
	e := New(child, Config{FlowRate: 256 << 10, Limit: 64 << 10}, Config{})
	s := &sink{bytes: map[uint16]int{}, first: map[uint16]time.Time{}, last: map[uint16]time.Time{}}
	done := make(chan struct{})
	go s.drain(child, done)
	// Two flows, each offered 1 MiB/s for 1 s: each gets about 256 KiB/s;
	// the rest overflows its 64 KiB queue and is dropped.
	start := time.Now()
	offer(e, []uint16{1, 2}, 700, 1500, time.Second)
	time.Sleep(400 * time.Millisecond)
	close(done)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range []uint16{1, 2} {
		r := float64(s.bytes[p]) / s.last[p].Sub(start).Seconds()
		if r > 1.3*(256<<10) || r < 0.7*(256<<10) {
			t.Errorf("flow %d: %.0f B/s, want about %d", p, r, 256<<10)
		}
	}
	if st := e.Stats().Egress; st.Dropped == 0 || st.Packets != 1400 {
		t.Errorf("stats %+v", st)
	}
	e.Close()
}

func TestUnlimitedPassesAtOnce(t *testing.T) {
	child := channel.New(100, 1500, "")
	e := New(child, Config{}, Config{})
	offer(e, []uint16{5}, 10, 100, 0)
	if n := child.NumQueued(); n != 10 {
		t.Errorf("child got %d packets at once, want 10", n)
	}
	e.SetConfig(Config{Rate: 1000, Burst: 100, Limit: 1000}, Config{})
	offer(e, []uint16{5}, 20, 100, 0)
	if st := e.Stats().Egress; st.Dropped == 0 || st.Queued == 0 || st.Queued > 10 {
		t.Errorf("after SetConfig: %+v", st)
	}
	e.Close()
	if st := e.Stats().Egress; st.Queued != 0 {
		t.Errorf("after Close: %+v", st)
	}
	var _ tcpip.Error
}

// gatedStack is a dispatcher whose deliveries take a read lock, as
// gVisor's IPv4 input takes the stack's lock.
type gatedStack struct {
	gate      sync.RWMutex
	entered   chan struct{}
	delivered atomic.Int64
}

func (g *gatedStack) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, _ *stack.PacketBuffer) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	g.gate.RLock()
	defer g.gate.RUnlock()
	g.delivered.Add(1)
}

func (*gatedStack) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestWaitWhileDeliveryBlocked: gVisor's Stack.Wait calls Wait with the
// stack's lock held while a queued ingress packet being released may be
// waiting for that lock: Wait must return all the same, and nothing is
// delivered after the blocked packet.
func TestWaitWhileDeliveryBlocked(t *testing.T) {
	child := channel.New(64, 1500, "")
	e := New(child, Config{}, Config{Rate: 100_000})
	g := &gatedStack{}
	e.Attach(g)
	for i := range 20 {
		pkt := tcpPacket(1000, uint16(1000+i))
		child.InjectInbound(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	if e.Stats().Ingress.Queued == 0 {
		t.Fatalf("nothing queued: %+v", e.Stats().Ingress)
	}
	g.entered = make(chan struct{}, 1)
	g.gate.Lock() // Stack.Wait holds the stack's lock
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		g.gate.Unlock()
		t.Fatal("no release reached the stack")
	}
	before := g.delivered.Load()
	e.Close()
	waited := make(chan struct{})
	go func() {
		e.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		g.gate.Unlock()
		t.Fatal("Wait blocked on a delivery that waits for the stack's lock")
	}
	g.gate.Unlock()
	time.Sleep(100 * time.Millisecond)
	if got := g.delivered.Load(); got > before+1 {
		t.Errorf("%d packets delivered after Close, want at most the one in the stack", got-before)
	}
}
