package conformance

// Multipath conformance against the Linux kernel, in the style of the
// kernel's selftest tools/testing/selftests/net/mptcp/mptcp_join.sh: each
// case sets up endpoints and limits on both sides (the kernel's `ip mptcp
// endpoint` and `ip mptcp limits`, the engine's stack.MPTCPConfig and
// Engine.AddEndpoint & co.), opens one connection over path 1 of the
// four-path topology (multipath_harness_test.go), moves data both ways at
// once (SHA-256 checked), and checks what mptcp_join.sh checks — the
// join, ADD_ADDR, port, REMOVE_ADDR, MP_PRIO, stale and fastclose
// counters on the side that counts each, link usage — on both sides: the
// kernel's MPTcpExt counters and the engine's counters of the same names,
// plus that no error counter moved, and the subflow lists of both ends.
// Every case runs with the engine as client (kernel server) and as server
// (kernel client) where both apply.
//
//	go test ./conformance -run TestMultipath -v [-conformance.multipath.long]

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
)

var mpLong = flag.Bool("conformance.multipath.long", false, "TestMultipath*: 32 MiB transfers and the longer variants")

// roles are the two ways to run a case.
var roles = []bool{true, false} // engineClient

// mpRole is a case's view of who is who: the client opens the connection
// and the server accepts it; "kernel" tells whether that side is the
// kernel.
type mpRole struct {
	engineClient bool
}

func (r mpRole) clientKernel() bool { return !r.engineClient }
func (r mpRole) serverKernel() bool { return r.engineClient }

// --- 1. Subflows --------------------------------------------------------------

// limits of one side: additional subflows, accepted ADD_ADDRs.
type limits struct{ subflows, accepted int }

// mpSides configures the path managers of a case by role: each side gets
// limits and endpoints given as paths and flags; the rig config follows.
type mpSides struct {
	role                             mpRole
	clientLimits, serverLimits       limits
	clientEndpoints, serverEndpoints []mpEndpoint
}

// mpEndpoint is an endpoint of either side on path Path (its address is
// the side's address on that path, ID Path unless ID is set).
type mpEndpoint struct {
	Path  int
	V6    bool
	Flags mptcp.EndpointFlags
	Port  uint16
	ID    int
}

func (e mpEndpoint) id() int {
	if e.ID != 0 {
		return e.ID
	}
	return e.Path
}

func (e mpEndpoint) engine() mptcp.Endpoint {
	return mptcp.Endpoint{ID: uint8(e.id()), Addr: mpEngineAddr(e.Path, e.V6), Flags: e.Flags, Port: e.Port}
}

func (e mpEndpoint) kernel() netns.Endpoint {
	ke := netns.Endpoint{Addr: mpKernelAddr(e.Path, e.V6).String(), ID: e.id(), Port: int(e.Port)}
	for _, f := range []struct {
		f mptcp.EndpointFlags
		n string
	}{{mptcp.FlagSignal, "signal"}, {mptcp.FlagSubflow, "subflow"}, {mptcp.FlagBackup, "backup"}, {mptcp.FlagFullmesh, "fullmesh"}} {
		if e.Flags&f.f != 0 {
			ke.Flags = append(ke.Flags, f.n)
		}
	}
	return ke
}

// config returns the rig configuration of s (plus base's other fields).
func (s mpSides) config(base mpRigConfig) mpRigConfig {
	cfg := base
	var kl, el limits
	var ke, ee []mpEndpoint
	if s.role.engineClient {
		el, ee, kl, ke = s.clientLimits, s.clientEndpoints, s.serverLimits, s.serverEndpoints
	} else {
		el, ee, kl, ke = s.serverLimits, s.serverEndpoints, s.clientLimits, s.clientEndpoints
	}
	cfg.KernelLimits = &[2]int{kl.subflows, kl.accepted}
	cfg.Engine.Limits = &mptcp.Limits{Subflows: el.subflows, AddAddrAccepted: el.accepted}
	for _, e := range ke {
		cfg.KernelEndpoints = append(cfg.KernelEndpoints, e.kernel())
	}
	for _, e := range ee {
		cfg.Engine.Endpoints = append(cfg.Engine.Endpoints, e.engine())
	}
	return cfg
}

// mpJoinGrace is how long a case that expects no (more) join waits for
// one that should not come, before its transfer.
const mpJoinGrace = 200 * time.Millisecond

// mpRun is one case in one role: the rig configuration, what to wait for
// after the connection opened, the transfer, and what to check.
type mpRun struct {
	role mpRole
	cfg  mpRigConfig
	v6   bool
	// setup runs right after the connection opened (e.g. endpoints
	// added during the connection).
	setup func(r *mpRig, c *mpConn)
	// live is the number of live subflows both ends must list before the
	// transfer (1 + joins; -1: not checked); waitMore, if set, must hold
	// too (e.g. a refused join counted).
	live     int
	waitMore func(r *mpRig, c *mpConn) bool
	waitFor  time.Duration
	// subflows are the engine's expected live subflows before the
	// transfer (nil: not checked).
	subflows func(c *mpConn) []mpSubflowWant
	// xfer returns the transfer; nil: a plain transfer of mpSize() each
	// way.
	xfer func(r *mpRig, c *mpConn) mpXfer
	// after checks the transfer's result (the connection still open).
	after func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult)
	// expect are the counter expectations of both sides.
	expect func(c *mpConn) *mpExpect
	// pathsFail: paths fail during the case, whose subflows cannot close
	// cleanly afterwards (the close is not waited for long).
	pathsFail bool
}

// run runs one case: rig, connection, waits, subflow check, transfer,
// close, counter checks.
func (m mpRun) run(t *testing.T) {
	t.Helper()
	r := newMPRig(t, m.cfg)
	before, tcpBefore := r.snap(t), r.kernelTCP(t)
	c := r.open(t, m.role.engineClient, m.v6)
	if m.setup != nil {
		m.setup(r, c)
	}
	if m.waitFor == 0 {
		m.waitFor = 5 * time.Second
	}
	live := max(m.live, 1)
	ok := waitFor(m.waitFor, func() bool {
		return (m.live < 0 || len(liveSubflows(c.eng.ConnInfo())) == live && r.kernelSubflows(t) == live) && (m.waitMore == nil || m.waitMore(r, c))
	})
	if !ok {
		t.Errorf("setup: not settled within %v: engine lists %d live subflows, kernel %d, want %d%s", m.waitFor,
			len(liveSubflows(c.eng.ConnInfo())), r.kernelSubflows(t), live, map[bool]string{true: " (and the case's own condition)", false: ""}[m.waitMore != nil])
	}
	time.Sleep(mpJoinGrace)
	if m.subflows != nil {
		r.checkSubflows(t, "before the transfer", c, m.subflows(c)...)
	}
	x := mpXfer{n: mpSize()}
	if m.xfer != nil {
		x = m.xfer(r, c)
	}
	res := r.mustTransfer(t, c, x)
	logSubflowBytes(t, res)
	if m.after != nil {
		m.after(t, r, c, res)
	}
	if m.pathsFail {
		r.finishWithin(t, c, time.Second)
	} else {
		r.finish(t, c)
	}
	after := r.snap(t)
	logMoved(t, "counters", before, after)
	if m.expect != nil {
		m.expect(c).check(t, "counters", before, after)
	}
	r.checkWire(t, tcpBefore)
}

// logSubflowBytes logs what each of the engine's subflows carried.
func logSubflowBytes(t *testing.T, res *mpXferResult) {
	t.Helper()
	var b strings.Builder
	for _, s := range append(slices.Clone(res.info.Subflows), res.closed...) {
		fmt.Fprintf(&b, "\n\t%s closed=%v stale=%v sent=%d received=%d", sfString(s), s.Closed, s.Stale, s.TCP.BytesSent, s.TCP.BytesReceived)
	}
	t.Logf("engine subflows after the transfer:%s", b.String())
}

// eachRole runs f as a subtest for both roles.
func eachRole(t *testing.T, name string, f func(t *testing.T, role mpRole)) {
	for _, ec := range roles {
		t.Run(name+"/"+roleName(ec), func(t *testing.T) { f(t, mpRole{ec}) })
	}
}

// subflowJoin is the expected subflow of the client's "subflow" endpoint
// on path p (the client's address on p) to the server's initial address.
// An engine client sends it over path p; a kernel client sends it to the
// engine's initial address, hence over path 1 (the engine is a strong
// host), from its address on path p.
func subflowJoin(role mpRole, v6 bool, p int) mpSubflowWant {
	if role.engineClient {
		return sub(v6, p, 1).ids(p, 0)
	}
	return sub(v6, 1, p).ids(0, p)
}

// announcedJoin is the expected subflow of the client to the address
// the server announced on path p, from the address routing picks (the
// client's own address on p). Only the announced ID is known in
// advance; the other is the implicit ID the client gave its address.
func announcedJoin(role mpRole, v6 bool, p int, port uint16) mpSubflowWant {
	w := sub(v6, p, p)
	if role.engineClient {
		return w.ids(-1, p).ports(0, port)
	}
	return w.ids(p, -1).ports(port, 0)
}

