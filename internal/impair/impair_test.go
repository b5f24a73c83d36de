package impair

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// harness is an Endpoint over a fakeLink, attached to a fakeStack, on a
// manual clock.
type harness struct {
	clock *faketime.ManualClock
	link  *fakeLink
	up    *fakeStack
	e     *Endpoint
}

func newHarness(t *testing.T, egress, ingress Config, seed uint64) *harness {
	t.Helper()
	h := &harness{clock: faketime.NewManualClock()}
	h.link = newFakeLink(h.clock)
	h.up = &fakeStack{recv: recorder{clock: h.clock}}
	h.e = New(h.link, egress, ingress, seed, WithClock(h.clock))
	h.e.Attach(h.up)
	return h
}

// finish closes the endpoint, checks the fakes saw only intact, referenced
// packets, that the counters balance and that nothing leaked.
func (h *harness) finish(t *testing.T) {
	t.Helper()
	h.e.Close()
	h.e.Wait()
	h.link.sent.check(t)
	h.up.recv.check(t)
	st := h.e.Stats()
	for _, d := range []struct {
		name string
		s    DirStats
		seen int
	}{{"egress", st.Egress, len(h.link.sent.snapshot())}, {"ingress", st.Ingress, len(h.up.recv.snapshot())}} {
		s := d.s
		if s.Queued != 0 {
			t.Errorf("%s: %d packets queued after Close", d.name, s.Queued)
		}
		if in, out := s.Packets+s.Duplicated, s.Dropped+s.Overflow+s.Delivered+s.Flushed; in != out {
			t.Errorf("%s: packets+duplicated = %d but dropped+overflow+delivered+flushed = %d: %+v", d.name, in, out, s)
		}
		if s.Delivered != uint64(d.seen) {
			t.Errorf("%s: Delivered = %d, the other side saw %d", d.name, s.Delivered, d.seen)
		}
	}
	checkLeaks(t)
}

// binomialOK reports whether k successes in n trials of probability p lie
// within 5 standard deviations of the mean (a false failure has odds of
// about 1 in 3.5 million; the seeds are fixed anyway).
func binomialOK(k, n uint64, p float64) bool {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(k)-mean) <= 5*sd
}

func TestPassThrough(t *testing.T) {
	h := newHarness(t, Config{}, Config{}, 1)
	write(t, h.e, 100, seq(0, 10)...)
	write(t, h.e, 100, seq(10, 13)...)
	for i := range uint32(5) {
		h.link.inject(100+i, 60)
	}
	if got, want := h.link.sent.ids(), seq(0, 13); !slices.Equal(got, want) {
		t.Errorf("child got %v, want %v", got, want)
	}
	if got := h.link.sent.sizes; !slices.Equal(got, []int{10, 3}) {
		t.Errorf("child write batches %v, want [10 3]: one call per WritePackets", got)
	}
	if got, want := h.up.recv.ids(), seq(100, 105); !slices.Equal(got, want) {
		t.Errorf("stack got %v, want %v", got, want)
	}
	if _, ok := any(h.e).(stack.GSOEndpoint); ok {
		t.Error("Endpoint implements stack.GSOEndpoint; it must not advertise GSO")
	}
	h.finish(t)
}

