package mptcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
)

var (
	simA = tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	simB = tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
)

// simPair is an MPTCP connection between two hosts of a simulated network,
// driven the way the adapter in package stack drives it: Update after
// every event, HandleTimers when a connection deadline passes.
type simPair struct {
	t      *testing.T
	net    *simnet.Network
	client *Conn
	server *Conn
	ssf    *Subflow // the server's subflow, until its endpoint is accepted
	tokens *Tokens
	mib    *MIB
	// accept binds the server's subflow to its endpoint once the
	// listener has it (run calls it until then).
	accept func()
}

func newSimPair(t *testing.T, link simnet.LinkConfig, clientCsum, serverCsum bool) *simPair {
	return newSimPairOpts(t, link, clientCsum, serverCsum, nil)
}

func newSimPairTap(t *testing.T, link simnet.LinkConfig, tap func(*simnet.Packet) bool) *simPair {
	return newSimPairOpts(t, link, false, false, tap)
}

func newSimPairOpts(t *testing.T, link simnet.LinkConfig, clientCsum, serverCsum bool, tap func(*simnet.Packet) bool) *simPair {
	t.Helper()
	return newSimPairWait(t, link, clientCsum, serverCsum, tap, true)
}

// newSimPairWait is newSimPairOpts; with waitServer false it returns once
// the client is established, whatever the server's state.
func newSimPairWait(t *testing.T, link simnet.LinkConfig, clientCsum, serverCsum bool, tap func(*simnet.Packet) bool, waitServer bool) *simPair {
	t.Helper()
	p := &simPair{t: t, net: simnet.New(1), tokens: NewTokens(), mib: new(MIB)}
	p.net.Tap = tap
	a, b := p.net.AddHost(simA), p.net.AddHost(simB)
	p.net.Connect(simA, simB, link, link)
	cfg := func(csum bool) Config {
		return Config{Clock: p.net.Clock, Tokens: p.tokens, Checksums: csum, Rand: rand.NewChaCha8([32]byte{byte(len(p.tokens.m))}), MIB: p.mib}
	}
	tcfg := tcp.Config{MSS: 1460}
	_, err := b.Listen(80, tcp.ListenerConfig{Config: tcfg, Backlog: 8, NewExtension: func(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
		c, s, ok, err := NewServer(cfg(serverCsum), seg)
		if err != nil || !ok {
			t.Errorf("NewServer: ok %v err %v", ok, err)
			return nil, tcp.VerdictDrop
		}
		p.server, p.ssf = c, s
		return s, tcp.VerdictAccept
	}})
	if err != nil {
		t.Fatal(err)
	}
	c, sf, err := NewClient(cfg(clientCsum))
	if err != nil {
		t.Fatal(err)
	}
	p.client = c
	ccfg := tcfg
	ccfg.Extension = sf
	ep, err := a.Dial(0, simB, 80, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	sf.Bind(ep)
	p.accept = func() {
		if p.ssf != nil && p.ssf.ep == nil {
			if sep := b.Accept(80); sep != nil {
				p.ssf.Bind(sep)
			}
		}
	}
	p.run(func() bool {
		if !waitServer {
			return c.State() != StateHandshake
		}
		return p.ssf != nil && p.ssf.ep != nil && c.State() != StateHandshake && p.server.State() != StateHandshake
	}, 10*time.Second, "handshake")
	return p
}

// run advances the simulation until cond holds.
func (p *simPair) run(cond func() bool, d time.Duration, what string) {
	p.t.Helper()
	step := func() bool {
		now := p.net.Clock.NowMonotonic()
		if p.accept != nil {
			p.accept()
		}
		for _, c := range []*Conn{p.client, p.server} {
			if c == nil {
				continue
			}
			if at, ok := c.NextDeadline(); ok && !now.Before(at) {
				c.HandleTimers()
			}
			c.Update()
		}
		return cond()
	}
	// The connections' own deadlines are not simulator events: advance
	// in slices of 50 ms so that they are served within that much.
	ok := false
	for elapsed := time.Duration(0); !ok && elapsed < d; elapsed += 50 * time.Millisecond {
		ok = p.net.RunUntil(step, 50*time.Millisecond)
	}
	if !ok {
		p.t.Fatalf("%s: not done after %v (virtual): client %+v server %+v", what, d, p.client.Info(), p.server.Info())
	}
}

// transfer moves n random bytes from w to r at the data level, closing w
// for sending at the end, and checks r reads exactly them and then EOF.
func (p *simPair) transfer(w, r *Conn, n int, seed uint64) {
	p.t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(data)
	var got []byte
	buf := make([]byte, 100_000)
	sent, eof := 0, false
	p.run(func() bool {
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
		return eof
	}, 10*time.Minute, fmt.Sprintf("transfer of %d bytes", n))
	if !bytes.Equal(got, data) {
		p.t.Fatalf("received %d bytes, sent %d: data differs", len(got), n)
	}
}

func TestSimTransfer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		link       simnet.LinkConfig
		cCsum      bool
		sCsum      bool
		n          int
		wantCsums  bool
		minRetrans bool
	}{
		{name: "clean", link: simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 10e6}, n: 2 << 20},
		{name: "checksums-by-client", link: simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 10e6}, cCsum: true, n: 1 << 20, wantCsums: true},
		{name: "checksums-by-server", link: simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 10e6}, sCsum: true, n: 1 << 20, wantCsums: true},
		{name: "lossy", link: simnet.LinkConfig{Delay: 25 * time.Millisecond, Rate: 5e6, Loss: 0.01, Reorder: 0.02, ReorderDelay: 5 * time.Millisecond, Duplicate: 0.005}, cCsum: true, n: 2 << 20, wantCsums: true, minRetrans: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newSimPair(t, tc.link, tc.cCsum, tc.sCsum)
			p.transfer(p.client, p.server, tc.n, 1)
			p.transfer(p.server, p.client, tc.n/2, 2)
			p.run(func() bool { return p.client.State() == StateClosed && p.server.State() == StateClosed }, time.Minute, "close")
			for _, c := range []*Conn{p.client, p.server} {
				in := c.Info()
				if in.Fallback != FallbackNone || in.Checksums != tc.wantCsums || !in.DataFINAcked || !in.DataFINReceived {
					t.Errorf("%+v", in)
				}
				if in.Stats.ChecksumErrors != 0 {
					t.Errorf("checksum errors: %+v", in.Stats)
				}
			}
			if p.tokens.Len() != 0 {
				t.Errorf("%d tokens still held after close", p.tokens.Len())
			}
			if tc.minRetrans {
				if r := p.client.subflows[0].ep.Info().BytesRetrans; r == 0 {
					t.Errorf("lossy link but no retransmission")
				}
			}
		})
	}
}