// signalEndpoint, subflowEndpoint are endpoints on path p.
func signalEndpoint(p int) mpEndpoint  { return mpEndpoint{Path: p, Flags: mptcp.FlagSignal} }
func subflowEndpoint(p int) mpEndpoint { return mpEndpoint{Path: p, Flags: mptcp.FlagSubflow} }

// TestMultipathSubflows is mptcp_join.sh's subflows_tests (and its
// add_tests for endpoints added during the connection): the client has
// "subflow" endpoints (subflows from those addresses to the server's
// initial address), within the client's subflow limit and the server's;
// a join over the server's limit is refused by the server, counted as
// MPJoinRejected there (the kernel refuses at the third ACK, after its
// SYN/ACK; the engine at the SYN, with MP_TCPRST "administratively
// prohibited").
func TestMultipathSubflows(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name           string
		client, server limits
		paths          []int // the client's subflow endpoints
		late           bool  // added during the connection
		joined         int   // joins that succeed
		refused        int   // joins the server refuses
	}{
		{"no-join", limits{0, 0}, limits{0, 0}, nil, false, 0, 0},
		{"single-limited-by-client", limits{0, 0}, limits{0, 0}, []int{3}, false, 0, 0},
		{"single-limited-by-server", limits{1, 0}, limits{0, 0}, []int{3}, false, 0, 1},
		{"single", limits{1, 0}, limits{1, 0}, []int{3}, false, 1, 0},
		{"multiple", limits{2, 0}, limits{2, 0}, []int{3, 2}, false, 2, 0},
		{"multiple-limited-by-server", limits{2, 0}, limits{1, 0}, []int{3, 2}, false, 1, 1},
		{"three", limits{3, 0}, limits{3, 0}, []int{2, 3, 4}, false, 3, 0},
		{"add-single", limits{1, 0}, limits{1, 0}, []int{3}, true, 1, 0},
		{"add-multiple", limits{2, 0}, limits{2, 0}, []int{2, 3}, true, 2, 0},
	} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: tc.client, serverLimits: tc.server}
			var eps []mpEndpoint
			for _, p := range tc.paths {
				eps = append(eps, subflowEndpoint(p))
			}
			if !tc.late {
				sides.clientEndpoints = eps
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1 + tc.joined}
			if tc.late {
				m.setup = func(r *mpRig, c *mpConn) {
					for _, e := range eps {
						if role.engineClient {
							if _, err := r.eng.AddEndpoint(e.engine()); err != nil {
								t.Fatal(err)
							}
						} else {
							r.ns.AddEndpoint(e.kernel())
						}
					}
				}
			}
			if tc.refused > 0 {
				m.waitMore = func(r *mpRig, c *mpConn) bool {
					s := r.snap(t)
					m := s.engine
					if role.serverKernel() {
						m = s.kernel
					}
					return int64(m["MPJoinRejected"]) >= int64(tc.refused)
				}
			}
			m.subflows = func(c *mpConn) []mpSubflowWant {
				want := []mpSubflowWant{initialSub(c)}
				for _, p := range tc.paths[:tc.joined] {
					want = append(want, subflowJoin(role, false, p))
				}
				return want
			}
			if tc.refused > 0 {
				// Which joins the server refuses depends on the order in
				// which they arrive: any tc.joined of them.
				m.subflows = nil
				m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
					var cands []mpSubflowWant
					for _, p := range tc.paths {
						cands = append(cands, subflowJoin(role, false, p))
					}
					for _, s := range liveSubflows(res.info) {
						if !s.Join {
							continue
						}
						if !slices.ContainsFunc(cands, func(w mpSubflowWant) bool { return w.matches(s) }) {
							t.Errorf("unexpected subflow %s", sfString(s))
						}
					}
				}
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				attempted := int64(tc.joined + tc.refused)
				if role.serverKernel() {
					x.join(true, attempted, attempted, int64(tc.joined))
				} else {
					x.join(false, attempted, int64(tc.joined), int64(tc.joined))
				}
				x.add(role.serverKernel(), "MPJoinRejected", int64(tc.refused))
				if tc.refused > 0 {
					// The refusal is a RST: the engine's carries MP_TCPRST
					// (counted as MPRstTx by the engine; the kernel counts
					// no MPRstRx on a RST to its SYN), the kernel's too.
					x.set(role.serverKernel(), "MPRstTx", atLeast(0))
					x.set(role.clientKernel(), "MPRstRx", atLeast(0))
					if !role.serverKernel() {
						x.set(false, "MPRstTx", exactly(int64(tc.refused)))
					}
				}
				return x
			}
			m.run(t)
		})
	}
}

// --- 2. Signal addresses ----------------------------------------------------------

// TestMultipathSignal is mptcp_join.sh's signal_address_tests: the server
// announces addresses ("signal" endpoints, ADD_ADDR with HMAC); the client
// echoes every ADD_ADDR and joins those it accepts (add_addr_accepted,
// within its subflow limit), from the address routing picks; with both
// sides announcing, each side joins the other's address.
func TestMultipathSignal(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name           string
		client, server limits
		serverSignal   []int
		clientSubflow  []int
		clientSignal   []int
		joined         int // joins of the client to announced addresses
	}{
		{"unused", limits{0, 0}, limits{0, 0}, []int{2}, nil, nil, 0},
		{"single", limits{1, 1}, limits{1, 0}, []int{2}, nil, nil, 1},
		{"subflow-and-signal", limits{2, 1}, limits{2, 0}, []int{2}, []int{3}, nil, 1},
		{"three", limits{3, 3}, limits{3, 3}, []int{2, 3, 4}, nil, nil, 3},
		{"both-announce", limits{2, 1}, limits{2, 1}, []int{2}, nil, []int{3}, 1},
		// 10.0.12.x and 10.0.14.x are on no path: their joins never
		// complete (the engine's SYNs reach nobody, the kernel has no
		// route); only path 3's is joined (mptcp_join.sh's "signal
		// invalid addresses").
		{"invalid", limits{3, 3}, limits{3, 3}, []int{12, 3, 14}, nil, nil, 1},
	} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: tc.client, serverLimits: tc.server}
			for _, p := range tc.serverSignal {
				sides.serverEndpoints = append(sides.serverEndpoints, signalEndpoint(p))
			}
			for _, p := range tc.clientSubflow {
				sides.clientEndpoints = append(sides.clientEndpoints, subflowEndpoint(p))
			}
			for _, p := range tc.clientSignal {
				sides.clientEndpoints = append(sides.clientEndpoints, signalEndpoint(p))
			}
			// The server joins what the client announced, on the
			// client's port of the initial subflow (RFC 8684 §3.4.1, no
			// port announced): the engine client takes joins on any
			// address and port of its connection, a kernel client only
			// where it listens, and refuses this one (RST, no listener).
			serverJoins := len(tc.clientSignal)
			if role.clientKernel() {
				serverJoins = 0
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1 + tc.joined + len(tc.clientSubflow) + serverJoins}
			m.waitMore = func(r *mpRig, c *mpConn) bool {
				// Every announcement echoed.
				s := r.snap(t)
				k, e := s.kernel["EchoAdd"], s.engine["EchoAdd"]
				if role.serverKernel() {
					return int(k) >= len(tc.serverSignal) && int(e) >= len(tc.clientSignal)
				}
				return int(e) >= len(tc.serverSignal) && int(k) >= len(tc.clientSignal)
			}
			m.subflows = func(c *mpConn) []mpSubflowWant {
				want := []mpSubflowWant{initialSub(c)}
				for _, p := range tc.serverSignal {
					if p <= mpPaths && len(want) <= tc.joined {
						want = append(want, announcedJoin(role, false, p, 0))
					}
				}
				for _, p := range tc.clientSubflow {
					want = append(want, subflowJoin(role, false, p))
				}
				for _, p := range tc.clientSignal[:serverJoins] {
					// The server joins the client's address from its own
					// address on that path.
					w := sub(false, p, p)
					if role.engineClient {
						w = w.ids(p, -1)
					} else {
						w = w.ids(-1, p)
					}
					want = append(want, w)
				}
				return want
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				n := int64(len(tc.serverSignal))
				x.addAddr(role.serverKernel(), n, n, n, n)
				clientJoins := int64(tc.joined + len(tc.clientSubflow))
				x.join(role.serverKernel(), clientJoins, clientJoins, clientJoins)
				if invalid := int64(len(tc.serverSignal) - tc.joined); tc.name == "invalid" {
					if role.engineClient {
						// The engine sent SYNs that reach nobody.
						x.add(false, "MPJoinSynTx", invalid)
					} else {
						// The kernel finds no route (mptcp_join.sh's
						// namespace has a default route, ours not).
						x.set(true, "MPJoinSynTx", atLeast(clientJoins))
						x.allow(true, "MPJoinSynTxConnectErr")
					}
				}
				if k := int64(len(tc.clientSignal)); k > 0 {
					x.addAddr(role.clientKernel(), k, k, k, k)
					if role.engineClient {
						x.join(role.clientKernel(), k, k, k)
					} else {
						// Refused by the kernel's TCP: no MPTCP counter
						// moves there; the engine tried once.
						x.add(false, "MPJoinSynTx", k)
					}
				}
				return x
			}
			m.run(t)
		})
	}
}

