package conformance

// The engine's TCP against the kernel's over an impaired path. This kernel
// has no sch_netem, so the impairment is done in process by package
// internal/impair, wrapped around the engine's TUN endpoint: every packet
// between the engine and the kernel crosses it, in both directions.

import (
	"context"
	"flag"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	impairBytes = flag.Int64("conformance.impair-bytes", 0,
		"bytes each direction of TestEngineTCPKernelNetem moves (0: the test's default)")
	impairSeed = flag.Uint64("conformance.impair-seed", 1,
		"seed of the impairment's PRNGs in TestEngineTCPKernelNetem")
)

// impairNSPrefix names the namespaces of the impaired interop tests.
const impairNSPrefix = "mpti"

// netemImpairment is the impairment of the netem tests, each way. The
// delay line holds up to 10,000 packets rather than netem's default 1,000:
// the engine's side filled 1,000 once in a full run (17 packets dropped
// for it, with the kernel sending at 6 MB/s and the engine acknowledging
// each out-of-order segment; the impairer releases packets from a Go
// timer, which runs late on two busy vCPUs), an extra loss the test did
// not ask for (checkImpaired fails on any).
const netemImpairment = "loss 1% delay 10ms reorder 5% limit 10000"

// impairedEngineTUN is an engineTUN whose NIC is the TUN endpoint wrapped
// by an impairer, with taps on both sides of the impairer that see every
// TCP segment before and after it.
type impairedEngineTUN struct {
	*engineTUN
	imp *impair.Endpoint
	// above sees egress before and ingress after the impairment (what the
	// engine sends and receives); below sees egress after and ingress
	// before it (what the kernel receives and sends).
	above, below *segTap
}

// newImpairedEngineTUN builds the topology of newEngineTUN with the TUN
// wrapped as stack → above → impair → below → TUN. GRO is off in the TUN:
// the impairer must see wire packets, not GRO super-segments.
func newImpairedEngineTUN(t *testing.T, mtu int, egress, ingress impair.Config, seed uint64) *impairedEngineTUN {
	t.Helper()
	g := &impairedEngineTUN{}
	g.engineTUN = newEngineTUNWith(t, engineTUNConfig{
		prefix: impairNSPrefix, ifc: "mpti0", mtu: mtu,
		opts:    stack.Options{MPTCP: stack.MPTCPConfig{Disabled: true}}, // our TCP alone
		tunOpts: []tun.Option{tun.WithGRO(false)},
		wrap: func(ep *tun.Endpoint) gstack.LinkEndpoint {
			g.below = newSegTap(ep)
			g.imp = impair.New(g.below, egress, ingress, seed)
			g.above = newSegTap(g.imp)
			return g.above
		},
	})
	return g
}

// kernelRecoveryCounters are the kernel's view of the loss recovery on
// both connections: its own retransmissions (it sends on one), D-SACKs it
// sends for duplicate data it receives (from the engine, on the other),
// and its reordering detection.
var kernelRecoveryCounters = []string{
	"TcpRetransSegs",
	"TcpExtTCPFastRetrans",
	"TcpExtTCPSlowStartRetrans",
	"TcpExtTCPTimeouts",
	"TcpExtTCPLossProbes",
	"TcpExtTCPSACKReorder",
	"TcpExtTCPDSACKOldSent",
	"TcpExtTCPDSACKOfoSent",
	"TcpExtTCPSpuriousRTOs",
	"TcpExtTCPSackRecovery",
	"TcpExtTCPDSACKUndo",
	"TcpExtTCPFullUndo",
	"TcpExtTCPPartialUndo",
	"TcpExtTCPLossUndo",
	"TcpExtTCPSpuriousRtxHostQueues",
	"TcpExtTCPDSACKRecv",
}

