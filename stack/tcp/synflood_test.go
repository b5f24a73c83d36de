package tcp_test

import (
	"math/rand"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// linuxSYNOpts is the option area of a Linux SYN: MSS 1460,
// SACK-permitted+TS, NOP+WS 7.
var linuxSYNOpts = unhex("02 04 05 b4 04 02 08 0a 00 00 03 e8 00 00 00 00 01 03 03 07")

// TestSynFloodLeavesCookieMode: 20,000 spoofed SYNs in 0.2 s fill the SYN
// queue (Backlog 128) with half-open endpoints whose SYN-ACKs nobody
// answers, and every other SYN of the flood is answered with a cookie. Once
// the flood stops, the queue must drain well before those endpoints would
// exhaust SynRetries (about 63 s): with the queue more than half full of
// endpoints that already retransmitted their SYN-ACK, those get fewer
// retries (Linux's SYN queue pruning), so a genuine SYN is answered from
// the queue again within 5 s, and completes a connection that is not a
// cookie one.
func TestSynFloodLeavesCookieMode(t *testing.T) {
	n := simnet.New(1)
	ha, hb := n.AddHost(addrA), n.AddHost(addrB)
	link := simnet.LinkConfig{Delay: 5 * time.Millisecond}
	n.Connect(addrA, addrB, link, link)
	ln, err := hb.Listen(port, tcp.ListenerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const flood = 20_000
	rng := rand.New(rand.NewSource(1))
	for i := range flood {
		src := tcpip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
		sport := uint16(1024 + rng.Intn(60000))
		syn := rawSegment(seqnum.Value(rng.Uint32()), 0, tcp.FlagSYN, 65535, linuxSYNOpts, sport, port)
		n.Inject(time.Duration(i)*10*time.Microsecond, src, sport, addrB, port, syn)
	}
	n.RunFor(200 * time.Millisecond)
	st := ln.Stats()
	if st.SynsReceived != flood || st.HalfOpen != tcp.DefaultBacklog || st.CookiesSent != flood-tcp.DefaultBacklog {
		t.Fatalf("after the flood: %+v", st)
	}
	floodEnd := n.Now()

	// Probe with a genuine SYN every 100 ms until one is queued rather
	// than answered with a cookie.
	queuedAfter := time.Duration(-1)
	var probeSeq seqnum.Value = 1 << 30
	for i := 0; queuedAfter < 0 && i < 700; i++ {
		before := ln.Stats()
		probeSeq += 1 << 20
		n.Inject(0, addrA, uint16(20000+i), addrB, port, rawSegment(probeSeq, 0, tcp.FlagSYN, 65535, linuxSYNOpts, uint16(20000+i), port))
		n.RunFor(100 * time.Millisecond)
		if after := ln.Stats(); after.SynsReceived == before.SynsReceived+1 && after.CookiesSent == before.CookiesSent {
			queuedAfter = n.Now().Sub(floodEnd)
		}
	}
	st = ln.Stats()
	t.Logf("genuine SYN queued %v after the flood; %+v", queuedAfter, st)
	if queuedAfter < 0 || queuedAfter > 5*time.Second {
		t.Fatalf("listener still in cookie mode %v after the flood (want <= 5s): %+v", n.Now().Sub(floodEnd), st)
	}
	if st.HalfOpenPruned == 0 {
		t.Errorf("no half-open endpoint counted as pruned: %+v", st)
	}

	// A genuine connection now completes through the queue, not a cookie.
	cookiesValid := st.CookiesValid
	c, err := ha.Dial(0, addrB, port, tcp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var s *tcp.Endpoint
	if !n.RunUntil(func() bool {
		if s == nil {
			s = hb.Accept(port)
		}
		return s != nil && c.State() == tcp.StateEstablished
	}, 5*time.Second) {
		t.Fatalf("genuine connection not established: %v", c.State())
	}
	if got := ln.Stats().CookiesValid; got != cookiesValid {
		t.Fatalf("genuine connection completed through a cookie")
	}
	p := &pair{t: t, net: n}
	data := randBytes(3, 100_000)
	got, _ := p.transfer(c, s, data, true, time.Minute)
	sameData(t, data, got)
}