// stripMPTCP overwrites every MPTCP option of a TCP segment with NOPs, as
// iptables' TCPOPTSTRIP does, and reports whether it found one.
func stripMPTCP(seg []byte) bool {
	if len(seg) < 20 {
		return false
	}
	hl := int(seg[12]>>4) * 4
	if hl < 20 || hl > len(seg) {
		return false
	}
	opts, found := seg[20:hl], false
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return found
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return found
		}
		n := int(opts[i+1])
		if opts[i] == 30 {
			for k := i; k < i+n; k++ {
				opts[k] = 1
			}
			found = true
		}
		i += n
	}
	return found
}

// TestSimFallbackStripped runs transfers through paths that strip MPTCP
// options after the handshake, in the ways middleboxes do: the connection
// falls back to plain TCP without losing or corrupting a byte.
func TestSimFallbackStripped(t *testing.T) {
	link := simnet.LinkConfig{Delay: 5 * time.Millisecond, Rate: 20e6}
	const synFlags = 0x02
	for _, tc := range []struct {
		name  string
		strip func(p *simnet.Packet) bool // true: strip this packet's options
	}{
		{"all-after-syn", func(p *simnet.Packet) bool { return p.Bytes[13]&synFlags == 0 }},
		{"client-after-syn", func(p *simnet.Packet) bool { return p.Src == simA && p.Bytes[13]&synFlags == 0 }},
		{"server-after-synack", func(p *simnet.Packet) bool { return p.Src == simB && p.Bytes[13]&synFlags == 0 }},
		{"data-only", func(p *simnet.Packet) bool { return len(p.Bytes) > int(p.Bytes[12]>>4)*4 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stripped := 0
			tap := func(pk *simnet.Packet) bool {
				if tc.strip(pk) && stripMPTCP(pk.Bytes) {
					stripped++
				}
				return true
			}
			p := newSimPairTap(t, link, tap)
			p.transfer(p.client, p.server, 1<<20, 3)
			p.transfer(p.server, p.client, 1<<19, 4)
			if stripped == 0 {
				t.Fatal("nothing stripped")
			}
			fell := 0
			for _, c := range []*Conn{p.client, p.server} {
				in := c.Info()
				t.Logf("client=%v fallback=%q state=%v", in.Client, in.Fallback, in.State)
				if in.Fallback != FallbackNone {
					fell++
				}
				if c.Err() != nil {
					t.Errorf("connection error: %v", c.Err())
				}
			}
			if fell == 0 {
				t.Error("neither side fell back")
			}
		})
	}
}