// --- 3. ADD_ADDR with a port --------------------------------------------------------

// TestMultipathSignalPort is mptcp_join.sh's add_addr_ports_tests: the
// server announces addresses with a port; the client joins that port
// (the engine listens for joins only there; the kernel too), counted as
// PortAdd by the client and MPJoinPortSynRx by the server (and by the
// kernel, MPJoinPortSynAckRx as client, MPJoinPortAckRx as server).
func TestMultipathSignalPort(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name  string
		ports []uint16 // one announced address per port, paths 2, 3, ...
	}{
		{"single", []uint16{10100}},
		{"multiple", []uint16{10100, 10101}},
	} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			n := len(tc.ports)
			sides := mpSides{role: role, clientLimits: limits{n, n}, serverLimits: limits{n, 0}}
			for i, port := range tc.ports {
				e := signalEndpoint(2 + i)
				e.Port = port
				sides.serverEndpoints = append(sides.serverEndpoints, e)
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1 + n}
			m.subflows = func(c *mpConn) []mpSubflowWant {
				want := []mpSubflowWant{initialSub(c)}
				for i, port := range tc.ports {
					want = append(want, announcedJoin(role, false, 2+i, port))
				}
				return want
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				k := int64(n)
				x.addAddr(role.serverKernel(), k, k, k, k)
				x.join(role.serverKernel(), k, k, k)
				x.add(role.clientKernel(), "PortAdd", k)
				x.add(role.serverKernel(), "MPJoinPortSynRx", k)
				if role.clientKernel() {
					x.add(true, "MPJoinPortSynAckRx", k)
				} else {
					x.add(true, "MPJoinPortAckRx", k)
				}
				return x
			}
			m.run(t)
		})
	}
}

// --- 4. ADD_ADDR retransmission ----------------------------------------------------

// TestMultipathAddAddrTimeout is mptcp_join.sh's add_addr_timeout_tests:
// nftables drops the client's ADD_ADDR echoes, so the server retransmits
// each ADD_ADDR after the timeout (engine AddAddrTimeout 1 s, kernel
// net.mptcp.add_addr_timeout=1) up to 3 times: 4 ADD_ADDRs per address
// sent and counted by the client, as many echoes sent, none received;
// the client still joins each address (once). With
// -conformance.multipath.long also over IPv6 ("ADD_ADDR6 timeout") and
// with two addresses ("signal addresses, ADD_ADDR timeout": 8 of each).
func TestMultipathAddAddrTimeout(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name  string
		v6    bool
		addrs []int
		long  bool
	}{
		{"signal", false, []int{2}, false},
		{"signal-v6", true, []int{2}, true},
		{"two-signals", false, []int{2, 3}, true},
	} {
		if tc.long && !*mpLong {
			continue
		}
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			n := len(tc.addrs)
			sides := mpSides{role: role, clientLimits: limits{n, n}, serverLimits: limits{n, 0}}
			for _, p := range tc.addrs {
				e := signalEndpoint(p)
				e.V6 = tc.v6
				sides.serverEndpoints = append(sides.serverEndpoints, e)
			}
			base := mpRigConfig{}
			if role.serverKernel() {
				base.KernelSysctls = map[string]string{"net.mptcp.add_addr_timeout": "1"}
				// The engine's echoes, on their way in.
				base.Nft = "table inet mpj_echo {\n chain in {\n type filter hook input priority 0;\n tcp option mptcp subtype 3 counter drop\n }\n}\n"
			} else {
				base.Engine.AddAddrTimeout, base.Engine.AddAddrRetries = time.Second, 3
				// The kernel's echoes, on their way out.
				base.Nft = "table inet mpj_echo {\n chain out {\n type filter hook output priority 0;\n tcp option mptcp subtype 3 counter drop\n }\n}\n"
			}
			want := int64(4 * n)
			m := mpRun{role: role, cfg: sides.config(base), v6: tc.v6, live: 1 + n, waitFor: time.Duration(5*n+5) * time.Second}
			m.waitMore = func(r *mpRig, c *mpConn) bool {
				s := r.snap(t)
				tx := s.engine["AddAddrTx"]
				if role.serverKernel() {
					tx = s.kernel["AddAddrTx"]
				}
				return int64(tx) >= want
			}
			m.xfer = func(r *mpRig, c *mpConn) mpXfer {
				// One more ADD_ADDR would come a timeout after the last.
				time.Sleep(1500 * time.Millisecond)
				return mpXfer{n: mpSize()}
			}
			m.subflows = func(c *mpConn) []mpSubflowWant {
				w := []mpSubflowWant{initialSub(c)}
				for _, p := range tc.addrs {
					w = append(w, announcedJoin(role, tc.v6, p, 0))
				}
				return w
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				x.addAddr(role.serverKernel(), want, want, want, 0)
				x.join(role.serverKernel(), int64(n), int64(n), int64(n))
				return x
			}
			m.run(t)
		})
	}
}

// --- 5. Remove ------------------------------------------------------------------

// mpPaced is a transfer paced to last about a second (3 s with
// -conformance.multipath.long), with hook run by the engine's writer
// after a third of it.
func mpPaced(hook func()) mpXfer {
	n := mpSize()
	d := 1.0
	if *mpLong {
		d = 3
	}
	return mpXfer{n: n, rate: float64(n) / d, at: n / 3, hook: hook}
}

// TestMultipathRemove is mptcp_join.sh's remove_tests: in the middle of a
// transfer one side removes an endpoint (REMOVE_ADDR, RFC 8684 §3.4.2):
// its subflows close on both sides, the data they had in flight is sent
// again on the others, and the transfer completes. The remover counts
// RmAddrTx and, for each of its subflows it closed, RmSubflow; the other
// side counts RmAddr per address ID received (the kernel's semantics,
// net/mptcp/pm.c).
func TestMultipathRemove(t *testing.T) {
	mpCheck(t)
	type remover int
	const (
		byClient remover = iota
		byServer
	)
	for _, tc := range []struct {
		name           string
		who            remover
		client, server limits
		serverSignal   []int
		clientSubflow  []int
		// remove is the endpoint ID removed (0: the initial address),
		// flush removes them all.
		remove int
		flush  bool
		// left is the number of live subflows after the removal.
		left int
	}{
		{"subflow", byClient, limits{1, 0}, limits{1, 0}, nil, []int{3}, 3, false, 1},
		{"address", byServer, limits{1, 1}, limits{1, 0}, []int{2}, nil, 2, false, 1},
		{"id0-subflow", byClient, limits{1, 0}, limits{1, 0}, nil, []int{3}, 0, false, 1},
		{"id0-address", byServer, limits{1, 1}, limits{1, 0}, []int{2}, nil, 0, false, 1},
		{"flush-addresses", byServer, limits{3, 3}, limits{3, 0}, []int{2, 3, 4}, nil, 0, true, 1},
		{"address-with-port", byServer, limits{1, 1}, limits{1, 0}, []int{2}, nil, 2, false, 1},
	} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: tc.client, serverLimits: tc.server}
			var port uint16
			if tc.name == "address-with-port" {
				port = 10100
			}
			for _, p := range tc.serverSignal {
				e := signalEndpoint(p)
				e.Port = port
				sides.serverEndpoints = append(sides.serverEndpoints, e)
			}
			for _, p := range tc.clientSubflow {
				sides.clientEndpoints = append(sides.clientEndpoints, subflowEndpoint(p))
			}
			removerKernel := role.clientKernel()
			if tc.who == byServer {
				removerKernel = role.serverKernel()
			}
			joins := len(tc.serverSignal) + len(tc.clientSubflow)
			removed := 1
			if tc.flush {
				removed = joins
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1 + joins}
			var removeErr error
			var left func(c *mpConn) []mpSubflowWant
			m.xfer = func(r *mpRig, c *mpConn) mpXfer {
				return mpPaced(func() {
					switch {
					case removerKernel && tc.flush:
						r.ns.FlushEndpoints()
					case removerKernel && tc.remove == 0:
						r.ns.MustRun("ip", "mptcp", "endpoint", "delete", "id", "0", mpKernelAddr(1, false).String())
					case removerKernel:
						r.ns.DelEndpoint(tc.remove)
					case tc.flush:
						r.eng.RemoveEndpoints() // all, in one REMOVE_ADDR
					case tc.remove == 0:
						c.eng.RemoveAddr(0)
					default:
						removeErr = r.eng.RemoveEndpoint(uint8(tc.remove))
					}
					if !waitFor(3*time.Second, func() bool {
						return len(liveSubflows(c.eng.ConnInfo())) == tc.left && r.kernelSubflows(t) == tc.left
					}) {
						t.Errorf("removal: engine lists %d live subflows, kernel %d, want %d within 3s",
							len(liveSubflows(c.eng.ConnInfo())), r.kernelSubflows(t), tc.left)
					}
					r.checkSubflows(t, "after the removal", c, left(c)...)
				})
			}
			m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
				if removeErr != nil {
					t.Errorf("engine removal: %v", removeErr)
				}
			}
			left = func(c *mpConn) []mpSubflowWant {
				switch {
				case tc.remove == 0 && !tc.flush && len(tc.clientSubflow) > 0:
					return []mpSubflowWant{subflowJoin(role, false, tc.clientSubflow[0])}
				case tc.remove == 0 && !tc.flush:
					return []mpSubflowWant{announcedJoin(role, false, tc.serverSignal[0], port)}
				}
				return []mpSubflowWant{initialSub(c)}
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				if n := int64(len(tc.serverSignal)); n > 0 {
					x.addAddr(role.serverKernel(), n, n, n, n)
				}
				x.join(role.serverKernel(), int64(joins), int64(joins), int64(joins))
				if port != 0 {
					x.add(role.clientKernel(), "PortAdd", 1)
					x.add(role.serverKernel(), "MPJoinPortSynRx", 1)
					if role.clientKernel() {
						x.add(true, "MPJoinPortSynAckRx", 1)
					} else {
						x.add(true, "MPJoinPortAckRx", 1)
					}
				}
				rmTx := rng{1, 1}
				if tc.flush {
					// One REMOVE_ADDR may carry several IDs.
					rmTx = between(1, int64(removed))
				}
				x.set(removerKernel, "RmAddrTx", rmTx)
				x.set(removerKernel, "RmSubflow", exactly(int64(removed)))
				x.set(!removerKernel, "RmAddr", exactly(int64(removed)))
				x.set(!removerKernel, "RmSubflow", exactly(0))
				x.note("RmSubflow", "the kernel counts it on the side that removed the address, once per subflow of its own it closed, not on the side that received the REMOVE_ADDR: net/mptcp/pm.c mptcp_pm_rm_addr_or_subflow")
				// How the closed subflows end (FIN or RST with MP_TCPRST)
				// is the implementation's choice: not checked.
				for _, k := range []bool{true, false} {
					x.allow(k, "MPRstTx", "MPRstRx")
				}
				return x
			}
			m.run(t)
		})
	}
}

