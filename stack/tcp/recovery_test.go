package tcp_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Loss recovery in the simulator and against a hand-driven peer: RACK-TLP
// (RFC 8985), D-SACK (RFC 2883), undo (RFC 3522, RFC 4015), PRR
// (RFC 6937).

// stat returns the Info counter named like Linux's (TCPLossUndo, ...), or
// zero when Info has no such field.
func stat(i tcp.Info, name string) uint64 {
	f := reflect.ValueOf(i).FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Uint64 {
		return 0
	}
	return f.Uint()
}

// dur returns the Info duration named name, or zero.
func dur(i tcp.Info, name string) time.Duration {
	f := reflect.ValueOf(i).FieldByName(name)
	if !f.IsValid() || f.Type() != reflect.TypeOf(time.Duration(0)) {
		return 0
	}
	return time.Duration(f.Int())
}

// dataTap counts the data segments a host receives from src, and among
// them those starting at a sequence number delivered before: needless
// retransmissions, the first copy having arrived.
type dataTap struct {
	src       tcpip.Address
	seen      map[seqnum.Value]bool
	segs, dup int
}

func tapData(n *simnet.Network, src tcpip.Address) *dataTap {
	d := &dataTap{src: src, seen: make(map[seqnum.Value]bool)}
	prev := n.Trace
	n.Trace = func(p *simnet.Packet) {
		if prev != nil {
			prev(p)
		}
		if p.Src != d.src || len(p.Seg.Payload) == 0 {
			return
		}
		d.segs++
		if d.seen[p.Seg.Seq] {
			d.dup++
		}
		d.seen[p.Seg.Seq] = true
	}
	return d
}

// payloadLen is the TCP payload length of an encoded packet.
func payloadLen(p *simnet.Packet) int {
	off := int(p.Bytes[12]>>4) * 4
	return len(p.Bytes) - off
}

// seqOf is the sequence number of an encoded packet.
func seqOf(p *simnet.Packet) seqnum.Value {
	b := p.Bytes
	return seqnum.Value(uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]))
}

// TestReorderingWithoutLoss: netem's "delay 10ms reorder 5%" on both
// directions of a 20 ms path and no loss: once RACK's reordering window
// has grown from the peer's D-SACKs, nothing is retransmitted; the few
// needless retransmissions before that are undone, so the window is not
// left cut.
func TestReorderingWithoutLoss(t *testing.T) {
	// 100 Mbit/s with a queue that holds the whole receive window: no
	// loss, and segments spread in time as on a real path.
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Jump: 0.05, Rate: 12_500_000, QueueLimit: 1 << 20}
	cfg := tcp.Config{MaxReceiveBuffer: 512 << 10}
	p := newPair(t, pairOpts{seed: 21, ab: link, ba: link, client: cfg, server: cfg})
	tap := tapData(p.net, addrA)
	p.establish()
	warm := randBytes(30, 4<<20)
	got, d1 := p.transfer(p.a, p.b, warm, false, 5*time.Minute)
	sameData(t, warm, got)
	i1 := p.a.Info()
	rest := randBytes(31, 24<<20)
	got, d2 := p.transfer(p.a, p.b, rest, true, 5*time.Minute)
	sameData(t, rest, got)
	i2 := p.a.Info()
	t.Logf("first 4 MiB in %v: %d retransmitted, %d recoveries; next 24 MiB in %v (%.1f Mbit/s): %d retransmitted, %d recoveries",
		d1, i1.Retransmits, i1.FastRecoveries, d2, float64(len(rest))*8/d2.Seconds()/1e6, i2.Retransmits-i1.Retransmits, i2.FastRecoveries-i1.FastRecoveries)
	t.Logf("reordered %d; D-SACKs in %d; undo full %d partial %d dsack %d; reordering seen %d; reo_wnd %v min_rtt %v srtt %v cwnd %d; receiver saw %d needless copies",
		p.ab.Stats.Reordered, stat(i2, "TCPDSACKRecv"), stat(i2, "TCPFullUndo"), stat(i2, "TCPPartialUndo"), stat(i2, "TCPDSACKUndo"),
		stat(i2, "TCPSACKReorder"), dur(i2, "ReoWnd"), dur(i2, "MinRTT"), i2.SRTT, i2.Cwnd, tap.dup)
	ib := p.b.Info()
	t.Logf("A: lost retransmits %d, probes %d (recovered %d), slow-start retrans %d, fast retrans %d; B: D-SACKs sent %d+%d; queue drops %d/%d",
		stat(i2, "TCPLostRetransmit"), stat(i2, "TCPLossProbes"), stat(i2, "TCPLossProbeRecovery"), stat(i2, "TCPSlowStartRetrans"), stat(i2, "TCPFastRetrans"),
		stat(ib, "TCPDSACKOldSent"), stat(ib, "TCPDSACKOfoSent"), p.ab.Stats.QueueDrops, p.ba.Stats.QueueDrops)
	if n := i2.Retransmits - i1.Retransmits; n > 2 {
		t.Errorf("%d retransmissions in the 24 MiB after the reordering window adapted, with no loss", n)
	}
	if i1.Retransmits > 0 && stat(i2, "TCPDSACKRecv") == 0 {
		t.Errorf("needless retransmissions but no D-SACK")
	}
	if undone := stat(i2, "TCPFullUndo") + stat(i2, "TCPPartialUndo") + stat(i2, "TCPDSACKUndo") + stat(i2, "TCPLossUndo"); undone < i2.FastRecoveries+i2.RTOs {
		t.Errorf("%d recoveries and %d RTOs without loss, %d undone", i2.FastRecoveries, i2.RTOs, undone)
	}
	if mbps := float64(len(rest)) * 8 / d2.Seconds() / 1e6; mbps < 90 {
		t.Errorf("%.1f Mbit/s on a lossless 100 Mbit/s path", mbps)
	}
}