// TestSimFastclose aborts the client: the server must see MP_FASTCLOSE
// with its own key (RFC 8684 §3.5) and report ErrFastclose; with the key
// forged on the path, the RST still resets the subflow but is not taken
// as an MP_FASTCLOSE.
func TestSimFastclose(t *testing.T) {
	for _, forge := range []bool{false, true} {
		t.Run(fmt.Sprintf("forged=%v", forge), func(t *testing.T) {
			var p *simPair
			tap := func(pk *simnet.Packet) bool {
				if forge && pk.Bytes[13]&0x04 != 0 { // RST
					flipFastcloseKey(pk.Bytes)
				}
				return true
			}
			p = newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond}, tap)
			// Unread data at the client: Close must abort with MP_FASTCLOSE.
			if _, err := p.server.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			p.run(func() bool { return p.client.Readable() > 0 }, time.Second, "data")
			p.client.Close()
			p.run(func() bool { return p.server.Err() != nil }, time.Second, "server reset")
			st := p.server.Info().Stats
			if got := errors.Is(p.server.Err(), ErrFastclose); got == forge {
				t.Errorf("server error %v: MP_FASTCLOSE recognised = %v", p.server.Err(), got)
			}
			if !errors.Is(p.server.Err(), tcp.ErrConnectionReset) {
				t.Errorf("server error %v, want a reset", p.server.Err())
			}
			if want := map[bool]uint64{false: 1, true: 0}[forge]; st.FastclosesRcvd != want {
				t.Errorf("FastclosesRcvd = %d, want %d", st.FastclosesRcvd, want)
			}
			if st.TCPRstsRcvd != 1 {
				t.Errorf("TCPRstsRcvd = %d, want 1 (MP_TCPRST rides with the fastclose RST)", st.TCPRstsRcvd)
			}
			if p.client.Info().Stats.FastclosesSent != 1 {
				t.Errorf("client sent no MP_FASTCLOSE")
			}
		})
	}
}

// flipFastcloseKey corrupts the key of an MP_FASTCLOSE option in seg.
func flipFastcloseKey(seg []byte) {
	hl := int(seg[12]>>4) * 4
	opts := seg[20:hl]
	for i := 0; i+1 < len(opts); {
		if opts[i] <= 1 {
			i++
			continue
		}
		n := int(opts[i+1])
		if n < 2 || i+n > len(opts) {
			return
		}
		if opts[i] == 30 && n == 12 && opts[i+2]>>4 == 7 {
			opts[i+11] ^= 0xff
		}
		i += n
	}
}

