package conformance

// Loss recovery and short-connection latency, the engine's TCP against the
// kernel's: for each impairment, the engine sends to the kernel and the
// kernel to the engine through internal/impair on the engine's TUN (as in
// TestEngineTCPKernelNetem), and the same two flows run between two
// kernels bridged by this process through the same impairer (as in
// TestKernelTCPKernelNetem). Then sequential short connections (connect,
// 1 KiB, close) with the engine as server and as client, against the
// kernel with itself over the same kind of TUN bridge and over a veth.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/tun"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	recoveryTime = flag.Duration("conformance.recovery-time", 8*time.Second,
		"how long each flow of BenchmarkRecoveryKernel sends")
	recoveryCellsFlag = flag.String("conformance.recovery-cells", "",
		"comma-separated substrings: run only the BenchmarkRecoveryKernel cells whose impairment contains one ('none' for the short connections only)")
	recoveryConns = flag.Int("conformance.recovery-conns", 500,
		"sequential short connections per setup in BenchmarkRecoveryKernel")
)

// Addresses of the benchmark topologies (their own namespaces).
var (
	rbKernel4 = netip.MustParseAddr("10.215.0.1")
	rbEngine4 = netip.MustParseAddr("10.215.0.2")
	rbA4      = netip.MustParseAddr("10.216.0.1")
	rbB4      = netip.MustParseAddr("10.216.0.2")
)

const rbNSPrefix = "mptr"

// recoveryBenchCells are the impairments, each applied to both
// directions, netem syntax.
func recoveryBenchCells() []string {
	var cells []string
	for _, delay := range []string{"10ms", "50ms"} {
		for _, reorder := range []string{"", " reorder 5%"} {
			for _, loss := range []string{"0.1%", "1%", "3%"} {
				cells = append(cells, "loss "+loss+" delay "+delay+reorder)
			}
		}
	}
	// A short path: no delay line, 2% loss (the MPTCP fallback case of the
	// issue, plain TCP here).
	return append(cells, "loss 2%")
}

func cellSelected(name string) bool {
	if *recoveryCellsFlag == "" {
		return true
	}
	for _, f := range strings.Split(*recoveryCellsFlag, ",") {
		if f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// flowResult is one timed transfer.
type flowResult struct {
	bytes    int64
	elapsed  time.Duration
	segs     uint64 // data segments the sender put on the wire
	retrans  uint64 // of them starting at a sequence number sent before
	needless uint64 // of those whose first copy had got through
	err      error
}

func (r flowResult) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }
func (r flowResult) retransPct() float64 {
	return pct(r.retrans, r.segs)
}
func (r flowResult) needlessPct() float64 { return pct(r.needless, r.retrans) }

// timedTransfer writes from w for d, half-closes, and reads everything at
// r until EOF; both conns are closed on return.
func timedTransfer(w, r net.Conn, d time.Duration) (int64, time.Duration, error) {
	defer w.Close()
	defer r.Close()
	deadline := time.Now().Add(d + 2*time.Minute)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)
	type res struct {
		n   int64
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
		done <- res{n, err}
	}()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	stop := start.Add(d)
	var werr error
	for time.Now().Before(stop) {
		if _, err := w.Write(buf); err != nil {
			werr = err
			break
		}
	}
	if werr == nil {
		werr = w.(interface{ CloseWrite() error }).CloseWrite()
	}
	got := <-done
	if werr == nil {
		werr = got.err
	}
	return got.n, time.Since(start), werr
}

// tapResult reads a flow's counts from the taps around an impairer:
// egress is the flow leaving the side above it.
func tapResult(above, below *segTap, egress bool) (segs, retrans, needless uint64) {
	sent, got := below.dataFlow(false), above.dataFlow(false)
	if egress {
		sent, got = above.dataFlow(true), below.dataFlow(true)
	}
	return sent.segs, sent.dups, got.dups
}