// TestLoss checks the loss rate against binomial bounds in both
// directions, that a seed replays the same losses, and that the two
// directions draw independently.
func TestLoss(t *testing.T) {
	const n = 20000
	cfg := Config{Loss: 0.01}
	run := func(seed uint64) (egress, ingress []uint32, st Stats) {
		h := newHarness(t, cfg, cfg, seed)
		for i := uint32(0); i < n; i += 50 {
			write(t, h.e, 64, seq(i, i+50)...)
		}
		for i := range uint32(n) {
			h.link.inject(i, 64)
		}
		egress, ingress, st = h.link.sent.ids(), h.up.recv.ids(), h.e.Stats()
		h.finish(t)
		return egress, ingress, st
	}
	eg, in, st := run(42)
	for _, d := range []struct {
		name string
		s    DirStats
		got  []uint32
	}{{"egress", st.Egress, eg}, {"ingress", st.Ingress, in}} {
		if d.s.Packets != n || d.s.Dropped+d.s.Delivered != n || uint64(len(d.got)) != d.s.Delivered {
			t.Errorf("%s: %+v, %d delivered", d.name, d.s, len(d.got))
		}
		if !binomialOK(d.s.Dropped, n, cfg.Loss) {
			t.Errorf("%s: %d of %d lost, want about %.0f", d.name, d.s.Dropped, n, n*cfg.Loss)
		}
		if !slices.IsSorted(d.got) {
			t.Errorf("%s: loss alone reordered packets", d.name)
		}
		t.Logf("%s: %d of %d lost", d.name, d.s.Dropped, n)
	}
	if slices.Equal(eg, in) {
		t.Error("egress and ingress lost the same packets: the directions share a stream")
	}
	eg2, in2, _ := run(42)
	if !slices.Equal(eg, eg2) || !slices.Equal(in, in2) {
		t.Error("the same seed lost different packets")
	}
	eg3, _, _ := run(43)
	if slices.Equal(eg, eg3) {
		t.Error("seeds 42 and 43 lost the same packets")
	}
}

// TestDelay checks on a manual clock that delayed packets leave exactly
// when due, and that everything due together leaves in one batch.
func TestDelay(t *testing.T) {
	const d = 10 * time.Millisecond
	h := newHarness(t, Config{Delay: d}, Config{Delay: d}, 1)
	start := h.clock.Now()
	write(t, h.e, 100, seq(0, 5)...)
	write(t, h.e, 100, seq(5, 8)...) // same instant: due together
	h.link.inject(100, 60)
	h.clock.Advance(3 * time.Millisecond)
	write(t, h.e, 100, 8, 9)
	h.link.inject(101, 60)
	if got := h.link.sent.ids(); len(got) != 0 {
		t.Fatalf("child got %v before any delay elapsed", got)
	}
	if st := h.e.Stats(); st.Egress.Queued != 10 || st.Ingress.Queued != 2 || st.Egress.Delayed != 10 {
		t.Errorf("stats after queueing: %+v", st)
	}
	h.clock.Advance(d - 3*time.Millisecond - 1)
	if got := h.link.sent.ids(); len(got) != 0 {
		t.Fatalf("child got %v 1ns before due", got)
	}
	h.clock.Advance(1)
	if got, want := h.link.sent.ids(), seq(0, 8); !slices.Equal(got, want) {
		t.Fatalf("at +10ms child got %v, want %v", got, want)
	}
	if got := h.up.recv.ids(); !slices.Equal(got, []uint32{100}) {
		t.Fatalf("at +10ms stack got %v, want [100]", got)
	}
	h.clock.Advance(3 * time.Millisecond)
	if got, want := h.link.sent.ids(), seq(0, 10); !slices.Equal(got, want) {
		t.Fatalf("at +13ms child got %v, want %v", got, want)
	}
	if got := h.link.sent.sizes; !slices.Equal(got, []int{8, 2}) {
		t.Errorf("child write batches %v, want [8 2]", got)
	}
	for _, a := range append(h.link.sent.snapshot(), h.up.recv.snapshot()...) {
		want := d
		if a.id == 8 || a.id == 9 || a.id == 101 {
			want += 3 * time.Millisecond
		}
		if got := a.at.Sub(start); got != want {
			t.Errorf("packet %d left at +%v, want +%v", a.id, got, want)
		}
	}
	h.finish(t)
}

