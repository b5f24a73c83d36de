package tcp_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// The peer's right edge (SND.UNA+SND.WND) may move back below SND.NXT: a
// receiver should not shrink its window (RFC 9293 §3.8.6.2.2) but kernel
// MPTCP subflows share one connection-level window and do. Linux then drops
// every segment whose SEQ lies beyond its window (TcpExtBeyondWindow), pure
// ACKs included. These tests drive one endpoint by hand (raw); the
// simulator tests below use a Linux-like peer (shrinker).

const rawMSS = 1000 - 12 // the raw peer's MSS less timestamps

func rawOff(i int) seqnum.Value { return seqnum.Value(localISS + 1 + i*rawMSS) }

// retreat sends ten segments and has the peer acknowledge the first three
// with a window that ends wnd bytes further: the right edge retreats from
// far beyond SND.NXT to below it.
func retreat(t *testing.T, r *raw, wnd int) {
	t.Helper()
	r.ep.Write(randBytes(1, 10*rawMSS))
	if out := r.take(); len(out) != 10 {
		t.Fatalf("initial flight %d segments", len(out))
	}
	a := r.ack(rawOff(3))
	a.Window = uint16(wnd >> 7)
	r.in(a)
}

// TestAckSeqAtRetreatedEdge: pure ACKs (for data, challenge ACKs, window
// updates, SendAck) and RSTs carry SEQ = the peer's right edge once it
// retreated below SND.NXT, which the peer accepts (Linux's
// tcp_acceptable_seq), and SND.NXT again once the edge is past it.
func TestAckSeqAtRetreatedEdge(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, DelayedAck: -1})
	r.establish()
	retreat(t, r, 0)
	r.take()
	i := r.ep.Info()
	if i.WindowRetreats != 1 || i.SndWnd != 0 {
		t.Fatalf("retreat not seen: %+v", i)
	}
	edge := rawOff(3)

	// Data from the peer is acknowledged at the edge, not at SND.NXT.
	d := r.ack(edge)
	d.Window, d.Payload = 0, []byte("data")
	r.in(d)
	r.peerNxt += 4
	out := r.take()
	if len(out) != 1 || out[0].Seq != edge || out[0].Ack != r.peerNxt || len(out[0].Payload) != 0 {
		t.Fatalf("ACK for data: %+v, want SEQ %v", out, edge)
	}
	// So are SendAck (MPTCP's DATA_ACK) and a challenge ACK.
	r.ep.SendAck()
	r.in(tcp.Segment{Seq: r.peerNxt + 5, Flags: tcp.FlagSYN})
	out = r.take()
	if len(out) != 2 || out[0].Seq != edge || out[1].Seq != edge {
		t.Fatalf("SendAck and challenge ACK: %+v", out)
	}

	// A partly open window: the edge is 2.5 segments past SND.UNA.
	w := r.ack(edge)
	w.Window = uint16(5 * rawMSS / 2 >> 7)
	r.in(w)
	r.take()
	edge2 := edge + seqnum.Value(int(w.Window)<<7)
	r.ep.SendAck()
	if out := r.take(); len(out) != 1 || out[0].Seq != edge2 {
		t.Fatalf("ACK with a partial window: %+v, want SEQ %v", out, edge2)
	}
	if i := r.ep.Info(); i.SeqClamped != 4 {
		t.Fatalf("SeqClamped %d, want 4", i.SeqClamped)
	}

	// The abort's RST lies at the edge too.
	r.ep.Abort()
	if out := r.take(); len(out) != 1 || out[0].Flags&tcp.FlagRST == 0 || out[0].Seq != edge2 {
		t.Fatalf("RST: %+v, want SEQ %v", out, edge2)
	}
}