// TestMultipathRemoveReadd is the "delete and re-add" part of
// mptcp_join.sh's endpoint_tests: in the middle of a transfer an endpoint
// is removed (REMOVE_ADDR, its subflow closed) and added again with the
// same ID and address; the connection gets the subflow back: the server
// announces the address again and the client joins it again, or the
// client opens its subflow again. The kernel frees what the removed
// address took from its limits (net/mptcp/pm_kernel.c: accepted
// ADD_ADDRs, subflows), so the limits of one subflow suffice.
func TestMultipathRemoveReadd(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name     string
		byServer bool
	}{{"address", true}, {"subflow", false}} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			var sides mpSides
			var e mpEndpoint
			if tc.byServer {
				e = signalEndpoint(2)
				sides = mpSides{role: role, clientLimits: limits{1, 1}, serverLimits: limits{1, 0}, serverEndpoints: []mpEndpoint{e}}
			} else {
				e = subflowEndpoint(3)
				sides = mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0}, clientEndpoints: []mpEndpoint{e}}
			}
			removerKernel := role.clientKernel()
			if tc.byServer {
				removerKernel = role.serverKernel()
			}
			want := func(c *mpConn) mpSubflowWant {
				if tc.byServer {
					return announcedJoin(role, false, 2, 0)
				}
				return subflowJoin(role, false, 3)
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 2}
			m.subflows = func(c *mpConn) []mpSubflowWant { return []mpSubflowWant{initialSub(c), want(c)} }
			m.xfer = func(r *mpRig, c *mpConn) mpXfer {
				return mpPaced(func() {
					settle := func(n int, what string) {
						if !waitFor(3*time.Second, func() bool {
							return len(liveSubflows(c.eng.ConnInfo())) == n && r.kernelSubflows(t) == n
						}) {
							t.Errorf("%s: engine lists %d live subflows, kernel %d, want %d within 3s:%s", what,
								len(liveSubflows(c.eng.ConnInfo())), r.kernelSubflows(t), n, subflowList(liveSubflows(c.eng.ConnInfo())))
						}
					}
					if removerKernel {
						r.ns.DelEndpoint(e.id())
					} else if err := r.eng.RemoveEndpoint(uint8(e.id())); err != nil {
						t.Errorf("RemoveEndpoint: %v", err)
					}
					settle(1, "after the removal")
					if removerKernel {
						r.ns.AddEndpoint(e.kernel())
					} else if _, err := r.eng.AddEndpoint(e.engine()); err != nil {
						t.Errorf("AddEndpoint: %v", err)
					}
					settle(2, "after the endpoint came back")
					r.checkSubflows(t, "after the endpoint came back", c, initialSub(c), want(c))
				})
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				if tc.byServer {
					x.addAddr(role.serverKernel(), 2, 2, 2, 2)
				}
				x.join(role.serverKernel(), 2, 2, 2)
				x.set(removerKernel, "RmAddrTx", exactly(1))
				x.set(removerKernel, "RmSubflow", exactly(1))
				x.set(!removerKernel, "RmAddr", exactly(1))
				x.set(!removerKernel, "RmSubflow", exactly(0))
				x.note("RmSubflow", "the kernel counts it on the side that removed the address, once per subflow of its own it closed, not on the side that received the REMOVE_ADDR: net/mptcp/pm.c mptcp_pm_rm_addr_or_subflow")
				for _, k := range []bool{true, false} {
					x.allow(k, "MPRstTx", "MPRstRx")
				}
				return x
			}
			m.run(t)
		})
	}
}

// --- 6. Backup ------------------------------------------------------------------

// mpUsageTolerance is mptcp_join.sh's chk_link_usage tolerance: a path's
// share of a direction's bytes may be off by 5 points.
const mpUsageTolerance = 5

// checkUsage checks the share (percent of n) of each direction that the
// engine's subflow w carried (its TCP payload counters), and, when
// linkPath > 0, of the bytes crossing that TUN (mptcp_join.sh's
// chk_link_usage), against want ± mpUsageTolerance.
func checkUsage(t *testing.T, res *mpXferResult, n int64, w mpSubflowWant, linkPath int, want int64) {
	t.Helper()
	sent, rcvd, found := res.subflowBytes(w)
	if !found {
		t.Errorf("usage: no subflow %v", w)
		return
	}
	for _, d := range []struct {
		what  string
		bytes int64
	}{{"engine->kernel", sent}, {"kernel->engine", rcvd}} {
		pct := d.bytes * 100 / n
		if pct < want-mpUsageTolerance || pct > want+mpUsageTolerance {
			t.Errorf("usage: subflow %v carried %d%% of %s (%d of %d bytes), want %d%% ± %d", w, pct, d.what, d.bytes, n, want, mpUsageTolerance)
		}
	}
	if linkPath > 0 {
		for _, e2k := range []bool{true, false} {
			if pct := res.usage(linkPath, e2k, n); pct < want-mpUsageTolerance || pct > want+mpUsageTolerance {
				t.Errorf("usage: TUN %s carried %d%% of %s, want %d%% ± %d", mpIfc(linkPath), pct, map[bool]string{true: "engine->kernel", false: "kernel->engine"}[e2k], want, mpUsageTolerance)
			}
		}
	}
}

