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
	"flag"
	"fmt"
	"net/netip"
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
const mpJoinGrace = 300 * time.Millisecond

// TestMultipathSubflows is mptcp_join.sh's subflows_tests: the client
// has "subflow" endpoints (subflows from those addresses to the server's
// initial address), within the client's subflow limit and the server's;
// a join over the server's limit is refused by the server (counted as
// MPJoinRejected there; the kernel refuses at the third ACK, after its
// SYN/ACK, the engine at the SYN).
func TestMultipathSubflows(t *testing.T) {
	mpCheck(t)
	for _, tc := range []struct {
		name           string
		client, server limits
		paths          []int // the client's subflow endpoints
		joined         int   // joins that succeed
		refused        int   // joins the server refuses
	}{
		{"no-join", limits{0, 0}, limits{0, 0}, nil, 0, 0},
		{"single-limited-by-client", limits{0, 0}, limits{0, 0}, []int{3}, 0, 0},
		{"single-limited-by-server", limits{1, 0}, limits{0, 0}, []int{3}, 0, 1},
		{"single", limits{1, 0}, limits{1, 0}, []int{3}, 1, 0},
		{"multiple", limits{2, 0}, limits{2, 0}, []int{3, 2}, 2, 0},
		{"multiple-limited-by-server", limits{2, 0}, limits{1, 0}, []int{3, 2}, 1, 1},
		{"three", limits{3, 0}, limits{3, 0}, []int{2, 3, 4}, 3, 0},
	} {
		for _, ec := range roles {
			t.Run(tc.name+"/"+roleName(ec), func(t *testing.T) {
				role := mpRole{ec}
				sides := mpSides{role: role, clientLimits: tc.client, serverLimits: tc.server}
				for _, p := range tc.paths {
					sides.clientEndpoints = append(sides.clientEndpoints, mpEndpoint{Path: p, Flags: mptcp.FlagSubflow})
				}
				r := newMPRig(t, sides.config(mpRigConfig{}))
				before := r.snap(t)
				c := r.open(t, ec, false)
				x := newExpect()
				attempted := int64(tc.joined + tc.refused)
				if role.serverKernel() {
					// The kernel answers the SYN and refuses at the third ACK.
					x.join(true, attempted, attempted, int64(tc.joined))
				} else {
					// The engine refuses at the SYN.
					x.join(false, attempted, int64(tc.joined), int64(tc.joined))
				}
				x.add(role.serverKernel(), "MPJoinRejected", int64(tc.refused))
				if tc.refused > 0 {
					// A refused join is reset by the server (the engine with
					// MP_TCPRST "administratively prohibited", which the
					// kernel does not count on a RST to its SYN).
					x.set(role.serverKernel(), "MPRstTx", atLeast(0))
					x.set(role.clientKernel(), "MPRstRx", atLeast(0))
					if !role.serverKernel() {
						x.set(false, "MPRstTx", exactly(int64(tc.refused)))
					}
				}
				want := []mpSubflowWant{initialSub(c)}
				for i, p := range tc.paths[:tc.joined] {
					_ = i
					// The client's endpoint on path p joins the server's
					// initial address (ID 0) over the client's path p.
					w := sub(false, p, 1).ids(p, 0)
					if !ec {
						// Kernel client: it sends to the engine's initial
						// address, over path 1 (the engine is a strong
						// host), from its address on path p.
						w = sub(false, 1, p).ids(0, p)
					}
					want = append(want, w)
				}
				r.waitSubflows(t, c, 1+tc.joined, 5*time.Second)
				if tc.refused > 0 {
					waitFor(5*time.Second, func() bool {
						s := r.snap(t)
						m := s.engine
						if role.serverKernel() {
							m = s.kernel
						}
						return int64(m["MPJoinRejected"]) >= int64(tc.refused)
					})
				}
				time.Sleep(mpJoinGrace)
				r.checkSubflows(t, "after joins", c, want...)
				r.mustTransfer(t, c, mpXfer{n: mpSize()})
				r.finish(t, c)
				after := r.snap(t)
				logMoved(t, tc.name, before, after)
				x.check(t, tc.name, before, after)
			})
		}
	}
}

var _ = fmt.Sprint
var _ = netip.Addr{}
var _ stack.Options
