package tcp_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// The raw peer advertises MSS 1000; with timestamps each segment carries
// 988 payload bytes. Plain chunks are closed at a whole number of them.
const (
	rawSndMSS   = 988
	rawPlainMax = tcp.MaxChunk - tcp.MaxChunk%rawSndMSS
)

// TestTSOSuperSegments: with SetGSOMaxSize the sender hands its output
// super-segments (OutSegment.SegmentSize) of whole segments, within the
// congestion window, spanning plain chunks (PayloadTail), and the bytes
// arrive in order; once the window is large they are full-sized;
// retransmissions stay single segments. Without it nothing exceeds the
// MSS.
func TestTSOSuperSegments(t *testing.T) {
	for _, gso := range []int{0, 60000} {
		r := newRaw(t, tcp.Config{})
		r.establish()
		r.ep.SetGSOMaxSize(gso)
		if got := r.ep.ChunkSize(); got != rawPlainMax {
			t.Fatalf("ChunkSize %d, want %d", got, rawPlainMax)
		}
		data := randBytes(7, 300000)
		if n, err := r.ep.Write(data); n != len(data) || err != nil {
			t.Fatalf("gso=%d: Write %d, %v", gso, n, err)
		}
		first := r.take()
		if gso > 0 {
			// Initial window: ten segments in one super-segment.
			if len(first) != 1 || len(first[0].Payload) != 10*rawSndMSS || first[0].SegSize != rawSndMSS ||
				first[0].Flags != tcp.FlagACK {
				t.Fatalf("initial window: %+v", summary(first))
			}
		} else if len(first) != 10 {
			t.Fatalf("gso=0: initial window in %d segments, want 10", len(first))
		}
		if got := r.ep.Info().SegsOut; got < 10 {
			t.Fatalf("gso=%d: SegsOut %d after the initial window", gso, got)
		}
		var got []byte
		largest, spanned := 0, false
		out := first
		for round := 0; len(got) < len(data); round++ {
			if round > 200 {
				t.Fatalf("gso=%d: stalled at %d/%d bytes", gso, len(got), len(data))
			}
			for _, s := range out {
				off := int(s.Seq - (localISS + 1))
				if off != len(got) {
					t.Fatalf("gso=%d: segment at offset %d, want %d", gso, off, len(got))
				}
				end := off + len(s.Payload)
				largest = max(largest, len(s.Payload))
				spanned = spanned || off/rawPlainMax != (end-1)/rawPlainMax
				switch {
				case gso == 0 && (len(s.Payload) > rawSndMSS || s.SegSize != 0):
					t.Fatalf("gso=0: segment of %d bytes, SegmentSize %d", len(s.Payload), s.SegSize)
				case len(s.Payload) > rawSndMSS && s.SegSize != rawSndMSS:
					t.Fatalf("super-segment of %d bytes with SegmentSize %d", len(s.Payload), s.SegSize)
				case len(s.Payload) > gso && gso > 0:
					t.Fatalf("super-segment of %d bytes above GSO size %d", len(s.Payload), gso)
				case end != len(data) && len(s.Payload)%rawSndMSS != 0:
					t.Fatalf("short segment [%d,%d) before the end of the data", off, end)
				case (s.Flags&tcp.FlagPSH != 0) != (end == len(data)):
					t.Fatalf("segment [%d,%d) flags %v", off, end, s.Flags)
				}
				got = append(got, s.Payload...)
			}
			r.in(r.ack(localISS + 1 + seqnum.Value(len(got))))
			out = r.take()
		}
		sameData(t, data, got)
		if gso > 0 && !spanned {
			t.Error("no super-segment spans two chunks")
		}
		if gso > 0 && largest <= 10*rawSndMSS {
			t.Errorf("largest super-segment %d bytes: the window grew but segments did not", largest)
		}
		if i := r.ep.Info(); i.SegsOut < uint64(len(data)/rawSndMSS) || i.BytesSent != uint64(len(data)) {
			t.Errorf("gso=%d: SegsOut %d BytesSent %d for %d bytes", gso, i.SegsOut, i.BytesSent, len(data))
		}
	}

	// A lost super-segment is retransmitted one segment at a time.
	r := newRaw(t, tcp.Config{})
	r.establish()
	r.ep.SetGSOMaxSize(60000)
	r.ep.Write(randBytes(8, 20000))
	if out := r.take(); len(out) != 1 || out[0].SegSize == 0 {
		t.Fatalf("first flight: %+v", summary(out))
	}
	r.advance(1500 * time.Millisecond) // a loss probe of new data, then RTOs
	out := r.take()
	for len(out) > 0 && !out[0].Retx {
		out = out[1:]
	}
	if len(out) == 0 || len(out[0].Payload) != rawSndMSS || out[0].SegSize != 0 {
		t.Fatalf("retransmission: %+v", summary(out))
	}
}

