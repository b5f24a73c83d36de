package tcp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// Short connections: connect, 1 KiB, close, as the benchmark does
// between the engine and Linux, both ends being our TCP here.

// shortExchange runs one connection over p: the client sends 1 KiB and
// closes; the server reads to EOF and closes at once. It returns the time
// from Connect until both ends are done (client in TIME-WAIT, server
// CLOSED) and the segments each sent after the client's FIN.
func shortExchange(t *testing.T, p *pair) (time.Duration, []string) {
	t.Helper()
	return shortExchangeTB(t, p)
}

func shortExchangeTB(t testing.TB, p *pair) (time.Duration, []string) {
	t.Helper()
	start := p.net.Now()
	var afterFIN []string
	clientFIN := false
	p.hb.Ingress = func(pk *simnet.Packet) bool {
		if pk.Seg.Flags&tcp.FlagFIN != 0 {
			clientFIN = true
		}
		return true
	}
	var seg tcp.Segment
	p.hb.Egress = func(pk *simnet.Packet) bool {
		if clientFIN {
			if _, _, err := tcp.ParseSegment(pk.Bytes, &seg); err == nil {
				afterFIN = append(afterFIN, fmt.Sprintf("%v len %d", seg.Flags, len(seg.Payload)))
			}
		}
		return true
	}
	data := randBytes(60, 1024)
	wrote, serverClosed := false, false
	buf := make([]byte, 4096)
	var got int
	ok := p.net.RunUntil(func() bool {
		if !wrote && p.a.State() == tcp.StateEstablished {
			p.a.Write(data)
			p.a.Close()
			wrote = true
		}
		if p.b == nil {
			p.b = p.hb.Accept(port)
		}
		if p.b != nil && !serverClosed {
			for {
				n, err := p.b.Read(buf)
				got += n
				if n == 0 {
					if err == nil { // EOF
						p.b.Close()
						serverClosed = true
					}
					break
				}
			}
		}
		return serverClosed && p.b.State() == tcp.StateClosed && p.a.State() == tcp.StateTimeWait
	}, 5*time.Second)
	if !ok || got != len(data) {
		t.Fatalf("exchange incomplete: read %d, client %v server %v", got, p.a.State(), p.b)
	}
	return p.net.Now().Sub(start), afterFIN
}

// TestShortConnectionFINCarriesAck: the server's application closes as soon
// as it reads EOF, so the server's FIN acknowledges the client's: one
// segment, not a pure ACK followed by a FIN (which a Linux client in
// FIN-WAIT-1 may process concurrently and lose, leaving the FIN to the
// retransmission timer). The whole exchange takes three round trips
// (handshake, data and FIN, FIN and ACK), with no delayed-ACK wait.
func TestShortConnectionFINCarriesAck(t *testing.T) {
	link := simnet.LinkConfig{Delay: 500 * time.Microsecond}
	p := newPair(t, pairOpts{ab: link, ba: link})
	d, after := shortExchange(t, p)
	t.Logf("connect + 1 KiB + close: %v; server segments after the client's FIN: %v", d, after)
	if len(after) != 1 || after[0] != fmt.Sprintf("%v len 0", tcp.FlagFIN|tcp.FlagACK) {
		t.Errorf("server answered the client's FIN with %v, want one FIN+ACK", after)
	}
	if d > 3*time.Millisecond+100*time.Microsecond {
		t.Errorf("exchange took %v, want 3 RTTs of 1 ms", d)
	}
	if i := p.a.Info(); i.Retransmits != 0 || p.b.Info().Retransmits != 0 {
		t.Errorf("retransmissions: client %d server %d", i.Retransmits, p.b.Info().Retransmits)
	}
}

// TestFINAckNotDelayedForever: a peer's FIN whose application does not
// close is still acknowledged, after the delayed-ACK timeout.
func TestFINAckNotDelayedForever(t *testing.T) {
	link := simnet.LinkConfig{Delay: 500 * time.Microsecond}
	p := newPair(t, pairOpts{ab: link, ba: link})
	p.establish()
	p.a.Write([]byte("hello"))
	p.a.CloseWrite()
	start := p.net.Now()
	if !p.net.RunUntil(func() bool { return p.a.State() == tcp.StateFinWait2 }, time.Second) {
		t.Fatalf("client %v: FIN not acknowledged", p.a.State())
	}
	if d := p.net.Now().Sub(start); d > tcp.DefaultDelayedAck+2*time.Millisecond {
		t.Fatalf("FIN acknowledged after %v", d)
	}
	if p.b.State() != tcp.StateCloseWait || p.a.Info().Retransmits != 0 {
		t.Fatalf("server %v, client %+v", p.b.State(), p.a.Info())
	}
}

// TestQuickAckAtStart: at the start of a connection the receiver
// acknowledges data at once (Linux's quick-ACK mode), so a sender whose
// second small write waits behind Nagle's algorithm for the first one's
// ACK gets it after one round trip, not after the 40 ms delayed-ACK
// timeout.
func TestQuickAckAtStart(t *testing.T) {
	link := simnet.LinkConfig{Delay: 500 * time.Microsecond}
	p := newPair(t, pairOpts{ab: link, ba: link})
	p.establish()
	start := p.net.Now()
	p.a.Write([]byte("first"))
	p.a.Write([]byte("second")) // held by Nagle until "first" is ACKed
	// (The server does not read meanwhile: a read would send a window
	// update, the handshake's window being unscaled.)
	if !p.net.RunUntil(func() bool { return p.b.Readable() == len("firstsecond") }, time.Second) {
		t.Fatalf("%d bytes readable", p.b.Readable())
	}
	if d := p.net.Now().Sub(start); d > 3*time.Millisecond {
		t.Errorf("two small writes delivered in %v, want about 2 RTTs of 1 ms", d)
	}
}
