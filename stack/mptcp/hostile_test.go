package mptcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// recorder keeps a copy of the latest segment each direction sent, as the
// template of forged segments (an attacker who sees the path knows as
// much).
type recorder struct {
	ab, ba []byte // client -> server, server -> client
}

func (r *recorder) tap(pk *simnet.Packet) bool {
	if pk.Src == simA {
		r.ab = append(r.ab[:0], pk.Bytes...)
	} else {
		r.ba = append(r.ba[:0], pk.Bytes...)
	}
	return true
}

// forged is a segment built on a template: same ports, acknowledgement,
// window and timestamps, sequence number just after the template's
// payload (so in the receiver's window), ACK flag, and the given MPTCP
// options; with payload, at seqDelta from that sequence number.
func forged(t *testing.T, tmpl []byte, seqDelta int, payload []byte, opts ...options.Option) []byte {
	t.Helper()
	var seg tcp.Segment
	sport, dport, err := tcp.ParseSegment(tmpl, &seg)
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	hl := int(tmpl[12]>>4) * 4
	l := options.Layout{HasTimestamp: seg.Options.HasTimestamp, TSVal: seg.Options.TSVal, TSEcr: seg.Options.TSEcr, MPTCP: opts}
	ob, omitted := l.Append(nil)
	if omitted.MPTCP != 0 {
		t.Fatalf("forged options do not fit: omitted %b", omitted.MPTCP)
	}
	seq := seg.Seq.Add(seqnum.Size(len(tmpl) - hl))
	seq = seqnum.Value(uint32(seq) + uint32(int32(seqDelta)))
	out := tcp.OutSegment{Seq: seq, Ack: seg.Ack, Flags: tcp.FlagACK, Window: seg.Window, Options: ob}
	b := out.AppendHeader(nil, sport, dport)
	return append(b, payload...)
}

// transferHook is transfer with hook called once, when the reader has
// received at least at bytes; it fails at once if either side errs.
func (p *simPair) transferHook(w, r *Conn, n int, seed uint64, at int, hook func()) {
	p.t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(data)
	var got []byte
	buf := make([]byte, 100_000)
	sent, eof, hooked := 0, false, false
	p.run(func() bool {
		if w.Err() != nil || r.Err() != nil {
			p.t.Fatalf("connection failed: writer %v, reader %v", w.Err(), r.Err())
		}
		for sent < n {
			k, err := w.Write(data[sent:min(n, sent+70_000)])
			sent += k
			if err != nil {
				break
			}
		}
		if sent == n {
			w.CloseWrite()
		}
		for !eof {
			k, err := r.Read(buf)
			got = append(got, buf[:k]...)
			if k == 0 && err == nil {
				eof = true
			}
			if k == 0 {
				break
			}
		}
		if !hooked && len(got) >= at {
			hooked = true
			hook()
		}
		return eof
	}, 2*time.Minute, fmt.Sprintf("transfer of %d bytes", n))
	if !bytes.Equal(got, data) {
		p.t.Fatalf("received %d bytes, sent %d: data differs", len(got), n)
	}
}

