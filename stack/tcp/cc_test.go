package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
)

type stubStats struct{ rtt time.Duration }

func (s stubStats) SRTT() time.Duration   { return s.rtt }
func (s stubStats) MSS() int              { return 1000 }
func (s stubStats) CongestionWindow() int { return 0 }

func TestNewRenoEvolution(t *testing.T) {
	cc, err := tcp.NewCongestionControl("newreno", tcp.CCParams{MSS: 1000, InitialCwnd: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	var now tcpip.MonotonicTime
	ack := func(n int) { cc.OnAck(&tcp.AckSample{Now: now, Acked: n, InFlight: cc.Cwnd()}) }
	for i := 0; i < 10; i++ {
		ack(1000)
	}
	if cc.Cwnd() != 20_000 {
		t.Fatalf("slow start: cwnd %d after one window, want 20000", cc.Cwnd())
	}
	cc.OnCongestionEvent(now, 40_000)
	if cc.Cwnd() != 20_000 || cc.Ssthresh() != 20_000 {
		t.Fatalf("after loss: %d/%d", cc.Cwnd(), cc.Ssthresh())
	}
	for i := 0; i < 20; i++ {
		ack(1000)
	}
	if cc.Cwnd() != 21_000 {
		t.Fatalf("congestion avoidance: cwnd %d after one window, want 21000", cc.Cwnd())
	}
	cc.OnAck(&tcp.AckSample{Acked: 50_000, AppLimited: true})
	if cc.Cwnd() != 21_000 {
		t.Fatal("grew while application-limited")
	}
	cc.OnRTO(now, 21_000)
	if cc.Cwnd() != 1000 || cc.Ssthresh() != 10_500 {
		t.Fatalf("after RTO: %d/%d", cc.Cwnd(), cc.Ssthresh())
	}
}

// TestCubicEvolution checks RFC 9438's shape: reduction to 0.7*W_max, a
// concave approach that plateaus near W_max around K = cbrt(W_max*0.3/C)
// seconds, then convex growth past it.
func TestCubicEvolution(t *testing.T) {
	const mss = 1000
	cc, _ := tcp.NewCongestionControl("cubic", tcp.CCParams{MSS: mss, InitialCwnd: 100 * mss, Subflow: stubStats{100 * time.Millisecond}})
	var now tcpip.MonotonicTime
	cc.OnCongestionEvent(now, 100*mss)
	if cc.Cwnd() != 70*mss {
		t.Fatalf("after loss cwnd %d, want 70 segments", cc.Cwnd())
	}
	// K = cbrt(100*0.3/0.4) ~ 4.22 s.
	at := map[time.Duration]int{}
	prev := cc.Cwnd()
	for step := time.Duration(0); step <= 8*time.Second; step += 100 * time.Millisecond {
		now = tcpip.MonotonicTime{}.Add(step)
		w := cc.Cwnd()
		for acked := 0; acked < w; acked += mss {
			cc.OnAck(&tcp.AckSample{Now: now, Acked: mss, RTT: 100 * time.Millisecond, InFlight: w})
		}
		if cc.Cwnd() < prev {
			t.Fatalf("cwnd shrank at %v", step)
		}
		prev = cc.Cwnd()
		at[step] = cc.Cwnd() / mss
	}
	if w := at[2*time.Second]; w < 85 || w >= 100 {
		t.Errorf("at 2 s cwnd %d: concave region should approach 100 fast", w)
	}
	if w := at[4200*time.Millisecond]; w < 95 || w > 106 {
		t.Errorf("at K cwnd %d, want ~100", w)
	}
	growthPlateau := at[4700*time.Millisecond] - at[3700*time.Millisecond]
	growthLate := at[8*time.Second] - at[7*time.Second]
	if growthLate <= growthPlateau || at[8*time.Second] < 120 {
		t.Errorf("no convex growth: plateau +%d/s, late +%d/s, at 8 s %d", growthPlateau, growthLate, at[8*time.Second])
	}
	t.Logf("cwnd (segments): 1s %d, 2s %d, 4.2s %d, 6s %d, 8s %d", at[time.Second], at[2*time.Second], at[4200*time.Millisecond], at[6*time.Second], at[8*time.Second])
	cc.OnRTO(now, cc.Cwnd())
	if cc.Cwnd() != mss {
		t.Fatalf("after RTO %d", cc.Cwnd())
	}
}

func TestCongestionRegistry(t *testing.T) {
	tcp.RegisterCongestionControl("test-fixed", func(p tcp.CCParams) tcp.CongestionControl {
		c, _ := tcp.NewCongestionControl("newreno", p)
		return c
	})
	names := tcp.CongestionControls()
	found := false
	for _, n := range names {
		found = found || n == "test-fixed"
	}
	if !found {
		t.Fatalf("registered controller missing from %v", names)
	}
	if _, err := tcp.NewEndpoint(tcp.Config{Clock: nil}); err == nil {
		t.Fatal("endpoint without clock accepted")
	}
	if _, err := tcp.NewCongestionControl("nope", tcp.CCParams{MSS: 1}); err == nil {
		t.Fatal("unknown controller accepted")
	}
}
