package tun

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mptund/mptund/internal/netns"
)

var (
	benchBytes = flag.Int64("tun.bytes", 1<<30, "bytes per direction in BenchmarkTUNThroughput")
	benchMTU   = flag.Int("tun.mtu", 1500, "MTU of the links in BenchmarkTUNThroughput")
	benchOnly  = flag.String("tun.stacks", "", "comma-separated substrings: measure only the stacks whose name contains one (for profiling)")
	benchDir   = flag.String("tun.dir", "", `"in" or "out": measure only that direction (for profiling)`)
)

// connector opens one TCP connection across a topology in the given
// direction and returns its sending and receiving ends.
type connector func(dir direction) (w, r net.Conn, err error)

// stackUnderTest is one TCP implementation measured by BenchmarkTUNThroughput.
type stackUnderTest struct {
	name string
	// setup builds the topology with links of the given MTU and returns
	// how to connect across it; all of it is removed at cleanup.
	setup func(tb testing.TB, mtu int) connector
}

// stacksUnderTest are measured in this order. Every stack is compared with
// two references: targetName, gVisor's TCP on the same TUN glue (what the
// engine has to match), and baselineName, the kernel's TCP over a veth pair.
var stacksUnderTest = []stackUnderTest{
	{name: targetName, setup: setupGVisorTUN},
	{name: "engine-tcp/tun", setup: setupEngineTUN},
	{name: "engine-mptcp/tun", setup: setupEngineMPTCPTUN},
	{name: baselineName, setup: setupKernelVeth},
	{name: "kernel-mptcp/veth", setup: setupKernelMPTCPVeth},
}

const (
	targetName   = "gvisor-tcp/tun"
	baselineName = "kernel-tcp/veth"
)

// setupGVisorTUN: gVisor's TCP on a gVisor stack whose NIC is an Endpoint,
// the kernel on the other side of the TUN.
func setupGVisorTUN(tb testing.TB, mtu int) connector {
	g := newGVisorTUN(tb, tunSetup{mtu: mtu})
	return func(dir direction) (net.Conn, net.Conn, error) { return g.pair(dir, false) }
}

// setupEngineTUN: the engine (package stack, our TCP as protocol 6) on an
// Endpoint, the kernel on the other side of the TUN, plain TCP. Inbound, the
// kernel dials an engine listener; outbound, the engine dials a kernel
// listener.
func setupEngineTUN(tb testing.TB, mtu int) connector {
	g := newEngineTUN(tb, tunSetup{mtu: mtu}, false)
	return func(dir direction) (net.Conn, net.Conn, error) { return g.pair(dir, false) }
}

// setupEngineMPTCPTUN: as setupEngineTUN, with MPTCP (RFC 8684, one
// subflow) between the engine and the kernel.
func setupEngineMPTCPTUN(tb testing.TB, mtu int) connector {
	g := newEngineTUN(tb, tunSetup{mtu: mtu}, true)
	return func(dir direction) (net.Conn, net.Conn, error) { return g.pair(dir, false) }
}

// setupKernelVeth: the kernel's TCP at both ends of a veth pair between two
// namespaces, "stack" standing for the stack under test and "kern" for the
// kernel it talks to.
func setupKernelVeth(tb testing.TB, mtu int) connector {
	return kernelVeth(tb, mtu, false)
}

// setupKernelMPTCPVeth: the same with MPTCP sockets (one subflow): the
// kernel's MPTCP, the peer the engine's MPTCP is compared with.
func setupKernelMPTCPVeth(tb testing.TB, mtu int) connector {
	netns.RequireMPTCP(tb)
	return kernelVeth(tb, mtu, true)
}