// TestAckSeqAfterWindowReopens: once the edge is past SND.NXT again, pure
// ACKs carry SND.NXT.
func TestAckSeqAfterWindowReopens(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, DelayedAck: -1})
	r.establish()
	retreat(t, r, 0)
	r.in(r.ack(rawOff(3))) // full window again
	r.take()
	r.ep.SendAck()
	out := r.take()
	if len(out) != 1 || out[0].Seq != rawOff(10) {
		t.Fatalf("ACK: %+v, want SEQ %v (SND.NXT)", out, rawOff(10))
	}
}

// TestRoundedEdgeNotAShrink: an open window whose edge falls short of
// SND.NXT by less than one unit of the peer's window scale is the peer
// rounding its window down (kernel MPTCP subflows do it constantly), not a
// shrink: pure ACKs keep SEQ = SND.NXT and the bytes stay in flight. Once
// the window shuts, they are taken out of flight.
func TestRoundedEdgeNotAShrink(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, DelayedAck: -1})
	r.establish()
	retreat(t, r, 54<<7) // the edge is 4 bytes short of SND.NXT
	r.take()
	r.ep.SendAck()
	out := r.take()
	i := r.ep.Info()
	if len(out) != 1 || out[0].Seq != rawOff(10) || i.SeqClamped != 0 {
		t.Fatalf("ACK %+v, want SEQ %v (SND.NXT); %+v", out, rawOff(10), i)
	}
	if i.WindowRetreats != 1 || i.BytesBeyondEdge != 0 || i.BytesInFlight != 7*rawMSS {
		t.Fatalf("%+v", i)
	}
	z := r.ack(rawOff(3))
	z.Window = 0
	r.in(z)
	if i := r.ep.Info(); i.BytesBeyondEdge != 7*rawMSS || i.BytesInFlight != 0 {
		t.Fatalf("window shut: %+v", i)
	}
}

// TestZeroWindowBeyondEdgePersists: with the window retreated to zero and
// seven segments sent beyond it, the endpoint probes with the persist timer
// (SEQ = SND.UNA-1, backing off) rather than letting the retransmission
// timer back off towards ErrTimeout: no RTO, no retransmission into the
// closed window. When the window reopens, the seven segments go out again
// at once, as retransmissions, with the congestion window untouched.
func TestZeroWindowBeyondEdgePersists(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	retreat(t, r, 0)
	r.take()
	cwnd := r.ep.Info().Cwnd
	var probes []time.Duration
	start := r.clock.NowMonotonic()
	for range 200 {
		r.advance(100 * time.Millisecond)
		for _, s := range r.take() {
			if s.Seq != rawOff(3)-1 || len(s.Payload) != 0 || s.Flags != tcp.FlagACK {
				t.Fatalf("segment sent into the closed window: %+v", s)
			}
			probes = append(probes, r.clock.NowMonotonic().Sub(start))
			// The peer answers each probe, still with a zero window.
			z := r.ack(rawOff(3))
			z.Window = 0
			r.in(z)
		}
	}
	i := r.ep.Info()
	t.Logf("probes at %v; %+v", probes, i)
	if i.RTOs != 0 || i.Retransmits != 0 || r.ep.State() != tcp.StateEstablished {
		t.Fatalf("RTO while the window is zero: %+v", i)
	}
	if len(probes) < 4 || len(probes) > 12 || probes[3]-probes[2] <= probes[1]-probes[0] {
		t.Fatalf("probes at %v: want a few, backing off", probes)
	}
	if i.ZeroWindowProbes != uint64(len(probes)) || i.BytesInFlight != 0 || i.BytesBeyondEdge != 7*rawMSS {
		t.Fatalf("counters %+v", i)
	}

	r.in(r.ack(rawOff(3))) // the window reopens
	out := r.take()
	if len(out) != 7 {
		t.Fatalf("after reopening: %d segments, want the 7 beyond the old edge", len(out))
	}
	for k, s := range out {
		if s.Seq != rawOff(3+k) || len(s.Payload) != rawMSS || !s.Retx {
			t.Fatalf("segment %d: %+v", k, s)
		}
	}
	if i := r.ep.Info(); i.Cwnd != cwnd || i.FastRecoveries != 0 || i.RTOs != 0 || i.BytesRetrans != 7*rawMSS {
		t.Fatalf("after reopening: %+v (cwnd before %d)", i, cwnd)
	}
	r.in(r.ack(rawOff(10)))
	r.advance(10 * time.Second)
	if out := r.take(); len(out) != 0 {
		t.Fatalf("%d segments after everything was acknowledged", len(out))
	}
}