// TestSimDataAckStall has the path freeze the server's Data ACK while the
// subflow keeps acknowledging: the client must give up after
// DataAckTimeout with MP_TCPRST "too much outstanding data" (RFC 8684
// §3.6), not hold its data forever.
func TestSimDataAckStall(t *testing.T) {
	var frozen []byte
	var rstReason = -1
	tap := func(pk *simnet.Packet) bool {
		forEachMPTCP(pk.Bytes, func(opt []byte) {
			switch {
			case pk.Src == simB && opt[2]>>4 == 2 && opt[3]&0x01 != 0 && len(opt) >= 8:
				// DSS with a Data ACK from the server: freeze its value.
				n := 4
				if opt[3]&0x02 != 0 {
					n = 8
				}
				if frozen == nil {
					frozen = append([]byte{}, opt[4:4+n]...)
				}
				copy(opt[4:4+n], frozen)
			case pk.Src == simA && opt[2]>>4 == 8 && len(opt) == 4:
				rstReason = int(opt[3])
			}
		})
		return true
	}
	p := newSimPairTap(t, simnet.LinkConfig{Delay: 5 * time.Millisecond, Rate: 10e6}, tap)
	p.client.cfg.DataAckTimeout = 3 * time.Second
	data := make([]byte, 256<<10)
	if n, _ := p.client.Write(data); n != len(data) {
		t.Fatalf("wrote %d", n)
	}
	start := p.net.Clock.NowMonotonic()
	p.run(func() bool {
		buf := make([]byte, 64<<10)
		for p.server.Readable() > 0 {
			p.server.Read(buf)
		}
		return p.client.Err() != nil
	}, time.Minute, "reset")
	took := p.net.Clock.NowMonotonic().Sub(start)
	if !errors.Is(p.client.Err(), ErrDataAckTimeout) {
		t.Fatalf("client error %v, want ErrDataAckTimeout", p.client.Err())
	}
	if took < 3*time.Second || took > 10*time.Second {
		t.Errorf("gave up after %v (virtual), want about 3 s", took)
	}
	if rstReason != 4 {
		t.Errorf("MP_TCPRST reason %d on the client's RST, want 4", rstReason)
	}
}

// forEachMPTCP calls fn with every MPTCP option of a TCP segment (a view
// into seg: fn may modify it).
func forEachMPTCP(seg []byte, fn func(opt []byte)) {
	hl := int(seg[12]>>4) * 4
	if hl < 20 || hl > len(seg) {
		return
	}
	opts := seg[20:hl]
	for i := 0; i < len(opts); {
		if opts[i] == 0 {
			return
		}
		if opts[i] == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return
		}
		n := int(opts[i+1])
		if opts[i] == 30 && n >= 4 {
			fn(opts[i : i+n])
		}
		i += n
	}
}

// TestSimFastcloseBeforeDSS has the server abort before any DSS of its
// own went out (as when its application closes with the client's first
// data unread): Linux, not yet fully established (RFC 8684 §3.1), would
// take a RST without a DSS for a fallback and ignore its MP_FASTCLOSE, so
// the RST carries the Data ACK. Once a DSS went out, the RST carries none.
func TestSimFastcloseBeforeDSS(t *testing.T) {
	for _, dssFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("dss-first=%v", dssFirst), func(t *testing.T) {
			serverDSS, rstDSS, rstFC := 0, 0, 0
			tap := func(pk *simnet.Packet) bool {
				if pk.Src != simB {
					return true
				}
				rst := pk.Bytes[13]&0x04 != 0
				forEachMPTCP(pk.Bytes, func(opt []byte) {
					switch st := opt[2] >> 4; {
					case st == 2 && rst:
						rstDSS++
					case st == 2:
						serverDSS++
					case st == 7 && rst:
						rstFC++
					}
				})
				return true
			}
			p := newSimPairTap(t, simnet.LinkConfig{Delay: time.Millisecond}, tap)
			if dssFirst {
				if _, err := p.server.Write([]byte("first")); err != nil {
					t.Fatal(err)
				}
				p.run(func() bool { return p.client.Readable() > 0 }, time.Second, "server data")
			}
			if (serverDSS > 0) != dssFirst {
				t.Fatalf("the server sent %d DSS before the abort", serverDSS)
			}
			p.server.Abort()
			p.run(func() bool { return p.client.Err() != nil }, time.Second, "client reset")
			if !errors.Is(p.client.Err(), ErrFastclose) {
				t.Errorf("client error %v, want ErrFastclose", p.client.Err())
			}
			if rstFC != 1 {
				t.Errorf("%d RSTs with MP_FASTCLOSE, want 1", rstFC)
			}
			want, wantMIB := 1, uint64(1)
			if dssFirst {
				want, wantMIB = 0, 0
			}
			if rstDSS != want {
				t.Errorf("the fastclose RST carried %d DSS, want %d", rstDSS, want)
			}
			if got := p.mib.Get(MPFastcloseDataAck); got != wantMIB {
				t.Errorf("MPFastcloseDataAck %d, want %d", got, wantMIB)
			}
		})
	}
}