// TestJitter checks that delays spread uniformly over [Delay-Jitter,
// Delay+Jitter] and that packets leave in due-time order (netem reorders
// with jitter too).
func TestJitter(t *testing.T) {
	const n = 2000
	cfg := Config{Delay: 10 * time.Millisecond, Jitter: 4 * time.Millisecond, Limit: n}
	h := newHarness(t, cfg, Config{}, 7)
	sentAt := make(map[uint32]time.Time, n)
	for i := range uint32(n) {
		sentAt[i] = h.clock.Now()
		write(t, h.e, 64, i)
		h.clock.Advance(100 * time.Microsecond)
	}
	h.clock.Advance(cfg.Delay + cfg.Jitter)
	got := h.link.sent.snapshot()
	if len(got) != n {
		t.Fatalf("child got %d packets, want %d", len(got), n)
	}
	var sum time.Duration
	var low, high int
	inversions := 0
	for i, a := range got {
		d := a.at.Sub(sentAt[a.id])
		if d < cfg.Delay-cfg.Jitter || d > cfg.Delay+cfg.Jitter {
			t.Errorf("packet %d delayed %v, outside %v±%v", a.id, d, cfg.Delay, cfg.Jitter)
		}
		sum += d
		if d < cfg.Delay-cfg.Jitter/2 {
			low++
		}
		if d > cfg.Delay+cfg.Jitter/2 {
			high++
		}
		if i > 0 && a.at.Before(got[i-1].at) {
			t.Errorf("packet %d left before packet %d although due later", got[i-1].id, a.id)
		}
		if i > 0 && a.id < got[i-1].id {
			inversions++
		}
	}
	mean := sum / n
	// Uniform over 8ms: sd of the mean = 8ms/sqrt(12*2000) ≈ 52µs.
	if mean < cfg.Delay-300*time.Microsecond || mean > cfg.Delay+300*time.Microsecond {
		t.Errorf("mean delay %v, want about %v", mean, cfg.Delay)
	}
	// A quarter of the mass lies in each outer quarter of the range.
	if !binomialOK(uint64(low), n, 0.25) || !binomialOK(uint64(high), n, 0.25) {
		t.Errorf("%d below and %d above the middle half, want about %d each", low, high, n/4)
	}
	if inversions == 0 {
		t.Error("a jitter of 4ms over 100µs spacing reordered nothing")
	}
	t.Logf("mean delay %v, %d inversions", mean, inversions)
	h.finish(t)
}

// TestReorder checks netem's reorder: a reordered packet goes at once,
// ahead of the delayed ones, and the rest keep their delay.
func TestReorder(t *testing.T) {
	const n = 4000
	cfg := Config{Delay: 10 * time.Millisecond, Reorder: 0.05, Limit: n}
	h := newHarness(t, cfg, cfg, 3)
	sentAt := make(map[uint32]time.Time, n)
	for i := range uint32(n) {
		sentAt[i] = h.clock.Now()
		write(t, h.e, 64, i)
		h.link.inject(i, 64)
		h.clock.Advance(time.Millisecond)
	}
	h.clock.Advance(cfg.Delay)
	st := h.e.Stats()
	for _, d := range []struct {
		name string
		s    DirStats
		got  []arrival
	}{{"egress", st.Egress, h.link.sent.snapshot()}, {"ingress", st.Ingress, h.up.recv.snapshot()}} {
		if len(d.got) != n {
			t.Fatalf("%s: %d delivered, want %d", d.name, len(d.got), n)
		}
		if !binomialOK(d.s.Reordered, n, cfg.Reorder) {
			t.Errorf("%s: %d of %d reordered, want about %.0f", d.name, d.s.Reordered, n, n*cfg.Reorder)
		}
		var early, late uint64
		overtaken := 0
		for i, a := range d.got {
			switch a.at.Sub(sentAt[a.id]) {
			case 0:
				early++
			case cfg.Delay:
				late++
			default:
				t.Errorf("%s: packet %d delayed %v", d.name, a.id, a.at.Sub(sentAt[a.id]))
			}
			if i > 0 && a.id < d.got[i-1].id {
				overtaken++
			}
		}
		if early != d.s.Reordered || late != d.s.Delayed || early+late != n {
			t.Errorf("%s: %d sent at once and %d delayed; stats %+v", d.name, early, late, d.s)
		}
		// Each reordered packet overtakes the ~10 delayed ones sent in
		// the 10ms before it.
		if uint64(overtaken) < d.s.Reordered/2 {
			t.Errorf("%s: only %d inversions for %d reordered packets", d.name, overtaken, d.s.Reordered)
		}
		t.Logf("%s: %d reordered, %d inversions in delivery order", d.name, d.s.Reordered, overtaken)
	}
	h.finish(t)
}

