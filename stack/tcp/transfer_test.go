package tcp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// TestLossyBulk moves 10 MB over a 50 ms RTT, 100 Mbit/s path with 1%
// random loss in each direction, for each congestion controller, and
// checks integrity (SHA-256) and that throughput is in a sane range.
func TestLossyBulk(t *testing.T) {
	for _, cc := range []string{"newreno", "cubic"} {
		for _, sack := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/sack=%v", cc, sack), func(t *testing.T) {
				link := simnet.LinkConfig{Delay: 25 * time.Millisecond, Rate: 12_500_000, QueueLimit: 400_000, Loss: 0.01}
				cfg := tcp.Config{Congestion: cc, DisableSACK: !sack, MaxReceiveBuffer: 8 << 20}
				p := newPair(t, pairOpts{seed: 7, ab: link, ba: link, client: cfg, server: cfg})
				p.establish()
				data := randBytes(2, 10<<20)
				got, d := p.transfer(p.a, p.b, data, true, 10*time.Minute)
				sameData(t, data, got)
				ia := p.a.Info()
				mbps := float64(len(data)) * 8 / d.Seconds() / 1e6
				t.Logf("%v virtual: %.2f Mbit/s, retrans %d segs (%d bytes), RTOs %d, recoveries %d, srtt %v, cwnd %d, rcvbuf B %d",
					d, mbps, ia.Retransmits, ia.BytesRetrans, ia.RTOs, ia.FastRecoveries, ia.SRTT, ia.Cwnd, p.b.Info().RcvBuffer)
				// Mathis: 1.22*MSS/(RTT*sqrt(p)) ~ 2.8 Mbit/s for Reno at 1%;
				// accept anything from 1 Mbit/s to the link rate.
				if mbps < 1 || mbps > 100 {
					t.Fatalf("throughput %.2f Mbit/s out of range", mbps)
				}
				if ia.BytesRetrans > uint64(len(data))/10 {
					t.Fatalf("retransmitted %d bytes for %d bytes of data", ia.BytesRetrans, len(data))
				}
			})
		}
	}
}