// TestSimDataRetransAfterClose: the server has everything and its
// connection closed (both DATA_FINs acknowledged, its subflow closed with
// a FIN), but its Data ACKs never reached the client, whose data-level
// timer re-sends its data on the subflow (Linux does the same). That is a
// duplicate at the data level: the server acknowledges it, it does not
// reset the subflow for data after its close (RFC 2525 §2.17 is for data
// nobody will read), and both ends finish cleanly.
func TestSimDataRetransAfterClose(t *testing.T) {
	var p *simPair
	var frozen []byte
	freeze, resent := true, 0
	tap := func(pk *simnet.Packet) bool {
		closed := p != nil && p.server != nil && p.server.State() == StateClosed
		if pk.Src == simA && closed && len(pk.Bytes) > int(pk.Bytes[12]>>4)*4 && freeze {
			resent++
			freeze = false // let the answer to the retransmission through
			return true
		}
		forEachMPTCP(pk.Bytes, func(opt []byte) {
			if pk.Src == simB && opt[2]>>4 == 2 && opt[3]&0x01 != 0 && len(opt) >= 8 && freeze {
				n := 4
				if opt[3]&0x02 != 0 {
					n = 8
				}
				if frozen != nil {
					copy(opt[4:4+n], frozen[8-n:])
				}
			}
		})
		return true
	}
	p = newSimPairTap(t, simnet.LinkConfig{Delay: 5 * time.Millisecond}, tap)
	// The server's Data ACK stays at the client's first byte.
	frozen = binary.BigEndian.AppendUint64(nil, p.server.Info().RcvNxt)
	msg := []byte("delivered once, sent twice")
	if _, err := p.client.Write(msg); err != nil {
		t.Fatal(err)
	}
	p.client.CloseWrite()
	got := make([]byte, 0, len(msg))
	buf := make([]byte, 64)
	p.run(func() bool {
		n, _ := p.server.Read(buf)
		got = append(got, buf[:n]...)
		return p.server.Readable() == 0 && len(got) == len(msg)
	}, 5*time.Second, "server read")
	p.server.CloseWrite()
	p.run(func() bool {
		return p.client.State() == StateClosed && p.server.State() == StateClosed
	}, 30*time.Second, "both closed")
	if string(got) != string(msg) {
		t.Fatalf("server read %q", got)
	}
	if resent == 0 {
		t.Fatal("the client re-sent no data after the server's close: not the case under test")
	}
	for _, c := range []*Conn{p.client, p.server} {
		if c.Err() != nil {
			t.Errorf("client=%v: %v", c.client, c.Err())
		}
	}
	if n := p.ssf.ep.Info().AbortOnData; n != 0 {
		t.Errorf("the server's subflow reset %d times for data after its close", n)
	}
	if got := p.mib.Get(MPRstTx); got != 0 {
		t.Errorf("MPRstTx %d, want 0", got)
	}
}