// TestSimHostileSegments injects forged segments into a live transfer, in
// the receiver's TCP window, whose MPTCP options carry data-level
// information that is out of window, for bytes that are not there, or
// keyed wrongly. Each must be ignored and counted; the transfer finishes
// intact, without a reset or a fallback (RFC 8684 §3.3; Linux ignores
// them the same way).
func TestSimHostileSegments(t *testing.T) {
	type class struct {
		name    string
		counter Counter
		forge   func(t *testing.T, p *simPair, rec *recorder) [][]byte
	}
	classes := []class{
		{"data-fin-far-dsn64", DataFinAhead, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			fin := uint64(p.client.rx.Next()) + 1<<40
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasMapping: true, DSN64: true, DSN: fin, DataLen: 1, DataFIN: true})}
		}},
		{"data-fin-far-dsn32", DataFinAhead, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			fin := uint64(p.client.rx.Next()) + 1<<31 - 100
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasMapping: true, DSN: fin & 0xffffffff, DataLen: 1, DataFIN: true})}
		}},
		{"data-fin-behind", DataFinInvalid, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			fin := uint64(p.client.rx.Next()) - 5000
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasMapping: true, DSN64: true, DSN: fin, DataLen: 1, DataFIN: true})}
		}},
		{"data-ack-unsent", DataAckInvalid, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasDataAck: true, DataAck64: true, DataAck: uint64(p.client.sndNxt) + 1<<20})}
		}},
		{"mapping-on-pure-ack", DSSNoPayload, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			// A mapping for subflow bytes yet to come, shifted against
			// the genuine one by 7 data sequence numbers.
			s := p.client.subflows[0]
			ssn := s.rcvRel + 5000
			dsn := uint64(p.client.rx.Next()) + 5000 + 7
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasMapping: true, DSN64: true, DSN: dsn, SubflowSeq: ssn, DataLen: 1000, HasChecksum: p.client.checksums})}
		}},
		{"infinite-on-pure-ack", DSSNoPayload, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			return [][]byte{forged(t, rec.ba, 0, nil, &options.DSS{HasMapping: true, DSN64: true, DSN: uint64(p.client.rx.Next()), HasChecksum: p.client.checksums})}
		}},
		{"fastclose-wrong-key", MPFastcloseBadKey, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			return [][]byte{forged(t, rec.ba, 0, nil, &options.MPFastclose{Key: p.client.localKey ^ 0x5a5a})}
		}},
		{"old-payload-conflicting-mapping", numCounters, func(t *testing.T, p *simPair, rec *recorder) [][]byte {
			// Junk at sequence numbers delivered long ago (TCP drops it
			// as a duplicate), with a mapping for bytes to come: neither
			// may reach the data level.
			s := p.client.subflows[0]
			m := &options.DSS{HasMapping: true, DSN64: true, DSN: uint64(p.client.rx.Next()) + 9, SubflowSeq: s.rcvRel + 3000, DataLen: 500, HasChecksum: p.client.checksums}
			old := s.ep.IRS().Add(seqnum.Size(s.rcvRel - 2000))
			var tseg tcp.Segment
			tcp.ParseSegment(rec.ba, &tseg)
			delta := int(int32(uint32(old) - uint32(tseg.Seq.Add(seqnum.Size(len(tseg.Payload))))))
			return [][]byte{
				forged(t, rec.ba, delta, make([]byte, 200), m),
			}
		}},
	}
	link := simnet.LinkConfig{Delay: 2 * time.Millisecond, Rate: 50e6}
	for _, cl := range classes {
		for _, csum := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/csum=%v", cl.name, csum), func(t *testing.T) {
				rec := &recorder{}
				p := newSimPairOpts(t, link, csum, csum, rec.tap)
				p.transferHook(p.server, p.client, 1<<20, 11, 256<<10, func() {
					for _, seg := range cl.forge(t, p, rec) {
						p.net.Inject(0, simB, uint16(seg[0])<<8|uint16(seg[1]), simA, uint16(seg[2])<<8|uint16(seg[3]), seg)
					}
				})
				p.transfer(p.client, p.server, 64<<10, 12)
				p.run(func() bool { return p.client.State() == StateClosed && p.server.State() == StateClosed }, time.Minute, "close")
				for _, c := range []*Conn{p.client, p.server} {
					if c.Err() != nil || c.Fallback() != FallbackNone {
						t.Errorf("client=%v: err %v, fallback %q", c.client, c.Err(), c.Fallback())
					}
				}
				if cl.counter == numCounters {
					// Dropped by TCP as a duplicate, before MPTCP saw it.
					if p.client.subflows[0].ep.Info().DroppedSegs == 0 {
						t.Error("no segment dropped")
					}
				} else if p.mib.Get(cl.counter) == 0 {
					t.Errorf("counter %v did not move: %v", cl.counter, p.mib.Snapshot())
				}
			})
		}
	}
}