func TestDuplicate(t *testing.T) {
	const n = 5000
	for _, cfg := range []Config{{Duplicate: 0.1}, {Duplicate: 0.1, Delay: time.Millisecond, Limit: n * 2}} {
		t.Run(cfg.String(), func(t *testing.T) {
			h := newHarness(t, cfg, cfg, 5)
			for i := uint32(0); i < n; i += 10 {
				write(t, h.e, 200, seq(i, i+10)...)
			}
			for i := range uint32(n) {
				h.link.inject(i, 200)
			}
			h.clock.Advance(cfg.Delay)
			st := h.e.Stats()
			for _, d := range []struct {
				name string
				s    DirStats
				got  []uint32
			}{{"egress", st.Egress, h.link.sent.ids()}, {"ingress", st.Ingress, h.up.recv.ids()}} {
				if !binomialOK(d.s.Duplicated, n, cfg.Duplicate) {
					t.Errorf("%s: %d of %d duplicated", d.name, d.s.Duplicated, n)
				}
				if uint64(len(d.got)) != n+d.s.Duplicated {
					t.Errorf("%s: %d delivered, want %d", d.name, len(d.got), n+d.s.Duplicated)
				}
				// Every packet arrives once or twice, in order (a
				// duplicate follows its original).
				if !slices.IsSorted(d.got) {
					t.Errorf("%s: duplication reordered packets", d.name)
				}
				twice := 0
				for i := 1; i < len(d.got); i++ {
					if d.got[i] == d.got[i-1] {
						twice++
					}
				}
				if uint64(twice) != d.s.Duplicated || len(slices.Compact(d.got)) != n {
					t.Errorf("%s: %d packets seen twice, stats say %d duplicated", d.name, twice, d.s.Duplicated)
				}
			}
			h.finish(t)
		})
	}
}

// TestLimit checks that the delay line holds at most Limit packets and
// counts the rest as overflow.
func TestLimit(t *testing.T) {
	cfg := Config{Delay: 5 * time.Millisecond, Limit: 10}
	h := newHarness(t, cfg, cfg, 1)
	write(t, h.e, 64, seq(0, 25)...)
	for i := range uint32(12) {
		h.link.inject(100+i, 64)
	}
	st := h.e.Stats()
	if st.Egress.Queued != 10 || st.Egress.Overflow != 15 || st.Ingress.Queued != 10 || st.Ingress.Overflow != 2 {
		t.Errorf("after filling: %+v", st)
	}
	h.clock.Advance(cfg.Delay)
	if got, want := h.link.sent.ids(), seq(0, 10); !slices.Equal(got, want) {
		t.Errorf("child got %v, want %v", got, want)
	}
	if got, want := h.up.recv.ids(), seq(100, 110); !slices.Equal(got, want) {
		t.Errorf("stack got %v, want %v", got, want)
	}
	// The line has room again.
	write(t, h.e, 64, seq(25, 35)...)
	h.clock.Advance(cfg.Delay)
	if got := len(h.link.sent.ids()); got != 20 {
		t.Errorf("child got %d packets, want 20", got)
	}
	h.finish(t)
}

