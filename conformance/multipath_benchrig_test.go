package conformance

// Topologies and measuring helpers of the multipath benchmarks
// (multipath_bench_test.go).
//
// # The router topology (aggregation and failover)
//
// The kernel's simult_flows.sh topology: a client with two paths to a
// router, the server behind the router on a third, fast link. Every end
// is either the engine or a kernel namespace, and the router namespace is
// the same whatever the ends are:
//
//	client                       router namespace R               server
//	10.0.1.1 ==[path 1]== sfc1 10.0.1.2 \
//	                                      forwarding  sfs 10.0.3.2 == 10.0.3.3
//	10.0.2.1 ==[path 2]== sfc2 10.0.2.2 /
//
// sfc1, sfc2 and sfs are TUN devices in R whose userspace side is this
// process. For an engine end, its NIC is that TUN (the client's through
// the path's delay line, below). For a kernel end, a namespace of its own
// has a TUN (sfk1, sfk2 for the client, sfk3 for the server) and this
// process relays packets between it and R's TUN, one at a time, so that
// R sees the same kind of device, with the same options, in every setup.
//
//   - Delay: internal/impair wraps R's TUN of each client path, the same
//     way for an engine and for a kernel client (for a kernel client the
//     relay is attached above it): each direction of path i is delayed by
//     its one-way delay, as simult_flows' netem "delay" on both ends of
//     the path's veth (RTT twice the delay). This kernel has no sch_netem.
//   - Rate: tbf in R on each client path, both directions: on the TUN's
//     egress (server to client) and, for client to server, on an ifb fed
//     by the TUN's ingress (mirred redirect), both "rate R burst 16kb
//     latency 100ms" as the conformance harness shapes (mpRig.shape). The
//     bottleneck is therefore in the router for both directions and for
//     every stack: no sender has it in its own qdisc (where the kernel's
//     TCP small queues would pace it loss-free and the engine could not
//     be), and tbf counts IP bytes (a TUN has no link header).
//   - The server link is neither shaped nor delayed.
//   - All TUNs have GRO off (tun.WithGRO(false)): the delay line sees wire
//     packets.
//
// The client's second subflow is simult_flows': the client's "subflow"
// endpoint on path 2 (kernel: `ip mptcp endpoint add 10.0.2.1 dev sfk2
// subflow`, the engine: an mptcp.FlagSubflow endpoint), limits 1 1 on both
// sides.
//
// # The unshaped topologies (throughput and CPU)
//
// The engine and a kernel namespace joined by two TUNs (as the four-path
// conformance rig, with the TUNs' default offloads: GRO and GSO on), and
// two kernel namespaces joined by two veth pairs. The server announces its
// path-2 address (signal endpoint) and the client, accepting it, joins
// from its own path-2 address.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/tun"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// sfNSPrefix names the namespaces of the router topology, suNSPrefix
// those of the unshaped ones.
const (
	sfNSPrefix = "mpsf"
	suNSPrefix = "mpsu"
)

// sfDelayLimit is the capacity (packets) of each delay line: far above
// what a path holds (the tbf queue of 100 ms plus the delay), so that it
// never drops (checked: impair's Overflow).
const sfDelayLimit = 10000

// Addresses of the router topology.
func sfClientAddr(path int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(path), 1}) }
func sfRouterAddr(link int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(link), 2}) }

var sfServerAddr = netip.MustParseAddr("10.0.3.3")

// sfSetup says which ends are the engine.
type sfSetup struct{ engineClient, engineServer bool }

func endName(engine bool) string {
	if engine {
		return "engine"
	}
	return "kernel"
}

// String is "client-server", e.g. "engine-kernel" for the engine as
// client and a kernel server.
func (s sfSetup) String() string { return endName(s.engineClient) + "-" + endName(s.engineServer) }

// sfSetups are measured in this order; kernel-kernel last is the
// reference of each case.
var sfSetups = []sfSetup{{true, true}, {true, false}, {false, true}, {false, false}}

// sfPath is one client path: rate each way (0: unshaped) and one-way delay
// each way.
type sfPath struct {
	Mbit  int
	Delay time.Duration
}

// sfRig is the router topology with one setup's ends.
type sfRig struct {
	setup sfSetup
	paths [2]sfPath
	// ccClient and ccServer are the congestion controls of the client's
	// and the server's senders, engine or kernel.
	ccClient, ccServer string
	r                  *netns.NS // the router
	c, s               *netns.NS // kernel client and server namespaces (nil: engine)
	// ec and es are the engine client and server (nil: kernel).
	ec, es *stack.Engine
	imps   [2]*impair.Endpoint
	links  []gstack.LinkEndpoint // relay ends, closed at cleanup

	mu sync.Mutex
	// closedSubs are the engine client's subflows as they closed.
	closedSubs []mptcp.SubflowInfo
}