// TestSimDataAckStaleRecovers freezes the server's Data ACK for a while,
// as Linux's does when its subflow acknowledges data before moving it to
// the MPTCP socket, so that the client's data-level window looks full
// with everything acknowledged by the subflow and nothing in flight. The
// client's data-level retransmission must get a fresh Data ACK out of the
// server once the freeze ends, instead of waiting for DataAckTimeout.
func TestSimDataAckStaleRecovers(t *testing.T) {
	var frozen []byte
	freeze := true
	tap := func(pk *simnet.Packet) bool {
		if pk.Src != simB {
			return true
		}
		forEachMPTCP(pk.Bytes, func(opt []byte) {
			if opt[2]>>4 != 2 || opt[3]&0x01 == 0 || len(opt) < 8 {
				return
			}
			n := 4
			if opt[3]&0x02 != 0 {
				n = 8
			}
			if frozen == nil {
				frozen = append([]byte{}, opt[4:4+n]...)
			}
			if freeze {
				copy(opt[4:4+n], frozen)
			}
		})
		return true
	}
	p := newSimPairTap(t, simnet.LinkConfig{Delay: 5 * time.Millisecond, Rate: 10e6}, tap)
	data := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{3}).Read(data)
	start := p.net.Clock.NowMonotonic()
	var got []byte
	buf := make([]byte, 64<<10)
	sent := 0
	p.run(func() bool {
		for sent < len(data) {
			k, _ := p.client.Write(data[sent:])
			if k == 0 {
				break
			}
			sent += k
		}
		if sent == len(data) {
			p.client.CloseWrite()
		}
		for {
			k, _ := p.server.Read(buf)
			if k == 0 {
				break
			}
			got = append(got, buf[:k]...)
		}
		if freeze && p.net.Clock.NowMonotonic().Sub(start) > 2*time.Second {
			freeze = false
		}
		if p.client.Err() != nil {
			t.Fatalf("client: %v", p.client.Err())
		}
		return p.client.Delivered()
	}, 30*time.Second, "delivery after the freeze")
	if !bytes.Equal(got, data) {
		t.Fatalf("server received %d of %d bytes, or different ones", len(got), len(data))
	}
	if took := p.net.Clock.NowMonotonic().Sub(start); took > 10*time.Second {
		t.Errorf("delivered after %v (virtual): the stall outlived the freeze", took)
	}
	if p.client.Info().Stats.Retransmits == 0 || p.mib.Get(MPTCPRetrans) == 0 {
		t.Errorf("no data-level retransmission counted: %+v", p.client.Info().Stats)
	}
}

// TestSimNoFallbackAtClose strips MPTCP options from the server's segments
// once the data level is done, as a Linux peer's subflow answers from
// TIME-WAIT: an ACK of our FIN without a DSS is no sign of a middlebox
// (RFC 8684 §3.7 is about data acknowledged without a Data ACK).
func TestSimNoFallbackAtClose(t *testing.T) {
	var p *simPair
	stripping := false
	tap := func(pk *simnet.Packet) bool {
		if stripping && pk.Src == simB {
			stripMPTCP(pk.Bytes)
		}
		return true
	}
	p = newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond, Rate: 50e6}, tap)
	p.transfer(p.client, p.server, 100<<10, 21)
	p.transfer(p.server, p.client, 10<<10, 22)
	sf := p.client.Subflows()[0]
	p.run(func() bool { return p.client.State() == StateClosed }, time.Minute, "data level done")
	stripping = true
	p.run(func() bool {
		return sf.ep.State() == tcp.StateClosed || sf.ep.State() == tcp.StateTimeWait
	}, time.Minute, "subflow closed")
	if f := p.client.Fallback(); f != FallbackNone {
		t.Fatalf("client fell back after the close: %q", f)
	}
	if !p.client.Info().Checksums && p.client.checksums {
		t.Fatal("checksums reported off")
	}
}

