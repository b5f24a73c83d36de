package tcp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip/header"

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

// hookLog records, in order, what extensions and their factory see.
type hookLog []string

func (l *hookLog) add(format string, a ...any) { *l = append(*l, fmt.Sprintf(format, a...)) }

// mpcDesc describes the MP_CAPABLE of seg: its form and keys, or "none".
func mpcDesc(seg *tcp.Segment) string {
	for _, raw := range seg.Options.MPTCPOptions() {
		if m, err := options.ParseMPCapable(raw); err == nil {
			return fmt.Sprintf("%v %x/%x", m.Form, m.SenderKey, m.ReceiverKey)
		}
	}
	return "none"
}

func flagDesc(f header.TCPFlags) string {
	s := ""
	for _, x := range []struct {
		f header.TCPFlags
		n string
	}{{tcp.FlagSYN, "S"}, {tcp.FlagFIN, "F"}, {tcp.FlagRST, "R"}, {tcp.FlagPSH, "P"}, {tcp.FlagACK, "."}} {
		if f&x.f != 0 {
			s += x.n
		}
	}
	return s
}

// logExt is a server-side extension that logs every hook.
type logExt struct {
	name string
	log  *hookLog
}

func (x *logExt) SegmentOptions(info *tcp.SegmentInfo, _ int, dst []options.Option) []options.Option {
	x.log.add("%s out %s", x.name, flagDesc(info.Flags))
	if info.Flags&tcp.FlagSYN != 0 {
		return append(dst, &options.MPCapable{Form: options.CapableSYNACK, Version: 1, Flags: 0x01, SenderKey: 0xb})
	}
	return dst
}

func (x *logExt) Incoming(seg *tcp.Segment, st tcp.State) tcp.Verdict {
	x.log.add("%s in %s %v mpc %s len %d", x.name, flagDesc(seg.Flags), st, mpcDesc(seg), len(seg.Payload))
	return tcp.VerdictAccept
}

func (x *logExt) StateChanged(from, to tcp.State) { x.log.add("%s %v->%v", x.name, from, to) }

// capableClient puts MP_CAPABLE on the SYN and, with both keys, on the
// ACK that completes the handshake (RFC 8684 §3.1).
type capableClient struct {
	tcp.NopExtension
	acked bool
}

func (c *capableClient) SegmentOptions(info *tcp.SegmentInfo, _ int, dst []options.Option) []options.Option {
	switch {
	case info.Flags&tcp.FlagSYN != 0:
		return append(dst, capable)
	case !c.acked && info.Flags&tcp.FlagACK != 0:
		c.acked = true
		return append(dst, &options.MPCapable{Form: options.CapableACK, Version: 1, Flags: 0x01, SenderKey: 0xa, ReceiverKey: 0xb})
	}
	return dst
}