// newSFRig builds the router topology for setup with the given client
// paths; everything is removed at cleanup.
func newSFRig(tb testing.TB, setup sfSetup, paths [2]sfPath, ccClient, ccServer string) *sfRig {
	tb.Helper()
	netns.RequireMPTCP(tb)
	netns.RequireTools(tb, "tc", "ss", "nstat", "nft")
	g := &sfRig{setup: setup, paths: paths, ccClient: ccClient, ccServer: ccServer}
	g.r = netns.New(tb, sfNSPrefix)
	kernelSysctls := []string{"-qw", "net.mptcp.enabled=1", "net.mptcp.pm_type=0", "net.mptcp.checksum_enabled=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"}
	g.r.MustRun("sysctl", append(kernelSysctls, "net.ipv4.ip_forward=1")...)
	if !setup.engineClient {
		g.c = netns.New(tb, sfNSPrefix)
		g.c.MustRun("sysctl", kernelSysctls...)
	}
	if !setup.engineServer {
		g.s = netns.New(tb, sfNSPrefix)
		g.s.MustRun("sysctl", kernelSysctls...)
	}
	// Runs before the namespaces go (cleanups run last-registered first).
	tb.Cleanup(g.close)
	if setup.engineClient {
		eng, err := stack.NewEngine(stack.Options{TCP: tcp.Config{Congestion: ccClient}, MPTCP: stack.MPTCPConfig{
			Endpoints: []mptcp.Endpoint{{ID: 2, Addr: sfClientAddr(2), Flags: mptcp.FlagSubflow}},
			Limits:    &mptcp.Limits{Subflows: 1, AddAddrAccepted: 1},
			Tracer: &mptcp.Tracer{SubflowClosed: func(_ *mptcp.Conn, s mptcp.SubflowInfo, _ error) {
				g.mu.Lock()
				g.closedSubs = append(g.closedSubs, s)
				g.mu.Unlock()
			}},
		}})
		if err != nil {
			tb.Fatal(err)
		}
		g.ec = eng
	}
	if setup.engineServer {
		eng, err := stack.NewEngine(stack.Options{TCP: tcp.Config{Congestion: ccServer}, MPTCP: stack.MPTCPConfig{Limits: &mptcp.Limits{Subflows: 1, AddAddrAccepted: 1}}})
		if err != nil {
			tb.Fatal(err)
		}
		g.es = eng
	}
	mk := func(ns *netns.NS, name string) *tun.Endpoint {
		var ep *tun.Endpoint
		if err := ns.Do(func() (err error) {
			ep, err = tun.Create(name, 1500, tun.WithGRO(false))
			return err
		}); err != nil {
			tb.Fatalf("creating TUN %s in %s: %v", name, ns.Name, err)
		}
		return ep
	}
	for i := range 2 {
		rt := mk(g.r, sfRouterIfc(i+1))
		cfg := impair.Config{Delay: paths[i].Delay, Limit: sfDelayLimit}
		g.imps[i] = impair.New(rt, cfg, cfg, uint64(i+1))
		if setup.engineClient {
			if _, err := g.ec.AddNIC(g.imps[i], netip.PrefixFrom(sfClientAddr(i+1), 24)); err != nil {
				g.imps[i].Close()
				tb.Fatal(err)
			}
		} else {
			g.relay(g.imps[i], mk(g.c, fmt.Sprintf("sfk%d", i+1)))
		}
	}
	rs := mk(g.r, "sfs")
	if setup.engineServer {
		if _, err := g.es.AddNIC(rs, netip.PrefixFrom(sfServerAddr, 24)); err != nil {
			rs.Close()
			tb.Fatal(err)
		}
	} else {
		g.relay(rs, mk(g.s, "sfk3"))
	}
	for i := 1; i <= 3; i++ {
		ifc := "sfs"
		if i < 3 {
			ifc = sfRouterIfc(i)
		}
		g.r.SetupLink(ifc, netns.LinkConfig{MTU: 1500, Addrs: []string{sfRouterAddr(i).String() + "/24"}})
	}
	if g.c != nil {
		for i := 1; i <= 2; i++ {
			g.c.SetupLink(fmt.Sprintf("sfk%d", i), netns.LinkConfig{MTU: 1500, Addrs: []string{sfClientAddr(i).String() + "/24"}})
		}
		// simult_flows' routing: a default route per path, path 2's
		// with a higher metric; the subflow endpoint is bound to its
		// device.
		g.c.MustRun("ip", "route", "add", "default", "via", sfRouterAddr(1).String(), "dev", "sfk1")
		g.c.MustRun("ip", "route", "add", "default", "via", sfRouterAddr(2).String(), "dev", "sfk2", "metric", "101")
		g.c.MPTCPLimits(1, 1)
		g.c.MustRun("ip", "mptcp", "endpoint", "add", sfClientAddr(2).String(), "dev", "sfk2", "id", "2", "subflow")
	}
	if g.s != nil {
		g.s.SetupLink("sfk3", netns.LinkConfig{MTU: 1500, Addrs: []string{sfServerAddr.String() + "/24"}})
		g.s.MustRun("ip", "route", "add", "default", "via", sfRouterAddr(3).String())
		g.s.MPTCPLimits(1, 1)
	}
	for i := range 2 {
		if paths[i].Mbit > 0 {
			g.shape(tb, i+1, paths[i].Mbit)
		}
	}
	return g
}

// sfRouterIfc is R's TUN of client path i.
func sfRouterIfc(path int) string { return fmt.Sprintf("sfc%d", path) }

// sfIfb is R's ifb of client path i (its client-to-server direction).
func sfIfb(path int) string { return fmt.Sprintf("sfb%d", path) }

// relay makes this process the wire between two link endpoints.
func (g *sfRig) relay(a, b gstack.LinkEndpoint) {
	a.Attach(&bridge{to: b})
	b.Attach(&bridge{to: a})
	g.links = append(g.links, a, b)
}