// TestSimDSSBeforeKey replaces the MP_CAPABLE of the client's third ACK
// with a DSS: the server cannot use a DSS without the client's key, so
// it must fall back to plain TCP (as Linux does), not take the
// connection as fully established and drop the data it receives.
func TestSimDSSBeforeKey(t *testing.T) {
	replaced := 0
	tap := func(pk *simnet.Packet) bool {
		if pk.Src != simA || pk.Bytes[13]&0x02 != 0 {
			return true
		}
		forEachMPTCP(pk.Bytes, func(opt []byte) {
			if opt[2]>>4 == 0 && len(opt) == 20 { // MP_CAPABLE ACK form
				// DSS with an 8-byte Data ACK (12 bytes), then NOPs.
				opt[1], opt[2], opt[3] = 12, 0x20, 0x03
				binary.BigEndian.PutUint64(opt[4:], 1)
				for i := 12; i < 20; i++ {
					opt[i] = 1
				}
				replaced++
			}
		})
		return true
	}
	p := newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond, Rate: 50e6}, tap)
	p.transfer(p.client, p.server, 200<<10, 31)
	p.transfer(p.server, p.client, 100<<10, 32)
	if replaced == 0 {
		t.Fatal("no MP_CAPABLE ACK replaced")
	}
	if f := p.server.Fallback(); f != FallbackAckNoMPCapable {
		t.Errorf("server fallback %q, want %q", f, FallbackAckNoMPCapable)
	}
	if p.mib.Get(FallbackNoKey) == 0 {
		t.Error("FallbackNoKey not counted")
	}
	// Both FINs went through: each side's close is complete (what a
	// lingering Close waits for), also once the subflow is retired.
	p.run(func() bool {
		return p.client.Delivered() && p.server.Delivered() && len(p.server.subflows) == 0 && len(p.client.subflows) == 0
	}, 5*time.Minute, "delivery after the fallback")
}

// TestSimThirdAckAndFirstDataLost drops the client's third ACK and its
// first data segment, the two segments that carry its keys in RFC 8684's
// handshake. Without more, whatever reaches the server next (the DATA_FIN
// of a short request, or the second data segment) has no MP_CAPABLE, and
// the server falls back to TCP, as Linux's does. The client repeats the
// third ACK just before its first data, so the server still learns the
// keys and the connection stays MPTCP.
func TestSimThirdAckAndFirstDataLost(t *testing.T) {
	for _, n := range []int{2, 40_000} { // DATA_FIN next; second data segment next
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var dropped []string
			tap := func(pk *simnet.Packet) bool {
				if pk.Src != simA || pk.Bytes[13]&0x02 != 0 || len(dropped) == 2 {
					return true
				}
				mpc := false
				forEachMPTCP(pk.Bytes, func(opt []byte) { mpc = mpc || opt[2]>>4 == 0 })
				payload := len(pk.Bytes) > int(pk.Bytes[12]>>4)*4
				switch {
				case mpc && !payload && len(dropped) == 0:
					dropped = append(dropped, "third ACK")
					return false
				case mpc && payload:
					dropped = append(dropped, "first data")
					return false
				}
				return true
			}
			p := newSimPairWait(t, simnet.LinkConfig{Delay: time.Millisecond, Rate: 50e6}, false, false, tap, false)
			p.transfer(p.client, p.server, n, 51)
			if len(dropped) != 2 || dropped[1] != "first data" {
				t.Fatalf("dropped %v, want the third ACK and the first data", dropped)
			}
			for _, c := range []*Conn{p.client, p.server} {
				if f := c.Fallback(); f != FallbackNone {
					t.Errorf("client=%v fell back: %q", c.client, f)
				}
			}
			if got := p.mib.Get(MPCapableACKRepeat); got != 1 {
				t.Errorf("MPCapableACKRepeat %d, want 1", got)
			}
		})
	}
}