// TestClose checks that Close frees every queued packet, stops the timers,
// closes the child once (also when the child's on-close action closes the
// wrapper again, as the stack's does), and that later packets are freed.
func TestClose(t *testing.T) {
	cfg := Config{Delay: time.Second, Duplicate: 0.5, Limit: 200}
	h := newHarness(t, cfg, cfg, 9)
	closes := 0
	h.e.SetOnCloseAction(func() { closes++; h.e.Close() })
	write(t, h.e, 1000, seq(0, 50)...)
	for i := range uint32(50) {
		h.link.inject(i, 1000)
	}
	st := h.e.Stats()
	if st.Egress.Queued < 50 || st.Ingress.Queued < 50 {
		t.Fatalf("before Close: %+v", st)
	}
	h.e.Close()
	h.e.Close()
	if !h.link.isClosed() || h.link.closeCount() != 1 || closes != 1 {
		t.Errorf("child closed %d times, on-close action ran %d times; want once each", h.link.closeCount(), closes)
	}
	h.clock.Advance(2 * cfg.Delay)
	if n := len(h.link.sent.ids()) + len(h.up.recv.ids()); n != 0 {
		t.Errorf("%d packets delivered after Close", n)
	}
	write(t, h.e, 100, 1000)
	after := h.e.Stats()
	for _, d := range []struct {
		name          string
		before, after DirStats
	}{{"egress", st.Egress, after.Egress}, {"ingress", st.Ingress, after.Ingress}} {
		if d.after.Queued != 0 || d.after.Flushed < uint64(d.before.Queued) {
			t.Errorf("%s: %d queued before Close; after: %+v", d.name, d.before.Queued, d.after)
		}
	}
	if after.Egress.Flushed != uint64(st.Egress.Queued)+1 {
		t.Errorf("egress: Flushed = %d, want %d queued + 1 written after Close", after.Egress.Flushed, st.Egress.Queued)
	}
	h.finish(t)
}

// TestWaitWhileDeliveryBlocked: gVisor's Stack.Wait calls the link
// endpoint's Wait with the stack's lock held, while a delayed ingress
// packet being released may be waiting for that lock inside the stack (a
// CI run hung 15 minutes so). Wait must return all the same; the blocked
// delivery completes once the lock is free, and the rest of its batch is
// flushed because the endpoint was closed.
func TestWaitWhileDeliveryBlocked(t *testing.T) {
	cfg := Config{Delay: time.Millisecond}
	h := newHarness(t, Config{}, cfg, 1)
	var stackMu sync.RWMutex
	h.up.gate, h.up.entered = &stackMu, make(chan struct{}, 1)
	for i := range uint32(3) {
		h.link.inject(i, 64)
	}
	stackMu.Lock() // Stack.Wait holds the stack's lock
	released := make(chan struct{})
	go func() {
		h.clock.Advance(cfg.Delay) // the release blocks in the stack
		close(released)
	}()
	select {
	case <-h.up.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the release never reached the stack")
	}
	h.e.Close()
	waited := make(chan struct{})
	go func() {
		h.e.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		stackMu.Unlock()
		t.Fatal("Wait blocked on a delivery that waits for the stack's lock")
	}
	stackMu.Unlock()
	<-released
	if st := h.e.Stats().Ingress; st.Delivered != 1 || st.Flushed != 2 {
		t.Errorf("ingress: %+v, want the one packet in the stack delivered and the other two flushed", st)
	}
	h.up.gate = nil
	h.finish(t)
}

// TestDetached checks that delayed ingress packets released while no
// dispatcher is attached are freed, and that the child follows Attach.
func TestDetached(t *testing.T) {
	cfg := Config{Delay: time.Millisecond}
	h := newHarness(t, Config{}, cfg, 1)
	if !h.e.IsAttached() || h.link.dispatcher() == nil {
		t.Fatal("not attached after Attach")
	}
	h.link.inject(1, 64)
	h.link.inject(2, 64)
	h.e.Attach(nil)
	if h.e.IsAttached() || h.link.dispatcher() != nil {
		t.Error("child still attached after Attach(nil)")
	}
	h.clock.Advance(cfg.Delay)
	if st := h.e.Stats().Ingress; st.Flushed != 2 || st.Delivered != 0 {
		t.Errorf("ingress after release while detached: %+v", st)
	}
	h.finish(t)
}