// TestTSODeferral: with a large congestion window the sender does not cut
// a super-segment short to fit the room a small ACK opens; it waits for
// the ACKs in flight to allow a full one (Linux's tcp_tso_should_defer).
func TestTSODeferral(t *testing.T) {
	const gso = 60000
	full := gso - gso%rawSndMSS
	r := newRaw(t, tcp.Config{InitialCwnd: 300})
	r.establish()
	r.ep.SetGSOMaxSize(gso)
	data := randBytes(20, 2<<20)
	r.ep.Write(data)
	r.in(r.ack(localISS + 1)) // the SYN-ACK's window is unscaled; open it
	sent := 0
	for _, s := range r.take() {
		sent += len(s.Payload)
	}
	if sent < 4*gso {
		t.Fatalf("initial flight of %d bytes", sent)
	}
	frames := 0
	for acked := 0; acked < 600000; {
		acked += 10 * rawSndMSS // small ACKs
		r.in(r.ack(localISS + 1 + seqnum.Value(acked)))
		for _, s := range r.take() {
			if len(s.Payload) != full && s.Flags&tcp.FlagPSH == 0 { // (the end of what was written)
				t.Fatalf("after ACK of %d: frame of %d bytes, want full frames of %d", acked, len(s.Payload), full)
			}
			frames++
		}
	}
	if frames == 0 {
		t.Fatal("nothing sent while ACKs opened the window")
	}
}

// summary describes segments for failure messages.
func summary(out []sent) []string {
	var s []string
	for _, o := range out {
		s = append(s, fmt.Sprintf("%v seq %d ack %d len %d segsize %d", o.Flags, uint32(o.Seq), uint32(o.Ack), len(o.Payload), o.SegSize))
	}
	return s
}

// TestClonePayload: a reference taken with ClonePayload keeps the segment's
// bytes, unchanged, after more data is appended to the same chunk, after
// the data is acknowledged and its chunk released, and after new chunks
// reuse pooled memory.
func TestClonePayload(t *testing.T) {
	r := newRaw(t, tcp.Config{NoDelay: true})
	r.establish()
	type held struct {
		b    buffer.Buffer
		want []byte
	}
	var clones []held
	r.hook = func(s *tcp.OutSegment) {
		if b := s.ClonePayload(); b.Size() > 0 {
			clones = append(clones, held{b, s.AppendPayload(nil)})
		}
	}
	// Three segments from the start of a plain chunk that may still grow
	// (handed out as copies), then, once acknowledged and the chunk filled
	// by the next write, segments from full chunks (by reference).
	r.ep.Write(randBytes(9, 2500))
	if sent := r.take(); len(clones) != len(sent) || len(clones) != 3 {
		t.Fatalf("%d clones for %d segments", len(clones), len(sent))
	}
	r.in(r.ack(localISS + 1 + 2500))
	r.ep.Write(randBytes(10, 2*rawPlainMax))
	for acked := 2500; acked < 2*rawPlainMax; {
		for _, s := range r.take() {
			acked = max(acked, int(s.Seq-(localISS+1))+len(s.Payload))
		}
		r.in(r.ack(localISS + 1 + seqnum.Value(acked)))
	}
	r.hook = nil
	total := 2500 + 2*rawPlainMax
	for i := 0; i < 10; i++ { // acknowledge everything, recycle chunks
		r.take()
		r.in(r.ack(localISS + 1 + seqnum.Value(total)))
		r.ep.Write(randBytes(int64(11+i), 70000))
		total += 70000
	}
	r.take()
	r.in(r.ack(localISS + 1 + seqnum.Value(total)))
	for i, c := range clones {
		if got := c.b.Flatten(); !bytes.Equal(got, c.want) {
			t.Errorf("clone %d changed: %d bytes, want the %d sent", i, len(got), len(c.want))
		}
		c.b.Release()
	}

	// An OutSegment built by hand (no send buffer behind it) is copied.
	s := &tcp.OutSegment{Payload: []byte("built by "), PayloadTail: []byte("hand")}
	b := s.ClonePayload()
	if got := string(b.Flatten()); got != "built by hand" || s.PayloadLen() != 13 {
		t.Fatalf("ClonePayload of a hand-built segment: %q", got)
	}
	b.Release()
	if b := (&tcp.OutSegment{}).ClonePayload(); b.Size() != 0 {
		t.Fatal("ClonePayload without payload is not empty")
	}
}