// TestCookieAckExtension: with SYN cookies, the factory sees the SYN (its
// extension supplies the SYN-ACK's options and is dropped) and then the
// ACK completing the handshake, options included; the endpoint built from
// that ACK carries the factory's extension, which sees exactly what it
// sees after a queued SYN: CLOSED->SYN-RECEIVED, the ACK in SYN-RECEIVED
// through Incoming, then SYN-RECEIVED->ESTABLISHED, and every later
// segment. This is the contract the MPTCP layer relies on to rebuild its
// state from the MP_CAPABLE keys of the third ACK.
func TestCookieAckExtension(t *testing.T) {
	for _, mode := range []tcp.CookieMode{tcp.CookiesNever, tcp.CookiesAlways} {
		t.Run(fmt.Sprint("cookies=", mode == tcp.CookiesAlways), func(t *testing.T) {
			var log hookLog
			calls := 0
			factory := func(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
				calls++
				name := fmt.Sprint("ext", calls)
				log.add("factory %s mpc %s -> %s", flagDesc(seg.Flags), mpcDesc(seg), name)
				return &logExt{name: name, log: &log}, tcp.VerdictAccept
			}
			link := simnet.LinkConfig{Delay: 10 * time.Millisecond}
			p := newPair(t, pairOpts{ab: link, ba: link, client: tcp.Config{Extension: &capableClient{}},
				listener: tcp.ListenerConfig{Cookies: mode, NewExtension: factory}})
			p.establish()
			p.a.Write([]byte("hello"))
			p.net.RunFor(time.Second)
			want := []string{
				"factory S mpc SYN 0/0 -> ext1",
				"ext1 CLOSED->SYN-RECEIVED",
				"ext1 out S.",
				"ext1 in . SYN-RECEIVED mpc ACK a/b len 0",
				"ext1 SYN-RECEIVED->ESTABLISHED",
				"ext1 in P. ESTABLISHED mpc none len 5",
				"ext1 out .",
			}
			if mode == tcp.CookiesAlways {
				want = []string{
					"factory S mpc SYN 0/0 -> ext1",
					"ext1 out S.",
					"factory . mpc ACK a/b -> ext2",
					"ext2 CLOSED->SYN-RECEIVED",
					"ext2 in . SYN-RECEIVED mpc ACK a/b len 0",
					"ext2 SYN-RECEIVED->ESTABLISHED",
					"ext2 in P. ESTABLISHED mpc none len 5",
					"ext2 out .",
				}
				if st := p.ln.Stats(); st.CookiesValid != 1 {
					t.Fatalf("no cookie handshake: %+v", st)
				}
			}
			if strings.Join(log, "\n") != strings.Join(want, "\n") {
				t.Fatalf("hooks:\n\t%s\nwant:\n\t%s", strings.Join(log, "\n\t"), strings.Join(want, "\n\t"))
			}
			buf := make([]byte, 16)
			if n, _ := p.b.Read(buf); string(buf[:n]) != "hello" {
				t.Fatalf("server read %q", buf[:n])
			}
		})
	}
}

// TestCookieAckVerdicts: the factory's verdict on a cookie ACK is honoured:
// VerdictDrop ignores the ACK without answering it (the peer retransmits),
// VerdictReset refuses it with a RST. NewCookieExtension, when set, is the
// factory for SYNs answered with a cookie.
func TestCookieAckVerdicts(t *testing.T) {
	clock := simnet.New(1).Clock
	var cookieCalls, calls int
	verdict := tcp.VerdictDrop
	ln, _ := tcp.NewListener(tcp.ListenerConfig{Cookies: tcp.CookiesAlways, Config: tcp.Config{Clock: clock},
		NewExtension: func(tcp.FlowID, *tcp.Segment) (tcp.Extension, tcp.Verdict) {
			calls++
			return nil, verdict
		},
		NewCookieExtension: func(tcp.FlowID, *tcp.Segment) (tcp.Extension, tcp.Verdict) {
			cookieCalls++
			return nil, tcp.VerdictAccept
		}})
	var out []tcp.OutSegment
	w := tcp.OutputFunc(func(s *tcp.OutSegment) { out = append(out, *s) })
	flow := tcp.FlowID{LocalAddr: addrB, RemoteAddr: addrA, LocalPort: 80, RemotePort: 1234}
	ln.HandleSegment(flow, &tcp.Segment{Seq: 7, Flags: tcp.FlagSYN}, w)
	if cookieCalls != 1 || calls != 0 || len(out) != 1 {
		t.Fatalf("cookie SYN: NewCookieExtension %d calls, NewExtension %d, out %+v", cookieCalls, calls, out)
	}
	ack := &tcp.Segment{Seq: 8, Ack: out[0].Seq + 1, Flags: tcp.FlagACK, Window: 100}
	out = nil
	if ep := ln.HandleSegment(flow, ack, w); ep != nil || len(out) != 0 || calls != 1 {
		t.Fatalf("VerdictDrop: endpoint %v, out %+v, calls %d", ep, out, calls)
	}
	verdict = tcp.VerdictReset
	if ep := ln.HandleSegment(flow, ack, w); ep != nil || len(out) != 1 || out[0].Flags&tcp.FlagRST == 0 {
		t.Fatalf("VerdictReset: endpoint %v, out %+v", ep, out)
	}
	verdict = tcp.VerdictAccept
	if ep := ln.HandleSegment(flow, ack, w); ep == nil || ep.State() != tcp.StateEstablished {
		t.Fatal("VerdictAccept: no endpoint")
	}
}