func (t *segTap) reset() {
	t.mu.Lock()
	t.flows = make(map[tapKey]*tapState)
	t.mu.Unlock()
}

// benchEngine is the engine on a TUN wrapped by an impairer, the kernel at
// the other end (newImpairedEngineTUN's topology for a testing.TB).
type benchEngine struct {
	ns           *netns.NS
	eng          *stack.Engine
	above, below *segTap
	cc           string // the engine's congestion control
}

func newBenchEngine(tb testing.TB, cfg impair.Config) *benchEngine {
	return newBenchEngineWith(tb, cfg, stack.Options{MPTCP: stack.MPTCPConfig{Disabled: true}})
}

func newBenchEngineWith(tb testing.TB, cfg impair.Config, opts stack.Options) *benchEngine {
	tb.Helper()
	g := &benchEngine{ns: netns.New(tb, rbNSPrefix), cc: opts.TCP.Congestion}
	if g.cc == "" {
		g.cc = tcp.DefaultCongestion
	}
	var ep *tun.Endpoint
	if err := g.ns.Do(func() (err error) {
		ep, err = tun.Create("mptr0", 1500, tun.WithGRO(false))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	g.below = newSegTap(ep)
	imp := impair.New(g.below, cfg, cfg, 1)
	g.above = newSegTap(imp)
	var link gstack.LinkEndpoint = g.above
	eng, err := stack.NewEngine(opts)
	if err != nil {
		link.Close()
		tb.Fatal(err)
	}
	g.eng = eng
	tb.Cleanup(func() {
		eng.Close()
		link.Close()
		link.Wait()
	})
	if _, err := eng.AddNIC(link, netip.PrefixFrom(rbEngine4, 24)); err != nil {
		tb.Fatal(err)
	}
	g.ns.SetupLink("mptr0", netns.LinkConfig{MTU: 1500, Addrs: []string{rbKernel4.String() + "/24"}})
	return g
}

// kernelListen listens with plain TCP (or MPTCP) in ns on addr.
func kernelListen(tb testing.TB, ns *netns.NS, addr netip.Addr, mptcp ...bool) net.Listener {
	tb.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(len(mptcp) > 0 && mptcp[0])
		ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return ln
}

// kernelDial dials with plain TCP from ns, with congestion control cc if
// set.
func kernelDial(ctx context.Context, ns *netns.NS, addr string, cc ...string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(false)
		if len(cc) > 0 && cc[0] != "" {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, cc[0])
				}); err != nil {
					return err
				}
				return serr
			}
		}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// flow runs one timed transfer, engine → kernel or kernel → engine.
func (g *benchEngine) flow(tb testing.TB, engineSends bool, d time.Duration) flowResult {
	tb.Helper()
	g.above.reset()
	g.below.reset()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var w, r net.Conn
	var engineConn *stack.Conn
	before, _ := g.ns.Counters()
	if engineSends {
		ln := kernelListen(tb, g.ns, rbKernel4)
		defer ln.Close()
		acc := acceptAsync(ln)
		ec, err := g.eng.Dial(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return flowResult{err: err}
		}
		w, r, engineConn = ec, <-acc, ec.(*stack.Conn)
	} else {
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(rbEngine4, 0).String())
		if err != nil {
			return flowResult{err: err}
		}
		defer ln.Close()
		acc := acceptAsync(ln)
		kc, err := kernelDial(ctx, g.ns, ln.Addr().String())
		if err != nil {
			return flowResult{err: err}
		}
		w, r = kc, <-acc
	}
	if r == nil {
		return flowResult{err: errors.New("accept failed")}
	}
	var res flowResult
	res.bytes, res.elapsed, res.err = timedTransfer(w, r, d)
	res.segs, res.retrans, res.needless = tapResult(g.above, g.below, engineSends)
	if engineConn != nil {
		i := engineConn.Info()
		logf("    engine sender (%s): %d RTOs, %d recoveries (%d undone: full %d partial %d dsack %d loss %d), %d probes (%d recovered), %d lost retransmissions, %d D-SACKs in; SRTT %v reo_wnd %v cwnd %d",
			g.cc, i.RTOs, i.FastRecoveries, i.TCPFullUndo+i.TCPPartialUndo+i.TCPDSACKUndo+i.TCPLossUndo, i.TCPFullUndo, i.TCPPartialUndo, i.TCPDSACKUndo, i.TCPLossUndo,
			i.TCPLossProbes, i.TCPLossProbeRecovery, i.TCPLostRetransmit, i.TCPDSACKRecv, i.SRTT, i.ReoWnd, i.Cwnd)
	} else if after, err := g.ns.Counters(); err == nil {
		logKernelSender("kernel sender ("+kernelCC(g.ns)+", to the engine)", before, after)
	}
	return res
}