// TestMultipathBackup is mptcp_join.sh's backup_tests and the backup
// cases of link_failure_tests: a backup subflow (MP_JOIN's B flag, from
// a "backup" endpoint) carries about nothing while another subflow
// works (0 ± 5 % of each direction); an endpoint changed to backup during
// the connection sends MP_PRIO (RFC 8684 §3.3.8) on its subflows, by
// the client or by the server, and the subflow then carries about
// nothing; with the other paths dead in the middle of a transfer (every
// packet on them dropped) the backup carries the rest.
func TestMultipathBackup(t *testing.T) {
	mpCheck(t)
	// The server announces path 2 and, as a backup, path 3; the client
	// joins both.
	backupSides := func(role mpRole) mpSides {
		bk := signalEndpoint(3)
		bk.Flags |= mptcp.FlagBackup
		return mpSides{role: role, clientLimits: limits{2, 2}, serverLimits: limits{2, 0},
			serverEndpoints: []mpEndpoint{signalEndpoint(2), bk}}
	}
	// backupSub is the subflow of path 3, a backup the server asked for.
	backupSub := func(role mpRole) mpSubflowWant {
		return announcedJoin(role, false, 3, 0).backup(!role.engineClient, role.engineClient)
	}
	backupExpect := func(role mpRole) *mpExpect {
		x := newExpect()
		x.addAddr(role.serverKernel(), 2, 2, 2, 2)
		x.join(role.serverKernel(), 2, 2, 2)
		// The server's SYN/ACK carries B on its backup address.
		x.add(role.clientKernel(), "MPJoinSynAckBackupRx", 1)
		x.add(role.serverKernel(), "MPJoinSynBackupRx", 0)
		return x
	}
	eachRole(t, "backup-unused", func(t *testing.T, role mpRole) {
		m := mpRun{role: role, cfg: backupSides(role).config(mpRigConfig{}), live: 3}
		m.subflows = func(c *mpConn) []mpSubflowWant {
			return []mpSubflowWant{initialSub(c), announcedJoin(role, false, 2, 0), backupSub(role)}
		}
		m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
			checkUsage(t, res, mpSize(), backupSub(role), 3, 0)
		}
		m.expect = func(c *mpConn) *mpExpect { return backupExpect(role) }
		m.run(t)
	})
	eachRole(t, "backup-used-links-down", func(t *testing.T, role mpRole) {
		m := mpRun{role: role, cfg: backupSides(role).config(mpRigConfig{}), live: 3, pathsFail: true}
		n := mpSize()
		m.xfer = func(r *mpRig, c *mpConn) mpXfer {
			// The engine is the sender that must fail over (as the client
			// of mptcp_join.sh's "backup flow used, multi links fail"):
			// the kernel sends its share at once, before the failure.
			// (A kernel whose own non-backup subflows die with data on
			// them may take tens of seconds to use its backup: its
			// retransmission picks the backup only once the dead
			// subflows have gone stale, and their RTO backoff slows
			// that; seen as kernel->engine stalls in about one run in
			// three when the kernel sent through the failure.) The
			// paths die as nftables drops everything on them.
			x := mpPaced(func() {
				r.blackhole(t, 1)
				r.blackhole(t, 2)
			})
			x.at = n / 2
			x.rate = float64(n) / 3 // 1.5 s after the failure
			x.kernelUnpaced = true
			x.timeout = 15 * time.Second
			return x
		}
		m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
			// mptcp_join.sh expects the backup's share of the sender's
			// bytes to be what was left when the links failed: half.
			sent, _, _ := res.subflowBytes(backupSub(role))
			if pct := sent * 100 / n; pct < 50-mpUsageTolerance || pct > 50+mpUsageTolerance {
				t.Errorf("usage: the backup carried %d%% of engine->kernel, want 50%% ± %d", pct, mpUsageTolerance)
			}
			if pct := res.usage(3, true, n); pct < 50-mpUsageTolerance || pct > 50+mpUsageTolerance {
				t.Errorf("usage: TUN %s carried %d%% of engine->kernel, want 50%% ± %d", mpIfc(3), pct, mpUsageTolerance)
			}
		}
		m.expect = func(c *mpConn) *mpExpect {
			x := backupExpect(role)
			// chk_stale_nr ns 2 4 2 on the sender: the two dead subflows
			// go stale and never recover; what they held is sent again.
			x.set(false, "SubflowStale", between(2, 4))
			x.set(false, "MPTCPRetrans", atLeast(1))
			for _, k := range []bool{true, false} {
				x.allow(k, "MPRstTx", "MPRstRx")
			}
			return x
		}
		m.after = chainAfter(m.after, func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
			checkStaleRecover(t, r, 2)
		})
		m.run(t)
	})
	// The client's "subflow,backup" endpoint: its join SYN carries B
	// (mptcp_join.sh's "single subflow, backup").
	eachRole(t, "backup-join-client", func(t *testing.T, role mpRole) {
		bk := subflowEndpoint(3)
		bk.Flags |= mptcp.FlagBackup
		sides := mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0}, clientEndpoints: []mpEndpoint{bk}}
		w := subflowJoin(role, false, 3).backup(role.engineClient, !role.engineClient)
		m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 2}
		m.subflows = func(c *mpConn) []mpSubflowWant { return []mpSubflowWant{initialSub(c), w} }
		m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
			link := 0
			if role.engineClient {
				link = 3 // a kernel client's join runs over path 1
			}
			checkUsage(t, res, mpSize(), w, link, 0)
		}
		m.expect = func(c *mpConn) *mpExpect {
			x := newExpect()
			x.join(role.serverKernel(), 1, 1, 1)
			x.add(role.serverKernel(), "MPJoinSynBackupRx", 1)
			x.add(role.clientKernel(), "MPJoinSynAckBackupRx", 0)
			return x
		}
		m.run(t)
	})
	// The client's endpoint for its initial address: as a backup from
	// the start ("mpc backup": MP_PRIO on the initial subflow once
	// established), or changed to backup during the connection ("mpc
	// switch to backup").
	for _, late := range []bool{false, true} {
		name := map[bool]string{false: "mpc-backup", true: "mpc-switch-to-backup"}[late]
		eachRole(t, name, func(t *testing.T, role mpRole) {
			e := mpEndpoint{Path: 1, Flags: mptcp.FlagSubflow}
			if !late {
				e.Flags |= mptcp.FlagBackup
			}
			sides := mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0}, clientEndpoints: []mpEndpoint{e}}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1}
			if late {
				m.setup = func(r *mpRig, c *mpConn) {
					if role.clientKernel() {
						r.ns.ChangeEndpoint(e.id(), "backup")
					} else if err := r.eng.SetEndpointBackup(uint8(e.id()), true); err != nil {
						t.Errorf("SetEndpointBackup: %v", err)
					}
				}
			}
			// The engine's view of the initial subflow: its own flag as
			// client, the kernel's as server.
			w := func(c *mpConn) mpSubflowWant { return initialSub(c).backup(role.engineClient, !role.engineClient) }
			m.waitMore = func(r *mpRig, c *mpConn) bool {
				s := r.snap(t)
				return s.engine["MPPrioRx"]+s.kernel["MPPrioRx"] >= 1
			}
			m.subflows = func(c *mpConn) []mpSubflowWant { return []mpSubflowWant{w(c)} }
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				x.join(role.serverKernel(), 0, 0, 0)
				x.prio(role.clientKernel(), 1)
				return x
			}
			m.run(t)
		})
	}
	// MP_PRIO by either side on a subflow of its own endpoint.
	for _, tc := range []struct {
		name     string
		byClient bool
	}{{"mp-prio-client", true}, {"mp-prio-server", false}} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			var sides mpSides
			var w mpSubflowWant
			if tc.byClient {
				sides = mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0}, clientEndpoints: []mpEndpoint{subflowEndpoint(3)}}
				w = subflowJoin(role, false, 3)
			} else {
				sides = mpSides{role: role, clientLimits: limits{1, 1}, serverLimits: limits{1, 0}, serverEndpoints: []mpEndpoint{signalEndpoint(2)}}
				w = announcedJoin(role, false, 2, 0)
			}
			changerKernel := role.clientKernel()
			id := 3
			if !tc.byClient {
				changerKernel, id = role.serverKernel(), 2
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 2}
			m.setup = func(r *mpRig, c *mpConn) {
				if !r.waitSubflows(t, c, 2, 5*time.Second) {
					t.Errorf("the subflow to change never came")
				}
				if changerKernel {
					r.ns.ChangeEndpoint(id, "backup")
				} else if err := r.eng.SetEndpointBackup(uint8(id), true); err != nil {
					t.Errorf("SetEndpointBackup: %v", err)
				}
			}
			// The engine's view: its own flag when it changed the
			// endpoint, the peer's when the kernel did.
			wb := w.backup(!changerKernel, changerKernel)
			m.waitMore = func(r *mpRig, c *mpConn) bool {
				for _, s := range liveSubflows(c.eng.ConnInfo()) {
					if wb.matches(s) {
						return true
					}
				}
				return false
			}
			m.subflows = func(c *mpConn) []mpSubflowWant { return []mpSubflowWant{initialSub(c), wb} }
			m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
				checkUsage(t, res, mpSize(), w, 0, 0)
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				if !tc.byClient {
					x.addAddr(role.serverKernel(), 1, 1, 1, 1)
				}
				x.join(role.serverKernel(), 1, 1, 1)
				x.prio(changerKernel, 1)
				return x
			}
			m.run(t)
		})
	}
}

func chainAfter(fs ...func(*testing.T, *mpRig, *mpConn, *mpXferResult)) func(*testing.T, *mpRig, *mpConn, *mpXferResult) {
	return func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
		for _, f := range fs {
			if f != nil {
				f(t, r, c, res)
			}
		}
	}
}

// checkStaleRecover is the second half of chk_stale_nr: SubflowStale -
// SubflowRecover == delta (the subflows still stale when the transfer
// ended, for good here: their paths stay dead), counted since the rig was
// built. It is checked on the engine; the kernel's figures are logged
// (its stale accounting when its own side of a path fails, sends failing
// locally, is its business).
func checkStaleRecover(t *testing.T, r *mpRig, delta int64) {
	t.Helper()
	s := r.snap(t)
	t.Logf("kernel: SubflowStale %d, SubflowRecover %d", s.kernel["SubflowStale"], s.kernel["SubflowRecover"])
	if d := int64(s.engine["SubflowStale"]) - int64(s.engine["SubflowRecover"]); d != delta {
		t.Errorf("engine: SubflowStale %d - SubflowRecover %d = %d, want %d (the dead subflows stay stale)",
			s.engine["SubflowStale"], s.engine["SubflowRecover"], d, delta)
	}
}