// TestDelayedAckAfterCoalesced: a coalesced segment (GRO, TSO super-packet)
// longer than the MSS does not raise the segment-size estimate used for
// the every-second-segment rule: two full segments that follow are still
// ACKed at once, not after the delayed-ACK timeout.
func TestDelayedAckAfterCoalesced(t *testing.T) {
	r := newRaw(t, tcp.Config{})
	r.establish()
	r.pastQuickAck(100)
	big := randBytes(12, 20*1448)
	r.in(r.data(r.peerNxt, big, 200))
	r.peerNxt += seqnum.Value(len(big))
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("coalesced segment of 20 MSS: %+v", summary(out))
	}
	seg := randBytes(13, 1448)
	r.in(r.data(r.peerNxt, seg, 201))
	r.peerNxt += 1448
	if out := r.take(); len(out) != 0 {
		t.Fatalf("first full segment ACKed at once: %+v", summary(out))
	}
	r.in(r.data(r.peerNxt, seg, 202))
	r.peerNxt += 1448
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("second full segment after a coalesced one: %+v", summary(out))
	}
}

// TestAckDeferral: under SetAckDeferral the every-second-segment ACK waits
// for FlushAck (reported by EventAckDue), rides on a data segment if one
// leaves first, or goes at the delayed-ACK timeout; out-of-order data is
// still ACKed at once.
func TestAckDeferral(t *testing.T) {
	var events tcp.Events
	r := newRaw(t, tcp.Config{Notify: func(ev tcp.Events) { events |= ev }})
	r.establish()
	r.pastQuickAck(100)
	seg := randBytes(14, 1448)
	two := func(tsVal uint32) {
		for i := range 2 {
			r.in(r.data(r.peerNxt, seg, tsVal+uint32(i)))
			r.peerNxt += 1448
		}
	}

	// Deferred, then flushed.
	events = 0
	r.ep.SetAckDeferral(true)
	two(300)
	r.ep.SetAckDeferral(false)
	if out := r.take(); len(out) != 0 || events&tcp.EventAckDue == 0 {
		t.Fatalf("deferred: sent %+v, events %b", summary(out), events)
	}
	r.ep.FlushAck()
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt || len(out[0].Payload) != 0 {
		t.Fatalf("FlushAck: %+v", summary(out))
	}
	r.ep.FlushAck()
	if out := r.take(); len(out) != 0 {
		t.Fatalf("second FlushAck sent %+v", summary(out))
	}

	// Out-of-order data is not deferred.
	r.ep.SetAckDeferral(true)
	r.in(r.data(r.peerNxt+1448, seg, 310))
	r.ep.SetAckDeferral(false)
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt || out[0].Opts.NumSACKBlocks != 1 {
		t.Fatalf("out-of-order under deferral: %+v", summary(out))
	}
	r.in(r.data(r.peerNxt, seg, 311)) // fills the hole: ACKed at once
	r.peerNxt += 2 * 1448
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("hole filled: %+v", summary(out))
	}

	// A data segment carries the deferred ACK; FlushAck then has nothing
	// to do.
	r.ep.SetAckDeferral(true)
	two(320)
	r.ep.SetAckDeferral(false)
	r.ep.Write([]byte("reply"))
	if out := r.take(); len(out) != 1 || string(out[0].Payload) != "reply" || out[0].Ack != r.peerNxt {
		t.Fatalf("reply carrying the ACK: %+v", summary(out))
	}
	r.ep.FlushAck()
	if out := r.take(); len(out) != 0 {
		t.Fatalf("FlushAck after the ACK left: %+v", summary(out))
	}
	r.tsVal = 325 // newer than the data's timestamps (PAWS)
	r.in(r.ack(localISS + 1 + 5))
	if out := r.take(); len(out) != 0 {
		t.Fatalf("ACK of the reply answered: %+v", summary(out))
	}

	// Never flushed: the delayed-ACK timer sends it.
	r.ep.SetAckDeferral(true)
	two(330)
	if out := r.take(); len(out) != 0 {
		t.Fatalf("deferred: %+v", summary(out))
	}
	r.advance(40 * time.Millisecond)
	if out := r.take(); len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("delayed-ACK timer with a deferred ACK: %+v", summary(out))
	}
}