// kernelCC is the namespace's congestion control.
func kernelCC(ns *netns.NS) string {
	out, err := ns.Run("sysctl", "-n", "net.ipv4.tcp_congestion_control")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(out)
}

// logKernelSender prints what the kernel's recovery counters did.
func logKernelSender(who string, before, after map[string]uint64) {
	d := func(k string) uint64 { return after[k] - before[k] }
	logf("    %s: %d RTOs, %d recoveries (%d undone: full %d partial %d dsack %d loss %d), %d probes, %d D-SACKs in",
		who, d("TcpExtTCPTimeouts"), d("TcpExtTCPSackRecovery"),
		d("TcpExtTCPFullUndo")+d("TcpExtTCPPartialUndo")+d("TcpExtTCPDSACKUndo")+d("TcpExtTCPLossUndo"),
		d("TcpExtTCPFullUndo"), d("TcpExtTCPPartialUndo"), d("TcpExtTCPDSACKUndo"), d("TcpExtTCPLossUndo"),
		d("TcpExtTCPLossProbes"), d("TcpExtTCPDSACKRecv"))
}

// benchDetail collects per-run detail lines, printed after the table.
var benchDetail struct {
	sync.Mutex
	lines []string
}

func logf(format string, args ...any) {
	benchDetail.Lock()
	benchDetail.lines = append(benchDetail.lines, fmt.Sprintf(format, args...))
	benchDetail.Unlock()
}

// benchKernels is two kernels whose TUNs this process bridges through an
// impairer (TestKernelTCPKernelNetem's topology): B's side is above it,
// like the engine's.
type benchKernels struct {
	nsA, nsB     *netns.NS
	above, below *segTap
	cc           string
}

// newBenchKernels builds the pair; cc, if set, is the congestion control
// the senders use (TCP_CONGESTION: a namespace's default cannot be
// changed), the namespaces' default otherwise.
func newBenchKernels(tb testing.TB, cfg impair.Config, cc string) *benchKernels {
	tb.Helper()
	k := &benchKernels{nsA: netns.New(tb, rbNSPrefix), nsB: netns.New(tb, rbNSPrefix), cc: cc}
	var tunA, tunB *tun.Endpoint
	for _, x := range []struct {
		ns  *netns.NS
		ep  **tun.Endpoint
		ifc string
	}{{k.nsA, &tunA, "mptra"}, {k.nsB, &tunB, "mptrb"}} {
		if err := x.ns.Do(func() (err error) {
			*x.ep, err = tun.Create(x.ifc, 1500, tun.WithGRO(false))
			return err
		}); err != nil {
			tb.Fatal(err)
		}
	}
	k.below = newSegTap(tunA)
	imp := impair.New(k.below, cfg, cfg, 1)
	k.above = newSegTap(imp)
	tb.Cleanup(func() {
		k.above.Close()
		tunB.Close()
		k.above.Wait()
		tunB.Wait()
	})
	k.above.Attach(&bridge{to: tunB})
	tunB.Attach(&bridge{to: k.above})
	k.nsA.SetupLink("mptra", netns.LinkConfig{MTU: 1500, Addrs: []string{rbA4.String() + "/24"}})
	k.nsB.SetupLink("mptrb", netns.LinkConfig{MTU: 1500, Addrs: []string{rbB4.String() + "/24"}})
	return k
}

