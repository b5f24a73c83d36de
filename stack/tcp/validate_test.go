package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

func (r *raw) data(seq seqnum.Value, p []byte, tsVal uint32) tcp.Segment {
	return tcp.Segment{Seq: seq, Ack: localISS + 1, Flags: tcp.FlagACK, Window: 65535, Payload: p,
		Options: options.TCPOptions{HasTimestamp: true, TSVal: tsVal, TSEcr: 1}}
}

// TestPAWS: a segment whose timestamp is older than TS.Recent is dropped
// and answered with an ACK (RFC 7323 §5.3); a fresh one is accepted.
func TestPAWS(t *testing.T) {
	r := newRaw(t, tcp.Config{DelayedAck: -1})
	r.establish()
	r.in(r.data(r.peerNxt, []byte("abcd"), 500))
	r.peerNxt += 4
	r.take()
	old := r.data(r.peerNxt, []byte("efgh"), 400) // older than 500
	r.in(old)
	out := r.take()
	i := r.ep.Info()
	if i.PAWSDrops != 1 || i.BytesReceived != 4 || len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("PAWS: info %+v out %+v", i, out)
	}
	r.in(r.data(r.peerNxt, []byte("efgh"), 501))
	if i := r.ep.Info(); i.BytesReceived != 8 {
		t.Fatalf("fresh segment not accepted: %+v", i)
	}
	buf := make([]byte, 16)
	n, _ := r.ep.Read(buf)
	if string(buf[:n]) != "abcdefgh" {
		t.Fatalf("read %q", buf[:n])
	}
}

// TestRSTValidation covers RFC 5961 §3: out-of-window RSTs are ignored,
// in-window ones draw a challenge ACK, an exact one resets.
func TestRSTValidation(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	rst := func(seq seqnum.Value) tcp.Segment { return tcp.Segment{Seq: seq, Flags: tcp.FlagRST} }
	r.in(rst(r.peerNxt + 1<<30)) // far out of window
	if out := r.take(); len(out) != 0 || r.ep.State() != tcp.StateEstablished {
		t.Fatalf("out-of-window RST: %v %+v", r.ep.State(), out)
	}
	r.in(rst(r.peerNxt + 1000)) // in window, not exact
	out := r.take()
	if r.ep.State() != tcp.StateEstablished || len(out) != 1 || out[0].Flags != tcp.FlagACK || out[0].Ack != r.peerNxt {
		t.Fatalf("in-window RST: %v %+v", r.ep.State(), out)
	}
	if r.ep.Info().ChallengeAcks != 1 {
		t.Fatal("challenge ACK not counted")
	}
	r.in(rst(r.peerNxt))
	if r.ep.State() != tcp.StateClosed || r.ep.Err() != tcp.ErrConnectionReset {
		t.Fatalf("exact RST: %v %v", r.ep.State(), r.ep.Err())
	}
	if _, err := r.ep.Write([]byte("x")); err != tcp.ErrConnectionReset {
		t.Fatalf("write after reset: %v", err)
	}
}

// TestChallengeACKForSYN: a SYN on an established connection gets a
// challenge ACK and changes nothing (RFC 5961 §4); the rate limit holds.
func TestChallengeACKForSYN(t *testing.T) {
	r := newRaw(t, tcp.Config{ChallengeAckLimit: 3})
	r.establish()
	for i := 0; i < 10; i++ {
		r.in(tcp.Segment{Seq: r.peerNxt + 5, Flags: tcp.FlagSYN, Options: options.TCPOptions{HasTimestamp: true, TSVal: 1000}})
	}
	out := r.take()
	if r.ep.State() != tcp.StateEstablished || len(out) != 3 || r.ep.Info().ChallengeAcks != 3 {
		t.Fatalf("state %v, %d replies, info %+v", r.ep.State(), len(out), r.ep.Info())
	}
	for _, s := range out {
		if s.Flags != tcp.FlagACK || s.Ack != r.peerNxt {
			t.Fatalf("challenge ACK %+v", s)
		}
	}
	r.advance(time.Second + time.Millisecond)
	r.in(tcp.Segment{Seq: r.peerNxt + 5, Flags: tcp.FlagSYN, Options: options.TCPOptions{HasTimestamp: true, TSVal: 1000}})
	if len(r.take()) != 1 {
		t.Fatal("rate limit not reset after a second")
	}
}

// TestAckOfUnsentData: an ACK beyond SND.NXT is dropped with an ACK
// (RFC 9293 §3.10.7.4, RFC 5961 §5.2) and its data is not accepted.
func TestAckOfUnsentData(t *testing.T) {
	r := newRaw(t, tcp.Config{DelayedAck: -1})
	r.establish()
	s := r.data(r.peerNxt, []byte("data"), 200)
	s.Ack = localISS + 1 + 5000
	r.in(s)
	out := r.take()
	if i := r.ep.Info(); i.BytesReceived != 0 || len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("info %+v out %+v", i, out)
	}
}