// --- 7. Link failure --------------------------------------------------------------

// mpShapeMbit is the rate of each path in the link-failure cases: three
// paths, then two, carry 4 MiB each way in about 4 s, the failure leaving
// more than the kernel needs to find a subflow stale
// (net.mptcp.stale_loss_cnt, 4, of its retransmission periods without
// progress).
const mpShapeMbit = 8

// TestMultipathLinkFailure is mptcp_join.sh's link_failure_tests without
// backups: three subflows (the initial one, and the client's joins to the
// two addresses the server announced) carry a transfer both ways over
// paths shaped to mpShapeMbit (as init_shapers does); after a fifth of
// it one path fails for good, its TUN down on the kernel side (the
// initial subflow's path) or every packet on it dropped by nftables (an
// announced path). Nothing may be lost: what the failed subflow had in
// flight is sent again on the others (MPTCPRetrans), the failed subflow
// goes stale on both sides (chk_stale_nr ns 1 -1 1) and, on the engine,
// does not recover.
func TestMultipathLinkFailure(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name      string
		path      int
		blackhole bool
	}{{"initial-link-down", 1, false}, {"announced-blackhole", 2, true}} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: limits{2, 2}, serverLimits: limits{2, 0},
				serverEndpoints: []mpEndpoint{signalEndpoint(2), signalEndpoint(3)}}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{ShapeMbit: mpShapeMbit, ShapePaths: 3}), live: 3, pathsFail: true}
			n := mpSize()
			m.xfer = func(r *mpRig, c *mpConn) mpXfer {
				return mpXfer{n: n, at: n / 5, timeout: 15 * time.Second, hook: func() {
					if tc.blackhole {
						r.blackhole(t, tc.path)
					} else {
						r.setLink(t, tc.path, false)
					}
				}}
			}
			m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
				checkStaleRecover(t, r, 1)
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				x.addAddr(role.serverKernel(), 2, 2, 2, 2)
				x.join(role.serverKernel(), 2, 2, 2)
				for _, k := range []bool{true, false} {
					x.set(k, "SubflowStale", atLeast(1))
					x.allow(k, "MPRstTx", "MPRstRx")
				}
				// The engine re-sends what the dead subflow held (the
				// kernel may not need to: what it had in flight there
				// may all have been acknowledged).
				x.set(false, "MPTCPRetrans", atLeast(1))
				return x
			}
			m.run(t)
		})
	}
}

// --- 8. Fullmesh ----------------------------------------------------------------

// TestMultipathFullmesh is mptcp_join.sh's fullmesh_tests: the client's
// "subflow,fullmesh" endpoints open a subflow to every address of the
// server, its initial one and those it announced (and, as in the kernel,
// no other subflow to an announced address), within the limits.
func TestMultipathFullmesh(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name   string
		limit  int
		joined int
	}{{"2x1", 4, 4}, {"2x1-limited", 3, 3}} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			fm := func(p int) mpEndpoint {
				return mpEndpoint{Path: p, Flags: mptcp.FlagSubflow | mptcp.FlagFullmesh}
			}
			sides := mpSides{role: role, clientLimits: limits{tc.limit, 1}, serverLimits: limits{tc.limit, 0},
				clientEndpoints: []mpEndpoint{fm(2), fm(3)}, serverEndpoints: []mpEndpoint{signalEndpoint(4)}}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 1 + tc.joined}
			if tc.joined == 4 {
				m.subflows = func(c *mpConn) []mpSubflowWant {
					want := []mpSubflowWant{initialSub(c)}
					for _, p := range []int{2, 3} {
						// To the initial address, and to the announced one.
						want = append(want, subflowJoin(role, false, p))
						w := sub(false, 4, p).ids(4, p)
						if role.engineClient {
							w = sub(false, p, 4).ids(p, 4)
						}
						want = append(want, w)
					}
					return want
				}
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				x.addAddr(role.serverKernel(), 1, 1, 1, 1)
				k := int64(tc.joined)
				x.join(role.serverKernel(), k, k, k)
				return x
			}
			m.run(t)
		})
	}
}

// --- 9. Deny join to ID 0 -----------------------------------------------------------

// TestMultipathDenyJoinID0 is mptcp_join.sh's deny_join_id0_tests: a
// server that must not be joined on its initial address (kernel
// net.mptcp.allow_join_initial_addr_port=0, engine DenyJoinInitial) sets
// MP_CAPABLE's C flag (RFC 8684 §3.1); the client then opens no subflow
// to that address, while the addresses the server announces are joined.
// The engine as server also refuses a join to its initial address that
// comes anyway (forged here): RST with MP_TCPRST "administratively
// prohibited", counted as MPJoinRejected.
func TestMultipathDenyJoinID0(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name   string
		signal bool
	}{{"subflow", false}, {"subflow-and-signal", true}} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: limits{2, 1}, serverLimits: limits{2, 1},
				clientEndpoints: []mpEndpoint{subflowEndpoint(3)}}
			if tc.signal {
				sides.serverEndpoints = []mpEndpoint{signalEndpoint(2)}
			}
			base := mpRigConfig{}
			if role.serverKernel() {
				base.KernelSysctls = map[string]string{"net.mptcp.allow_join_initial_addr_port": "0"}
			} else {
				base.Engine.DenyJoinInitial = true
			}
			joins := 0
			if tc.signal {
				joins = 1
			}
			var forged mpForgeResult
			m := mpRun{role: role, cfg: sides.config(base), live: 1 + joins}
			m.subflows = func(c *mpConn) []mpSubflowWant {
				want := []mpSubflowWant{initialSub(c)}
				if tc.signal {
					want = append(want, announcedJoin(role, false, 2, 0))
				}
				return want
			}
			m.setup = func(r *mpRig, c *mpConn) {
				if role.engineClient {
					if ci := c.eng.ConnInfo(); ci.Data == nil || !ci.Data.PeerNoNewSubflowsToSource {
						t.Errorf("engine client did not see the kernel's C flag: %+v", ci.Data)
					}
					return
				}
				// A join to the engine's initial address and port with
				// the real token, from a source that is not the
				// kernel's.
				f := newMPForger(t, r, c)
				forged = f.joinSYNs(t, c.eng.ConnInfo().LocalToken, 1, false)
				f.close()
			}
			m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
				if !role.engineClient && (forged.rsts != 1 || forged.rstReason != 3 || forged.synAcks != 0) {
					t.Errorf("forged join to the initial address: %d RSTs (reason %d), %d SYN/ACKs; want one RST with MP_TCPRST reason 3",
						forged.rsts, forged.rstReason, forged.synAcks)
				}
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				if tc.signal {
					x.addAddr(role.serverKernel(), 1, 1, 1, 1)
				}
				x.join(role.serverKernel(), int64(joins), int64(joins), int64(joins))
				if !role.engineClient {
					x.add(false, "MPJoinSynRx", 1)
					x.add(false, "MPJoinRejected", 1)
					x.add(false, "MPRstTx", 1)
				}
				return x
			}
			m.run(t)
		})
	}
}

// --- 10. IPv6 and mixed families -----------------------------------------------------