// flow runs one timed transfer: B → A (as engine → kernel) when egress,
// else A → B.
func (k *benchKernels) flow(tb testing.TB, egress bool, d time.Duration) flowResult {
	tb.Helper()
	k.above.reset()
	k.below.reset()
	from, to, addr := k.nsA, k.nsB, rbB4
	if egress {
		from, to, addr = k.nsB, k.nsA, rbA4
	}
	before, _ := from.Counters()
	ln := kernelListen(tb, to, addr)
	defer ln.Close()
	acc := acceptAsync(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := kernelDial(ctx, from, ln.Addr().String(), k.cc)
	if err != nil {
		return flowResult{err: err}
	}
	r := <-acc
	if r == nil {
		return flowResult{err: errors.New("accept failed")}
	}
	var res flowResult
	res.bytes, res.elapsed, res.err = timedTransfer(w, r, d)
	res.segs, res.retrans, res.needless = tapResult(k.above, k.below, egress)
	if after, err := from.Counters(); err == nil {
		cc := k.cc
		if cc == "" {
			cc = kernelCC(from)
		}
		logKernelSender("kernel sender ("+cc+", to a kernel)", before, after)
	}
	return res
}

// BenchmarkRecoveryKernel prints, for each impairment of
// recoveryBenchCells (on both directions of the path), the goodput of the
// engine and of the kernel as sender and as receiver, their ratios
// (engine sending to the kernel vs the kernel sending to a kernel, with
// CUBIC like the engine and with the namespaces' default congestion
// control, BBR on the machines this was written on; the kernel sending to
// the engine vs to a kernel), the data segments retransmitted and how
// many of those were needless; then sequential short connections with
// p50/p99 latency. Each flow sends for -conformance.recovery-time
// (default 8 s); the whole run takes about 12 minutes on 2 vCPUs. Run it
// once:
//
//	go test ./conformance/ -run '^$' -bench BenchmarkRecoveryKernel -benchtime 1x
//
// (-conformance.recovery-cells selects cells, -conformance.recovery-conns
// sets the number of short connections.)
func BenchmarkRecoveryKernel(b *testing.B) {
	netns.Require(b)
	netns.RequireTools(b, "nstat")
	d := *recoveryTime
	if cellSelected("none") || *recoveryCellsFlag == "" {
		// First, while the heap is small: the tails are sensitive to
		// garbage collection.
		shortConnBench(b)
	}
	var defaultCC string
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nimpairment (each way)\tengine→k\tcubic k→k\tratio\tengine bbr→k\tdefault k→k\tratio\tretx%% e/k cubic\tneedless%% e/k cubic\tretx%% e/k bbr\tneedless%% e/k bbr\tk→engine\tk→k\tratio\tretx%% k→e/k→k\t\n")
	for range b.N {
		for _, cell := range recoveryBenchCells() {
			if !cellSelected(cell) {
				continue
			}
			cfg, err := impair.Parse(cell)
			if err != nil {
				b.Fatal(err)
			}
			logf("%s:", cell)
			var es, eb, er, cs, ks, kr flowResult
			b.Run("", func(b *testing.B) { // scopes the topologies' cleanup
				g := newBenchEngine(b, cfg)
				defaultCC = kernelCC(g.ns)
				es = g.flow(b, true, d)
				er = g.flow(b, false, d)
			})
			b.Run("", func(b *testing.B) {
				g := newBenchEngineWith(b, cfg, stack.Options{MPTCP: stack.MPTCPConfig{Disabled: true}, TCP: tcp.Config{Congestion: "bbr"}})
				eb = g.flow(b, true, d)
			})
			b.Run("", func(b *testing.B) {
				k := newBenchKernels(b, cfg, "cubic")
				cs = k.flow(b, true, d)
			})
			b.Run("", func(b *testing.B) {
				k := newBenchKernels(b, cfg, "")
				ks = k.flow(b, true, d)
				kr = k.flow(b, false, d)
			})
			for _, r := range []flowResult{es, eb, er, cs, ks, kr} {
				if r.err != nil {
					b.Errorf("%s: %v", cell, r.err)
				}
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f/%.1f\t%.0f/%.0f\t%.1f/%.1f\t%.0f/%.0f\t%.2f\t%.2f\t%.2f\t%.1f/%.1f\t\n", cell,
				es.mbps(), cs.mbps(), es.mbps()/cs.mbps(), eb.mbps(), ks.mbps(), eb.mbps()/ks.mbps(),
				es.retransPct(), cs.retransPct(), es.needlessPct(), cs.needlessPct(),
				eb.retransPct(), ks.retransPct(), eb.needlessPct(), ks.needlessPct(),
				er.mbps(), kr.mbps(), er.mbps()/kr.mbps(), er.retransPct(), kr.retransPct())
			key := strings.ReplaceAll(strings.ReplaceAll(cell, " ", ""), "%", "pct")
			b.ReportMetric(es.mbps()/cs.mbps(), key+"-send-cubic-ratio")
			b.ReportMetric(eb.mbps()/ks.mbps(), key+"-send-bbr-ratio")
			b.ReportMetric(er.mbps()/kr.mbps(), key+"-recv-ratio")
		}
	}
	tw.Flush()
	benchDetail.Lock()
	fmt.Println("\nper flow:")
	for _, l := range benchDetail.lines {
		fmt.Println(l)
	}
	benchDetail.lines = nil
	benchDetail.Unlock()
	fmt.Printf("MB/s; each flow sent for %v. engine→k: the engine (cubic, its default) sends to the kernel, against cubic k→k, a kernel sending to a kernel with cubic; engine bbr→k: the engine with bbr, against default k→k, a kernel with the namespaces' default (%s); ratio: the engine's rate over the kernel's. k→engine vs k→k: the kernel (%s) sends to the engine and to a kernel. retx%%: data segments sent again; needless%%: of those, the ones whose first copy had arrived.\n", d, defaultCC, defaultCC)
	b.ReportMetric(0, "ns/op")
}

// latencies summarises sequential short connections.
type latencies struct {
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	max      time.Duration
	err      error
}

func summarize(l []time.Duration, total time.Duration, err error) latencies {
	s := latencies{n: len(l), elapsed: total, err: err}
	if len(l) == 0 {
		return s
	}
	slices.Sort(l)
	s.p50, s.p99, s.max = l[len(l)/2], l[len(l)*99/100], l[len(l)-1]
	return s
}

func (s latencies) rate() float64 { return float64(s.n) / s.elapsed.Seconds() }

// shortConn is one client exchange: 1 KiB, half-close, read to EOF.
func shortConn(c net.Conn) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 1024)); err != nil {
		return err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, c)
	return err
}