// close stops the engines (which closes their NICs' links) and the relays.
func (g *sfRig) close() {
	for _, e := range []*stack.Engine{g.ec, g.es} {
		if e != nil {
			e.Close()
		}
	}
	for _, l := range g.links {
		l.Close()
	}
	done := make(chan struct{})
	go func() {
		for _, l := range g.links {
			l.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "sfRig: relay goroutines did not stop within 10s")
	}
}

// shape limits client path i to mbit in each direction, in R.
func (g *sfRig) shape(tb testing.TB, path, mbit int) {
	tb.Helper()
	ifc, ifb := sfRouterIfc(path), sfIfb(path)
	tbf := []string{"tbf", "rate", fmt.Sprintf("%dmbit", mbit), "burst", "16kb", "latency", "100ms"}
	for _, cmd := range [][]string{
		{"ip", "link", "add", ifb, "type", "ifb"},
		{"ip", "link", "set", ifb, "up"},
		append([]string{"tc", "qdisc", "add", "dev", ifc, "root"}, tbf...),
		{"tc", "qdisc", "add", "dev", ifc, "handle", "ffff:", "ingress"},
		{"tc", "filter", "add", "dev", ifc, "parent", "ffff:", "protocol", "all", "u32", "match", "u32", "0", "0",
			"action", "mirred", "egress", "redirect", "dev", ifb},
		append([]string{"tc", "qdisc", "add", "dev", ifb, "root"}, tbf...),
	} {
		if _, err := g.r.Run(cmd[0], cmd[1:]...); err != nil {
			tb.Skipf("cannot shape the paths: %v", err)
		}
	}
}

// tbfStat is what one tbf sent and dropped.
type tbfStat struct{ bytes, pkts, drops uint64 }

func (a tbfStat) sub(b tbfStat) tbfStat {
	return tbfStat{a.bytes - b.bytes, a.pkts - b.pkts, a.drops - b.drops}
}

// sfWire is what each path's bottleneck carried: c2s[i] client to server
// on path i+1 (its ifb), s2c[i] server to client (its TUN's root).
type sfWire struct{ c2s, s2c [2]tbfStat }

func (a sfWire) sub(b sfWire) sfWire {
	var d sfWire
	for i := range 2 {
		d.c2s[i], d.s2c[i] = a.c2s[i].sub(b.c2s[i]), a.s2c[i].sub(b.s2c[i])
	}
	return d
}

// wire reads the tbf counters of the shaped paths.
func (g *sfRig) wire(tb testing.TB) sfWire {
	tb.Helper()
	w, err := g.readWire()
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// readWire is wire for any goroutine.
func (g *sfRig) readWire() (sfWire, error) {
	var w sfWire
	for i := range 2 {
		if g.paths[i].Mbit == 0 {
			continue
		}
		var err error
		if w.c2s[i], err = tbfCounters(g.r, sfIfb(i+1)); err != nil {
			return w, err
		}
		if w.s2c[i], err = tbfCounters(g.r, sfRouterIfc(i+1)); err != nil {
			return w, err
		}
	}
	return w, nil
}

// tbfCounters parses `tc -s qdisc show dev ifc` for its tbf: "Sent B bytes
// P pkt (dropped D, ...". tbf counts each packet it sends (GSO packets it
// had to split, each segment).
func tbfCounters(ns *netns.NS, ifc string) (tbfStat, error) {
	out, err := ns.Run("tc", "-s", "qdisc", "show", "dev", ifc)
	if err != nil {
		return tbfStat{}, err
	}
	in := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "qdisc" {
			in = len(f) > 1 && f[1] == "tbf"
			continue
		}
		if in && f[0] == "Sent" && len(f) >= 7 {
			var s tbfStat
			s.bytes, _ = strconv.ParseUint(f[1], 10, 64)
			s.pkts, _ = strconv.ParseUint(f[3], 10, 64)
			s.drops, _ = strconv.ParseUint(strings.TrimSuffix(f[6], ","), 10, 64)
			return s, nil
		}
	}
	return tbfStat{}, fmt.Errorf("no tbf counters for %s in:\n%s", ifc, out)
}