// TestSpuriousRTOUndone: the ACKs of a flight are delayed past the
// retransmission timeout. The timeout retransmits the head; the first ACK
// then echoes the timestamp of the original transmission (Eifel, RFC 3522
// §3.2), so the timeout was spurious: the window comes back (RFC 4015) and
// nothing more is retransmitted.
func TestSpuriousRTOUndone(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	r.clock.Advance(5 * time.Millisecond)
	r.ep.Write(randBytes(1, 20*rawMSS))
	flight := r.take()
	if len(flight) != 10 {
		t.Fatalf("initial flight %d segments", len(flight))
	}
	origTS := flight[len(flight)-1].Opts.TSVal
	cwnd := r.ep.Info().Cwnd
	r.advance(300 * time.Millisecond) // a loss probe (new data), then the timeout
	rx := r.take()
	for len(rx) > 0 && !rx[0].Retx {
		rx = rx[1:]
	}
	if len(rx) == 0 || rx[0].Seq != rawOff(0) || r.ep.Info().RTOs != 1 {
		t.Fatalf("no timeout retransmission: %+v", summary(rx))
	}
	// The delayed ACKs arrive, echoing the original flight's timestamp.
	for k := 2; k <= 10; k += 2 {
		a := r.ack(rawOff(k))
		a.Options.TSEcr = origTS
		r.in(a)
	}
	out := r.take()
	i := r.ep.Info()
	t.Logf("after the delayed ACKs: %d segments sent; %+v", len(out), i)
	for _, s := range out {
		if s.Retx {
			t.Errorf("retransmitted %v after the timeout proved spurious", s.Seq)
		}
	}
	if i.Cwnd < cwnd || i.InRecovery {
		t.Errorf("cwnd %d (before the timeout %d), in recovery %v: the reduction was not undone", i.Cwnd, cwnd, i.InRecovery)
	}
	if stat(i, "TCPSpuriousRTOs") != 1 || stat(i, "TCPLossUndo") != 1 {
		t.Errorf("TCPSpuriousRTOs %d TCPLossUndo %d, want 1 and 1", stat(i, "TCPSpuriousRTOs"), stat(i, "TCPLossUndo"))
	}
}