// serveShort accepts connections on ln until it closes: read to EOF, close.
func serveShort(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
		}()
	}
}

// dialLoop times n sequential connect + 1 KiB + close exchanges.
func dialLoop(n int, dial func(ctx context.Context) (net.Conn, error)) latencies {
	var l []time.Duration
	start := time.Now()
	for range n {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := dial(ctx)
		cancel()
		if err == nil {
			err = shortConn(c)
		}
		if err != nil {
			return summarize(l, time.Since(start), err)
		}
		l = append(l, time.Since(t0))
	}
	return summarize(l, time.Since(start), nil)
}

// kernelDialMPTCP dials with MPTCP from ns.
func kernelDialMPTCP(ctx context.Context, ns *netns.NS, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(true)
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// shortConnBench measures sequential short connections: the kernel dialing
// the engine, the engine dialing the kernel (plain TCP and MPTCP), and the
// kernel dialing a kernel through a TUN bridge and over a veth pair.
func shortConnBench(b *testing.B) {
	n := *recoveryConns
	var engServer, engClient, mpServer, mpClient, kBridge, kVeth, kVethMP latencies
	b.Run("", func(b *testing.B) {
		g := newBenchEngine(b, impair.Config{})
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(rbEngine4, 0).String())
		if err != nil {
			b.Fatal(err)
		}
		go serveShort(ln)
		engServer = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return kernelDial(ctx, g.ns, ln.Addr().String()) })
		ln.Close()
		kln := kernelListen(b, g.ns, rbKernel4)
		go serveShort(kln)
		engClient = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return g.eng.Dial(ctx, "tcp", kln.Addr().String()) })
		kln.Close()
	})
	b.Run("", func(b *testing.B) {
		g := newBenchEngineWith(b, impair.Config{}, stack.Options{})
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(rbEngine4, 0).String())
		if err != nil {
			b.Fatal(err)
		}
		go serveShort(ln)
		mpServer = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return kernelDialMPTCP(ctx, g.ns, ln.Addr().String()) })
		ln.Close()
		kln := kernelListen(b, g.ns, rbKernel4, true)
		go serveShort(kln)
		mpClient = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return g.eng.Dial(ctx, "tcp", kln.Addr().String()) })
		kln.Close()
	})
	b.Run("", func(b *testing.B) {
		k := newBenchKernels(b, impair.Config{}, "")
		ln := kernelListen(b, k.nsA, rbA4)
		go serveShort(ln)
		kBridge = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return kernelDial(ctx, k.nsB, ln.Addr().String()) })
		ln.Close()
	})
	b.Run("", func(b *testing.B) {
		a, c := netns.New(b, rbNSPrefix), netns.New(b, rbNSPrefix)
		netns.Veth(b, a, "vra", "10.217.0.1/24", c, "vrb", "10.217.0.2/24")
		ln := kernelListen(b, a, netip.MustParseAddr("10.217.0.1"))
		go serveShort(ln)
		kVeth = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return kernelDial(ctx, c, ln.Addr().String()) })
		ln.Close()
		mln := kernelListen(b, a, netip.MustParseAddr("10.217.0.1"), true)
		go serveShort(mln)
		kVethMP = dialLoop(n, func(ctx context.Context) (net.Conn, error) { return kernelDialMPTCP(ctx, c, mln.Addr().String()) })
		mln.Close()
	})
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nshort connections (connect, 1 KiB, close; %d sequential)\tconn/s\tp50\tp99\tmax\tp50 vs kernel (bridge)\tp99 vs kernel (bridge)\t\n", n)
	for _, r := range []struct {
		name string
		l    latencies
	}{
		{"kernel client → engine server (TUN)", engServer},
		{"engine client → kernel server (TUN)", engClient},
		{"kernel client → engine server (TUN, MPTCP)", mpServer},
		{"engine client → kernel server (TUN, MPTCP)", mpClient},
		{"kernel → kernel (TUN bridge)", kBridge},
		{"kernel → kernel (veth)", kVeth},
		{"kernel → kernel (veth, MPTCP)", kVethMP},
	} {
		if r.l.err != nil {
			b.Errorf("%s: after %d connections: %v", r.name, r.l.n, r.l.err)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%v\t%.2f\t%.2f\t\n", r.name, r.l.rate(), r.l.p50.Round(time.Microsecond), r.l.p99.Round(time.Microsecond),
			r.l.max.Round(time.Microsecond), float64(r.l.p50)/float64(kBridge.p50), float64(r.l.p99)/float64(kBridge.p99))
	}
	tw.Flush()
	b.ReportMetric(float64(engServer.p50)/float64(kBridge.p50), "short-server-p50-ratio")
	b.ReportMetric(float64(engClient.p50)/float64(kBridge.p50), "short-client-p50-ratio")
}