// TestRetransmitInsideRetreatedWindow: with the edge 2.5 segments past
// SND.UNA, a retransmission timeout resends only what lies inside the
// window (the third segment cut at the edge), never beyond it.
func TestRetransmitInsideRetreatedWindow(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, Congestion: "newreno"})
	r.establish()
	retreat(t, r, 5*rawMSS/2)
	r.take()
	edge := rawOff(3) + seqnum.Value(5*rawMSS/2>>7<<7)
	var rx []sent
	for range 30 {
		r.advance(100 * time.Millisecond)
		for _, s := range r.takeData() {
			rx = append(rx, s)
			// Acknowledge each retransmission, window unchanged (the
			// edge stays put).
			a := r.ack(s.Seq + seqnum.Value(len(s.Payload)))
			a.Window = uint16((int(edge) - int(a.Ack)) >> 7)
			r.in(a)
		}
	}
	if len(rx) == 0 {
		t.Fatal("nothing retransmitted inside the window")
	}
	for _, s := range rx {
		if end := s.Seq + seqnum.Value(len(s.Payload)); edge.LessThan(end) {
			t.Fatalf("retransmitted [%v, %v) beyond the edge %v", s.Seq, end, edge)
		}
	}
	if i := r.ep.Info(); i.RTOs != 1 || r.ep.State() != tcp.StateEstablished {
		t.Fatalf("%+v", i)
	}
}

// TestTimeoutRetransmitCutAtEdge: with the edge less than a segment past
// SND.UNA, the retransmission timeout's resend of the head is cut at the
// edge, as Linux's tcp_retransmit_skb does: a Linux receiver with data
// queued drops a segment that ends beyond its window (TcpExtBeyondWindow).
// Only a window that is closed at the head gets a full segment (a probe).
func TestTimeoutRetransmitCutAtEdge(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, Congestion: "newreno"})
	r.establish()
	retreat(t, r, rawMSS/2)
	r.take()
	edge := rawOff(3) + seqnum.Value(rawMSS/2>>7<<7)
	var rx []sent
	for range 20 {
		r.advance(100 * time.Millisecond)
		rx = append(rx, r.takeData()...)
		if len(rx) > 0 {
			break
		}
	}
	if len(rx) == 0 {
		t.Fatal("nothing retransmitted")
	}
	for _, s := range rx {
		if end := s.Seq + seqnum.Value(len(s.Payload)); s.Seq != rawOff(3) || edge.LessThan(end) {
			t.Fatalf("retransmitted [%v, %v), want from %v to the edge %v at most", s.Seq, end, rawOff(3), edge)
		}
	}
	if i := r.ep.Info(); i.RTOs != 1 {
		t.Fatalf("RTOs %d, want 1", i.RTOs)
	}
}

// TestTailNotResentBeyondEdge: with the edge retreated below the last
// segment sent, nothing the timers send ends beyond the edge: no tail loss
// probe re-sends the last segment (RFC 8985's probe, which no longer
// fits; Linux's tcp_send_loss_probe goes through the same window check as
// any retransmission), and the timeouts re-send inside the window.
func TestTailNotResentBeyondEdge(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	retreat(t, r, 5*rawMSS/2)
	r.take()
	edge := rawOff(3) + seqnum.Value(5*rawMSS/2>>7<<7)
	n := 0
	for range 40 {
		r.advance(25 * time.Millisecond)
		for _, s := range r.takeData() {
			n++
			if end := s.Seq + seqnum.Value(len(s.Payload)); edge.LessThan(end) {
				t.Fatalf("sent [%v, %v) beyond the edge %v (%+v)", s.Seq, end, edge, r.ep.Info())
			}
		}
	}
	if n == 0 {
		t.Fatal("nothing retransmitted in 1 s")
	}
	if i := r.ep.Info(); i.TCPLossProbes != 0 || i.RTOs == 0 {
		t.Fatalf("loss probes %d, timeouts %d: want the timeouts' resends only", i.TCPLossProbes, i.RTOs)
	}
}