// lossyPath is a 20 ms RTT, 100 Mbit/s path whose A→B direction drops the
// data segments drop selects (by sequence number relative to A's ISS and
// by how many times that sequence number was seen).
func lossyPath(t *testing.T, drop func(rel uint32, copy int) bool) *pair {
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 12_500_000, QueueLimit: 1 << 20}
	cfg := tcp.Config{MaxReceiveBuffer: 8 << 20}
	p := newPair(t, pairOpts{seed: 5, ab: link, ba: link, client: cfg, server: cfg})
	copies := map[uint32]int{}
	p.ab.Config.Drop = func(pk *simnet.Packet) bool {
		if payloadLen(pk) == 0 {
			return false
		}
		rel := uint32(seqOf(pk) - p.a.ISS())
		copies[rel]++
		return drop(rel, copies[rel])
	}
	p.establish()
	return p
}

// TestTailLossProbe: the last two segments of a burst are lost. The loss
// probe (RFC 8985 §7) retransmits the last one about two RTTs after the
// last ACK; its SACK shows the other lost, and both are repaired well
// before the 200 ms minimum retransmission timeout would have fired.
func TestTailLossProbe(t *testing.T) {
	const mss = 1460 - 12
	var lo, hi uint32 // dropped range, set once warm
	p := lossyPath(t, func(rel uint32, copy int) bool { return copy == 1 && rel >= lo && rel < hi })
	warm := randBytes(40, 200_000)
	p.transfer(p.a, p.b, warm, false, time.Minute)
	p.net.RunFor(time.Second)
	base := uint32(len(warm)) + 1
	lo, hi = base+8*mss, base+10*mss
	burst := randBytes(41, 10*mss)
	got, d := p.transfer(p.a, p.b, burst, false, time.Minute)
	sameData(t, burst, got)
	i := p.a.Info()
	t.Logf("10 segments, last 2 lost: delivered in %v (SRTT %v); RTOs %d, probes %d, recoveries %d", d, i.SRTT, i.RTOs, stat(i, "TCPLossProbes"), i.FastRecoveries)
	if i.RTOs != 0 || d > 120*time.Millisecond {
		t.Errorf("tail loss repaired in %v with %d RTOs: want no RTO, about 5 RTTs", d, i.RTOs)
	}
	if stat(i, "TCPLossProbes") == 0 {
		t.Error("no loss probe")
	}
}

// TestLostRetransmission: a segment and its first retransmission are both
// lost in the middle of a transfer. RACK sees the retransmission lost when
// segments sent after it are SACKed and sends it again, without a
// retransmission timeout.
func TestLostRetransmission(t *testing.T) {
	const mss = 1460 - 12
	target := uint32(300*mss + 1)
	p := lossyPath(t, func(rel uint32, copy int) bool { return rel == target && copy <= 2 })
	data := randBytes(42, 4<<20)
	got, d := p.transfer(p.a, p.b, data, true, time.Minute)
	sameData(t, data, got)
	i := p.a.Info()
	t.Logf("4 MiB in %v; RTOs %d, recoveries %d, lost retransmissions %d, retransmits %d", d, i.RTOs, i.FastRecoveries, stat(i, "TCPLostRetransmit"), i.Retransmits)
	if i.RTOs != 0 {
		t.Errorf("%d RTOs: the lost retransmission waited for the timer", i.RTOs)
	}
	if stat(i, "TCPLostRetransmit") == 0 {
		t.Error("TCPLostRetransmit not counted")
	}
}

