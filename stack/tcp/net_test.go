package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// TestReorderAndDuplication: 10% of packets delayed past later ones, 5%
// duplicated, both directions; data must arrive intact.
func TestReorderAndDuplication(t *testing.T) {
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 5_000_000, Reorder: 0.1,
		ReorderDelay: 3 * time.Millisecond, Duplicate: 0.05}
	p := newPair(t, pairOpts{seed: 11, ab: link, ba: link})
	p.establish()
	data := randBytes(6, 2<<20)
	got, d := p.transfer(p.a, p.b, data, true, 5*time.Minute)
	sameData(t, data, got)
	ia, ib := p.a.Info(), p.b.Info()
	t.Logf("%v, reordered %d dup %d; sender retrans %d recoveries %d; receiver OOO %d",
		d, p.ab.Stats.Reordered, p.ab.Stats.Duplicated, ia.Retransmits, ia.FastRecoveries, ib.OutOfOrderSegs)
	if ib.OutOfOrderSegs == 0 || p.ab.Stats.Duplicated == 0 {
		t.Fatal("the link did not reorder or duplicate")
	}
}

// TestZeroWindowThenOpen: the receiver stops reading, its buffer fills,
// the sender persists; reading again reopens the window and data flows.
func TestZeroWindowThenOpen(t *testing.T) {
	link := simnet.LinkConfig{Delay: 5 * time.Millisecond}
	srv := tcp.Config{ReceiveBuffer: 16 << 10, MaxReceiveBuffer: 16 << 10}
	p := newPair(t, pairOpts{ab: link, ba: link, server: srv})
	p.establish()
	data := randBytes(7, 200_000)
	off := 0
	p.net.RunUntil(func() bool {
		n, _ := p.a.Write(data[off:])
		off += n
		return false
	}, 5*time.Second)
	ia := p.a.Info()
	if p.b.Readable() != 16<<10 || ia.SndWnd != 0 || ia.ZeroWindowProbes == 0 {
		t.Fatalf("readable %d, sender %+v", p.b.Readable(), ia)
	}
	got := make([]byte, 0, len(data))
	buf := make([]byte, 4096)
	eof := false
	p.net.RunUntil(func() bool {
		if off < len(data) {
			n, _ := p.a.Write(data[off:])
			off += n
			if off == len(data) {
				p.a.CloseWrite()
			}
		}
		n, err := p.b.Read(buf)
		got = append(got, buf[:n]...)
		eof = n == 0 && err == nil
		return eof
	}, time.Minute)
	sameData(t, data, got)
}