// shrinker makes a host behave towards its peer like a Linux MPTCP
// subflow whose connection-level receive window closed: while shrunk, the
// window its segments advertise ends at the acknowledgment point it had
// when it shrank (so the right edge moves back below what the peer has
// sent), and, as Linux does at all times, it drops every arriving segment
// whose SEQ lies beyond the right edge it advertised last
// (TcpExtBeyondWindow), or whose data runs past it (6.18 with a non-empty
// receive queue). The host's own endpoint never learns of it.
type shrinker struct {
	ep       *tcp.Endpoint // the host's endpoint, for window updates
	ws       uint8         // the host's receive window scale
	lastAck  seqnum.Value  // RCV.NXT in the host's last segment
	edge     seqnum.Value  // right edge last advertised
	valid    bool
	shrunk   bool
	shrunkAt seqnum.Value

	beyondWindow int // dropped: SEQ beyond the edge
	endBeyond    int // dropped: data running past the edge
	acksIn       int // the peer's pure ACKs accepted while shrunk (probes not counted)
}

func (s *shrinker) install(h *simnet.Host) {
	var seg tcp.Segment
	h.Egress = func(p *simnet.Packet) bool {
		if _, _, err := tcp.ParseSegment(p.Bytes, &seg); err != nil {
			return true
		}
		if seg.Flags&tcp.FlagSYN != 0 {
			if seg.Options.HasWindowScale {
				s.ws = seg.Options.WindowScale
			}
			return true
		}
		if seg.Flags&tcp.FlagACK == 0 {
			return true
		}
		s.lastAck = seg.Ack
		wnd := uint32(seg.Window) << s.ws
		if s.shrunk {
			room := uint32(0)
			if seg.Ack.LessThan(s.shrunkAt) {
				room = uint32(s.shrunkAt - seg.Ack)
			}
			if room < wnd {
				f := uint16(room >> s.ws)
				binary.BigEndian.PutUint16(p.Bytes[14:], f)
				wnd = uint32(f) << s.ws
			}
		}
		s.edge, s.valid = seg.Ack.Add(seqnum.Size(wnd)), true
		return true
	}
	h.Ingress = func(p *simnet.Packet) bool {
		seg := &p.Seg
		if !s.valid || seg.Flags&(tcp.FlagSYN|tcp.FlagRST) != 0 {
			return true
		}
		if s.edge.LessThan(seg.Seq) {
			s.beyondWindow++
			return false
		}
		if n := len(seg.Payload); n > 0 && s.edge.LessThan(seg.Seq.Add(seqnum.Size(n))) {
			s.endBeyond++
			return false
		}
		if s.shrunk && len(seg.Payload) == 0 && seg.Flags&tcp.FlagFIN == 0 && !seg.Seq.LessThan(s.lastAck) {
			s.acksIn++
		}
		return true
	}
}

// shrink closes the window: the right edge moves back to the host's
// acknowledgment point, announced at once.
func (s *shrinker) shrink() {
	s.shrunk, s.shrunkAt = true, s.lastAck
	s.ep.SendAck()
}

// open ends the shrink with a window update, as a reader does.
func (s *shrinker) open() {
	s.shrunk = false
	s.ep.SendAck()
}

// duplex moves data both ways over p, A reading all the time and B only
// while readB is set; step reports whether both directions completed.
type duplex struct {
	p            *pair
	toB, toA     []byte
	offA, offB   int
	gotB, gotA   []byte
	readB        bool
	buf          []byte
	aDone, bDone bool
}