// TestMassLossBurst: 300 consecutive segments of a large flight are
// dropped. RACK marks them lost as soon as the segments after them are
// SACKed; PRR sends them again within a few round trips, without a
// retransmission timeout.
func TestMassLossBurst(t *testing.T) {
	const mss = 1460 - 12
	lo := uint32(2000*mss + 1)
	hi := lo + 300*mss
	var firstDrop, repaired tcpip.MonotonicTime
	p := lossyPath(t, func(rel uint32, copy int) bool {
		return copy == 1 && rel >= lo && rel < hi
	})
	prevTrace := p.net.Trace
	p.net.Trace = func(pk *simnet.Packet) {
		if prevTrace != nil {
			prevTrace(pk)
		}
		if pk.Src == addrB && repaired == (tcpip.MonotonicTime{}) && firstDrop != (tcpip.MonotonicTime{}) &&
			uint32(pk.Seg.Ack-p.a.ISS()) >= hi {
			repaired = p.net.Now()
		}
	}
	prevDrop := p.ab.Config.Drop
	p.ab.Config.Drop = func(pk *simnet.Packet) bool {
		d := prevDrop(pk)
		if d && firstDrop == (tcpip.MonotonicTime{}) {
			firstDrop = p.net.Now()
		}
		return d
	}
	data := randBytes(43, 8<<20)
	got, d := p.transfer(p.a, p.b, data, true, time.Minute)
	sameData(t, data, got)
	i := p.a.Info()
	rec := repaired.Sub(firstDrop)
	t.Logf("8 MiB in %v; burst of 300 repaired %v after the first drop; RTOs %d, recoveries %d, retransmits %d (%d bytes)",
		d, rec, i.RTOs, i.FastRecoveries, i.Retransmits, i.BytesRetrans)
	if i.RTOs != 0 || rec > 200*time.Millisecond {
		t.Errorf("burst repaired in %v with %d RTOs: want no RTO, a few RTTs", rec, i.RTOs)
	}
	if i.Retransmits > 330 {
		t.Errorf("%d retransmissions for 300 lost segments", i.Retransmits)
	}
}

// TestOutageRecovery: the path goes down both ways for 3 s in the middle of
// a transfer. Timeouts back off meanwhile; once the path is back, the
// transfer resumes at the next timeout and then recovers the lost window
// quickly.
func TestOutageRecovery(t *testing.T) {
	var down, up tcpip.MonotonicTime
	p := lossyPath(t, func(uint32, int) bool { return false })
	outage := func(pk *simnet.Packet) bool {
		now := p.net.Now()
		return down != (tcpip.MonotonicTime{}) && !now.Before(down) && now.Before(up)
	}
	prev := p.ab.Config.Drop
	var lostBytes int
	p.ab.Config.Drop = func(pk *simnet.Packet) bool {
		if outage(pk) || prev(pk) {
			lostBytes += payloadLen(pk)
			return true
		}
		return false
	}
	p.ba.Config.Drop = outage
	data := randBytes(44, 16<<20)
	var resumed, firstAck tcpip.MonotonicTime
	var flight int
	var ackAtUp uint32
	start := p.net.Now()
	p.net.Trace = func(pk *simnet.Packet) {
		now := p.net.Now()
		if down == (tcpip.MonotonicTime{}) && now.Sub(start) > 300*time.Millisecond {
			down, up = now, now.Add(3*time.Second)
			flight = p.a.Info().BytesInFlight
		}
		if pk.Src == addrB && !now.Before(up) && up != (tcpip.MonotonicTime{}) {
			a := uint32(pk.Seg.Ack - p.a.ISS())
			if ackAtUp == 0 {
				ackAtUp, firstAck = a, now
			} else if resumed == (tcpip.MonotonicTime{}) && a > ackAtUp+1<<20 {
				resumed = now
			}
		}
	}
	got, d := p.transfer(p.a, p.b, data, true, 5*time.Minute)
	sameData(t, data, got)
	i := p.a.Info()
	t.Logf("16 MiB in %v with a 3 s outage (%d bytes in flight when it began, %d lost); first ACK %v and 1 MiB more acknowledged %v after the path came back; RTOs %d, retransmits %d (%d bytes)",
		d, flight, lostBytes, firstAck.Sub(up), resumed.Sub(up), i.RTOs, i.Retransmits, i.BytesRetrans)
	// The first ACK comes with the first timeout after the path is back:
	// up to one backoff interval later, as with any TCP (RFC 6298 §5.5).
	// Then what was lost goes again, once: the ACKs lost in the outage
	// do not make the sender resend what got through.
	if rec := resumed.Sub(firstAck); rec > 300*time.Millisecond {
		t.Errorf("took %v after the first ACK to move 1 MiB", rec)
	}
	if i.BytesRetrans > uint64(lostBytes)*3/2 {
		t.Errorf("retransmitted %d bytes, %d were lost in the outage", i.BytesRetrans, lostBytes)
	}
}