// open connects the client to a listener of the server over path 1,
// exchanges a few bytes each way (so that the connection is fully
// established, RFC 8684 §3.1, and the client's path manager opens its
// subflow) and waits until both ends list two established subflows.
func (g *sfRig) open(tb testing.TB) (cl, sv net.Conn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ln net.Listener
	if g.es != nil {
		var err error
		if ln, err = g.es.Listen("tcp", netip.AddrPortFrom(sfServerAddr, 0).String()); err != nil {
			tb.Fatal(err)
		}
	} else {
		ln = kernelListenOpts(tb, g.s, sfServerAddr, sockOpts{cc: g.ccServer})
	}
	defer ln.Close()
	acc := acceptAsync(ln)
	var err error
	if g.ec != nil {
		cl, err = g.ec.Dial(ctx, "tcp", ln.Addr().String())
	} else {
		cl, err = kernelDialOpts(ctx, g.c, ln.Addr().String(), sockOpts{cc: g.ccClient})
	}
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	if sv = <-acc; sv == nil {
		cl.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { cl.Close(); sv.Close() })
	for _, p := range []struct{ w, r net.Conn }{{cl, sv}, {sv, cl}} {
		p.r.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.w.Write([]byte("hello")); err != nil {
			tb.Fatalf("hello: %v", err)
		}
		if _, err := io.ReadFull(p.r, make([]byte, 5)); err != nil {
			tb.Fatalf("hello: %v", err)
		}
		p.r.SetReadDeadline(time.Time{})
	}
	for _, c := range []net.Conn{cl, sv} {
		if ec, ok := c.(*stack.Conn); ok && !ec.ConnInfo().MPTCP {
			tb.Fatalf("the engine's connection is not MPTCP: fallback %q", ec.ConnInfo().Fallback)
		}
	}
	count := func(c net.Conn, ns *netns.NS) int {
		if ec, ok := c.(*stack.Conn); ok {
			return len(liveSubflows(ec.ConnInfo()))
		}
		n, err := kernelSubflowsIn(ns)
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	if !waitFor(5*time.Second, func() bool { return count(cl, g.c) == 2 && count(sv, g.s) == 2 }) {
		tb.Fatalf("not two subflows at both ends within 5s: client %d, server %d", count(cl, g.c), count(sv, g.s))
	}
	return cl, sv
}

// kernelSubflowsIn counts the established MPTCP subflow sockets of ns.
func kernelSubflowsIn(ns *netns.NS) (int, error) {
	subs, err := kernelSubflowStats(ns)
	return len(subs), err
}

// sfSubBytes is what one subflow carried, as its client end counts it:
// acked, the client's payload the server acknowledged on it; received,
// the server's payload it received in order.
type sfSubBytes struct {
	local           netip.AddrPort
	acked, received uint64
	cc              string // the kernel's: its congestion control
}

// kernelSubflowStats lists ns's established MPTCP subflows with their
// byte counters (`ss -tniO`: bytes_acked, bytes_received).
func kernelSubflowStats(ns *netns.NS) ([]sfSubBytes, error) {
	out, err := ns.Run("ss", "-tniO", "state", "established")
	if err != nil {
		return nil, err
	}
	var subs []sfSubBytes
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "tcp-ulp-mptcp") {
			continue
		}
		var s sfSubBytes
		for _, f := range strings.Fields(line) {
			// A subflow bound to a device shows as ADDR%DEV:PORT.
			if i, j := strings.IndexByte(f, '%'), strings.LastIndexByte(f, ':'); i > 0 && j > i {
				f = f[:i] + f[j:]
			}
			if ap, err := netip.ParseAddrPort(f); err == nil && !s.local.IsValid() {
				s.local = ap
			}
			if slices.Contains(tcp.CongestionControls(), f) {
				s.cc = f
			}
			if v, ok := strings.CutPrefix(f, "bytes_acked:"); ok {
				s.acked, _ = strconv.ParseUint(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(f, "bytes_received:"); ok {
				s.received, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// clientSubflows returns, per client path, what the client's subflows
// from that path's address carried (engine: ConnInfo and the subflows
// closed meanwhile; kernel: ss).
func (g *sfRig) clientSubflows(tb testing.TB, cl net.Conn) [2]sfSubBytes {
	tb.Helper()
	var subs []sfSubBytes
	if ec, ok := cl.(*stack.Conn); ok {
		g.mu.Lock()
		all := append(slices.Clone(ec.ConnInfo().Subflows), g.closedSubs...)
		g.mu.Unlock()
		seen := map[uint32]bool{}
		for _, s := range all {
			if seen[s.ID] {
				continue
			}
			seen[s.ID] = true
			subs = append(subs, sfSubBytes{local: s.Local, acked: s.TCP.BytesAcked, received: s.TCP.BytesReceived})
		}
	} else {
		var err error
		if subs, err = kernelSubflowStats(g.c); err != nil {
			tb.Fatal(err)
		}
	}
	var per [2]sfSubBytes
	for _, s := range subs {
		for i := range 2 {
			if s.local.Addr().Unmap() == sfClientAddr(i+1) {
				per[i].acked += s.acked
				per[i].received += s.received
			}
		}
	}
	return per
}

// kernelCC returns the congestion controls the kernel ends' subflows use
// (as ss shows them), "-" without a kernel end.
func (g *sfRig) kernelCC(tb testing.TB) string {
	tb.Helper()
	var ccs []string
	for _, ns := range []*netns.NS{g.c, g.s} {
		if ns == nil {
			continue
		}
		subs, err := kernelSubflowStats(ns)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range subs {
			if !slices.Contains(ccs, s.cc) {
				ccs = append(ccs, s.cc)
			}
		}
	}
	if len(ccs) == 0 {
		return "-"
	}
	slices.Sort(ccs)
	return strings.Join(ccs, ",")
}

// retrans returns the data-level retransmissions (MPTCPRetrans, the
// kernel's MPTcpExtMPTCPRetrans and the engine's counter of the same name)
// of the client and of the server so far.
func (g *sfRig) retrans(tb testing.TB) (client, server uint64) {
	tb.Helper()
	get := func(e *stack.Engine, ns *netns.NS) uint64 {
		if e != nil {
			return e.MPTCPStats()["MPTCPRetrans"]
		}
		m, err := ns.MPTCPCounters()
		if err != nil {
			tb.Fatal(err)
		}
		return m["MPTcpExtMPTCPRetrans"]
	}
	return get(g.ec, g.c), get(g.es, g.s)
}

// checkDelayLines fails tb if a delay line dropped packets (it must not:
// loss comes from the tbf queues only).
func (g *sfRig) checkDelayLines(tb testing.TB) {
	tb.Helper()
	for i, imp := range g.imps {
		st := imp.Stats()
		if st.Egress.Overflow+st.Ingress.Overflow+st.Egress.Dropped+st.Ingress.Dropped != 0 {
			tb.Errorf("path %d: the delay line dropped packets: %+v", i+1, st)
		}
	}
}

// --- Transfers ------------------------------------------------------------------

// sfProgress is a reader's progress: bytes read so far at time at (since
// the transfer's start).
type sfProgress struct {
	at time.Duration
	n  int64
}

// sfDir is one direction of a verified transfer.
type sfDir struct {
	n        int64         // bytes to move
	elapsed  time.Duration // from the start until the reader's EOF
	received int64
	// prog is every read's progress.
	prog []sfProgress
	sum  []byte // SHA-256 of what was read
	err  error  // nil when every byte arrived intact (SHA-256)
}

func (d sfDir) mbit() float64 { return float64(d.received) * 8 / d.elapsed.Seconds() / 1e6 }

// lost is how many bytes of the stream never arrived intact.
func (d sfDir) lost() int64 {
	if d.err == nil {
		return 0
	}
	return d.n - d.received
}

// gapAfter returns the longest time the reader made no progress after
// t (the interval from t to the first read after it included), and when,
// relative to t, that gap ended (the reader progressing again).
func (d sfDir) gapAfter(t time.Duration) (gap, resumed time.Duration) {
	prev := t
	for _, p := range d.prog {
		if p.at <= t {
			continue
		}
		if g := p.at - prev; g > gap {
			gap, resumed = g, p.at-t
		}
		prev = p.at
	}
	if g := d.elapsed - prev; g > gap { // stalled to the end
		gap, resumed = g, d.elapsed-t
	}
	return gap, resumed
}

// bytesAt returns how many bytes had been read at time t.
func (d sfDir) bytesAt(t time.Duration) int64 {
	var n int64
	for _, p := range d.prog {
		if p.at > t {
			break
		}
		n = p.n
	}
	return n
}

// sfXfer is a transfer of n bytes each way. When trigger > 0, fire runs
// once (in a goroutine of its own) as soon as the server has received
// trigger bytes; the result's firedAt is when it returned.
type sfXfer struct {
	n       int64
	timeout time.Duration
	trigger int64
	fire    func()
	// done, if set, runs in each direction's reader right after its
	// last byte (c2s tells which).
	done func(c2s bool)
}

type sfXferResult struct {
	c2s, s2c sfDir
	elapsed  time.Duration
	firedAt  time.Duration // 0: not fired
}

// sfTransfer moves x.n seeded pseudo-random bytes each way at once
// between cl and sv (mpWriter's streams, without half-closes: see
// keepOpen), each checked by SHA-256 and byte for byte.
func sfTransfer(cl, sv net.Conn, x sfXfer) sfXferResult {
	deadline := time.Now().Add(x.timeout)
	for _, c := range []net.Conn{cl, sv} {
		c.SetDeadline(deadline)
		defer c.SetDeadline(time.Time{})
	}
	var res sfXferResult
	start := time.Now()
	var fired sync.WaitGroup
	var fireOnce sync.Once
	onProgress := func(n int64) {
		if x.trigger > 0 && n >= x.trigger {
			fireOnce.Do(func() {
				fired.Add(1)
				go func() {
					defer fired.Done()
					x.fire()
					res.firedAt = time.Since(start)
				}()
			})
		}
	}
	var wg sync.WaitGroup
	var cSum, sSum []byte
	var cErr, sErr error
	wg.Add(4)
	go func() { defer wg.Done(); cSum, cErr = (&mpWriter{w: keepOpen{cl}, n: x.n, seed: 'c'}).run() }()
	go func() { defer wg.Done(); sSum, sErr = (&mpWriter{w: keepOpen{sv}, n: x.n, seed: 's'}).run() }()
	finished := func(c2s bool) {
		if x.done != nil {
			x.done(c2s)
		}
	}
	go func() { defer wg.Done(); res.c2s = sfRead(sv, 'c', x.n, start, onProgress); finished(true) }()
	go func() { defer wg.Done(); res.s2c = sfRead(cl, 's', x.n, start, nil); finished(false) }()
	wg.Wait()
	fired.Wait()
	res.elapsed = time.Since(start)
	for _, d := range []struct {
		dir  *sfDir
		wErr error
		sum  []byte
	}{{&res.c2s, cErr, cSum}, {&res.s2c, sErr, sSum}} {
		switch {
		case d.dir.err != nil:
		case d.wErr != nil:
			d.dir.err = d.wErr
		case d.dir.received != x.n:
			d.dir.err = fmt.Errorf("received %d bytes, sent %d", d.dir.received, x.n)
		case string(d.sum) != string(d.dir.sum):
			d.dir.err = errors.New("SHA-256 mismatch")
		}
	}
	return res
}

// keepOpen is a connection whose CloseWrite does nothing: the transfers
// end when the reader has its n bytes, without a DATA_FIN, so that every
// subflow is still established (and its counters readable in the
// kernel's ss) when the transfer is measured.
type keepOpen struct{ net.Conn }

func (keepOpen) CloseWrite() error { return nil }

// sfRead reads n bytes from r (or until EOF or an error), hashing and
// comparing with the stream of the writer seeded seed, and records its
// progress.
func sfRead(r net.Conn, seed byte, n int64, start time.Time, onProgress func(int64)) sfDir {
	d := sfDir{n: n, prog: make([]sfProgress, 0, 1<<14)}
	want := rand.NewChaCha8([32]byte{'m', 'p', 'j', seed})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	exp := make([]byte, len(buf))
	for d.received < n {
		k, err := r.Read(buf[:min(int64(len(buf)), n-d.received)])
		if k > 0 {
			h.Write(buf[:k])
			want.Read(exp[:k])
			if d.err == nil && string(buf[:k]) != string(exp[:k]) {
				for i := range k {
					if buf[i] != exp[i] {
						d.err = fmt.Errorf("received bytes differ from those sent from offset %d on", d.received+int64(i))
						break
					}
				}
			}
			d.received += int64(k)
			d.prog = append(d.prog, sfProgress{at: time.Since(start), n: d.received})
			if onProgress != nil {
				onProgress(d.received)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if d.err == nil {
				d.err = fmt.Errorf("read after %d bytes: %w", d.received, err)
			}
			break
		}
	}
	d.elapsed = time.Since(start)
	d.sum = h.Sum(nil)
	return d
}

// --- The unshaped topologies --------------------------------------------------------

// suEngineKernel is the engine and a kernel namespace joined by two TUNs:
// path i has the kernel's 10.0.i.1 and the engine's 10.0.i.2.
type suEngineKernel struct {
	k    *netns.NS
	eng  *stack.Engine
	tuns []*tun.Endpoint
}

func suKernelAddr(path int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(path), 1}) }
func suEngineAddr(path int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(path), 2}) }

func newSUEngineKernel(tb testing.TB, cc string) *suEngineKernel {
	tb.Helper()
	netns.RequireMPTCP(tb)
	g := &suEngineKernel{k: netns.New(tb, suNSPrefix)}
	g.k.MustRun("sysctl", "-qw", "net.mptcp.enabled=1", "net.mptcp.pm_type=0", "net.mptcp.checksum_enabled=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	eng, err := stack.NewEngine(stack.Options{TCP: tcp.Config{Congestion: cc}, MPTCP: stack.MPTCPConfig{Limits: &mptcp.Limits{}}})
	if err != nil {
		tb.Fatal(err)
	}
	g.eng = eng
	tb.Cleanup(func() {
		g.eng.Close()
		for _, ep := range g.tuns {
			ep.Close()
			ep.Wait()
		}
	})
	for i := 1; i <= 2; i++ {
		var ep *tun.Endpoint
		if err := g.k.Do(func() (err error) {
			ep, err = tun.Create(fmt.Sprintf("mpu%d", i), 1500)
			return err
		}); err != nil {
			tb.Fatal(err)
		}
		g.tuns = append(g.tuns, ep)
		if _, err := eng.AddNIC(ep, netip.PrefixFrom(suEngineAddr(i), 24)); err != nil {
			tb.Fatal(err)
		}
		g.k.SetupLink(fmt.Sprintf("mpu%d", i), netns.LinkConfig{MTU: 1500, Addrs: []string{suKernelAddr(i).String() + "/24"}})
	}
	return g
}

// configure sets both path managers for one connection: with subflows 2
// the server announces its path-2 address and the client joins it; with
// 1 nothing is announced and no join is allowed.
func (g *suEngineKernel) configure(tb testing.TB, subflows int, engineServer bool) {
	tb.Helper()
	g.eng.RemoveEndpoints(2)
	g.k.FlushEndpoints()
	if subflows < 2 {
		g.eng.SetLimits(mptcp.Limits{})
		g.k.MPTCPLimits(0, 0)
		return
	}
	if engineServer {
		if _, err := g.eng.AddEndpoint(mptcp.Endpoint{ID: 2, Addr: suEngineAddr(2), Flags: mptcp.FlagSignal}); err != nil {
			tb.Fatal(err)
		}
		g.eng.SetLimits(mptcp.Limits{Subflows: 1})
		g.k.MPTCPLimits(1, 1)
	} else {
		g.k.AddEndpoint(netns.Endpoint{Addr: suKernelAddr(2).String(), ID: 2, Flags: []string{"signal"}})
		g.k.MPTCPLimits(1, 0)
		g.eng.SetLimits(mptcp.Limits{Subflows: 1, AddAddrAccepted: 1})
	}
}

// pair opens a connection whose client sends: the engine dials a kernel
// listener (engineSends) or a kernel socket dials an engine listener;
// kernel sockets get o. It waits for subflows subflows at both ends.
func (g *suEngineKernel) pair(tb testing.TB, engineSends bool, subflows int, o sockOpts) (w, r net.Conn) {
	tb.Helper()
	g.configure(tb, subflows, !engineSends)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if engineSends {
		// A wildcard listener, as the kernel takes a join only through a
		// listener of its destination address.
		ln := kernelListenOpts(tb, g.k, netip.IPv4Unspecified(), o)
		defer ln.Close()
		acc := acceptAsync(ln)
		ec, err := g.eng.Dial(ctx, "tcp", netip.AddrPortFrom(suKernelAddr(1), listenPort(ln)).String())
		if err != nil {
			tb.Fatal(err)
		}
		w, r = ec, <-acc
	} else {
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(suEngineAddr(1), 0).String())
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		acc := acceptAsync(ln)
		kc, err := kernelDialOpts(ctx, g.k, ln.Addr().String(), o)
		if err != nil {
			tb.Fatal(err)
		}
		w, r = kc, <-acc
	}
	if r == nil {
		w.Close()
		tb.Fatal("accept failed")
	}
	ec := w
	if !engineSends {
		ec = r
	}
	suWaitSubflows(tb, w, r, subflows, func() int {
		return len(liveSubflows(ec.(*stack.Conn).ConnInfo()))
	}, g.k)
	return w, r
}

// suWaitSubflows exchanges a byte each way (the connection fully
// established, the path managers act) and waits until the engine (if
// engineCount is set) and the kernel namespaces list subflows subflows.
func suWaitSubflows(tb testing.TB, w, r net.Conn, subflows int, engineCount func() int, nss ...*netns.NS) {
	tb.Helper()
	for _, p := range []struct{ a, b net.Conn }{{w, r}, {r, w}} {
		p.b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.a.Write([]byte{1}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(p.b, make([]byte, 1)); err != nil {
			tb.Fatal(err)
		}
		p.b.SetReadDeadline(time.Time{})
	}
	ok := waitFor(5*time.Second, func() bool {
		if engineCount != nil && engineCount() != subflows {
			return false
		}
		for _, ns := range nss {
			// A kernel namespace holding both ends lists each subflow
			// twice.
			want := subflows
			if engineCount == nil && len(nss) == 1 {
				want *= 2
			}
			if n, err := kernelSubflowsIn(ns); err != nil || n != want {
				return false
			}
		}
		return true
	})
	if !ok {
		tb.Fatalf("not %d subflows at both ends within 5s", subflows)
	}
	time.Sleep(mpJoinGrace) // a refused or late join would show now
}

// sockOpts are the options of the benchmarks' kernel sockets.
type sockOpts struct {
	// cc, if set, is the congestion control (TCP_CONGESTION; on an MPTCP
	// socket it applies to every subflow).
	cc string
	// rcvbuf, if positive, fixes the receive buffer (SO_RCVBUFFORCE).
	rcvbuf int
}

func (o sockOpts) control(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if o.cc != "" {
			serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, o.cc)
		}
		if serr == nil && o.rcvbuf > 0 {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, o.rcvbuf)
		}
	}); err != nil {
		return err
	}
	return serr
}

