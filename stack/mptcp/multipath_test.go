package mptcp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Addresses of the two-path simulated topology: the client has A1 and A2,
// the server B1 and B2; every client address reaches every server
// address over its own link.
var (
	mpA1 = tcpip.AddrFrom4([4]byte{10, 1, 0, 1})
	mpA2 = tcpip.AddrFrom4([4]byte{10, 2, 0, 1})
	mpB1 = tcpip.AddrFrom4([4]byte{10, 1, 0, 2})
	mpB2 = tcpip.AddrFrom4([4]byte{10, 2, 0, 2})
)

func nAddr(a tcpip.Address) netip.Addr { return netip.AddrFrom4(a.As4()) }

// mpSim is a multipath MPTCP pair on the simulator, driven as the stack's
// adapter drives it: Update after every event, timers served, subflows
// the path manager asks for opened, join SYNs routed by token.
type mpSim struct {
	t      *testing.T
	net    *simnet.Network
	hosts  map[tcpip.Address]*simnet.Host
	tokens *Tokens
	mib    *MIB
	client *Conn
	server *Conn
	// subflow extensions waiting for their accepted endpoint, by host.
	pendingSF    map[tcpip.Address][]*Subflow
	joinsRefused int
}

type mpSimConfig struct {
	link          simnet.LinkConfig
	clientPM      PMConfig
	serverPM      PMConfig
	clientCsum    bool
	tap           func(p *simnet.Packet) bool
	linkFor       func(a, b tcpip.Address) simnet.LinkConfig
	clientSched   string
	receiveBuffer int
}