func kernelVeth(tb testing.TB, mtu int, mptcp bool) connector {
	netns.Require(tb)
	kern := netns.New(tb, nsPrefix)
	stk := netns.New(tb, nsPrefix)
	netns.Veth(tb, kern, "vk", "10.78.0.1/24", stk, "vs", "10.78.0.2/24")
	kern.MustRun("ip", "link", "set", "vk", "mtu", strconv.Itoa(mtu))
	stk.MustRun("ip", "link", "set", "vs", "mtu", strconv.Itoa(mtu))
	return func(dir direction) (net.Conn, net.Conn, error) {
		if dir == inbound {
			return kernelPair(kern, stk, "10.78.0.2", mptcp)
		}
		return kernelPair(stk, kern, "10.78.0.1", mptcp)
	}
}

// kernelPair connects a socket in from to a listener on addr in to.
// With mptcp both sockets are MPTCP (IPPROTO_MPTCP), otherwise plain TCP.
func kernelPair(from, to *netns.NS, addr string, mptcp bool) (w, r net.Conn, err error) {
	var ln net.Listener
	if err := to.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(mptcp)
		ln, err = lc.Listen(context.Background(), "tcp", net.JoinHostPort(addr, "0"))
		return err
	}); err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			acc <- c
		}
		close(acc)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := from.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(mptcp)
		w, err = d.DialContext(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		return nil, nil, err
	}
	r, ok := <-acc
	if !ok {
		w.Close()
		return nil, nil, errors.New("accept failed")
	}
	return w, r, nil
}

// cpuSample is the machine's and this process's CPU time so far.
type cpuSample struct {
	at   time.Time
	busy time.Duration // all CPUs, from /proc/stat: everything but idle and iowait
	proc time.Duration // this process, user + system
}

// clockTick is USER_HZ, the unit of /proc/stat; 100 on every Linux ABI.
const clockTick = 100

func sampleCPU() (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return s, errors.New("empty /proc/stat")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return s, fmt.Errorf("unexpected /proc/stat line %q", sc.Text())
	}
	// user nice system idle iowait irq softirq steal ...
	var ticks uint64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return s, err
		}
		ticks += v
	}
	s.busy = time.Duration(ticks) * time.Second / clockTick
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, err
	}
	s.proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return s, nil
}

// measurement is one stack and direction.
type measurement struct {
	stack   string
	dir     direction
	bytes   int64
	elapsed time.Duration
	busy    time.Duration // machine-wide CPU time
	proc    time.Duration // this process's CPU time
}

func (m measurement) mbps() float64 { return float64(m.bytes) / m.elapsed.Seconds() / 1e6 }

// cpuPerGB is machine-wide busy CPU seconds per GB (1e9 bytes) moved.
func (m measurement) cpuPerGB() float64 { return m.busy.Seconds() / (float64(m.bytes) / 1e9) }

func (m measurement) procPerGB() float64 { return m.proc.Seconds() / (float64(m.bytes) / 1e9) }