// TestPacketTooBig: after a PTB the outstanding data is retransmitted in
// segments that fit the new MSS, without a congestion response.
func TestPacketTooBig(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	data := randBytes(3, 3000)
	r.ep.Write(data)
	first := r.take()
	if len(first[0].Payload) != 988 {
		t.Fatalf("first segment %d bytes", len(first[0].Payload))
	}
	cwnd := r.ep.Info().Cwnd
	r.ep.HandlePacketTooBig(600)
	var got []byte
	for _, s := range r.take() {
		if len(s.Payload)+12 > 600 {
			t.Fatalf("segment of %d bytes after PTB to 600", len(s.Payload))
		}
		got = append(got, s.Payload...)
	}
	if len(got) == 0 || string(got) != string(data[:len(got)]) {
		t.Fatalf("retransmitted %d bytes", len(got))
	}
	if i := r.ep.Info(); i.SndMSS != 588 || i.Cwnd < cwnd*588/988-1 {
		t.Fatalf("after PTB: %+v (cwnd before %d)", i, cwnd)
	}
}

// TestZeroWindowProbes: with the peer's window closed the sender probes
// with backoff, and sends as soon as an ACK opens the window.
func TestZeroWindowProbes(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	z := r.ack(localISS + 1)
	z.Window = 0
	r.in(z)
	r.ep.Write([]byte("blocked"))
	if out := r.take(); len(out) != 0 {
		t.Fatalf("sent into a zero window: %+v", out)
	}
	var probes []time.Duration
	start := r.clock.NowMonotonic()
	for i := 0; i < 100; i++ {
		r.advance(50 * time.Millisecond)
		for _, s := range r.take() {
			if s.Seq != localISS || len(s.Payload) != 0 {
				t.Fatalf("probe %+v", s)
			}
			probes = append(probes, r.clock.NowMonotonic().Sub(start))
		}
	}
	if len(probes) < 3 || probes[2]-probes[1] < probes[1]-probes[0] {
		t.Fatalf("probes at %v: no backoff", probes)
	}
	r.in(r.ack(localISS + 1)) // window reopens
	out := r.take()
	if len(out) != 1 || string(out[0].Payload) != "blocked" {
		t.Fatalf("after window opened: %+v", out)
	}
	if r.ep.Info().ZeroWindowProbes != uint64(len(probes)) {
		t.Fatal("probe counter")
	}
}

// TestDelayedAck: the first data of the connection is ACKed at once
// (quick-ACK mode, as Linux's, for a sender in slow start); after that,
// one segment is ACKed after the delayed-ACK timeout, two full segments at
// once, out-of-order data immediately.
func TestDelayedAck(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	seg := randBytes(4, 1448)
	r.in(r.data(r.peerNxt, seg[:100], 190))
	r.peerNxt += 100
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("first data not ACKed at once: %+v", summary(out))
	}
	ts := r.pastQuickAck(191)
	r.in(r.data(r.peerNxt, seg[:100], ts+0))
	r.peerNxt += 100
	if len(r.take()) != 0 {
		t.Fatal("small segment ACKed at once")
	}
	r.advance(39 * time.Millisecond)
	if len(r.take()) != 0 {
		t.Fatal("ACKed before 40 ms")
	}
	r.advance(2 * time.Millisecond)
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("delayed ACK: %+v", out)
	}
	r.in(r.data(r.peerNxt, seg, ts+1))
	r.peerNxt += 1448
	if len(r.take()) != 0 {
		t.Fatal("first full segment ACKed at once")
	}
	r.in(r.data(r.peerNxt, seg, ts+2))
	r.peerNxt += 1448
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("second full segment: %+v", out)
	}
	r.in(r.data(r.peerNxt+1448, seg, ts+3))
	out := r.take()
	if len(out) != 1 || out[0].Ack != r.peerNxt || out[0].Opts.NumSACKBlocks != 1 ||
		out[0].Opts.SACKBlocks[0] != (options.SACKBlock{Start: uint32(r.peerNxt + 1448), End: uint32(r.peerNxt + 2896)}) {
		t.Fatalf("out-of-order: %+v", out)
	}
}

// TestKeepalive: probes after Idle, every Interval, then ErrTimeout after
// Count unanswered ones; an answer resets the count.
func TestKeepalive(t *testing.T) {
	r := newRaw(t, tcp.Config{Keepalive: tcp.Keepalive{Idle: 10 * time.Second, Interval: time.Second, Count: 3}})
	r.establish()
	r.advance(9 * time.Second)
	if len(r.take()) != 0 {
		t.Fatal("probe before idle time")
	}
	r.advance(1 * time.Second)
	out := r.take()
	if len(out) != 1 || out[0].Seq != localISS || out[0].Flags != tcp.FlagACK {
		t.Fatalf("first probe %+v", out)
	}
	r.in(r.ack(localISS + 1)) // answered
	r.advance(9 * time.Second)
	if len(r.take()) != 0 {
		t.Fatal("probe before idle time after an answer")
	}
	r.advance(1*time.Second + 3*time.Second)
	if n := len(r.take()); n != 3 {
		t.Fatalf("%d probes, want 3", n)
	}
	if r.ep.State() != tcp.StateClosed || r.ep.Err() != tcp.ErrTimeout {
		t.Fatalf("state %v err %v", r.ep.State(), r.ep.Err())
	}
	if i := r.ep.Info(); i.KeepaliveProbes != 4 {
		t.Fatalf("probes %d", i.KeepaliveProbes)
	}
}