func (d *duplex) step() bool {
	write := func(ep *tcp.Endpoint, data []byte, off *int) {
		for *off < len(data) {
			n, err := ep.Write(data[*off:])
			*off += n
			if err != nil || n == 0 {
				return
			}
		}
	}
	read := func(ep *tcp.Endpoint, got *[]byte) {
		for {
			n, _ := ep.Read(d.buf)
			if n == 0 {
				return
			}
			*got = append(*got, d.buf[:n]...)
		}
	}
	write(d.p.a, d.toB, &d.offA)
	write(d.p.b, d.toA, &d.offB)
	read(d.p.a, &d.gotA)
	if d.readB {
		read(d.p.b, &d.gotB)
	}
	return len(d.gotB) == len(d.toB) && len(d.gotA) == len(d.toA)
}

// shrinkPair connects A to B (B behind a shrinker) over a 20 Mbit/s, 20 ms
// RTT path and starts moving toB and toA.
func shrinkPair(t *testing.T, toB, toA []byte) (*pair, *shrinker, *duplex) {
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 2_500_000}
	p := newPair(t, pairOpts{seed: 3, ab: link, ba: link})
	sh := &shrinker{}
	sh.install(p.hb)
	p.establish()
	sh.ep = p.b
	return p, sh, &duplex{p: p, toB: toB, toA: toA, readB: true, buf: make([]byte, 64<<10)}
}

// TestRetreatingEdgeBothWays is the deadlock seen against Linux 6.18 MPTCP:
// the peer, which also sends us data, stops reading; its window goes to 0
// and its right edge moves back below our SND.NXT. Our ACKs of its data
// must carry SEQ at that edge or it drops them all (it then retransmits
// until its transfer times out). For the 5 s the window stays shut, its
// data must keep flowing, acknowledged by our pure ACKs, without
// retransmission timeouts on either side; once it reads again our bytes
// beyond the old edge are sent again, once, and both transfers complete.
func TestRetreatingEdgeBothWays(t *testing.T) {
	p, sh, d := shrinkPair(t, randBytes(1, 2<<20), randBytes(2, 3<<20))
	if !p.net.RunUntil(func() bool { d.step(); return p.a.Info().BytesInFlight > 60_000 && len(d.gotB) > 100_000 }, time.Minute) {
		t.Fatalf("no flight to shrink under: %+v", p.a.Info())
	}
	flight := p.a.Info().BytesInFlight
	sh.shrink()
	d.readB = false
	toAStart := len(d.gotA)
	p.net.RunUntil(func() bool { d.step(); return false }, 5*time.Second)
	ia, ib := p.a.Info(), p.b.Info()
	t.Logf("shut 5 s with %d bytes in flight: B->A moved %d bytes; our pure ACKs in %d; peer dropped %d+%d; A %+v; B RTOs %d",
		flight, len(d.gotA)-toAStart, sh.acksIn, sh.beyondWindow, sh.endBeyond, ia, ib.RTOs)
	if ia.WindowRetreats == 0 || ia.SeqClamped == 0 || ia.BytesBeyondEdge == 0 {
		t.Errorf("retreat not handled: %+v", ia)
	}
	if sh.acksIn == 0 || len(d.gotA) != len(d.toA) {
		t.Errorf("the peer's data stalled: %d/%d bytes, %d of our pure ACKs accepted", len(d.gotA), len(d.toA), sh.acksIn)
	}
	if ib.RTOs != 0 || ia.RTOs != 0 {
		t.Errorf("retransmission timeouts while the window was shut: ours %d, peer's %d", ia.RTOs, ib.RTOs)
	}
	sh.open()
	d.readB = true
	start := p.net.Now()
	if !p.net.RunUntil(d.step, time.Minute) {
		t.Fatalf("after reopening: A->B %d/%d, B->A %d/%d; A %+v", len(d.gotB), len(d.toB), len(d.gotA), len(d.toA), p.a.Info())
	}
	sameData(t, d.toB, d.gotB)
	sameData(t, d.toA, d.gotA)
	ia, ib = p.a.Info(), p.b.Info()
	t.Logf("completed %v after reopening; A %+v; B RTOs %d retrans %d", p.net.Now().Sub(start), ia, ib.RTOs, ib.Retransmits)
	if d := p.net.Now().Sub(start); d > 3*time.Second {
		t.Errorf("took %v after the window reopened", d)
	}
	if ia.RTOs != 0 || ia.FastRecoveries != 0 || ib.RTOs != 0 || ia.BytesRetrans > ia.BytesBeyondEdge {
		t.Errorf("needless recovery or retransmission: A %+v; B RTOs %d", ia, ib.RTOs)
	}
	// The peer drops what was on its way when it shrank, nothing we sent
	// after learning of it (but a probe or two).
	if drops := sh.beyondWindow + sh.endBeyond; drops > int(ia.BytesBeyondEdge)/ia.SndMSS+3 {
		t.Errorf("peer dropped %d segments beyond its window; %d bytes were beyond it when it shrank", drops, ia.BytesBeyondEdge)
	}
}