// TestSimCapableVersionAbove1 has the client's SYN announce MP_CAPABLE
// version 15: the server answers with version 1, the highest it supports
// (RFC 8684 §3.1), and the connection runs MPTCP.
func TestSimCapableVersionAbove1(t *testing.T) {
	tap := func(pk *simnet.Packet) bool {
		if pk.Src == simA && pk.Bytes[13]&0x12 == 0x02 { // SYN without ACK
			forEachMPTCP(pk.Bytes, func(opt []byte) {
				if opt[2]>>4 == 0 {
					opt[2] = opt[2]&0xf0 | 15
				}
			})
		}
		return true
	}
	p := newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond, Rate: 50e6}, tap)
	p.transfer(p.client, p.server, 50<<10, 41)
	for _, c := range []*Conn{p.client, p.server} {
		if c.Fallback() != FallbackNone {
			t.Errorf("client=%v fell back: %q", c.client, c.Fallback())
		}
	}
}

// TestSimOptionsAfterFallback counts the MPTCP options each side sends
// after falling back: none after a fallback at the handshake (the
// connection is plain TCP, RFC 8684 §3.7), and the infinite mapping once
// (plus retransmissions of its segment) after a fallback later.
func TestSimOptionsAfterFallback(t *testing.T) {
	const synFlag = 0x02
	for _, tc := range []struct {
		name  string
		strip func(p *simnet.Packet) bool
		// maxOpts bounds the MPTCP options per side after the fallback.
		maxOpts int
	}{
		// The client's third ACK and first data lose MP_CAPABLE: the
		// server falls back at the handshake.
		{"handshake", func(p *simnet.Packet) bool { return p.Src == simA && p.Bytes[13]&synFlag == 0 }, 0},
		// The server's segments lose every option after the SYN/ACK:
		// the client falls back on data without DSS.
		{"after-handshake", func(p *simnet.Packet) bool { return p.Src == simB && p.Bytes[13]&synFlag == 0 }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *simPair
			after := map[bool]int{} // by sender: client?
			tap := func(pk *simnet.Packet) bool {
				if tc.strip(pk) {
					stripMPTCP(pk.Bytes)
				}
				client := pk.Src == simA
				if p != nil {
					c := p.server
					if client {
						c = p.client
					}
					if c != nil && c.Fallback() != FallbackNone {
						forEachMPTCP(pk.Bytes, func([]byte) { after[client]++ })
					}
				}
				return true
			}
			p = newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond, Rate: 20e6}, tap)
			p.transfer(p.client, p.server, 2<<20, 51)
			p.transfer(p.server, p.client, 1<<20, 52)
			if p.client.Fallback() == FallbackNone && p.server.Fallback() == FallbackNone {
				t.Fatal("nobody fell back")
			}
			for client, n := range after {
				if n > tc.maxOpts {
					t.Errorf("client=%v sent %d MPTCP options after falling back, want at most %d", client, n, tc.maxOpts)
				}
			}
		})
	}
}

// TestSimCookieKeepsMPTCP runs the handshake through SYN cookies (as a
// listener under a SYN flood does): the server rebuilds the MPTCP
// connection from the keys the third ACK echoes, so MPTCP is negotiated.
// With the client's pure third ACKs lost (the one after the SYN/ACK and
// the one repeated before the first data), the first data segment, with
// MP_CAPABLE and its mapping, is the ACK that completes the cookie
// handshake: its payload reaches the data level through a subflow the
// listener has just made.
func TestSimCookieKeepsMPTCP(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprintf("third-acks-lost=%v", lose), func(t *testing.T) {
			testSimCookie(t, lose)
		})
	}
}