// TestPRRSpreadsRecovery: a flight of 20 segments loses its first; the
// SACKs of the others arrive one by one. PRR (RFC 6937) sends about one
// segment for every two delivered from the start of recovery, instead of
// RFC 6675's silence until the pipe falls below ssthresh followed by one
// segment per ACK.
func TestPRRSpreadsRecovery(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, Congestion: "newreno", InitialCwnd: 20})
	r.establish()
	r.ep.Write(randBytes(3, 60*rawMSS))
	if n := len(r.take()); n != 20 {
		t.Fatalf("initial flight %d", n)
	}
	blk := func(a, b int) options.SACKBlock {
		return options.SACKBlock{Start: uint32(rawOff(a)), End: uint32(rawOff(b))}
	}
	var perAck []int
	for k := 2; k <= 20; k++ {
		r.clock.Advance(time.Millisecond)
		r.in(r.ack(rawOff(0), blk(1, k)))
		perAck = append(perAck, len(r.take()))
	}
	t.Logf("segments sent per ACK: %v; %+v", perAck, r.ep.Info())
	if r.ep.Info().FastRecoveries != 1 {
		t.Fatal("no fast recovery")
	}
	// Recovery starts with the third SACKed segment at the latest; over
	// the next eight ACKs PRR sends about four segments.
	sent := 0
	for _, n := range perAck[2:10] {
		sent += n
	}
	if sent < 3 {
		t.Errorf("%d segments sent over the 8 ACKs after recovery began: %v", sent, perAck)
	}
	total := 0
	for _, n := range perAck {
		total += n
	}
	if total < 9 || total > 12 {
		t.Errorf("%d segments sent during recovery for 19 delivered, ssthresh 10: %v", total, perAck)
	}
}

// TestDSACKSent: a duplicate segment below RCV.NXT, and one duplicating
// out-of-order data, are acknowledged at once with a D-SACK block first
// (RFC 2883 §4), the second followed by the block that holds it.
func TestDSACKSent(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	seg := randBytes(5, 1000)
	base := r.peerNxt
	r.in(r.data(base, seg, 200))
	r.take()
	r.in(r.data(base, seg, 201)) // duplicate
	out := r.take()
	if len(out) != 1 || out[0].Opts.NumSACKBlocks != 1 ||
		out[0].Opts.SACKBlocks[0] != (options.SACKBlock{Start: uint32(base), End: uint32(base + 1000)}) {
		t.Fatalf("ACK of a duplicate: %+v", out)
	}
	// Out of order: [base+2000, base+3000), then again.
	r.in(r.data(base+2000, seg, 202))
	r.take()
	r.in(r.data(base+2000, seg[:500], 203))
	out = r.take()
	o := out[len(out)-1].Opts
	if len(out) != 1 || o.NumSACKBlocks < 2 ||
		o.SACKBlocks[0] != (options.SACKBlock{Start: uint32(base + 2000), End: uint32(base + 2500)}) ||
		o.SACKBlocks[1] != (options.SACKBlock{Start: uint32(base + 2000), End: uint32(base + 3000)}) {
		t.Fatalf("ACK of an out-of-order duplicate: %+v", out)
	}
	// The next ACK carries no D-SACK.
	r.in(r.data(base+1000, seg, 204))
	out = r.take()
	if len(out) != 1 || out[0].Opts.NumSACKBlocks != 0 || out[0].Ack != base+3000 {
		t.Fatalf("ACK filling the hole: %+v", out)
	}
	i := r.ep.Info()
	if stat(i, "TCPDSACKOldSent") != 1 || stat(i, "TCPDSACKOfoSent") != 1 {
		t.Fatalf("D-SACK counters: old %d ofo %d", stat(i, "TCPDSACKOldSent"), stat(i, "TCPDSACKOfoSent"))
	}
}