// TestEngineTCPKernelNetem moves data both ways at once between the engine
// and the kernel, through "loss 1% delay 10ms reorder 5%" applied to each
// direction of the path on its own: the path RTT is about 20 ms and each
// connection's data and ACKs are lost and reordered. Both directions are
// impaired because each side's sender must recover real data loss: with
// only the kernel's output impaired, the engine as sender would only ever
// lose ACKs, and its retransmission machinery (SACK recovery, RTO) would go
// untested.
//
// The two connections (engine client → kernel server, kernel client →
// engine server) run concurrently to halve the wall time, each checked by
// SHA-256. Taps above and below the impairer count every data segment on
// both sides of it, so that the retransmissions each sender needed (data
// the impairer dropped) can be told from the spurious ones (data whose
// first copy arrived): reordering by 10 ms at 5% makes a reordered
// segment overtake several others, which reads as loss to a sender
// without RACK (RFC 8985) or D-SACK-based undo (RFC 2883, RFC 3708).
//
// Size: the issue asks for 256 MiB each way. 1% loss at a 20 ms RTT caps a
// Reno-like TCP at about MSS*1.22/(RTT*sqrt(p)) ≈ 0.9 MB/s. Measured on
// this machine (2 shared vCPUs, seed 1): engine → kernel 0.57-0.66 MB/s
// (128 MiB in 3m39s and 3m53s), kernel → engine 2.4-3.1 MB/s, so the
// issue's 256 MiB keeps the slower direction busy 7.3-7.8 minutes: the
// default all the same (CI's budget is 45 minutes, the rest of the suite
// takes about 5). -short moves 4 MiB; -conformance.impair-bytes
// overrides, -conformance.impair-seed reseeds.
//
// What the figures say (128 MiB, seed 1). Engine as sender: 1.9% of its
// data segments retransmitted, about half of them spurious (930 of 1889;
// the kernel's D-SACKs, TcpExtTCPDSACKOldSent+OfoSent = 592, agree in
// magnitude), 946 fast recoveries and 38 RTOs for 959 dropped segments:
// every reordering that opens a three-segment SACK hole costs a recovery
// and a congestion window reduction that is never undone. Besides, 12% of
// its data segments are shorter than the MSS (the kernel's: none). The kernel as
// sender marks far more segments lost (21% retransmitted, 95% of them
// spurious: RACK's reordering window is RTT/4 = 5 ms, below the 10 ms a
// reordered packet jumps, and the engine sends no D-SACK that would widen
// it) yet keeps its rate, because it undoes the spurious reductions
// (TcpExtTCPPartialUndo, from timestamps). TestKernelTCPKernelNetem is the
// kernel-to-kernel baseline on the same impairer: 2.2-2.7 and 3.2-3.5 MB/s.
func TestEngineTCPKernelNetem(t *testing.T) {
	n := int64(impairDefaultBytes)
	if testing.Short() {
		n = 4 << 20
	}
	if *impairBytes > 0 {
		n = *impairBytes
	}
	cfg, err := impair.Parse(netemImpairment)
	if err != nil {
		t.Fatal(err)
	}
	g := newImpairedEngineTUN(t, 1500, cfg, cfg, *impairSeed)
	t.Logf("impairment %q each way, seed %d, %d MiB each way", cfg, *impairSeed, n>>20)
	before := g.kernelCounters(t)
	kBefore := g.recoveryCounters(t)

	type conn struct {
		name    string
		w, r    net.Conn
		engine  *stack.Conn
		elapsed time.Duration
		err     error
	}
	var conns []*conn
	for _, engineSends := range []bool{true, false} {
		w, r := g.pair(t, engineSends, false)
		c := &conn{name: dirName(engineSends), w: w, r: r}
		if engineSends {
			c.engine = w.(*stack.Conn)
		} else {
			c.engine = r.(*stack.Conn)
		}
		conns = append(conns, c)
	}
	// A generous timeout: a quarter of the rate seen on this machine.
	timeout := 2*time.Minute + time.Duration(float64(n)/(impairMinRate/4)*float64(time.Second))
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.elapsed, c.err = verifiedTransfer(c.w, c.r, n, timeout)
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c.err != nil {
			t.Errorf("%s: %v", c.name, c.err)
		}
	}

	st := g.imp.Stats()
	kAfter := g.recoveryCounters(t)
	for _, c := range conns {
		engineSends := c.name == dirName(true)
		i := c.engine.Info()
		t.Logf("%s: %d MiB in %v: %.2f MB/s", c.name, n>>20, c.elapsed.Round(time.Millisecond), float64(n)/c.elapsed.Seconds()/1e6)
		t.Logf("%s: engine: %d segs in, %d out, %d out-of-order, %d bytes (%d segs) retransmitted, %d fast recoveries, %d RTOs, %d dup ACKs in, SRTT %v",
			c.name, i.SegsIn, i.SegsOut, i.OutOfOrderSegs, i.BytesRetrans, i.Retransmits, i.FastRecoveries, i.RTOs, i.DupAcksIn, i.SRTT)
		checkRecovery(t, c.name, engineSends, g.above, g.below, st, c.err == nil)
		if c.err == nil && !engineSends && i.OutOfOrderSegs == 0 {
			t.Errorf("%s: loss and reordering produced no out-of-order segment at the engine", c.name)
		}
	}
	for _, k := range kernelRecoveryCounters {
		t.Logf("kernel %s: %d", k, kAfter[k]-kBefore[k])
	}
	checkImpaired(t, st)
	g.checkKernelCounters(t, before)
}

