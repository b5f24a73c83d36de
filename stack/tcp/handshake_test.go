package tcp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// TestHandshakeOptionCombinations runs the handshake for every combination
// of SACK, timestamps and window scale enabled on either side, and checks
// each option is in use exactly when both sides offer it, then moves data.
func TestHandshakeOptionCombinations(t *testing.T) {
	for mask := 0; mask < 64; mask++ {
		c := tcp.Config{DisableSACK: mask&1 != 0, DisableTimestamps: mask&2 != 0, DisableWScale: mask&4 != 0, MSS: 1400}
		s := tcp.Config{DisableSACK: mask&8 != 0, DisableTimestamps: mask&16 != 0, DisableWScale: mask&32 != 0, MSS: 1460, MaxReceiveBuffer: 4 << 20}
		t.Run(fmt.Sprintf("c%03b_s%03b", mask&7, mask>>3), func(t *testing.T) {
			link := simnet.LinkConfig{Delay: 5 * time.Millisecond}
			p := newPair(t, pairOpts{ab: link, ba: link, client: c, server: s})
			p.establish()
			for _, ep := range []*tcp.Endpoint{p.a, p.b} {
				i := ep.Info()
				if want := !c.DisableSACK && !s.DisableSACK; i.SACK != want {
					t.Errorf("SACK %v, want %v", i.SACK, want)
				}
				ts := !c.DisableTimestamps && !s.DisableTimestamps
				if i.Timestamps != ts {
					t.Errorf("timestamps %v, want %v", i.Timestamps, ts)
				}
				ws := !c.DisableWScale && !s.DisableWScale
				if (i.SndWScale != 0 || i.RcvWScale != 0) != ws && ep == p.b {
					t.Errorf("server window scale %d/%d, want enabled=%v", i.SndWScale, i.RcvWScale, ws)
				}
				wantMSS := 1400
				if ts {
					wantMSS -= 12
				}
				if i.SndMSS != wantMSS {
					t.Errorf("send MSS %d, want %d", i.SndMSS, wantMSS)
				}
			}
			data := randBytes(int64(mask), 300_000)
			got, _ := p.transfer(p.a, p.b, data, true, time.Minute)
			sameData(t, data, got)
			got, _ = p.transfer(p.b, p.a, data[:100_000], true, time.Minute)
			sameData(t, data[:100_000], got)
		})
	}
}

// TestSimultaneousOpen: both sides send a SYN at once (RFC 9293 §3.5
// figure 8) and the connection is established with data in both ways.
func TestSimultaneousOpen(t *testing.T) {
	n := simnet.New(1)
	ha, hb := n.AddHost(addrA), n.AddHost(addrB)
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond}
	n.Connect(addrA, addrB, link, link)
	a, err := ha.Dial(1111, addrB, 2222, tcp.Config{ISS: 100})
	if err != nil {
		t.Fatal(err)
	}
	b, err := hb.Dial(2222, addrA, 1111, tcp.Config{ISS: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if !n.RunUntil(func() bool { return a.State() == tcp.StateEstablished && b.State() == tcp.StateEstablished }, 10*time.Second) {
		t.Fatalf("states %v %v", a.State(), b.State())
	}
	p := &pair{t: t, net: n, a: a, b: b}
	data := randBytes(3, 50_000)
	got, _ := p.transfer(a, b, data, true, time.Minute)
	sameData(t, data, got)
	got, _ = p.transfer(b, a, data, true, time.Minute)
	sameData(t, data, got)
}

// TestSynRetransmitAndTimeout: lost SYNs are retransmitted with backoff
// and the connect fails with ErrTimeout after SynRetries.
func TestSynRetransmitAndTimeout(t *testing.T) {
	drops := 2
	link := simnet.LinkConfig{Delay: 5 * time.Millisecond, Drop: func(p *simnet.Packet) bool {
		if drops > 0 {
			drops--
			return true
		}
		return false
	}}
	p := newPair(t, pairOpts{ab: link, ba: simnet.LinkConfig{Delay: 5 * time.Millisecond}})
	start := p.net.Now()
	p.establish()
	// Initial RTO 1 s, then 2 s: the third SYN leaves at 3 s.
	if d := p.net.Now().Sub(start); d < 3*time.Second || d > 3100*time.Millisecond {
		t.Fatalf("established after %v, want ~3.01s", d)
	}
	if i := p.a.Info(); i.RTOs != 2 {
		t.Fatalf("RTOs %d, want 2", i.RTOs)
	}

	n := simnet.New(1)
	h := n.AddHost(addrA)
	n.AddHost(addrB)
	n.Connect(addrA, addrB, simnet.LinkConfig{Loss: 1}, simnet.LinkConfig{})
	ep, _ := h.Dial(0, addrB, 80, tcp.Config{SynRetries: 3})
	if !n.RunUntil(func() bool { return ep.State() == tcp.StateClosed }, 10*time.Minute) {
		t.Fatal("connect did not time out")
	}
	if ep.Err() != tcp.ErrTimeout {
		t.Fatalf("err %v", ep.Err())
	}
	// 1+2+4+8 seconds.
	if d := n.Now().Sub(start); d < 15*time.Second {
		t.Fatalf("timed out after %v", d)
	}
}

// TestConnectionRefused: a SYN to a port nobody listens on gets a RST
// (from the simulator's host, the adapter's job) and the dial fails.
func TestConnectionRefused(t *testing.T) {
	n := simnet.New(1)
	h := n.AddHost(addrA)
	n.AddHost(addrB)
	n.Connect(addrA, addrB, simnet.LinkConfig{Delay: time.Millisecond}, simnet.LinkConfig{Delay: time.Millisecond})
	ep, _ := h.Dial(0, addrB, 9, tcp.Config{})
	n.RunUntil(func() bool { return ep.State() == tcp.StateClosed }, time.Second)
	if ep.Err() != tcp.ErrConnectionRefused {
		t.Fatalf("state %v err %v", ep.State(), ep.Err())
	}
}