// kernelListenOpts listens with MPTCP in ns, with o (which accepted
// sockets inherit).
func kernelListenOpts(tb testing.TB, ns *netns.NS, addr netip.Addr, o sockOpts) net.Listener {
	tb.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		lc := net.ListenConfig{Control: o.control}
		lc.SetMultipathTCP(true)
		ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return ln
}

func listenPort(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }

// kernelDialOpts dials with MPTCP from ns, with o.
func kernelDialOpts(ctx context.Context, ns *netns.NS, addr string, o sockOpts) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		d := net.Dialer{Control: o.control}
		d.SetMultipathTCP(true)
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// suKernelVeth is two kernel namespaces joined by two veth pairs: path i
// has the client's 10.0.i.1 and the server's 10.0.i.2.
type suKernelVeth struct{ a, b *netns.NS }

func newSUKernelVeth(tb testing.TB) *suKernelVeth {
	tb.Helper()
	netns.RequireMPTCP(tb)
	g := &suKernelVeth{a: netns.New(tb, suNSPrefix), b: netns.New(tb, suNSPrefix)}
	for _, ns := range []*netns.NS{g.a, g.b} {
		ns.MustRun("sysctl", "-qw", "net.mptcp.enabled=1", "net.mptcp.pm_type=0", "net.mptcp.checksum_enabled=0")
	}
	for i := 1; i <= 2; i++ {
		netns.Veth(tb, g.a, fmt.Sprintf("mpva%d", i), suKernelAddr(i).String()+"/24", g.b, fmt.Sprintf("mpvb%d", i), suEngineAddr(i).String()+"/24")
	}
	return g
}