func newMPSim(t *testing.T, cfg mpSimConfig) *mpSim {
	t.Helper()
	m := &mpSim{t: t, net: simnet.New(3), hosts: map[tcpip.Address]*simnet.Host{}, tokens: NewTokens(), mib: new(MIB), pendingSF: map[tcpip.Address][]*Subflow{}}
	m.net.Tap = cfg.tap
	for _, a := range []tcpip.Address{mpA1, mpA2, mpB1, mpB2} {
		m.hosts[a] = m.net.AddHost(a)
	}
	for _, a := range []tcpip.Address{mpA1, mpA2} {
		for _, b := range []tcpip.Address{mpB1, mpB2} {
			l := cfg.link
			if cfg.linkFor != nil {
				l = cfg.linkFor(a, b)
			}
			m.net.Connect(a, b, l, l)
		}
	}
	cpm, err := NewPathManager(cfg.clientPM)
	if err != nil {
		t.Fatal(err)
	}
	spm, err := NewPathManager(cfg.serverPM)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := Config{Clock: m.net.Clock, Tokens: m.tokens, MIB: m.mib, PM: cpm, Checksums: cfg.clientCsum, Rand: rand.NewChaCha8([32]byte{1}), Scheduler: cfg.clientSched, ReceiveBuffer: cfg.receiveBuffer}
	scfg := Config{Clock: m.net.Clock, Tokens: m.tokens, MIB: m.mib, PM: spm, Rand: rand.NewChaCha8([32]byte{2}), ReceiveBuffer: cfg.receiveBuffer}
	tcfg := tcp.Config{MSS: 1460}
	for _, b := range []tcpip.Address{mpB1, mpB2} {
		b := b
		_, err := m.hosts[b].Listen(80, tcp.ListenerConfig{Config: tcfg, Backlog: 16, NewExtension: func(flow tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
			local := netip.AddrPortFrom(nAddr(flow.LocalAddr), flow.LocalPort)
			remote := netip.AddrPortFrom(nAddr(flow.RemoteAddr), flow.RemotePort)
			if tok, ok := JoinToken(seg); ok {
				c := m.tokens.Lookup(tok)
				if c == nil {
					m.joinsRefused++
					return nil, tcp.VerdictReset
				}
				var id uint8
				if e, ok := spm.EndpointFor(local.Addr(), 0); ok {
					id = e.ID
				}
				s, err := c.AcceptJoin(seg, local, remote, id)
				if err != nil {
					m.joinsRefused++
					return nil, tcp.VerdictReset
				}
				m.pendingSF[b] = append(m.pendingSF[b], s)
				return s, tcp.VerdictAccept
			}
			c, s, ok, err := NewServer(scfg, seg)
			if err != nil || !ok {
				t.Errorf("NewServer: ok %v err %v", ok, err)
				return nil, tcp.VerdictDrop
			}
			s.Local, s.Remote = local, remote
			m.server = c
			m.pendingSF[b] = append(m.pendingSF[b], s)
			return s, tcp.VerdictAccept
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	c, sf, err := NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	m.client = c
	m.dial(sf, mpA1, mpB1, tcfg)
	m.run(func() bool {
		return m.server != nil && c.State() != StateHandshake && m.server.State() != StateHandshake
	}, 10*time.Second, "handshake")
	return m
}

// dial opens subflow sf's endpoint from host a to b:80.
func (m *mpSim) dial(sf *Subflow, a, b tcpip.Address, tcfg tcp.Config) {
	tcfg.Extension = sf
	ep, err := m.hosts[a].Dial(0, b, 80, tcfg)
	if err != nil {
		m.t.Fatal(err)
	}
	sf.Bind(ep)
	if !sf.Local.IsValid() {
		sf.Local = netip.AddrPortFrom(nAddr(a), 0)
		sf.Remote = netip.AddrPortFrom(nAddr(b), 80)
	}
}

// step serves what the driver owes the connections after events.
func (m *mpSim) step() {
	now := m.net.Clock.NowMonotonic()
	for a, list := range m.pendingSF {
		for len(list) > 0 {
			ep := m.hosts[a].Accept(80)
			if ep == nil {
				break
			}
			list[0].Bind(ep)
			list = list[1:]
		}
		m.pendingSF[a] = list
	}
	for _, c := range []*Conn{m.client, m.server} {
		if c == nil {
			continue
		}
		if at, ok := c.NextDeadline(); ok && !now.Before(at) {
			c.HandleTimers()
		}
		c.Update()
		for _, r := range c.TakeJoinRequests() {
			var la, ra tcpip.Address
			if !r.Local.IsValid() {
				// Routing: A1 reaches B1, A2 reaches B2, the client's
				// addresses reach B1, the server's A1.
				switch r.Remote.Addr() {
				case nAddr(mpB1), nAddr(mpA1):
					r.Local = nAddr(map[bool]tcpip.Address{true: mpA1, false: mpB1}[c.client])
				default:
					r.Local = nAddr(map[bool]tcpip.Address{true: mpA2, false: mpB2}[c.client])
				}
			}
			for _, a := range []tcpip.Address{mpA1, mpA2, mpB1, mpB2} {
				if nAddr(a) == r.Local {
					la = a
				}
				if nAddr(a) == r.Remote.Addr() {
					ra = a
				}
			}
			if la == (tcpip.Address{}) || ra == (tcpip.Address{}) || m.net.Link(la, ra) == nil {
				c.JoinFailed(r)
				continue
			}
			s, err := c.NewJoinSubflow(netip.AddrPortFrom(r.Local, 0), r.Remote, r.LocalID, r.RemoteID, r.Backup)
			if err != nil {
				c.JoinFailed(r)
				continue
			}
			m.dial(s, la, ra, tcp.Config{MSS: 1460})
		}
	}
}

func (m *mpSim) run(cond func() bool, d time.Duration, what string) {
	m.t.Helper()
	ok := false
	for elapsed := time.Duration(0); !ok && elapsed < d; elapsed += 20 * time.Millisecond {
		ok = m.net.RunUntil(func() bool { m.step(); return cond() }, 20*time.Millisecond)
	}
	if !ok {
		m.t.Fatalf("%s: not done after %v (virtual)\nclient %s\nserver %s", what, d, m.client.describe(), m.server.describe())
	}
}

// describe summarises a connection for failure messages.
func (c *Conn) describe() string {
	if c == nil {
		return "<nil>"
	}
	in := c.Info()
	s := fmt.Sprintf("state %v err %v una %d nxt %d buffered %d rcvnxt %d fin sent/acked/rcvd %v/%v/%v reinj %v stats %+v", in.State, c.err,
		in.SndUna, in.SndNxt, in.SndBuffered, in.RcvNxt, in.DataFINSent, in.DataFINAcked, in.DataFINReceived, c.reinj, in.Stats)
	for _, sf := range in.Subflows {
		s += fmt.Sprintf("\n  subflow %d %v->%v join %v est %v backup %v stale %v state %v sent %d acked %d rto %v", sf.ID, sf.Local, sf.Remote, sf.Join, sf.Established, sf.Backup, sf.Stale, sf.TCP.State, sf.BytesSent, sf.BytesAcked, sf.TCP.RTO)
	}
	return s
}

// exchange moves n random bytes each way at once and checks both ends
// read exactly them, then EOF; hook runs once the client has read at.
func (m *mpSim) exchange(n int, seed uint64, at int, hook func()) {
	m.t.Helper()
	type dir struct {
		w, r       *Conn
		data, got  []byte
		sent       int
		eof, fined bool
	}
	mk := func(w, r *Conn, s uint64) *dir {
		d := &dir{w: w, r: r, data: make([]byte, n)}
		rand.NewChaCha8([32]byte{byte(s)}).Read(d.data)
		return d
	}
	dirs := []*dir{mk(m.server, m.client, seed), mk(m.client, m.server, seed+1)}
	buf := make([]byte, 100_000)
	hooked := hook == nil
	m.run(func() bool {
		done := true
		for _, d := range dirs {
			if d.w.Err() != nil || d.r.Err() != nil {
				m.t.Fatalf("connection failed: %v / %v\nclient %s\nserver %s", d.w.Err(), d.r.Err(), m.client.describe(), m.server.describe())
			}
			for d.sent < n {
				k, err := d.w.Write(d.data[d.sent:min(n, d.sent+70_000)])
				d.sent += k
				if err != nil {
					break
				}
			}
			if d.sent == n && !d.fined {
				d.fined = true
				d.w.CloseWrite()
			}
			for !d.eof {
				k, err := d.r.Read(buf)
				d.got = append(d.got, buf[:k]...)
				if k == 0 && err == nil {
					d.eof = true
				}
				if k == 0 {
					break
				}
			}
			done = done && d.eof
		}
		if !hooked && len(dirs[0].got) >= at {
			hooked = true
			hook()
		}
		return done
	}, 5*time.Minute, fmt.Sprintf("exchange of %d bytes each way", n))
	for i, d := range dirs {
		if !bytes.Equal(d.got, d.data) {
			m.t.Fatalf("direction %d: received %d bytes, sent %d: data differs", i, len(d.got), n)
		}
	}
}

// subflowBytes returns the payload bytes each of c's live subflows sent,
// by the subflow's addresses.
func subflowBytes(c *Conn) map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range c.Info().Subflows {
		out[s.Local.Addr().String()+"-"+s.Remote.Addr().String()] += s.BytesSent
	}
	return out
}

func TestSimJoinSubflowEndpoint(t *testing.T) {
	for _, csum := range []bool{false, true} {
		t.Run(fmt.Sprintf("csum=%v", csum), func(t *testing.T) {
			m := newMPSim(t, mpSimConfig{
				link:       simnet.LinkConfig{Delay: 5 * time.Millisecond, Rate: 5e6},
				clientPM:   PMConfig{Endpoints: []Endpoint{{Addr: nAddr(mpA2), Flags: FlagSubflow}}},
				clientCsum: csum,
			})
			// The client opens its subflow once fully established: when
			// the server's first DSS arrives, with the data.
			m.exchange(4<<20, 1, 0, nil)
			for _, c := range []*Conn{m.client, m.server} {
				bs := subflowBytes(c)
				if len(bs) != 2 {
					t.Fatalf("subflows by address: %v", bs)
				}
				for a, n := range bs {
					if n < 500<<10 {
						t.Errorf("client=%v: subflow from %v sent only %d bytes of 4 MiB over two equal paths", c.client, a, n)
					}
				}
			}
			for _, cnt := range []Counter{MPJoinSynTx, MPJoinSynRx, MPJoinSynAckRx, MPJoinAckRx} {
				if m.mib.Get(cnt) != 1 {
					t.Errorf("%v = %d, want 1", cnt, m.mib.Get(cnt))
				}
			}
			m.run(func() bool { return m.client.State() == StateClosed && m.server.State() == StateClosed }, time.Minute, "close")
		})
	}
}