// TestDSACKUndo: reordering makes RACK deem a segment lost and recovery
// start; the peer then reports the retransmission as a duplicate (D-SACK):
// every retransmission of the recovery was needless, so the window
// reduction is undone (Linux's tcp_try_undo_dsack).
func TestDSACKUndo(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true, Congestion: "newreno"})
	r.establish()
	r.clock.Advance(5 * time.Millisecond)
	r.ep.Write(randBytes(4, 10*rawMSS))
	r.take()
	cwnd := r.ep.Info().Cwnd
	r.clock.Advance(20 * time.Millisecond)
	blk := func(a, b int) options.SACKBlock {
		return options.SACKBlock{Start: uint32(rawOff(a)), End: uint32(rawOff(b))}
	}
	// Segment 0 is late; 1..4 are SACKed.
	for k := 2; k <= 5; k++ {
		r.in(r.ack(rawOff(0), blk(1, k)))
	}
	rx := r.take()
	if len(rx) == 0 || !rx[0].Retx || rx[0].Seq != rawOff(0) || !r.ep.Info().InRecovery {
		t.Fatalf("no fast retransmit: %+v", summary(rx))
	}
	// The original arrives; then the retransmission, reported as a
	// duplicate. The ACKs echo the retransmission's timestamp: only the
	// D-SACK tells.
	r.clock.Advance(20 * time.Millisecond)
	r.in(r.ack(rawOff(10)))
	r.in(r.ack(rawOff(10), blk(0, 1)))
	i := r.ep.Info()
	t.Logf("%+v", i)
	if stat(i, "TCPDSACKRecv") != 1 || stat(i, "TCPDSACKUndo")+stat(i, "TCPFullUndo") != 1 || i.InRecovery {
		t.Errorf("D-SACKs %d, undo (dsack %d, full %d), in recovery %v", stat(i, "TCPDSACKRecv"), stat(i, "TCPDSACKUndo"), stat(i, "TCPFullUndo"), i.InRecovery)
	}
	if i.Cwnd < cwnd {
		t.Errorf("cwnd %d after the undo, %d before", i.Cwnd, cwnd)
	}
}

// TestScoreboardInvariants runs transfers both ways over paths that lose,
// reorder and duplicate, with and without SACK, and checks the
// retransmission queue's invariants after every packet.
func TestScoreboardInvariants(t *testing.T) {
	for _, run := range []struct {
		sack bool
		cc   string
	}{{true, "cubic"}, {false, "cubic"}, {true, "bbr"}} {
		sack := run.sack
		link := simnet.LinkConfig{Delay: 5 * time.Millisecond, Rate: 5_000_000, QueueLimit: 100_000,
			Loss: 0.02, Jump: 0.05, Duplicate: 0.01}
		cfg := tcp.Config{DisableSACK: !sack, Congestion: run.cc}
		p := newPair(t, pairOpts{seed: 9, ab: link, ba: link, client: cfg, server: cfg})
		p.net.Trace = func(*simnet.Packet) {
			for _, ep := range []*tcp.Endpoint{p.a, p.b} {
				if ep == nil {
					continue
				}
				if err := ep.CheckScoreboard(); err != nil {
					t.Fatalf("sack=%v at %v: %v", sack, p.net.Now(), err)
				}
			}
		}
		p.establish()
		toB, toA := randBytes(50, 1<<20), randBytes(51, 1<<20)
		d := &duplex{p: p, toB: toB, toA: toA, readB: true, buf: make([]byte, 64<<10)}
		if !p.net.RunUntil(d.step, 5*time.Minute) {
			t.Fatalf("sack=%v: stalled: %d/%d and %d/%d", sack, len(d.gotB), len(toB), len(d.gotA), len(toA))
		}
		sameData(t, toB, d.gotB)
		sameData(t, toA, d.gotA)
		ia := p.a.Info()
		t.Logf("sack=%v %s: A retransmits %d, RTOs %d, recoveries %d, probes %d, undo %d/%d/%d/%d",
			sack, run.cc, ia.Retransmits, ia.RTOs, ia.FastRecoveries, ia.TCPLossProbes, ia.TCPFullUndo, ia.TCPPartialUndo, ia.TCPDSACKUndo, ia.TCPLossUndo)
	}
}