// pair opens a connection from a (client, the sender) to b.
func (g *suKernelVeth) pair(tb testing.TB, subflows int, o sockOpts) (w, r net.Conn) {
	tb.Helper()
	g.a.FlushEndpoints()
	g.b.FlushEndpoints()
	if subflows < 2 {
		g.a.MPTCPLimits(0, 0)
		g.b.MPTCPLimits(0, 0)
	} else {
		g.b.AddEndpoint(netns.Endpoint{Addr: suEngineAddr(2).String(), ID: 2, Flags: []string{"signal"}})
		g.b.MPTCPLimits(1, 0)
		g.a.MPTCPLimits(1, 1)
	}
	ln := kernelListenOpts(tb, g.b, netip.IPv4Unspecified(), o) // wildcard: see suEngineKernel.pair
	defer ln.Close()
	acc := acceptAsync(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := kernelDialOpts(ctx, g.a, netip.AddrPortFrom(suEngineAddr(1), listenPort(ln)).String(), o)
	if err != nil {
		tb.Fatal(err)
	}
	if r = <-acc; r == nil {
		w.Close()
		tb.Fatal("accept failed")
	}
	suWaitSubflows(tb, w, r, subflows, nil, g.a, g.b)
	return w, r
}

// suResult is one bulk transfer.
type suResult struct {
	bytes   int64
	elapsed time.Duration
	busy    time.Duration // machine-wide busy CPU time
	proc    time.Duration // this process's CPU time
	maxGap  time.Duration // longest time the reader waited for data
	stalls  int           // reader waits of suStall or more
	stalled time.Duration // their total
	// finWait is how long the reader waited for the end of the stream
	// (EOF: the FIN, or MPTCP's DATA_FIN) after the last byte.
	finWait time.Duration
	err     error
}

// suStall is the wait for data that counts as a stall.
const suStall = 100 * time.Millisecond

func (m suResult) mbps() float64 { return float64(m.bytes) / m.elapsed.Seconds() / 1e6 }

// mbpsNoStalls is the rate with the stalls' time taken out.
func (m suResult) mbpsNoStalls() float64 {
	return float64(m.bytes) / (m.elapsed - m.stalled).Seconds() / 1e6
}
func (m suResult) cpuPerGB() float64  { return m.busy.Seconds() / (float64(m.bytes) / 1e9) }
func (m suResult) procPerGB() float64 { return m.proc.Seconds() / (float64(m.bytes) / 1e9) }

// add accumulates rounds.
func (m *suResult) add(o suResult) {
	m.bytes += o.bytes
	m.elapsed += o.elapsed
	m.busy += o.busy
	m.proc += o.proc
	m.maxGap = max(m.maxGap, o.maxGap)
	m.stalls += o.stalls
	m.stalled += o.stalled
	m.finWait = max(m.finWait, o.finWait)
	if m.err == nil {
		m.err = o.err
	}
}

// bulkTransfer writes n bytes (a constant pattern: no hashing, so that
// the CPU figures are the stacks') from w, half-closes, and reads r to
// EOF; both are closed on return. The CPU is sampled around it.
func bulkTransfer(w, r net.Conn, n int64, timeout time.Duration) suResult {
	defer w.Close()
	defer r.Close()
	deadline := time.Now().Add(timeout)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)
	type rres struct {
		n       int64
		gap     time.Duration
		stalls  int
		stalled time.Duration
		finWait time.Duration
		err     error
	}
	done := make(chan rres, 1)
	c0 := sampleMachineCPU()
	start := time.Now()
	go func() {
		var res rres
		buf := make([]byte, 256<<10)
		last := time.Now()
		for {
			k, err := r.Read(buf)
			now := time.Now()
			if k > 0 {
				res.gap = max(res.gap, now.Sub(last))
				if now.Sub(last) >= suStall {
					res.stalls++
					res.stalled += now.Sub(last)
				}
				last = now
				res.n += int64(k)
			}
			if err != nil {
				if err != io.EOF {
					res.err = err
				} else {
					res.finWait = now.Sub(last)
				}
				break
			}
		}
		done <- res
	}()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var werr error
	for sent := int64(0); sent < n; {
		k := min(int64(len(buf)), n-sent)
		m, err := w.Write(buf[:k])
		sent += int64(m)
		if err != nil {
			werr = fmt.Errorf("write after %d bytes: %w", sent, err)
			break
		}
	}
	if werr == nil {
		werr = w.(interface{ CloseWrite() error }).CloseWrite()
	}
	got := <-done
	res := suResult{bytes: got.n, elapsed: time.Since(start), maxGap: got.gap, stalls: got.stalls, stalled: got.stalled, finWait: got.finWait}
	c1 := sampleMachineCPU()
	res.busy, res.proc = c1.busy-c0.busy, c1.proc-c0.proc
	switch {
	case got.err != nil:
		res.err = fmt.Errorf("read after %d bytes: %w", got.n, got.err)
	case werr != nil:
		res.err = werr
	case got.n != n:
		res.err = fmt.Errorf("received %d bytes, sent %d", got.n, n)
	}
	return res
}

