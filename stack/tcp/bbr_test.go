package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// bbrRun moves data over a 100 Mbit/s, 20 ms RTT path with the given
// loss on each direction and a queue of qBDP bandwidth-delay products,
// with controller cc, and returns the goodput (Mbit/s), the sender's
// Info and the link's queue drops.
func bbrRun(t *testing.T, cc string, loss float64, qBDP float64, size int) (float64, tcp.Info, uint64) {
	t.Helper()
	const rate = 12_500_000
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: rate, QueueLimit: int(qBDP * rate * 0.02), Loss: loss}
	cfg := tcp.Config{Congestion: cc, MaxReceiveBuffer: 8 << 20}
	p := newPair(t, pairOpts{seed: 13, ab: link, ba: link, client: cfg, server: cfg})
	p.establish()
	data := randBytes(80, size)
	got, d := p.transfer(p.a, p.b, data, true, 10*time.Minute)
	sameData(t, data, got)
	return float64(len(data)) * 8 / d.Seconds() / 1e6, p.a.Info(), p.ab.Stats.QueueDrops
}

// TestBBRRandomLoss: with 1% random loss a loss-based controller is held
// to a few Mbit/s (Mathis et al.: about 7 for Reno at 20 ms); BBR's model
// of the path ignores random loss and keeps most of the link.
func TestBBRRandomLoss(t *testing.T) {
	mbps, i, _ := bbrRun(t, "bbr", 0.01, 1, 16<<20)
	cm, ci, _ := bbrRun(t, "cubic", 0.01, 1, 4<<20)
	t.Logf("1%% loss: bbr %.1f Mbit/s (pacing %d B/s, cwnd %d, srtt %v, retrans %d, RTOs %d); cubic %.1f Mbit/s (RTOs %d)",
		mbps, i.PacingRate, i.Cwnd, i.SRTT, i.Retransmits, i.RTOs, cm, ci.RTOs)
	if mbps < 60 {
		t.Errorf("bbr at 1%% loss: %.1f Mbit/s of 100", mbps)
	}
}

// TestBBRShallowQueue: without loss and with a queue of half a BDP, BBR
// fills the link while keeping the queue short: the RTT stays close to the
// path's 20 ms, and the queue hardly overflows.
func TestBBRShallowQueue(t *testing.T) {
	mbps, i, drops := bbrRun(t, "bbr", 0, 0.5, 32<<20)
	t.Logf("bbr: %.1f Mbit/s, srtt %v min %v, cwnd %d, pacing %d B/s, queue drops %d, retrans %d", mbps, i.SRTT, i.MinRTT, i.Cwnd, i.PacingRate, drops, i.Retransmits)
	if mbps < 85 {
		t.Errorf("%.1f Mbit/s on a lossless 100 Mbit/s path", mbps)
	}
	if i.SRTT > 35*time.Millisecond {
		t.Errorf("SRTT %v: the queue stays full", i.SRTT)
	}
}