// TestLostSYNStillGivesRTT: the first SYN-ACK is lost and the SYN goes
// again after the initial 1 s timeout. The SYN-ACK's timestamp echo tells
// which copy it answers, so the handshake still yields an RTT sample: the
// RTO is back
// to its usual value, and a tail loss right after the handshake is
// repaired by a loss probe in a few RTTs, not by a timeout of seconds.
func TestLostSYNStillGivesRTT(t *testing.T) {
	const mss = 1460 - 12
	var lo, hi uint32
	p := newPair(t, pairOpts{seed: 5,
		ab: simnet.LinkConfig{Delay: 10 * time.Millisecond}, ba: simnet.LinkConfig{Delay: 10 * time.Millisecond}})
	synacks, copies := 0, map[uint32]int{}
	p.ba.Config.Drop = func(pk *simnet.Packet) bool {
		if pk.Bytes[13]&byte(tcp.FlagSYN) != 0 {
			synacks++
			return synacks == 1
		}
		return false
	}
	p.ab.Config.Drop = func(pk *simnet.Packet) bool {
		if payloadLen(pk) == 0 {
			return false
		}
		rel := uint32(seqOf(pk) - p.a.ISS())
		copies[rel]++
		return copies[rel] == 1 && rel >= lo && rel < hi
	}
	p.establish()
	if i := p.a.Info(); i.RTOs != 1 || i.RTO > 300*time.Millisecond || i.SRTT == 0 {
		t.Fatalf("after a lost SYN: RTOs %d, RTO %v, SRTT %v", i.RTOs, i.RTO, i.SRTT)
	}
	lo, hi = 1+8*mss, 1+10*mss
	data := randBytes(45, 10*mss)
	got, d := p.transfer(p.a, p.b, data, false, time.Minute)
	sameData(t, data, got)
	if i := p.a.Info(); i.RTOs != 1 || d > 150*time.Millisecond {
		t.Errorf("tail loss after the handshake repaired in %v, %d RTOs", d, i.RTOs)
	}
}

// TestSACKBlocksRecentFirst: the SACK option reports the block of the
// segment that triggered the ACK, then the blocks reported most recently
// (RFC 2018 §4), so that each block goes in several ACKs and a lost ACK
// does not hide it from the sender; not the highest blocks every time.
func TestSACKBlocksRecentFirst(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	seg := randBytes(6, 1000)
	base := r.peerNxt
	at := func(k int) seqnum.Value { return base + seqnum.Value(k*1000) }
	var last sent
	for i, k := range []int{10, 8, 6, 4, 2} {
		r.in(r.data(at(k), seg, uint32(200+i)))
		out := r.take()
		if len(out) != 1 {
			t.Fatalf("segment %d: %d ACKs", k, len(out))
		}
		last = out[0]
	}
	o := last.Opts
	want := []int{2, 4, 6}
	if o.NumSACKBlocks != len(want) {
		t.Fatalf("%d SACK blocks %v, want %d", o.NumSACKBlocks, o.SACKBlocks, len(want))
	}
	for i, k := range want {
		if b := o.SACKBlocks[i]; b.Start != uint32(at(k)) || b.End != uint32(at(k+1)) {
			t.Fatalf("block %d = [%d,%d), want the block at %d (blocks %v)", i, b.Start-uint32(base), b.End-uint32(base), k*1000, o.SACKBlocks[:o.NumSACKBlocks])
		}
	}
}
