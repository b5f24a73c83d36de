package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

func closePair(t *testing.T) *pair {
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond}
	cfg := tcp.Config{TimeWait: 2 * time.Second}
	p := newPair(t, pairOpts{ab: link, ba: link, client: cfg, server: cfg})
	p.establish()
	return p
}

// TestHalfClose: each side closes its write side while the other keeps
// sending (RFC 9293 §3.6); data after the FIN still flows the other way.
func TestHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		p := closePair(t)
		first, second := p.a, p.b
		if !clientFirst {
			first, second = p.b, p.a
		}
		first.CloseWrite()
		p.net.RunFor(100 * time.Millisecond)
		if first.State() != tcp.StateFinWait2 || second.State() != tcp.StateCloseWait {
			t.Fatalf("after half-close: %v %v", first.State(), second.State())
		}
		if _, err := first.Write([]byte("x")); err != tcp.ErrClosedForSend {
			t.Fatalf("write after CloseWrite: %v", err)
		}
		// EOF on the second side, data still flows towards the first.
		if n, err := second.Read(make([]byte, 10)); n != 0 || err != nil {
			t.Fatalf("read at EOF: %d %v", n, err)
		}
		data := randBytes(5, 100_000)
		got, _ := p.transfer(second, first, data, true, time.Minute)
		sameData(t, data, got)
		if !p.net.RunUntil(func() bool { return first.State() == tcp.StateTimeWait && second.State() == tcp.StateClosed }, time.Second) {
			t.Fatalf("final: %v %v", first.State(), second.State())
		}
		// TIME-WAIT lasts Config.TimeWait (2 s here).
		tw := p.net.Now()
		p.net.RunUntil(func() bool { return first.State() == tcp.StateClosed }, 10*time.Second)
		if d := p.net.Now().Sub(tw); d < 1900*time.Millisecond || d > 2*time.Second {
			t.Fatalf("TIME-WAIT lasted %v", d)
		}
		if first.Err() != nil || second.Err() != nil {
			t.Fatalf("errors %v %v", first.Err(), second.Err())
		}
	}
}

// TestSimultaneousClose: both sides close at once and go through CLOSING
// to TIME-WAIT (RFC 9293 §3.6 figure 13).
func TestSimultaneousClose(t *testing.T) {
	p := closePair(t)
	var saw [2]bool
	p.a.CloseWrite()
	p.b.CloseWrite()
	ok := p.net.RunUntil(func() bool {
		saw[0] = saw[0] || p.a.State() == tcp.StateClosing
		saw[1] = saw[1] || p.b.State() == tcp.StateClosing
		return p.a.State() == tcp.StateTimeWait && p.b.State() == tcp.StateTimeWait
	}, 5*time.Second)
	if !ok || !saw[0] || !saw[1] {
		t.Fatalf("states %v %v, saw CLOSING %v", p.a.State(), p.b.State(), saw)
	}
	p.net.RunFor(3 * time.Second)
	if p.a.State() != tcp.StateClosed || p.b.State() != tcp.StateClosed {
		t.Fatalf("after TIME-WAIT: %v %v", p.a.State(), p.b.State())
	}
}

// TestTimeWaitAcksRetransmittedFIN: a FIN retransmitted into TIME-WAIT is
// ACKed and restarts the timer.
func TestTimeWaitAcksRetransmittedFIN(t *testing.T) {
	p := closePair(t)
	drop := 0
	p.a.CloseWrite()
	p.net.RunFor(100 * time.Millisecond)
	// Drop the next segment from the client: the ACK of the server's FIN.
	p.ab.Config.Drop = func(*simnet.Packet) bool { drop++; return drop == 1 }
	p.b.CloseWrite()
	p.net.RunUntil(func() bool { return p.a.State() == tcp.StateTimeWait }, time.Second)
	p.net.RunUntil(func() bool { return p.b.State() == tcp.StateClosed }, 5*time.Second)
	if p.b.State() != tcp.StateClosed || p.b.Err() != nil || drop < 2 {
		t.Fatalf("server %v %v, client segments after FIN %d", p.b.State(), p.b.Err(), drop)
	}
	if p.a.State() != tcp.StateTimeWait {
		t.Fatalf("client %v", p.a.State())
	}
}

// TestCloseWithUnreadDataResets: Close with unread data sends a RST
// (RFC 2525 §2.17) and the peer sees ErrConnectionReset.
func TestCloseWithUnreadDataResets(t *testing.T) {
	p := closePair(t)
	p.a.Write([]byte("unread"))
	p.net.RunFor(100 * time.Millisecond)
	p.b.Close()
	p.net.RunFor(100 * time.Millisecond)
	if p.a.State() != tcp.StateClosed || p.a.Err() != tcp.ErrConnectionReset || p.b.Err() != tcp.ErrAborted {
		t.Fatalf("client %v %v server %v", p.a.State(), p.a.Err(), p.b.Err())
	}
}

// TestDataAfterClose: once the server closed (no unread data), new data
// from the client is answered with a RST (RFC 2525 §2.17, AbortOnData),
// but a retransmission of data it already received (its ACK and FIN were
// lost, so the client's timer re-sent the data) is acknowledged as usual,
// as Linux does (the segment is unacceptable, RFC 9293 §3.10.7.4): the
// client's data was delivered and nothing is reset.
func TestDataAfterClose(t *testing.T) {
	for _, retransmission := range []bool{false, true} {
		t.Run(map[bool]string{false: "new-data", true: "retransmission"}[retransmission], func(t *testing.T) {
			p := closePair(t)
			blackhole := false
			dropped, resent := 0, 0
			p.net.Tap = func(pk *simnet.Packet) bool {
				payload := len(pk.Bytes) > int(pk.Bytes[12]>>4)*4
				if pk.Src == addrA && payload && blackhole {
					resent++
				}
				if blackhole && pk.Src == addrB {
					dropped++
					return false
				}
				return true
			}
			blackhole = retransmission
			p.a.Write([]byte("first"))
			p.net.RunFor(15 * time.Millisecond) // delivered; any answer lost
			buf := make([]byte, 16)
			if n, _ := p.b.Read(buf); string(buf[:n]) != "first" {
				t.Fatalf("server read %q", buf[:n])
			}
			resent = 0
			p.b.Close()
			if retransmission {
				// Everything the server sends is lost until the client's
				// retransmission timer has re-sent the data.
				p.net.RunFor(2 * time.Second)
				blackhole = false
			} else {
				p.net.RunFor(100 * time.Millisecond)
				p.a.Write([]byte("new"))
			}
			p.net.RunFor(5 * time.Second)
			info := p.b.Info()
			if retransmission {
				if dropped == 0 || resent == 0 {
					t.Fatalf("%d segments of the server dropped, %d data segments re-sent after its Close: not the case under test", dropped, resent)
				}
				if p.a.Err() != nil || p.b.Err() != nil || info.AbortOnData != 0 {
					t.Fatalf("client err %v, server err %v, AbortOnData %d: a retransmission reset the connection", p.a.Err(), p.b.Err(), info.AbortOnData)
				}
				if st := p.a.State(); st != tcp.StateCloseWait {
					t.Fatalf("client %v, want CLOSE-WAIT (the server's FIN arrived, its data acknowledged)", st)
				}
				return
			}
			if p.a.Err() != tcp.ErrConnectionReset || p.b.Err() != tcp.ErrAborted || info.AbortOnData != 1 {
				t.Fatalf("client err %v, server err %v, AbortOnData %d: want a reset for new data", p.a.Err(), p.b.Err(), info.AbortOnData)
			}
		})
	}
}