// --- Notes: load, CPU, command --------------------------------------------------------

// machineCPU is the machine's busy CPU time (all CPUs, /proc/stat:
// everything but idle and iowait) and this process's CPU time.
type machineCPU struct {
	at   time.Time
	busy time.Duration
	proc time.Duration
}

func sampleMachineCPU() machineCPU {
	s := machineCPU{at: time.Now()}
	if f, err := os.Open("/proc/stat"); err == nil {
		sc := bufio.NewScanner(f)
		if sc.Scan() {
			fields := strings.Fields(sc.Text())
			var ticks uint64
			for i, v := range fields[1:min(9, len(fields))] {
				if i == 3 || i == 4 { // idle, iowait
					continue
				}
				n, _ := strconv.ParseUint(v, 10, 64)
				ticks += n
			}
			s.busy = time.Duration(ticks) * time.Second / 100 // USER_HZ
		}
		f.Close()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

// backgroundLoad returns the load averages and how many CPUs were busy
// over one second of idleness before a benchmark.
func backgroundLoad() string {
	c0 := sampleMachineCPU()
	time.Sleep(time.Second)
	c1 := sampleMachineCPU()
	busy := (c1.busy - c0.busy).Seconds() / c1.at.Sub(c0.at).Seconds()
	la := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		la = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%.2f of %d CPUs busy in the second before the run (load average %s)", busy, runtime.NumCPU(), la)
}

// benchCommand reconstructs the go test command of this run from the
// flags that were set.
func benchCommand() string {
	args := []string{"go", "test", "./conformance/", "-run", "'^$'"}
	flag.Visit(func(f *flag.Flag) {
		name := f.Name
		switch name {
		case "test.run", "test.paniconexit0", "test.timeout", "test.testlogfile", "test.outputdir", "test.gocoverdir", "test.v":
			return
		}
		name = strings.TrimPrefix(name, "test.")
		v := f.Value.String()
		if strings.ContainsAny(v, " ^$*|'\"") {
			v = "'" + v + "'"
		}
		args = append(args, "-"+name+"="+v)
	})
	return strings.Join(args, " ")
}

// namespacesLeft returns the namespaces named after one of prefixes that
// this process created and that still exist.
func namespacesLeft(prefixes ...string) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return []string{"ip netns list: " + err.Error()}
	}
	var left []string
	me := fmt.Sprintf("-%d-", os.Getpid())
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(f[0], p+me) {
				left = append(left, f[0])
			}
		}
	}
	return left
}