// TestOversize checks that packets above the MTU are counted (they would be
// GRO or GSO super-packets) but still impaired as one.
func TestOversize(t *testing.T) {
	h := newHarness(t, Config{}, Config{}, 1)
	write(t, h.e, 1500, 1)
	write(t, h.e, 1501, 2)
	h.link.inject(3, 9000)
	st := h.e.Stats()
	if st.Egress.Oversize != 1 || st.Ingress.Oversize != 1 {
		t.Errorf("oversize counts %d egress, %d ingress; want 1, 1", st.Egress.Oversize, st.Ingress.Oversize)
	}
	h.finish(t)
}

// TestWriteError checks that the child's error on an immediate write is
// reported, and that the packets still count as delivered to it.
func TestWriteError(t *testing.T) {
	h := newHarness(t, Config{}, Config{}, 1)
	h.link.setWriteErr(&tcpip.ErrClosedForSend{})
	var l stack.PacketBufferList
	l.PushBack(newPkt(1, 64))
	n, err := h.e.WritePackets(l)
	l.Reset()
	if n != 1 || err == nil {
		t.Errorf("WritePackets = %d, %v; want 1 and the child's error", n, err)
	}
	h.finish(t)
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted a loss probability of 2")
		}
	}()
	New(newFakeLink(faketime.NewManualClock()), Config{Loss: 2}, Config{}, 1)
}

// TestRealClockDelay checks the delay on the standard clock: never early,
// and late by at most a generous scheduling tolerance.
func TestRealClockDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	link := newFakeLink(tcpip.NewStdClock())
	e := New(link, Config{Delay: delay}, Config{}, 1)
	e.Attach(&fakeStack{})
	sentAt := make(map[uint32]time.Time)
	for i := range uint32(10) {
		sentAt[i] = time.Now()
		write(t, e, 100, i)
		time.Sleep(3 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(link.sent.ids()) < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := link.sent.snapshot()
	if len(got) != 10 {
		t.Fatalf("child got %d packets within 5s, want 10", len(got))
	}
	var worst time.Duration
	for i, a := range got {
		if a.id != uint32(i) {
			t.Errorf("packet %d arrived as number %d", a.id, i)
		}
		d := a.at.Sub(sentAt[a.id])
		if d < delay {
			t.Errorf("packet %d delayed %v, less than %v", a.id, d, delay)
		}
		worst = max(worst, d)
	}
	if worst > delay+250*time.Millisecond {
		t.Errorf("worst delay %v, want %v plus at most 250ms of scheduling", worst, delay)
	}
	t.Logf("worst delay %v for %v configured", worst, delay)
	(&harness{link: link, up: &fakeStack{}, e: e}).finish(t)
}

// TestRealClockConcurrent runs both directions on the standard clock from
// several goroutines at once (run with -race) and closes the endpoint while
// packets are still queued.
func TestRealClockConcurrent(t *testing.T) {
	cfg := Config{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05, Reorder: 0.1, Duplicate: 0.05}
	link := newFakeLink(tcpip.NewStdClock())
	up := &fakeStack{recv: recorder{clock: tcpip.NewStdClock()}}
	e := New(link, cfg, cfg, 11)
	e.Attach(up)
	var wg sync.WaitGroup
	for g := range uint32(4) {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range uint32(200) {
				var l stack.PacketBufferList
				for j := range uint32(4) {
					l.PushBack(newPkt(g<<24|i<<4|j, 300))
				}
				e.WritePackets(l)
				l.Reset()
				if i%20 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range uint32(800) {
				link.inject(g<<24|i, 300)
			}
		}()
	}
	wg.Wait()
	// Let some delayed packets leave, then close with others queued.
	time.Sleep(cfg.Delay)
	e.Close()
	e.Wait()
	st := e.Stats()
	if st.Egress.Delivered == 0 || st.Ingress.Delivered == 0 {
		t.Errorf("nothing delivered: %+v", st)
	}
	(&harness{link: link, up: up, e: e}).finish(t)
	t.Logf("%+v", st)
}
