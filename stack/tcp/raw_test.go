package tcp_test

import (
	"slices"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// sent is a decoded copy of a segment an endpoint emitted.
type sent struct {
	Seq, Ack seqnum.Value
	Flags    header.TCPFlags
	Window   uint16
	Opts     options.TCPOptions
	Payload  []byte
	Retx     bool
	SegSize  int // OutSegment.SegmentSize (TSO)
}

// raw drives a single endpoint by hand: the test plays the peer.
type raw struct {
	t       *testing.T
	clock   *faketime.ManualClock
	ep      *tcp.Endpoint
	out     []sent
	peerISS seqnum.Value
	peerNxt seqnum.Value // next sequence number the fake peer sends
	tsVal   uint32
	// tsEcr is the timestamp the peer echoes: the TSval of the last
	// segment the endpoint sent (what a peer receiving everything in
	// order echoes).
	tsEcr uint32
	// hook, if set, sees every segment inside Output (to use what is
	// valid only during the call, such as ClonePayload).
	hook func(*tcp.OutSegment)
}

const localISS = 1000

func newRaw(t *testing.T, cfg tcp.Config) *raw {
	r := &raw{t: t, clock: faketime.NewManualClock(), peerISS: 50000, tsVal: 100}
	cfg.Clock = r.clock
	cfg.ISS = localISS
	cfg.Output = tcp.OutputFunc(func(s *tcp.OutSegment) {
		var d sent
		d.Seq, d.Ack, d.Flags, d.Window, d.Retx, d.SegSize = s.Seq, s.Ack, s.Flags, s.Window, s.Retransmit, s.SegmentSize
		if err := options.ParseTCPOptions(s.Options, &d.Opts); err != nil {
			t.Fatalf("endpoint emitted bad options %x: %v", s.Options, err)
		}
		if len(s.Options)%4 != 0 || len(s.Options) > 40 {
			t.Fatalf("option block length %d", len(s.Options))
		}
		d.Payload = s.AppendPayload(nil)
		if d.Opts.HasTimestamp {
			r.tsEcr = d.Opts.TSVal
		}
		r.out = append(r.out, d)
		if r.hook != nil {
			r.hook(s)
		}
	})
	ep, err := tcp.NewEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.ep = ep
	return r
}

// take returns and clears the segments emitted so far.
func (r *raw) take() []sent {
	o := r.out
	r.out = nil
	return o
}

// takeData is take without the segments that carry no payload.
func (r *raw) takeData() []sent {
	return slices.DeleteFunc(r.take(), func(s sent) bool { return len(s.Payload) == 0 })
}

// establish completes an active open against the fake peer, which offers
// SACK, timestamps and window scale 7, MSS 1000, window 65535<<7.
func (r *raw) establish() {
	r.t.Helper()
	if err := r.ep.Connect(); err != nil {
		r.t.Fatal(err)
	}
	syn := r.take()
	if len(syn) != 1 || syn[0].Flags != tcp.FlagSYN {
		r.t.Fatalf("SYN: %+v", syn)
	}
	r.in(tcp.Segment{
		Seq: r.peerISS, Ack: localISS + 1, Flags: tcp.FlagSYN | tcp.FlagACK, Window: 65535,
		Options: options.TCPOptions{HasMSS: true, MSS: 1000, HasWindowScale: true, WindowScale: 7,
			SACKPermitted: true, HasTimestamp: true, TSVal: r.tsVal, TSEcr: syn[0].Opts.TSVal},
	})
	r.peerNxt = r.peerISS + 1
	if r.ep.State() != tcp.StateEstablished {
		r.t.Fatalf("state %v", r.ep.State())
	}
	r.take()
}

// in feeds a segment, filling timestamps if the test left them out.
func (r *raw) in(s tcp.Segment) {
	r.ep.HandleSegment(&s)
}

// ack builds an ACK from the fake peer with current timestamps.
func (r *raw) ack(ack seqnum.Value, sack ...options.SACKBlock) tcp.Segment {
	r.tsVal++
	s := tcp.Segment{Seq: r.peerNxt, Ack: ack, Flags: tcp.FlagACK, Window: 65535,
		Options: options.TCPOptions{HasTimestamp: true, TSVal: r.tsVal, TSEcr: max(r.tsEcr, 1)}}
	s.Options.NumSACKBlocks = copy(s.Options.SACKBlocks[:], sack)
	return s
}

// advance moves the clock and runs due timers.
func (r *raw) advance(d time.Duration) {
	for d > 0 {
		at, ok := r.ep.NextDeadline()
		now := r.clock.NowMonotonic()
		step := d
		if ok && at.Sub(now) < step {
			step = max(at.Sub(now), 0)
		}
		r.clock.Advance(step)
		d -= step
		r.ep.HandleTimers()
		if step == 0 && ok {
			// Timer fired at the current instant; loop continues.
			if at2, ok2 := r.ep.NextDeadline(); ok2 && at2 == at {
				r.t.Fatal("timer did not advance")
			}
		}
	}
}

// pastQuickAck feeds the endpoint small in-order segments (timestamps from
// tsVal on) until one is no longer ACKed at once: quick-ACK mode at the
// start of the connection is over. The delayed ACK of the last one is let
// go, and the next timestamp to use returned.
func (r *raw) pastQuickAck(tsVal uint32) uint32 {
	r.t.Helper()
	for i := 0; ; i++ {
		if i == 64 {
			r.t.Fatal("every segment ACKed at once")
		}
		r.in(r.data(r.peerNxt, []byte{byte(i)}, tsVal))
		tsVal++
		r.peerNxt++
		if len(r.take()) == 0 {
			break
		}
	}
	r.advance(100 * time.Millisecond)
	r.take()
	return tsVal
}