// TestMultipathIPv6 is mptcp_join.sh's ipv6_tests and mixed_tests: a
// connection over IPv6 with an IPv6 subflow endpoint or announced
// address; an IPv4 connection with an IPv6 announced address (a kernel
// client on an AF_INET socket cannot use it, mptcp_join.sh's "IPv4
// sockets do not use IPv6 addresses"; the engine, which has no socket
// family, may join it, RFC 8684 allowing subflows of either family); an
// IPv6 connection with an IPv4 announced address (joined: "simult IPv4
// and IPv6 subflows"); an IPv4 subflow endpoint on an IPv6 connection
// (nothing to join: "no JOIN with diff families").
func TestMultipathIPv6(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name        string
		v6          bool // the connection
		endpoint    mpEndpoint
		signal      bool // the endpoint is the server's, announced
		joins       int  // -1: the engine client may join or not
		kernelJoins int  // joins when the kernel is the client
	}{
		{"v6-subflow", true, mpEndpoint{Path: 3, V6: true, Flags: mptcp.FlagSubflow}, false, 1, 1},
		{"v6-signal", true, mpEndpoint{Path: 2, V6: true, Flags: mptcp.FlagSignal}, true, 1, 1},
		{"v4-conn-v6-signal", false, mpEndpoint{Path: 2, V6: true, Flags: mptcp.FlagSignal}, true, -1, 0},
		{"v6-conn-v4-signal", true, mpEndpoint{Path: 2, Flags: mptcp.FlagSignal}, true, 1, 1},
		{"v6-conn-v4-subflow", true, mpEndpoint{Path: 3, Flags: mptcp.FlagSubflow}, false, 0, 0},
	} {
		eachRole(t, tc.name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: limits{1, 1}, serverLimits: limits{1, 0}}
			if tc.signal {
				sides.serverEndpoints = []mpEndpoint{tc.endpoint}
			} else {
				sides.clientEndpoints = []mpEndpoint{tc.endpoint}
			}
			joins := tc.joins
			if role.clientKernel() {
				joins = tc.kernelJoins
			}
			m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), v6: tc.v6, live: 1 + max(joins, 0)}
			if joins < 0 {
				// Either is right; the counters and lists must agree.
				m.live = -1
			}
			if tc.signal {
				m.waitMore = func(r *mpRig, c *mpConn) bool {
					s := r.snap(t)
					return s.engine["EchoAdd"]+s.kernel["EchoAdd"] >= 1
				}
			}
			if joins >= 0 {
				m.subflows = func(c *mpConn) []mpSubflowWant {
					want := []mpSubflowWant{initialSub(c)}
					if joins == 1 {
						if tc.signal {
							want = append(want, announcedJoin(role, tc.endpoint.V6, tc.endpoint.Path, 0))
						} else {
							want = append(want, subflowJoin(role, tc.endpoint.V6, tc.endpoint.Path))
						}
					}
					return want
				}
			}
			var engineJoined int64
			m.xfer = func(r *mpRig, c *mpConn) mpXfer {
				live := liveSubflows(c.eng.ConnInfo())
				engineJoined = int64(len(live) - 1)
				if joins < 0 {
					t.Logf("the engine client joined the IPv6 address of an IPv4 connection: %v", engineJoined == 1)
					if engineJoined > 1 || r.kernelSubflows(t) != len(live) {
						t.Errorf("engine lists %d live subflows, kernel %d:%s", len(live), r.kernelSubflows(t), subflowList(live))
					}
					for _, s := range live {
						if s.Join && !announcedJoin(role, tc.endpoint.V6, tc.endpoint.Path, 0).matches(s) {
							t.Errorf("unexpected subflow %s", sfString(s))
						}
					}
				}
				return mpXfer{n: mpSize()}
			}
			m.expect = func(c *mpConn) *mpExpect {
				x := newExpect()
				if tc.signal {
					x.addAddr(role.serverKernel(), 1, 1, 1, 1)
				}
				k := int64(joins)
				if k < 0 {
					k = engineJoined
				}
				x.join(role.serverKernel(), k, k, k)
				return x
			}
			m.run(t)
		})
	}
}

// --- 11. Fastclose --------------------------------------------------------------------

// TestMultipathFastclose is mptcp_join.sh's fastclose_tests with two
// subflows: in the middle of a transfer both ways, one side closes with
// SO_LINGER 0 (the engine: SetLinger(0) and Close). That side sends
// MP_FASTCLOSE (RFC 8684 §3.5) and resets every subflow; the other
// counts MPFastcloseRx, its reads and writes fail with ECONNRESET, and no
// subflow is left on either side. Whatever the closing engine reports as
// undelivered (UndeliveredError) is consistent with what the kernel
// read, and what the kernel read is a prefix of what was sent.
func TestMultipathFastclose(t *testing.T) {
	mpCheck(t)
	for _, engineCloses := range []bool{true, false} {
		name := map[bool]string{true: "engine-closes", false: "kernel-closes"}[engineCloses]
		eachRole(t, name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0},
				clientEndpoints: []mpEndpoint{subflowEndpoint(2)}}
			r := newMPRig(t, sides.config(mpRigConfig{}))
			before, tcpBefore := r.snap(t), r.kernelTCP(t)
			c := r.open(t, role.engineClient, false)
			if !r.waitSubflows(t, c, 2, 5*time.Second) {
				t.Fatalf("second subflow not established: %s", subflowList(liveSubflows(c.eng.ConnInfo())))
			}
			defer r.checkWire(t, tcpBefore)
			n := mpSize()
			var closeErr error
			x := mpXfer{n: n, rate: float64(n) / 1.5, timeout: 15 * time.Second}
			if engineCloses {
				x.at, x.hook = n/3, func() {
					c.eng.SetLinger(0)
					closeErr = c.eng.Close()
				}
			} else {
				x.kernelAt, x.kernelHook = n/3, func() {
					c.kern.SetLinger(0)
					c.kern.Close()
				}
			}
			res := r.transfer(t, c, x)
			logSubflowBytes(t, res)
			if engineCloses {
				// The kernel socket reports the reset, once: to its reader
				// or its writer, whichever asks first (sk_err).
				if !isConnReset(res.readErr[0]) && !isConnReset(res.writeErr[1]) {
					t.Errorf("kernel socket after the engine's fastclose: read %v, write %v; want ECONNRESET from one of them", res.readErr[0], res.writeErr[1])
				}
				var ue *stack.UndeliveredError
				written := res.hookWritten
				switch {
				case closeErr == nil:
					// Everything written was acknowledged.
					if res.received[0] != written {
						t.Errorf("engine Close reported nothing undelivered, the kernel read %d of %d bytes", res.received[0], written)
					}
				case !errors.As(closeErr, &ue):
					t.Errorf("engine Close: %v, want nil or an *UndeliveredError", closeErr)
				case written-int64(ue.Bytes) > res.received[0] || res.received[0] > written:
					t.Errorf("engine Close reported %d of %d bytes undelivered, the kernel read %d", ue.Bytes, written, res.received[0])
				default:
					t.Logf("engine Close: %v; the kernel read %d of %d", closeErr, res.received[0], written)
				}
				if res.mismatch[0] >= 0 {
					t.Errorf("the kernel read bytes that differ from those sent, from offset %d on", res.mismatch[0])
				}
			} else {
				var oe *net.OpError
				err := res.readErr[1]
				switch {
				case !isConnReset(err):
					t.Errorf("engine read after the kernel's fastclose: %v, want ECONNRESET", err)
				case !errors.As(err, &oe) || !errors.Is(err, mptcp.ErrFastclose):
					t.Errorf("engine read error %v does not report MP_FASTCLOSE (mptcp.ErrFastclose)", err)
				}
				if !isConnReset(res.writeErr[0]) && res.writeErr[0] != nil {
					t.Logf("engine write after the kernel's fastclose: %v", res.writeErr[0])
				}
				if res.mismatch[1] >= 0 {
					t.Errorf("the engine read bytes that differ from those sent, from offset %d on", res.mismatch[1])
				}
			}
			if !waitFor(5*time.Second, func() bool {
				return len(liveSubflows(c.eng.ConnInfo())) == 0 && r.kernelSubflows(t) == 0 && c.eng.Done()
			}) {
				t.Errorf("after the fastclose: engine lists %d live subflows (done=%v), kernel %d",
					len(liveSubflows(c.eng.ConnInfo())), c.eng.Done(), r.kernelSubflows(t))
			}
			c.eng.Close()
			c.kern.Close()
			time.Sleep(100 * time.Millisecond)
			after := r.snap(t)
			logMoved(t, "counters", before, after)
			xp := newExpect()
			xp.join(role.serverKernel(), 1, 1, 1)
			xp.set(engineCloses == false, "MPFastcloseTx", between(1, 2))
			xp.set(engineCloses, "MPFastcloseRx", between(1, 2))
			if engineCloses {
				xp.set(false, "MPFastcloseTx", exactly(1))
			}
			for _, k := range []bool{true, false} {
				xp.allow(k, "MPRstTx", "MPRstRx")
			}
			xp.check(t, "counters", before, after)
		})
	}
}

// --- 12. Forged joins and ADD_ADDRs ---------------------------------------------------