// impairDefaultBytes is the default size of TestEngineTCPKernelNetem and
// impairMinRate the lowest rate (bytes/s) per direction measured for it on
// this machine; see the test's doc comment.
const (
	impairDefaultBytes = 256 << 20
	impairMinRate      = 0.5e6
)

// checkRecovery logs and checks one data flow's loss recovery as the taps
// around the impairer saw it. egress selects the flow leaving the side
// above the impairer (engine → kernel); the other flow enters it.
// Every data segment the impairer dropped must have been retransmitted;
// retransmissions whose first copy had got through are spurious.
func checkRecovery(t *testing.T, name string, egress bool, above, below *segTap, st impair.Stats, ok bool) {
	t.Helper()
	sent, got, dir := below.dataFlow(false), above.dataFlow(false), st.Ingress
	if egress {
		sent, got, dir = above.dataFlow(true), below.dataFlow(true), st.Egress
	}
	lost := sent.segs - got.segs
	t.Logf("%s: data segments: %d sent (%d shorter than the MSS), %d dropped by the impairer, %d retransmitted (%.2f%%), %d of them spurious (first copy had arrived): %.0f%% of retransmissions",
		name, sent.segs, sent.short, lost, sent.dups, pct(sent.dups, sent.segs), got.dups, pct(got.dups, sent.dups))
	t.Logf("%s: impairer on this direction: %+v", name, dir)
	if ok && (lost == 0 || sent.dups < lost) {
		t.Errorf("%s: %d data segments dropped, %d retransmitted: want drops > 0, each retransmitted", name, lost, sent.dups)
	}
}

// checkImpaired checks that the impairment really happened in both
// directions, on wire-sized packets, without overflowing.
func checkImpaired(t *testing.T, st impair.Stats) {
	t.Helper()
	for _, d := range []struct {
		name string
		s    impair.DirStats
	}{{"egress", st.Egress}, {"ingress", st.Ingress}} {
		if d.s.Dropped == 0 || d.s.Reordered == 0 || d.s.Delayed == 0 {
			t.Errorf("impair %s: the impairment did not happen: %+v", d.name, d.s)
		}
		if d.s.Oversize != 0 {
			t.Errorf("impair %s: %d packets above the MTU: the impairer saw GRO/GSO super-packets", d.name, d.s.Oversize)
		}
		if d.s.Overflow != 0 {
			t.Errorf("impair %s: the delay line overflowed %d times", d.name, d.s.Overflow)
		}
	}
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// recoveryCounters snapshots kernelRecoveryCounters in the namespace.
func (g *impairedEngineTUN) recoveryCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	all, err := g.ns.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint64, len(kernelRecoveryCounters))
	for _, k := range kernelRecoveryCounters {
		m[k] = all[k]
	}
	return m
}

// segTap is a pass-through link endpoint that counts the TCP data
// segments (IPv4, payload > 0) crossing it, per direction and flow, and
// how many of them start at a sequence number that crossed it before:
// retransmissions, as seen at this point of the path.
type segTap struct {
	gstack.LinkEndpoint
	d tapDispatcher

	mu    sync.Mutex
	flows map[tapKey]*tapState
}

type tapKey struct {
	egress   bool
	src, dst uint16
}

type tapState struct {
	tapFlow
	seen  map[uint32]struct{}
	sizes map[int]uint64 // data segments by payload length
}

// tapFlow is what a tap counted for one flow.
type tapFlow struct {
	segs  uint64 // data segments
	bytes uint64 // payload bytes, retransmissions included
	dups  uint64 // data segments starting at an already seen sequence number
	short uint64 // data segments shorter than the flow's largest (its MSS)
}

type tapDispatcher struct {
	tap *segTap
	up  gstack.NetworkDispatcher
}

