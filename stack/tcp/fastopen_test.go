package tcp_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// synDataPair dials with data in the SYN, the listener accepting it or not.
func synDataPair(t *testing.T, accept bool, synData []byte, ab simnet.LinkConfig) *pair {
	t.Helper()
	p := &pair{t: t, net: simnet.New(3)}
	p.ha, p.hb = p.net.AddHost(addrA), p.net.AddHost(addrB)
	p.ab, p.ba = p.net.Connect(addrA, addrB, ab, simnet.LinkConfig{Delay: 5 * time.Millisecond})
	ln, err := p.hb.Listen(port, tcp.ListenerConfig{AcceptSynData: accept})
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	if p.a, err = p.ha.DialData(0, addrB, port, tcp.Config{ISS: 0xffff_fff0}, synData); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSynDataAccepted: the SYN's data reaches the server as the prefix of
// the stream, the SYN-ACK acknowledges it, and the stream that follows
// (both ways, across a sequence-number wrap) is intact.
func TestSynDataAccepted(t *testing.T) {
	hello := []byte("CONNECT 10.0.0.9:443 with the first request bytes")
	var synLens []int
	ab := simnet.LinkConfig{Delay: 5 * time.Millisecond, Drop: func(pk *simnet.Packet) bool {
		if h := header.TCP(pk.Bytes); h.Flags()&header.TCPFlagSyn != 0 {
			synLens = append(synLens, len(pk.Bytes)-int(h.DataOffset()))
			var o options.TCPOptions
			if err := options.ParseTCPOptions(h.Options(), &o); err != nil || !o.FastOpen || o.FastOpenCookieLen != 0 {
				t.Errorf("SYN options %+v (%v): want a Fast Open cookie request", o, err)
			}
		}
		return false
	}}
	p := synDataPair(t, true, hello, ab)
	p.establish()
	if got := p.b.SynData(); !bytes.Equal(got, hello) {
		t.Fatalf("server SYN data %q, want %q", got, hello)
	}
	if p.b.SynData() != nil {
		t.Fatal("SynData returned the data twice")
	}
	if n := p.a.SynDataAccepted(); n != len(hello) {
		t.Fatalf("client: %d bytes accepted, want %d", n, len(hello))
	}
	if p.a.Info().SynData != len(hello) || p.b.Info().SynData != len(hello) || p.ln.Stats().SynData != 1 {
		t.Fatalf("counters: client %d server %d listener %d", p.a.Info().SynData, p.b.Info().SynData, p.ln.Stats().SynData)
	}
	if len(synLens) != 1 || synLens[0] != len(hello) {
		t.Fatalf("SYN payloads %v", synLens)
	}
	up := randBytes(1, 300_000)
	got, _ := p.transfer(p.a, p.b, up, false, time.Minute)
	sameData(t, up, got)
	down := randBytes(2, 200_000)
	got, _ = p.transfer(p.b, p.a, down, true, time.Minute)
	sameData(t, down, got)
}

// TestSynDataIgnored: a listener that does not accept SYN data
// acknowledges only the SYN; the client learns that nothing was delivered
// and the server sees no prefix.
func TestSynDataIgnored(t *testing.T) {
	p := synDataPair(t, false, []byte("hello"), simnet.LinkConfig{Delay: 5 * time.Millisecond})
	p.establish()
	if n := p.a.SynDataAccepted(); n != 0 {
		t.Fatalf("accepted %d", n)
	}
	if p.b.SynData() != nil || p.ln.Stats().SynData != 0 {
		t.Fatal("listener kept SYN data")
	}
	data := randBytes(3, 50_000)
	got, _ := p.transfer(p.a, p.b, data, true, time.Minute)
	sameData(t, data, got)
}

// TestSynDataRetransmitWithout: when the first SYN is lost, its
// retransmission carries no data (a middlebox may drop SYNs with data), so
// nothing is accepted and the stream starts at the usual place.
func TestSynDataRetransmitWithout(t *testing.T) {
	var synLens []int
	ab := simnet.LinkConfig{Delay: 5 * time.Millisecond, Drop: func(pk *simnet.Packet) bool {
		if h := header.TCP(pk.Bytes); h.Flags()&header.TCPFlagSyn != 0 {
			synLens = append(synLens, len(pk.Bytes)-int(h.DataOffset()))
			return len(synLens) == 1
		}
		return false
	}}
	p := synDataPair(t, true, []byte("lost with its SYN"), ab)
	p.establish()
	if len(synLens) != 2 || synLens[0] == 0 || synLens[1] != 0 {
		t.Fatalf("SYN payload lengths %v, want [17 0]", synLens)
	}
	if p.a.SynDataAccepted() != 0 || p.b.SynData() != nil {
		t.Fatal("data of a lost SYN counted as accepted")
	}
	data := randBytes(4, 20_000)
	got, _ := p.transfer(p.a, p.b, data, true, time.Minute)
	sameData(t, data, got)
}

// TestSynDataPartialAck drives the client by hand: a SYN-ACK that
// acknowledges part of the SYN data moves ISS past it; one that
// acknowledges more than was sent is refused with a RST.
func TestSynDataPartialAck(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	if err := r.ep.ConnectData([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	syn := r.take()
	if len(syn) != 1 || string(syn[0].Payload) != "0123456789" || !syn[0].Opts.FastOpen || syn[0].Seq != localISS {
		t.Fatalf("SYN %+v", syn)
	}
	synack := func(ack uint32) tcp.Segment {
		return tcp.Segment{Seq: r.peerISS, Ack: seqnum.Value(localISS + 1 + ack), Flags: tcp.FlagSYN | tcp.FlagACK, Window: 65535,
			Options: options.TCPOptions{HasMSS: true, MSS: 1000}}
	}
	r.in(synack(11)) // beyond what the SYN carried
	if out := r.take(); len(out) != 1 || out[0].Flags != tcp.FlagRST || r.ep.State() != tcp.StateSynSent {
		t.Fatalf("over-acknowledging SYN-ACK: %+v, state %v", out, r.ep.State())
	}
	r.in(synack(3))
	if r.ep.State() != tcp.StateEstablished || r.ep.SynDataAccepted() != 3 {
		t.Fatalf("state %v accepted %d", r.ep.State(), r.ep.SynDataAccepted())
	}
	ack := r.take()
	if len(ack) != 1 || ack[0].Seq != localISS+4 || ack[0].Ack != r.peerISS+1 {
		t.Fatalf("third ACK %+v", ack)
	}
	// The caller sends the unaccepted rest; it follows the accepted bytes.
	if _, err := r.ep.Write([]byte("3456789")); err != nil {
		t.Fatal(err)
	}
	out := r.take()
	if len(out) != 1 || out[0].Seq != localISS+4 || string(out[0].Payload) != "3456789" {
		t.Fatalf("data %+v", out)
	}
}

// TestListenerSynDataBounds: data in a SYN answered with a cookie, in a
// SYN that also carries FIN, or beyond MaxSynData is not kept.
func TestListenerSynDataBounds(t *testing.T) {
	clock := simnet.New(1).Clock
	var out []tcp.OutSegment
	w := tcp.OutputFunc(func(s *tcp.OutSegment) { out = append(out, *s) })
	flow := tcp.FlowID{LocalAddr: addrB, RemoteAddr: addrA, LocalPort: 80, RemotePort: 1234}

	ln, _ := tcp.NewListener(tcp.ListenerConfig{Cookies: tcp.CookiesAlways, AcceptSynData: true, Config: tcp.Config{Clock: clock}})
	ln.HandleSegment(flow, &tcp.Segment{Seq: 7, Flags: tcp.FlagSYN, Payload: []byte("data")}, w)
	if len(out) != 1 || out[0].Ack != 8 || ln.Stats().SynData != 0 {
		t.Fatalf("cookie SYN-ACK %+v stats %+v", out, ln.Stats())
	}

	out = nil
	ln, _ = tcp.NewListener(tcp.ListenerConfig{AcceptSynData: true, Config: tcp.Config{Clock: clock}})
	ep := ln.HandleSegment(flow, &tcp.Segment{Seq: 7, Flags: tcp.FlagSYN | tcp.FlagFIN, Payload: []byte("data")}, w)
	if ep == nil || len(out) != 1 || out[0].Ack != 8 || ep.SynData() != nil {
		t.Fatalf("SYN+FIN with data: SYN-ACK %+v", out)
	}

	out = nil
	flow.RemotePort++
	big := make([]byte, tcp.MaxSynData+100)
	ep = ln.HandleSegment(flow, &tcp.Segment{Seq: 7, Flags: tcp.FlagSYN, Payload: big}, w)
	if ep == nil || len(out) != 1 || out[0].Ack != 8+tcp.MaxSynData || len(ep.SynData()) != tcp.MaxSynData {
		t.Fatalf("oversized SYN data: SYN-ACK %+v", out)
	}
}
