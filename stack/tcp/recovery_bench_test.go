package tcp_test

import (
	"fmt"
	"math"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// recoveryCell is one impairment of BenchmarkRecovery, applied to each
// direction of the path (netem semantics: Jump is "reorder").
type recoveryCell struct {
	name  string
	key   string // metric name
	loss  float64
	jump  float64
	delay time.Duration // one way
	rate  int64         // bytes per second
	bytes int
}

func recoveryCells() []recoveryCell {
	var cells []recoveryCell
	for _, delay := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
		for _, jump := range []float64{0, 0.05} {
			for _, loss := range []float64{0.001, 0.01, 0.03} {
				cells = append(cells, recoveryCell{
					name: fmt.Sprintf("loss %g%% reorder %g%% delay %v", loss*100, jump*100, delay),
					loss: loss, jump: jump, delay: delay, rate: 12_500_000, bytes: 8 << 20,
				})
			}
		}
	}
	return append(cells, recoveryCell{name: "short RTT, 10 Gbit/s: loss 2% delay 25µs", key: "shortrtt-loss2",
		loss: 0.02, delay: 25 * time.Microsecond, rate: 1_250_000_000, bytes: 48 << 20})
}

// BenchmarkRecovery moves data over the simulator through each cell of
// recoveryCells (100 Mbit/s, or 10 Gbit/s for the short RTT, a queue of one
// BDP or 64 KB, the impairment on both directions; seeded, so every run
// gives the same figures) and prints goodput, its ratio to the link rate
// and to the Mathis et al. estimate for a Reno flow
// (1.22*MSS/(RTT*sqrt(p))), the segments retransmitted and how many of
// those the receiver already had (needless), timeouts, fast recoveries
// and undone ones, loss probes, with CUBIC (the default) and the
// goodput and retransmissions with BBR; then connect + 1 KiB + close at a
// 1 ms RTT.
// It measures behaviour, not CPU: run it once,
//
//	go test ./stack/tcp/ -run '^$' -bench BenchmarkRecovery -benchtime 1x
func BenchmarkRecovery(b *testing.B) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\ncell\tMB/s\tvs link\tvs Mathis\tretrans %%\tneedless %%\tRTOs\trecoveries\tundone\tprobes\tbbr MB/s\tbbr vs link\tbbr retrans %%\t\n")
	for range b.N {
		for _, c := range recoveryCells() {
			r := runRecoveryCell(b, c, "cubic")
			rb := runRecoveryCell(b, c, "bbr")
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t\n", c.name, r.mbps, r.mbps*1e6/float64(c.rate), r.vsMathis,
				r.retransPct, r.needlessPct, r.rtos, r.recoveries, r.undone, r.probes, rb.mbps, rb.mbps*1e6/float64(c.rate), rb.retransPct)
			b.ReportMetric(r.mbps, c.key+"-MB/s")
			b.ReportMetric(rb.mbps, c.key+"-bbr-MB/s")
		}
	}
	tw.Flush()
	d, ok := shortConnLatency(b)
	fmt.Printf("connect + 1 KiB + close at a 1 ms RTT: %v (%.0f connections/s sequentially), FIN+ACK in one segment: %v\n",
		d, 1/d.Seconds(), ok)
	b.ReportMetric(0, "ns/op")
}

type recoveryResult struct {
	mbps, vsMathis, retransPct, needlessPct float64
	rtos, recoveries, undone, probes        uint64
}

func runRecoveryCell(b *testing.B, c recoveryCell, cc string) recoveryResult {
	rtt := 2 * c.delay
	queue := max(int(float64(c.rate)*rtt.Seconds()), 64<<10)
	link := simnet.LinkConfig{Delay: c.delay, Rate: c.rate, QueueLimit: queue, Loss: c.loss, Jump: c.jump}
	cfg := tcp.Config{MaxReceiveBuffer: 8 << 20, Congestion: cc}
	p := newPair(b, pairOpts{seed: 1, ab: link, ba: link, client: cfg, server: cfg})
	tap := tapData(p.net, addrA)
	p.establish()
	data := randBytes(70, c.bytes)
	got, d := p.transfer(p.a, p.b, data, true, time.Hour)
	sameData(b, data, got)
	i := p.a.Info()
	mss := float64(i.SndMSS)
	mathis := 1.22 * mss / (rtt.Seconds() * math.Sqrt(c.loss)) / 1e6
	r := recoveryResult{
		mbps:       float64(len(data)) / d.Seconds() / 1e6,
		rtos:       i.RTOs,
		recoveries: i.FastRecoveries,
		undone:     stat(i, "TCPFullUndo") + stat(i, "TCPPartialUndo") + stat(i, "TCPDSACKUndo") + stat(i, "TCPLossUndo"),
		probes:     stat(i, "TCPLossProbes"),
	}
	r.vsMathis = r.mbps / mathis
	if tap.segs > 0 {
		r.retransPct = 100 * float64(i.Retransmits) / float64(tap.segs)
	}
	if i.Retransmits > 0 {
		r.needlessPct = 100 * float64(tap.dup) / float64(i.Retransmits)
	}
	return r
}

// shortConnLatency times connect + 1 KiB + close at a 1 ms RTT.
func shortConnLatency(b *testing.B) (time.Duration, bool) {
	link := simnet.LinkConfig{Delay: 500 * time.Microsecond}
	p := newPair(b, pairOpts{ab: link, ba: link})
	d, after := shortExchangeTB(b, p)
	return d, len(after) == 1
}
