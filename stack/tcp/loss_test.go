package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// TestSACKRecoveryRetransmitsOnlyHoles loses segments 3 and 6 of a flight
// of ten and checks RFC 6675 recovery retransmits exactly those two.
func TestSACKRecoveryRetransmitsOnlyHoles(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, Congestion: "newreno"})
	r.establish()
	const mss = 1000 - 12
	data := randBytes(1, 10*mss)
	if n, err := r.ep.Write(data); n != len(data) || err != nil {
		t.Fatal(n, err)
	}
	flight := r.take()
	if len(flight) != 10 {
		t.Fatalf("initial flight %d segments, want 10 (IW10)", len(flight))
	}
	start := func(i int) seqnum.Value { return seqnum.Value(localISS + 1 + i*mss) }
	blk := func(a, b int) options.SACKBlock {
		return options.SACKBlock{Start: uint32(start(a)), End: uint32(start(b))}
	}
	r.in(r.ack(start(3)))
	r.in(r.ack(start(3), blk(4, 5)))
	r.in(r.ack(start(3), blk(4, 6)))
	r.in(r.ack(start(3), blk(7, 8), blk(4, 6)))
	r.in(r.ack(start(3), blk(7, 9), blk(4, 6)))
	r.in(r.ack(start(3), blk(7, 10), blk(4, 6)))
	var got []seqnum.Value
	for _, s := range r.takeData() {
		if !s.Retx {
			t.Errorf("new data sent during recovery with no new data queued: %+v", s.Seq)
		}
		got = append(got, s.Seq)
	}
	if len(got) != 2 || got[0] != start(3) || got[1] != start(6) {
		t.Fatalf("retransmitted %v, want [%v %v]", got, start(3), start(6))
	}
	r.in(r.ack(start(10)))
	if i := r.ep.Info(); i.BytesRetrans != 2*mss || i.InRecovery || i.RTOs != 0 || i.FastRecoveries != 1 {
		t.Fatalf("info %+v", i)
	}
	r.advance(5 * time.Second)
	if n := len(r.take()); n != 0 {
		t.Fatalf("%d segments after everything was acked", n)
	}
}

// TestRTOBackoff checks retransmission intervals double from the minimum
// RTO and the connection dies after DataRetries.
func TestRTOBackoff(t *testing.T) {
	r := newRaw(t, tcp.Config{DataRetries: 5})
	r.establish()
	r.ep.Write([]byte("hello"))
	r.take()
	var times []time.Duration
	start := r.clock.NowMonotonic()
	for i := 0; i < 400 && r.ep.State() != tcp.StateClosed; i++ {
		r.advance(50 * time.Millisecond)
		for _, s := range r.take() {
			if s.Retx {
				times = append(times, r.clock.NowMonotonic().Sub(start))
			}
		}
	}
	// SRTT ~0 from the handshake: RTO = 200 ms, then 400, 800, 1600, 3200.
	want := []time.Duration{200, 600, 1400, 3000, 6200}
	if len(times) != len(want) {
		t.Fatalf("retransmissions at %v", times)
	}
	for i, w := range want {
		if d := times[i] - w*time.Millisecond; d < 0 || d > 50*time.Millisecond {
			t.Fatalf("retransmission %d at %v, want %vms", i, times[i], w)
		}
	}
	if r.ep.Err() != tcp.ErrTimeout || r.ep.Info().RTOs != 6 {
		t.Fatalf("err %v info %+v", r.ep.Err(), r.ep.Info())
	}
}

// TestRTOThenRecovery: after an RTO the whole flight is retransmitted in
// slow start, skipping what the peer SACKed.
func TestRTOSkipsSACKed(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	const mss = 988
	r.ep.Write(randBytes(2, 4*mss))
	r.take()
	start := func(i int) seqnum.Value { return seqnum.Value(localISS + 1 + i*mss) }
	// Segment 2 SACKed (only one dupack, no fast retransmit).
	r.in(r.ack(start(0), options.SACKBlock{Start: uint32(start(2)), End: uint32(start(3))}))
	r.take()
	r.advance(250 * time.Millisecond) // RTO
	var seqs []seqnum.Value
	for i := 0; i < 4; i++ {
		for _, s := range r.take() {
			if s.Retx {
				seqs = append(seqs, s.Seq)
			}
		}
		// ACK cumulatively what was retransmitted so far.
		r.in(r.ack(seqs[len(seqs)-1] + mss))
	}
	want := []seqnum.Value{start(0), start(1), start(3)}
	if len(seqs) < 3 || seqs[0] != want[0] || seqs[1] != want[1] || seqs[2] != want[2] {
		t.Fatalf("retransmitted %v, want %v", seqs, want)
	}
}