// TestWindowUpdateAfterRead: reading sends a window update only when the
// window still open to the peer has fallen to half the buffer or less and
// the update at least doubles it, not after every read.
func TestWindowUpdateAfterRead(t *testing.T) {
	const buf = 64 << 10
	r := newRaw(t, tcp.Config{ReceiveBuffer: buf, MaxReceiveBuffer: buf, DelayedAck: -1})
	r.establish()
	seg := randBytes(15, 1448)
	recv := func(n int, tsVal uint32) {
		for i := range n {
			r.in(r.data(r.peerNxt, seg, tsVal+uint32(i)))
			r.peerNxt += 1448
		}
		if out := r.take(); len(out) != n {
			t.Fatalf("%d ACKs for %d segments", len(out), n)
		}
	}
	p := make([]byte, buf)

	recv(8, 400) // 11584 bytes: most of the window still open
	if n, _ := r.ep.Read(p); n != 8*1448 {
		t.Fatalf("read %d", n)
	}
	if out := r.take(); len(out) != 0 {
		t.Fatalf("window update with more than half the window open: %+v", summary(out))
	}

	recv(28, 500) // 40544 bytes unread: less than half open
	if n, _ := r.ep.Read(p[:4096]); n != 4096 {
		t.Fatalf("read %d", n)
	}
	if out := r.take(); len(out) != 0 {
		t.Fatalf("window update that does not double the window: %+v", summary(out))
	}
	if n, _ := r.ep.Read(p); n != 28*1448-4096 {
		t.Fatalf("read %d", n)
	}
	out := r.take()
	if len(out) != 1 || out[0].Ack != r.peerNxt {
		t.Fatalf("window update after reading everything: %+v", summary(out))
	}
	if w := int(out[0].Window) << r.ep.Info().RcvWScale; w < buf/2 {
		t.Fatalf("window update offers %d bytes", w)
	}
}

// TestSendBufferGrows: the send buffer's bound follows twice the
// congestion window up to MaxSendBuffer, and stays put when MaxSendBuffer
// equals SendBuffer.
func TestSendBufferGrows(t *testing.T) {
	for _, maxBuf := range []int{256 << 10, 16 << 10} {
		r := newRaw(t, tcp.Config{SendBuffer: 16 << 10, MaxSendBuffer: maxBuf})
		r.establish()
		if got := r.ep.SendBufferSize(); got != 16<<10 {
			t.Fatalf("initial send buffer %d", got)
		}
		data := randBytes(16, 1<<20)
		off, acked := 0, 0
		for round := 0; round < 40; round++ {
			n, err := r.ep.Write(data[off:])
			if err != nil && !errors.Is(err, tcp.ErrWouldBlock) {
				t.Fatal(err)
			}
			off += n
			for _, s := range r.take() {
				acked = max(acked, int(s.Seq-(localISS+1))+len(s.Payload))
			}
			r.in(r.ack(localISS + 1 + seqnum.Value(acked)))
		}
		got := r.ep.SendBufferSize()
		i := r.ep.Info()
		switch {
		case got > maxBuf:
			t.Errorf("max %d: send buffer grew to %d", maxBuf, got)
		case maxBuf > 16<<10 && got <= 16<<10:
			t.Errorf("max %d: send buffer stayed at %d with cwnd %d", maxBuf, got, i.Cwnd)
		case maxBuf > 16<<10 && got != min(maxBuf, 2*i.Cwnd):
			t.Errorf("max %d: send buffer %d, cwnd %d", maxBuf, got, i.Cwnd)
		case i.SndBuffer != got:
			t.Errorf("Info.SndBuffer %d, SendBufferSize %d", i.SndBuffer, got)
		}
	}
}

// TestReceiveByReference: segments handed over with a PayloadView are kept
// by reference when in order and copied otherwise; the caller releases its
// view after each call (its pooled memory is then reused for the next
// segments), and what Read returns is still exactly the stream, through
// reordering and reads of every size.
func TestReceiveByReference(t *testing.T) {
	r := newRaw(t, tcp.Config{ReceiveBuffer: 1 << 20, MaxReceiveBuffer: 1 << 20})
	r.establish()
	data := randBytes(17, 400000)
	rng := rand.New(rand.NewSource(18))
	type piece struct{ off, n int }
	var pieces []piece
	for off := 0; off < len(data); {
		n := min(1+rng.Intn(3000), len(data)-off)
		pieces = append(pieces, piece{off, n})
		off += n
	}
	for i := 0; i+1 < len(pieces); i += 2 + rng.Intn(6) { // some swapped pairs
		if rng.Intn(3) == 0 {
			pieces[i], pieces[i+1] = pieces[i+1], pieces[i]
		}
	}
	base := r.peerNxt
	var got []byte
	p := make([]byte, 70000)
	for i, pc := range pieces {
		v := buffer.NewViewWithData(data[pc.off : pc.off+pc.n])
		s := r.data(base+seqnum.Value(pc.off), v.AsSlice(), uint32(1000+i))
		s.PayloadView = v
		r.in(s)
		v.Release()
		if rng.Intn(4) == 0 {
			n, _ := r.ep.Read(p[:1+rng.Intn(len(p))])
			got = append(got, p[:n]...)
		}
		r.take()
	}
	for {
		n, _ := r.ep.Read(p)
		if n == 0 {
			break
		}
		got = append(got, p[:n]...)
	}
	sameData(t, data, got)
}