// TestLongZeroWindowBeyondEdge: the window stays shut for 30 s with data
// outstanding beyond the retreated edge. The connection must survive on
// zero-window probes (backing off, not an RTO storm towards ErrTimeout)
// and finish promptly once the window reopens.
func TestLongZeroWindowBeyondEdge(t *testing.T) {
	p, sh, d := shrinkPair(t, randBytes(1, 2<<20), nil)
	if !p.net.RunUntil(func() bool { d.step(); return p.a.Info().BytesInFlight > 60_000 && len(d.gotB) > 100_000 }, time.Minute) {
		t.Fatalf("no flight to shrink under: %+v", p.a.Info())
	}
	sh.shrink()
	d.readB = false
	p.net.RunUntil(func() bool { d.step(); return p.a.State() == tcp.StateClosed }, 30*time.Second)
	ia := p.a.Info()
	t.Logf("after 30 s shut: %v %v; %+v", p.a.State(), p.a.Err(), ia)
	if p.a.State() != tcp.StateEstablished || ia.RTOs > 1 || ia.ZeroWindowProbes == 0 || ia.ZeroWindowProbes > 12 {
		t.Fatalf("after 30 s of zero window: %v %v, %+v", p.a.State(), p.a.Err(), ia)
	}
	sh.open()
	d.readB = true
	start := p.net.Now()
	if !p.net.RunUntil(d.step, time.Minute) {
		t.Fatalf("after reopening: %d/%d; %+v", len(d.gotB), len(d.toB), p.a.Info())
	}
	sameData(t, d.toB, d.gotB)
	ia = p.a.Info()
	t.Logf("completed %v after reopening; %+v", p.net.Now().Sub(start), ia)
	if d := p.net.Now().Sub(start); d > 3*time.Second {
		t.Errorf("took %v after the window reopened", d)
	}
	if ia.RTOs != 0 || ia.FastRecoveries != 0 || ia.BytesRetrans > ia.BytesBeyondEdge {
		t.Errorf("needless recovery or retransmission: %+v", ia)
	}
}

// TestUnansweredProbesGiveUp: the persist timer probes a shut window for as
// long as the peer answers, but DataRetries probes in a row without any ACK
// mean the peer is gone (Linux's tcp_probe_timer with tcp_retries2).
func TestUnansweredProbesGiveUp(t *testing.T) {
	r := newRaw(t, tcp.Config{DataRetries: 4})
	r.establish()
	retreat(t, r, 0)
	r.take()
	for range 600 {
		r.advance(100 * time.Millisecond)
		if r.ep.State() == tcp.StateClosed {
			break
		}
	}
	if r.ep.Err() != tcp.ErrTimeout || r.ep.Info().ZeroWindowProbes != 4 || r.ep.Info().RTOs != 0 {
		t.Fatalf("state %v err %v, %+v", r.ep.State(), r.ep.Err(), r.ep.Info())
	}
}