func newSegTap(child gstack.LinkEndpoint) *segTap {
	t := &segTap{LinkEndpoint: child, flows: make(map[tapKey]*tapState)}
	t.d.tap = t
	return t
}

// WritePackets implements stack.LinkWriter.
func (t *segTap) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		t.count(true, p)
	}
	return t.LinkEndpoint.WritePackets(pkts)
}

// Attach implements stack.LinkEndpoint. The dispatcher is set once, before
// packets flow (the engine attaches when the NIC is created).
func (t *segTap) Attach(d gstack.NetworkDispatcher) {
	if d == nil {
		t.LinkEndpoint.Attach(nil)
		return
	}
	t.d.up = d
	t.LinkEndpoint.Attach(&t.d)
}

// IsAttached implements stack.LinkEndpoint.
func (t *segTap) IsAttached() bool { return t.LinkEndpoint.IsAttached() }

func (d *tapDispatcher) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	d.tap.count(false, pkt)
	d.up.DeliverNetworkPacket(proto, pkt)
}

func (d *tapDispatcher) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	d.up.DeliverLinkPacket(proto, pkt)
}

func (t *segTap) count(egress bool, pkt *gstack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	b := v.AsSlice()
	ip := header.IPv4(b)
	if len(b) < header.IPv4MinimumSize || !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber {
		return
	}
	tcp := header.TCP(ip.Payload())
	if len(tcp) < header.TCPMinimumSize || int(tcp.DataOffset()) > len(tcp) {
		return
	}
	payload := len(tcp) - int(tcp.DataOffset())
	if payload == 0 {
		return
	}
	k := tapKey{egress: egress, src: tcp.SourcePort(), dst: tcp.DestinationPort()}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil {
		f = &tapState{seen: make(map[uint32]struct{}), sizes: make(map[int]uint64)}
		t.flows[k] = f
	}
	f.segs++
	f.bytes += uint64(payload)
	f.sizes[payload]++
	if _, ok := f.seen[tcp.SequenceNumber()]; ok {
		f.dups++
	} else {
		f.seen[tcp.SequenceNumber()] = struct{}{}
	}
}

// dataFlow returns the counts of the flow that carried the most payload in
// the given direction.
func (t *segTap) dataFlow(egress bool) tapFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var best tapFlow
	for k, f := range t.flows {
		if k.egress == egress && f.bytes > best.bytes {
			best = f.tapFlow
			largest := 0
			for size := range f.sizes {
				largest = max(largest, size)
			}
			best.short = f.segs - f.sizes[largest]
		}
	}
	return best
}

// Addresses of the kernel-to-kernel baseline: two namespaces, each with a
// TUN whose other end is this process.
var (
	bridgeA4 = netip.MustParseAddr("10.213.0.1")
	bridgeB4 = netip.MustParseAddr("10.213.0.2")
)

// bridge is a dispatcher that writes every packet it is given to another
// link endpoint, making this process a wire between two TUNs.
type bridge struct{ to gstack.LinkEndpoint }

func (b *bridge) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gstack.PacketBuffer) {
	var l gstack.PacketBufferList
	l.PushBack(pkt)
	_, _ = b.to.WritePackets(l) // the caller keeps its reference: no Reset
}

func (*bridge) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gstack.PacketBuffer) {}