// BenchmarkTUNThroughput measures single-flow bulk throughput in both
// directions for every entry of stacksUnderTest, with the CPU it costs,
// and compares each with gVisor's TCP on the same TUN glue and with the
// kernel over veth. Run it as
//
//	go test -run '^$' -bench BenchmarkTUNThroughput -benchtime 1x ./tun/
//
// (-tun.bytes and -tun.mtu change the volume and MTU). CPU is the machine's
// busy time from /proc/stat, so kernel and userspace work (softirqs
// included) are counted wherever they run, and so is anything else the
// machine does meanwhile: the idle-time background rate is printed too.
// With -benchtime Nx every stack and direction is measured N times, in
// rounds, and the figures are totals over the rounds.
func BenchmarkTUNThroughput(b *testing.B) {
	netns.Require(b)
	netns.RequireTools(b, "tc")
	n, mtu := *benchBytes, *benchMTU

	// Background load, for reading the CPU figures.
	bg0, err := sampleCPU()
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	bg1, _ := sampleCPU()
	background := (bg1.busy - bg0.busy).Seconds() / bg1.at.Sub(bg0.at).Seconds()

	// Every topology is built first; then each round measures every
	// stack and direction once, so that a burst of background load is
	// spread over all of them rather than charged to one.
	type run struct {
		sut     stackUnderTest
		connect connector
		dir     direction
		m       measurement
	}
	var runs []*run
	for _, sut := range stacksUnderTest {
		if !selected(sut.name) {
			continue
		}
		connect := sut.setup(b, mtu)
		for _, dir := range []direction{inbound, outbound} {
			if *benchDir != "" && *benchDir != dirKey(dir) {
				continue
			}
			runs = append(runs, &run{sut: sut, connect: connect, dir: dir, m: measurement{stack: sut.name, dir: dir}})
		}
	}
	for range b.N {
		for _, r := range runs {
			w, rd, err := r.connect(r.dir)
			if err != nil {
				b.Fatalf("%s %v: %v", r.sut.name, r.dir, err)
			}
			c0, err := sampleCPU()
			if err != nil {
				b.Fatal(err)
			}
			res, err := transfer(w, rd, n, false, 5*time.Minute)
			if err != nil {
				b.Fatalf("%s %v: %v", r.sut.name, r.dir, err)
			}
			c1, _ := sampleCPU()
			r.m.bytes += res.bytes
			r.m.elapsed += res.elapsed
			r.m.busy += c1.busy - c0.busy
			r.m.proc += c1.proc - c0.proc
		}
	}
	var results []measurement
	for _, r := range runs {
		results = append(results, r.m)
	}

	ref := func(name string) map[direction]measurement {
		m := map[direction]measurement{}
		for _, r := range results {
			if r.stack == name {
				m[r.dir] = r
			}
		}
		return m
	}
	target, base := ref(targetName), ref(baselineName)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nstack\tdirection\tMB/s\tcpu-s/GB\tproc-cpu-s/GB\tMB/s vs gvisor\tcpu/GB vs gvisor\tMB/s vs kernel\tcpu/GB vs kernel\t\n")
	for _, m := range results {
		tm, hasT := target[m.dir]
		bm, hasB := base[m.dir]
		rateT, cpuT := m.mbps()/tm.mbps(), m.cpuPerGB()/tm.cpuPerGB()
		rateB, cpuB := m.mbps()/bm.mbps(), m.cpuPerGB()/bm.cpuPerGB()
		fmt.Fprintf(tw, "%s\t%v\t%.0f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t\n",
			m.stack, m.dir, m.mbps(), m.cpuPerGB(), m.procPerGB(),
			ratio(rateT, hasT), ratio(cpuT, hasT), ratio(rateB, hasB), ratio(cpuB, hasB))
		key := m.stack + ":" + dirKey(m.dir)
		b.ReportMetric(m.mbps(), key+"-MB/s")
		b.ReportMetric(m.cpuPerGB(), key+"-cpu-s/GB")
		if hasT && m.stack != targetName {
			b.ReportMetric(rateT, key+"-MB/s-vs-gvisor")
			b.ReportMetric(cpuT, key+"-cpu/GB-vs-gvisor")
		}
		if hasB && m.stack != baselineName {
			b.ReportMetric(rateB, key+"-MB/s-vs-kernel")
			b.ReportMetric(cpuB, key+"-cpu/GB-vs-kernel")
		}
	}
	tw.Flush()
	fmt.Printf("%d MiB per direction, MTU %d, %d CPUs; background load before the run: %.2f CPUs busy.\n"+
		"in = kernel sends to the stack under test, out = the stack under test sends;\n"+
		"ratios are against %s (same TUN glue) and %s.\n",
		n>>20, mtu, runtime.NumCPU(), background, targetName, baselineName)
	b.ReportMetric(0, "ns/op") // suppressed: the figures above are what counts
}

// selected reports whether -tun.stacks selects the stack named name.
func selected(name string) bool {
	if *benchOnly == "" {
		return true
	}
	for _, f := range strings.Split(*benchOnly, ",") {
		if f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// ratio formats a ratio, or "-" when its reference was not measured.
func ratio(r float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// dirKey is the short name of a direction in metrics and -tun.dir.
func dirKey(d direction) string {
	if d == inbound {
		return "in"
	}
	return "out"
}
