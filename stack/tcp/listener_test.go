package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// TestListenerBacklogAndCookies: with a SYN queue of one, a second SYN
// arriving while the first is half-open is answered with a SYN cookie
// (RFC 4987 §3.6); both connections complete and carry data, and the
// cookie connection keeps window scale and SACK (encoded in the timestamp).
func TestListenerBacklogAndCookies(t *testing.T) {
	n := simnet.New(3)
	ha, hb := n.AddHost(addrA), n.AddHost(addrB)
	link := simnet.LinkConfig{Delay: 20 * time.Millisecond}
	n.Connect(addrA, addrB, link, link)
	ln, err := hb.Listen(port, tcp.ListenerConfig{Backlog: 1, Config: tcp.Config{MaxReceiveBuffer: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := ha.Dial(0, addrB, port, tcp.Config{ISS: 1})
	c2, _ := ha.Dial(0, addrB, port, tcp.Config{ISS: 2})
	var s1, s2 *tcp.Endpoint
	ok := n.RunUntil(func() bool {
		if e := hb.Accept(port); e != nil {
			if s1 == nil {
				s1 = e
			} else {
				s2 = e
			}
		}
		return s2 != nil && c1.State() == tcp.StateEstablished && c2.State() == tcp.StateEstablished
	}, 10*time.Second)
	st := ln.Stats()
	if !ok || st.CookiesSent != 1 || st.CookiesValid != 1 || st.QueueOverflows != 1 || st.HalfOpen != 0 {
		t.Fatalf("ok %v stats %+v", ok, st)
	}
	for _, s := range []*tcp.Endpoint{s1, s2} {
		i := s.Info()
		if !i.SACK || !i.Timestamps || i.SndWScale == 0 || i.SndMSS != 1448 {
			t.Fatalf("server options %+v", i)
		}
	}
	for i, c := range []*tcp.Endpoint{c1, c2} {
		srv := s1
		if s1.IRS() != c.ISS() {
			srv = s2
		}
		p := &pair{t: t, net: n}
		data := randBytes(int64(i), 300_000)
		got, _ := p.transfer(c, srv, data, true, time.Minute)
		sameData(t, data, got)
	}
}

// TestListenerRejectsForgedCookie: an ACK with a wrong cookie gets a RST
// and creates nothing.
func TestListenerRejectsForgedCookie(t *testing.T) {
	clock := simnet.New(1).Clock
	ln, _ := tcp.NewListener(tcp.ListenerConfig{Cookies: tcp.CookiesAlways, Config: tcp.Config{Clock: clock}})
	var out []tcp.OutSegment
	w := tcp.OutputFunc(func(s *tcp.OutSegment) { out = append(out, *s) })
	flow := tcp.FlowID{LocalAddr: addrB, RemoteAddr: addrA, LocalPort: 80, RemotePort: 1234}
	if ep := ln.HandleSegment(flow, &tcp.Segment{Seq: 7, Flags: tcp.FlagSYN}, w); ep != nil {
		t.Fatal("cookie mode kept state")
	}
	if len(out) != 1 || out[0].Flags != tcp.FlagSYN|tcp.FlagACK || out[0].Ack != 8 {
		t.Fatalf("SYN-ACK %+v", out)
	}
	cookie := out[0].Seq
	// Wrong cookie, and cookie for a different flow.
	if ep := ln.HandleSegment(flow, &tcp.Segment{Seq: 8, Ack: cookie + 2, Flags: tcp.FlagACK}, w); ep != nil {
		t.Fatal("forged cookie accepted")
	}
	other := flow
	other.RemoteAddr = tcpip.AddrFrom4([4]byte{10, 9, 9, 9})
	if ep := ln.HandleSegment(other, &tcp.Segment{Seq: 8, Ack: cookie + 1, Flags: tcp.FlagACK}, w); ep != nil {
		t.Fatal("cookie accepted for another flow")
	}
	if st := ln.Stats(); st.CookiesInvalid != 2 || st.Resets != 2 || out[len(out)-1].Flags != tcp.FlagRST {
		t.Fatalf("stats %+v out %+v", st, out)
	}
	ep := ln.HandleSegment(flow, &tcp.Segment{Seq: 8, Ack: cookie + 1, Flags: tcp.FlagACK, Window: 100}, w)
	if ep == nil || ep.State() != tcp.StateEstablished {
		t.Fatal("valid cookie refused")
	}
}