// TestKernelTCPKernelNetem is the baseline for TestEngineTCPKernelNetem:
// the kernel's TCP on both ends, through the same impairer and the same
// impairment, with the same concurrent transfers. Namespace A's kernel
// reaches namespace B's through TUN A → (taps, impairer) → TUN B, this
// process bridging the two; A plays the engine's part. The kernel has RACK
// (RFC 8985) and D-SACK (RFC 2883) on both ends here, which the engine's
// TCP lacks. Default 32 MiB each way, about 16 s (4 MiB with -short);
// -conformance.impair-bytes overrides. Measured: 2.2-2.7 MB/s (B → A) and
// 3.2-3.5 MB/s (A → B), 21-28% of data segments retransmitted, 95% of
// them spurious, most recoveries undone (TcpExtTCPPartialUndo).
func TestKernelTCPKernelNetem(t *testing.T) {
	n := int64(32 << 20)
	if testing.Short() {
		n = 4 << 20
	}
	if *impairBytes > 0 {
		n = *impairBytes
	}
	netns.Require(t)
	netns.RequireTools(t, "nstat")
	cfg, err := impair.Parse(netemImpairment)
	if err != nil {
		t.Fatal(err)
	}
	nsA, nsB := netns.New(t, impairNSPrefix), netns.New(t, impairNSPrefix)
	var tunA, tunB *tun.Endpoint
	for _, x := range []struct {
		ns  *netns.NS
		ep  **tun.Endpoint
		ifc string
	}{{nsA, &tunA, "mptia"}, {nsB, &tunB, "mptib"}} {
		if err := x.ns.Do(func() (err error) {
			*x.ep, err = tun.Create(x.ifc, 1500, tun.WithGRO(false))
			return err
		}); err != nil {
			t.Fatalf("creating TUN in %s: %v", x.ns.Name, err)
		}
	}
	below := newSegTap(tunA)
	imp := impair.New(below, cfg, cfg, *impairSeed)
	above := newSegTap(imp)
	t.Cleanup(func() {
		above.Close()
		tunB.Close()
		above.Wait()
		tunB.Wait()
	})
	above.Attach(&bridge{to: tunB}) // A's output, impaired (ingress), to B
	tunB.Attach(&bridge{to: above}) // B's output, impaired (egress), to A
	nsA.SetupLink("mptia", netns.LinkConfig{MTU: 1500, Addrs: []string{bridgeA4.String() + "/24"}})
	nsB.SetupLink("mptib", netns.LinkConfig{MTU: 1500, Addrs: []string{bridgeB4.String() + "/24"}})
	t.Logf("impairment %q each way, seed %d, %d MiB each way", cfg, *impairSeed, n>>20)

	// counters returns both namespaces' counters, keyed "A:name", "B:name".
	counters := func() map[string]uint64 {
		m := make(map[string]uint64)
		for i, ns := range []*netns.NS{nsA, nsB} {
			all, err := ns.Counters()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range append(kernelRecoveryCounters, kernelErrorCounters...) {
				m[string(rune('A'+i))+":"+k] = all[k]
			}
		}
		return m
	}
	before := counters()
	// A → B (A dials, as the engine did) and B → A (B dials).
	type conn struct {
		name    string
		egress  bool // the flow leaving the side above the impairer
		w, r    net.Conn
		elapsed time.Duration
		err     error
	}
	dial := func(from, to *netns.NS, addr netip.Addr) (w, r net.Conn) {
		var ln net.Listener
		if err := to.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		acc := acceptAsync(ln)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := from.Do(func() (err error) {
			var d net.Dialer
			w, err = d.DialContext(ctx, "tcp", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if r = <-acc; r == nil {
			t.Fatal("accept failed")
		}
		return w, r
	}
	// Above the impairer is B's side (its packets reach A through the
	// impairer's egress), so B → A is the "egress" flow, like
	// engine → kernel.
	var conns []*conn
	w, r := dial(nsB, nsA, bridgeA4)
	conns = append(conns, &conn{name: "B->A (as engine->kernel)", egress: true, w: w, r: r})
	w, r = dial(nsA, nsB, bridgeB4)
	conns = append(conns, &conn{name: "A->B (as kernel->engine)", egress: false, w: w, r: r})
	timeout := 2*time.Minute + time.Duration(float64(n)/(impairMinRate/4)*float64(time.Second))
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.elapsed, c.err = verifiedTransfer(c.w, c.r, n, timeout)
		}()
	}
	wg.Wait()
	st := imp.Stats()
	after := counters()
	for _, c := range conns {
		if c.err != nil {
			t.Errorf("%s: %v", c.name, c.err)
		}
		t.Logf("%s: %d MiB in %v: %.2f MB/s", c.name, n>>20, c.elapsed.Round(time.Millisecond), float64(n)/c.elapsed.Seconds()/1e6)
		checkRecovery(t, c.name, c.egress, above, below, st, c.err == nil)
	}
	for _, k := range kernelRecoveryCounters {
		t.Logf("kernel %s: A %d, B %d", k, after["A:"+k]-before["A:"+k], after["B:"+k]-before["B:"+k])
	}
	for _, k := range kernelErrorCounters {
		for _, ns := range []string{"A:", "B:"} {
			if after[ns+k] != before[ns+k] {
				t.Errorf("kernel counter %s%s moved: %d -> %d", ns, k, before[ns+k], after[ns+k])
			}
		}
	}
	checkImpaired(t, st)
}