// TestMultipathForged is the hostile part of mptcp_join.sh's world, which
// the selftest leaves to others: during a transfer both ways over two
// subflows, forged segments hit the engine from the kernel's side of the
// initial path (an AF_PACKET socket, rawinject_test.go): MP_JOIN SYNs
// with random tokens (refused with a RST and MP_TCPRST, counted as
// MPJoinNoTokenFound), MP_JOIN SYNs with the connection's real token whose
// third ACK carries a wrong HMAC (the engine's SYN/ACK, then a RST, counted
// as MPJoinAckHMacFailure), and ADD_ADDRs with a wrong HMAC on the initial
// subflow (dropped, AddAddrDrop; no echo, no join). The transfer must
// arrive intact, the connection keep its two subflows and stay MPTCP.
func TestMultipathForged(t *testing.T) {
	mpCheck(t)
	const noToken, badHMAC, addAddrs = 5, 3, 6
	eachRole(t, "joins-and-addaddrs", func(t *testing.T, role mpRole) {
		sides := mpSides{role: role, clientLimits: limits{2, 0}, serverLimits: limits{2, 0},
			clientEndpoints: []mpEndpoint{subflowEndpoint(2)}}
		var forgedNoToken, forgedHMAC mpForgeResult
		var addSent, kernelAfter int
		var kernelErr error
		var liveAfter []stack.SubflowInfo
		m := mpRun{role: role, cfg: sides.config(mpRigConfig{}), live: 2}
		m.subflows = func(c *mpConn) []mpSubflowWant {
			return []mpSubflowWant{initialSub(c), subflowJoin(role, false, 2)}
		}
		var f *mpForger
		done := make(chan struct{})
		m.xfer = func(r *mpRig, c *mpConn) mpXfer {
			f = newMPForger(t, r, c)
			n := mpSize()
			return mpXfer{n: n, rate: float64(n) / 2, at: n / 5, hook: func() {
				go func() {
					defer close(done)
					forgedNoToken = f.joinSYNs(t, 0, noToken, false)
					forgedHMAC = f.joinSYNs(t, c.eng.ConnInfo().LocalToken, badHMAC, true)
					addSent = f.addAddrs(t, addAddrs)
					// The live subflows once the forgeries are over (the
					// transfer still runs).
					time.Sleep(100 * time.Millisecond)
					liveAfter = liveSubflows(c.eng.ConnInfo())
					kernelAfter, kernelErr = r.kernelSubflowCount()
				}()
			}}
		}
		m.after = func(t *testing.T, r *mpRig, c *mpConn, res *mpXferResult) {
			<-done
			f.close()
			if forgedNoToken.rsts != noToken || forgedNoToken.rstReason != 1 || forgedNoToken.synAcks != 0 {
				t.Errorf("join SYNs with unknown tokens: %d RSTs (last reason %d), %d SYN/ACKs; want %d RSTs with MP_TCPRST reason 1",
					forgedNoToken.rsts, forgedNoToken.rstReason, forgedNoToken.synAcks, noToken)
			}
			if forgedHMAC.synAcks != badHMAC || forgedHMAC.rsts != badHMAC {
				t.Errorf("join SYNs with the real token and bad third-ACK HMACs: %d SYN/ACKs, %d RSTs; want %d of each",
					forgedHMAC.synAcks, forgedHMAC.rsts, badHMAC)
			}
			if ci := c.eng.ConnInfo(); !ci.MPTCP {
				t.Errorf("the connection fell back: %q", ci.Fallback)
			}
			t.Logf("forged ADD_ADDRs sent: %d", addSent)
			if len(liveAfter) != 2 || kernelAfter != 2 || kernelErr != nil {
				t.Errorf("after the forgeries: engine lists %d live subflows, kernel %d (%v), want 2:%s", len(liveAfter), kernelAfter, kernelErr, subflowList(liveAfter))
			}
		}
		m.expect = func(c *mpConn) *mpExpect {
			x := newExpect()
			x.join(role.serverKernel(), 1, 1, 1)
			x.add(false, "MPJoinSynRx", noToken+badHMAC)
			x.set(false, "MPJoinNoTokenFound", exactly(noToken))
			x.set(false, "MPJoinAckHMacFailure", exactly(badHMAC))
			x.set(false, "MPRstTx", exactly(noToken+badHMAC))
			x.set(false, "AddAddrDrop", between(1, addAddrs))
			x.set(false, "AddAddr", exactly(0))
			x.set(false, "EchoAddTx", exactly(0))
			x.set(true, "AddAddr", exactly(0))
			return x
		}
		m.run(t)
	})
}

// --- 13. The shared receive window ----------------------------------------------

// TestMultipathReceiveWindow: the receiver's connection-level window is
// shared by the subflows (RFC 8684 §3.3.4: every subflow carries it,
// relative to the Data ACK); with two subflows and a reader that starts
// late (the buffer fills, the window closes, then opens as it reads), a
// one-way transfer must go as fast as over one subflow: the receiver must
// not advertise, on any subflow, a right edge beyond its buffer (the
// sender takes the largest edge any subflow showed, as Linux's
// msk->wnd_end does), nor drop data it let in (the engine's
// Reassembly.Refused, counted as NoDSSInWindow). Both roles, both
// directions (the reader late on the engine, then on the kernel).
func TestMultipathReceiveWindow(t *testing.T) {
	mpCheck(t)
	for _, engineReads := range []bool{true, false} {
		name := map[bool]string{true: "late-engine-reader", false: "late-kernel-reader"}[engineReads]
		eachRole(t, name, func(t *testing.T, role mpRole) {
			sides := mpSides{role: role, clientLimits: limits{1, 0}, serverLimits: limits{1, 0},
				clientEndpoints: []mpEndpoint{subflowEndpoint(3)}}
			r := newMPRig(t, sides.config(mpRigConfig{}))
			before, tcpBefore := r.snap(t), r.kernelTCP(t)
			c := r.open(t, role.engineClient, false)
			if !r.waitSubflows(t, c, 2, 5*time.Second) {
				t.Fatalf("second subflow not established: %s", subflowList(liveSubflows(c.eng.ConnInfo())))
			}
			defer r.checkWire(t, tcpBefore)
			n := int64(16 << 20)
			var w, rd net.Conn = c.kern, c.eng
			seed := byte('k')
			if !engineReads {
				w, rd, seed = c.eng, c.kern, 'e'
			}
			// Over one subflow this takes about half a second; 5 s is
			// ten times that.
			deadline := time.Now().Add(5 * time.Second)
			w.SetDeadline(deadline)
			rd.SetDeadline(deadline)
			start := time.Now()
			werr := make(chan error, 1)
			go func() {
				_, err := (&mpWriter{w: w, n: n, seed: seed}).run()
				werr <- err
			}()
			time.Sleep(500 * time.Millisecond) // the reader starts late
			got := readAll(rd, seed)
			el := time.Since(start)
			ci := c.eng.ConnInfo()
			t.Logf("%d of %d bytes in %v; engine reassembly %+v", got.n, n, el.Round(time.Millisecond), ci.Data.Reassembly)
			ok := true
			switch {
			case got.mismatch >= 0:
				t.Errorf("received bytes differ from those sent from offset %d on", got.mismatch)
				ok = false
			case got.err != nil || got.n != n:
				t.Errorf("read %d of %d bytes within 5 s: %v", got.n, n, got.err)
				ok = false
			}
			if err := <-werr; err != nil {
				t.Errorf("writer: %v", err)
			}
			if engineReads && ci.Data.Reassembly.Refused > 0 {
				t.Errorf("the engine refused %d bytes as beyond its window: it advertised a right edge it does not honour", ci.Data.Reassembly.Refused)
			}
			if ok {
				r.finish(t, c)
			} else {
				c.eng.Close()
				c.kern.Close()
				r.finishWithin(t, c, time.Second)
			}
			after := r.snap(t)
			logMoved(t, "counters", before, after)
			x := newExpect()
			x.join(role.serverKernel(), 1, 1, 1)
			x.check(t, "counters", before, after)
		})
	}
}

// --- 14. ADD_ADDR echo on the first ACK of data --------------------------------------

// TestMultipathEchoNotFallback: Linux sends an ADD_ADDR echo on a pure
// ACK stripped of every other MPTCP option (net/mptcp/pm.c
// mptcp_pm_add_addr_signal: "always drop every other options for pure ack
// ADD_ADDR"). When that ACK is the first to acknowledge the server's
// first data, it acknowledges data without a DSS, yet it carries an
// MPTCP option: the path does not strip MPTCP options, and the receiver
// must not fall back to TCP (RFC 8684 §3.7 falls back when options are
// stripped). The race is narrow (the kernel's PM worker must run after
// the data arrived): 200 connections to an engine server that announces
// an address and writes at once, none may fall back.
func TestMultipathEchoNotFallback(t *testing.T) {
	mpCheck(t)
	sides := mpSides{role: mpRole{false}, clientLimits: limits{0, 0}, serverLimits: limits{0, 0},
		serverEndpoints: []mpEndpoint{signalEndpoint(2)}}
	r := newMPRig(t, sides.config(mpRigConfig{}))
	before := r.snap(t)
	ln, err := r.eng.Listen("tcp", netip.AddrPortFrom(mpEngineAddr(1, false), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const conns = 200
	fellBack := 0
	var first string
	for i := range conns {
		acc := acceptAsync(ln)
		var kc net.Conn
		if err := r.ns.Do(func() (err error) {
			var d net.Dialer
			d.SetMultipathTCP(true)
			kc, err = d.Dial("tcp", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatalf("connection %d: kernel dial: %v", i, err)
		}
		ec := <-acc
		if ec == nil {
			t.Fatalf("connection %d: engine accept failed", i)
		}
		ec.SetDeadline(time.Now().Add(5 * time.Second))
		kc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ec.Write([]byte("hello")); err != nil {
			t.Fatalf("connection %d: engine write: %v", i, err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(kc, buf); err != nil {
			t.Fatalf("connection %d: kernel read: %v", i, err)
		}
		// The echo has been answered by then or never will be.
		waitFor(time.Second, func() bool { return r.snap(t).engine["EchoAdd"] >= uint64(i+1) })
		if ci := ec.(*stack.Conn).ConnInfo(); !ci.MPTCP {
			if fellBack++; first == "" {
				first = fmt.Sprintf("connection %d: fallback %q", i, ci.Fallback)
			}
		}
		kc.Close()
		ec.Close()
	}
	time.Sleep(100 * time.Millisecond)
	after := r.snap(t)
	logMoved(t, "counters", before, after)
	if fellBack > 0 {
		t.Errorf("%d of %d connections fell back to TCP (first: %s)", fellBack, conns, first)
	}
	if d := after.engine["DssFallback"] - before.engine["DssFallback"]; d != 0 {
		t.Errorf("engine DssFallback moved by %d", d)
	}
}