func testSimCookie(t *testing.T, loseThirdAcks bool) {
	nw := simnet.New(2)
	lost := 0
	nw.Tap = func(pk *simnet.Packet) bool {
		if !loseThirdAcks || pk.Src != simA || pk.Bytes[13]&0x02 != 0 || len(pk.Bytes) > int(pk.Bytes[12]>>4)*4 {
			return true
		}
		mpc := false
		forEachMPTCP(pk.Bytes, func(opt []byte) { mpc = mpc || opt[2]>>4 == 0 })
		if mpc {
			lost++
			return false
		}
		return true
	}
	a, b := nw.AddHost(simA), nw.AddHost(simB)
	nw.Connect(simA, simB, simnet.LinkConfig{Delay: time.Millisecond}, simnet.LinkConfig{Delay: time.Millisecond})
	tokens, mib := NewTokens(), new(MIB)
	cfg := Config{Clock: nw.Clock, Tokens: tokens, MIB: mib}
	var server *Conn
	var ssf *Subflow
	tcfg := tcp.Config{MSS: 1460}
	_, err := b.Listen(80, tcp.ListenerConfig{Config: tcfg, Cookies: tcp.CookiesAlways, NewExtension: func(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
		var c *Conn
		var s *Subflow
		var ok bool
		var err error
		if seg.Flags&tcp.FlagSYN != 0 {
			c, s, ok, err = NewServer(cfg, seg)
			if ok {
				defer c.Release() // a cookie SYN/ACK keeps no state
			}
		} else {
			c, s, ok, err = NewServerFromCookie(cfg, seg)
			server, ssf = c, s
		}
		if err != nil || !ok {
			return nil, tcp.VerdictAccept
		}
		return s, tcp.VerdictAccept
	}})
	if err != nil {
		t.Fatal(err)
	}
	client, csf, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := tcfg
	ccfg.Extension = csf
	ep, err := a.Dial(0, simB, 80, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	csf.Bind(ep)
	p := &simPair{t: t, net: nw, client: client, tokens: tokens, mib: mib}
	if loseThirdAcks {
		p.run(func() bool { return client.State() != StateHandshake }, 10*time.Second, "client established")
		if _, err := client.Write([]byte("first data completes the handshake")); err != nil {
			t.Fatal(err)
		}
	}
	p.run(func() bool {
		if sep := b.Accept(80); sep != nil && ssf != nil {
			ssf.Bind(sep)
			p.server, p.ssf = server, ssf
		}
		return p.server != nil && client.State() != StateHandshake && p.server.State() != StateHandshake
	}, 10*time.Second, "cookie handshake")
	if loseThirdAcks {
		if lost < 2 {
			t.Fatalf("%d pure third ACKs lost, want the first and its repetition", lost)
		}
		want := "first data completes the handshake"
		buf := make([]byte, 64)
		p.run(func() bool { return p.server.Readable() >= len(want) }, 5*time.Second, "first data")
		if n, _ := p.server.Read(buf); string(buf[:n]) != want {
			t.Fatalf("server read %q, want %q", buf[:n], want)
		}
	}
	p.transfer(p.client, p.server, 300<<10, 61)
	p.transfer(p.server, p.client, 300<<10, 62)
	for _, c := range []*Conn{p.client, p.server} {
		if c.Fallback() != FallbackNone {
			t.Errorf("client=%v fell back: %q", c.client, c.Fallback())
		}
	}
	if mib.Get(MPCapableSYNCookie) != 1 {
		t.Errorf("MPCapableSYNCookie = %d, want 1", mib.Get(MPCapableSYNCookie))
	}
}

var _ = dsnmap.DSN(0)

// TestSimShortWriteThenClose: the client writes a little and closes at
// once, before the server's first Data ACK arrived: its DATA_FIN must go
// out at once on a pure ACK with a DSS (not wait for the data-level
// retransmission timer behind a repeated MP_CAPABLE).
func TestSimShortWriteThenClose(t *testing.T) {
	p := newSimPair(t, simnet.LinkConfig{Delay: 5 * time.Millisecond}, false, false)
	start := p.net.Clock.NowMonotonic()
	if _, err := p.client.Write(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if err := p.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	got := 0
	p.run(func() bool {
		for {
			n, err := p.server.Read(buf)
			got += n
			if n == 0 {
				return err == nil && got == 1024
			}
		}
	}, 5*time.Second, "server EOF")
	if took := p.net.Clock.NowMonotonic().Sub(start); took > 50*time.Millisecond {
		t.Errorf("server saw the DATA_FIN after %v (virtual, RTT 10 ms): not at once", took)
	}
}
