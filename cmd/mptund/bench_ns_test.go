package main

// Benchmarks of the daemons in network namespaces. Each prints a table of
// figures and ratios once; run them with
//
//	go test ./cmd/mptund -run '^$' -bench . -benchtime 1x
//
// (as root). They are measurements, not tests: nothing fails on a slow
// figure.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/convert"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/internal/topo"
)

// bench is a topology for benchmarks: cli and prx joined by one or two
// paths (c1/r1, c2/r2), prx and srv by b0/b1.
type bench struct {
	b             *testing.B
	bin           string
	t             *topo.Topology
	cli, prx, srv *topo.NS
	dir           string
	procs         []*demoProc
}

func newBench(b *testing.B, paths int) *bench {
	if err := topo.Check(); err != nil {
		b.Skip("skipping:", err)
	}
	netns.RequireTools(b, "nft", "tc")
	x := &bench{b: b, bin: mptundBinary(b), t: topo.New("mptb"), dir: b.TempDir()}
	b.Cleanup(x.close)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	var err error
	x.cli, err = x.t.NewNS("cli")
	must(err)
	x.prx, err = x.t.NewNS("prx")
	must(err)
	x.srv, err = x.t.NewNS("srv")
	must(err)
	must(topo.Veth(x.cli, "c1", "10.91.1.2/24", x.prx, "r1", "10.91.1.1/24"))
	if paths > 1 {
		must(topo.Veth(x.cli, "c2", "10.91.2.2/24", x.prx, "r2", "10.91.2.1/24"))
	}
	must(topo.Veth(x.prx, "b0", "10.92.0.1/24", x.srv, "b1", "10.92.0.2/24"))
	must(x.srv.Runs("ip route add default via 10.92.0.1"))
	must(x.prx.Runs("sysctl -qw net.ipv4.ip_forward=1"))
	must(x.cli.Runs("ip route add 10.93.0.0/16 via 10.91.1.1"))
	return x
}

func (x *bench) close() {
	for _, p := range x.procs {
		p.stop(10 * time.Second)
	}
	x.procs = nil
	x.t.Close()
}

// daemon starts mptund in ns.
func (x *bench) daemon(ns *topo.NS, name string, args ...string) *demoProc {
	p, err := startDaemonProc(context.Background(), ns, name, x.bin, nil, args...)
	if p != nil {
		x.procs = append(x.procs, p)
	}
	if err != nil {
		x.b.Fatalf("%v\n%s", err, p.tail())
	}
	return p
}

func (x *bench) stopDaemon(p *demoProc) {
	p.stop(10 * time.Second)
	x.procs = slices.DeleteFunc(x.procs, func(q *demoProc) bool { return q == p })
}

// listen opens a kernel listener in ns.
func (x *bench) listen(ns *topo.NS, addr string, mptcp bool) net.Listener {
	var ln net.Listener
	if err := ns.Do(func() error {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(mptcp)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	}); err != nil {
		x.b.Fatal(err)
	}
	x.b.Cleanup(func() { ln.Close() })
	return ln
}

func (x *bench) dial(ns *topo.NS, addr string, mptcp bool) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 20 * time.Second}
		d.SetMultipathTCP(mptcp)
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialFastOpen connects a kernel MPTCP socket with TCP_FASTOPEN_CONNECT:
// its SYN leaves with the first write and carries it.
func (x *bench) dialFastOpen(ns *topo.NS, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 20 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, 30 /* TCP_FASTOPEN_CONNECT */, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		d.SetMultipathTCP(true)
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// quantile returns the q-quantile of d (sorted in place).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

// BenchmarkConversionDelay measures what a proxy adds to connection setup
// and to the first byte: from the client's connect() to the backend's
// accept() (the backend's SYN plus its own handshake, tens of
// microseconds on veth), and from the client's first write to the
// backend's first read. Kernel MPTCP clients; three proxies in the same
// run: a kernel-MPTCP splice proxy (an MPTCP listener and an io.Copy
// loop), "mptund proxy --backend" and "mptund proxy" in Convert mode, the
// client sending the Convert header after connecting (its first byte
// leaves one round trip later: it waits for the answer) or in its SYN
// (TCP_FASTOPEN_CONNECT without a cookie, RFC 8803 §4: the proxy dials
// the destination as the SYN arrives).
func BenchmarkConversionDelay(b *testing.B) {
	x := newBench(b, 1)
	const n = 300
	x.daemon(x.prx, "proxy-backend", "proxy", "--path", "mpp0,addr=10.93.0.2/24,peer=10.93.0.1/24", "--backend", "10.92.0.2:7000",
		"--status", x.dir+"/pb.sock", "--state-dir", x.dir+"/pb")
	x.daemon(x.prx, "proxy-convert", "proxy", "--path", "mpp1,addr=10.93.1.2/24,peer=10.93.1.1/24", "--allow", "10.92.0.0/24",
		"--status", x.dir+"/pc.sock", "--state-dir", x.dir+"/pc")
	// The backend notes when it accepts and when the first byte arrives.
	back := x.listen(x.srv, "10.92.0.2:7000", false)
	type stamp struct{ accept, first time.Time }
	stamps := make(chan stamp, 1)
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			s := stamp{accept: time.Now()}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err == nil {
					s.first = time.Now()
				}
				stamps <- s
				c.Write(buf)
				io.Copy(io.Discard, c)
			}()
		}
	}()
	// The kernel splice proxy.
	kp := x.listen(x.prx, "10.91.1.1:6000", true)
	go func() {
		for {
			c, err := kp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var out net.Conn
				x.prx.Do(func() error { // the dial must come from the proxy's namespace
					var err error
					out, err = net.Dial("tcp", "10.92.0.2:7000")
					return err
				})
				if out == nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, c); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, out)
			}()
		}
	}()
	type result struct {
		name, metric string
		syn, first   []time.Duration
	}
	// The client's kernel sends SYN data without a cookie.
	if _, err := x.cli.Run("sysctl", "-qw", "net.ipv4.tcp_fastopen=5"); err != nil {
		b.Fatal(err)
	}
	const (
		noConvert = iota
		convertAfter
		convertInSYN
	)
	run := func(name, metric, addr string, mode int) result {
		r := result{name: name, metric: metric}
		req := convert.NewRequest(netip.MustParseAddrPort("10.92.0.2:7000"), nil)
		for range n {
			t0 := time.Now()
			var c *net.TCPConn
			var err error
			if mode == convertInSYN {
				c, err = x.dialFastOpen(x.cli, addr)
			} else {
				c, err = x.dial(x.cli, addr, true)
			}
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			if mode != noConvert {
				c.Write(req.Append(nil))
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if m, _, err := convert.ReadMessage(c, nil); err != nil || m.Err() != nil {
					b.Fatalf("%s: Convert answer: %v %v", name, err, m.Err())
				}
			}
			t2 := time.Now()
			c.Write([]byte{1})
			s := <-stamps
			r.syn = append(r.syn, s.accept.Sub(t0))
			r.first = append(r.first, s.first.Sub(t2))
			c.Read(make([]byte, 1))
			c.Close()
		}
		return r
	}
	for i := 0; i < b.N; i++ {
		res := []result{
			run("kernel MPTCP splice proxy", "kernel_syn_ms", "10.91.1.1:6000", noConvert),
			run("mptund proxy --backend", "backend_syn_ms", "10.93.0.2:5124", noConvert),
			run("mptund proxy, Convert after", "convert_syn_ms", "10.93.1.2:5124", convertAfter),
			run("mptund proxy, Convert in SYN", "convert_tfo_syn_ms", "10.93.1.2:5124", convertInSYN),
		}
		base := res[0]
		fmt.Printf("\nconversion delay, kernel MPTCP client -> proxy -> kernel TCP backend, %d connections each, one at a time:\n", n)
		fmt.Printf("  %-30s %14s %14s %8s   %14s %14s %8s\n", "proxy", "SYN->backend", "p90", "ratio", "first byte", "p90", "ratio")
		for _, r := range res {
			s50, s90 := quantile(r.syn, 0.5), quantile(r.syn, 0.9)
			f50, f90 := quantile(r.first, 0.5), quantile(r.first, 0.9)
			fmt.Printf("  %-30s %14s %14s %7.2fx   %14s %14s %7.2fx\n", r.name, ms(s50), ms(s90),
				float64(s50)/float64(quantile(base.syn, 0.5)), ms(f50), ms(f90), float64(f50)/float64(quantile(base.first, 0.5)))
			b.ReportMetric(float64(s50)/1e6, r.metric)
		}
	}
}

// BenchmarkThroughput measures an unmodified kernel-TCP download through
// client + proxy over two paths: unshaped (against kernel TCP over one of
// the same veths without mptund), and shaped with tc tbf to 20 and 10
// Mbit/s with 10 and 40 ms of added round trip (as a fraction of the sum
// of the rates).
func BenchmarkThroughput(b *testing.B) {
	x := newBench(b, 2)
	const unshaped = 5 * time.Second
	const shaped = 12 * time.Second
	back := x.listen(x.srv, "10.92.0.2:7100", false)
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var d [8]byte
				if _, err := io.ReadFull(c, d[:]); err != nil {
					return
				}
				until := time.Now().Add(time.Duration(int64(d[0]) * int64(time.Second)))
				buf := make([]byte, 256<<10)
				for time.Now().Before(until) {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	download := func(secs int) (float64, error) {
		c, err := x.dial(x.cli, "10.92.0.2:7100", false)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		start := time.Now()
		c.Write([]byte{byte(secs), 0, 0, 0, 0, 0, 0, 0})
		n, err := io.Copy(io.Discard, c)
		return float64(n) / time.Since(start).Seconds(), err
	}
	for i := 0; i < b.N; i++ {
		// Kernel TCP alone, over path A.
		x.cli.Runs("ip route add 10.92.0.0/24 via 10.91.1.1")
		kernel, err := download(int(unshaped / time.Second))
		if err != nil {
			b.Fatal(err)
		}
		x.cli.Runs("ip route del 10.92.0.0/24 via 10.91.1.1")
		px := x.daemon(x.prx, "proxy", "proxy", "--path", "mpp0,addr=10.93.0.2/24,peer=10.93.0.1/24", "--allow", "10.92.0.0/24",
			"--state-dir", x.dir+"/p")
		cl := x.daemon(x.cli, "client", "client", "--uplink", "c1,gw=10.91.1.1,tun=mpta", "--uplink", "c2,gw=10.91.2.1,tun=mptb",
			"--proxy", "10.93.0.2:5124", "--route", "10.92.0.0/24", "--state-dir", x.dir+"/c")
		mp, err := download(int(unshaped / time.Second))
		if err != nil {
			b.Fatal(err)
		}
		x.stopDaemon(cl)
		// The same with one subflow (no join): the pipeline's own capacity.
		cl = x.daemon(x.cli, "client", "client", "--uplink", "c1,gw=10.91.1.1,tun=mpta", "--uplink", "c2,gw=10.91.2.1,tun=mptb",
			"--proxy", "10.93.0.2:5124", "--route", "10.92.0.0/24", "--state-dir", x.dir+"/c", "--subflows", "0")
		one, err := download(int(unshaped / time.Second))
		if err != nil {
			b.Fatal(err)
		}
		x.stopDaemon(cl)
		// Shaped: 20 + 10 Mbit/s each way, 10 and 40 ms of added RTT.
		for _, s := range []struct {
			ns   *topo.NS
			dev  string
			rate string
		}{{x.cli, "c1", "20mbit"}, {x.prx, "r1", "20mbit"}, {x.cli, "c2", "10mbit"}, {x.prx, "r2", "10mbit"}} {
			if _, err := s.ns.Run("tc", "qdisc", "add", "dev", s.dev, "root", "tbf", "rate", s.rate, "burst", "32kb", "latency", "50ms"); err != nil {
				b.Fatal(err)
			}
		}
		cl = x.daemon(x.cli, "client", "client", "--uplink", "c1,gw=10.91.1.1,tun=mpta,delay=5ms", "--uplink", "c2,gw=10.91.2.1,tun=mptb,delay=20ms",
			"--proxy", "10.93.0.2:5124", "--route", "10.92.0.0/24", "--state-dir", x.dir+"/c")
		sh, err := download(int(shaped / time.Second))
		if err != nil {
			b.Fatal(err)
		}
		x.stopDaemon(cl)
		x.stopDaemon(px)
		sum := 30e6 / 8
		fmt.Printf("\nthroughput of a kernel-TCP download through mptund client + proxy (Convert), two paths:\n")
		fmt.Printf("  %-48s %10.1f MB/s %8.0f Mbit/s\n", "kernel TCP over path A alone (no mptund)", kernel/1e6, kernel*8/1e6)
		fmt.Printf("  %-48s %10.1f MB/s %8.0f Mbit/s   %.2fx kernel TCP\n", "mptund, unshaped, one subflow (--subflows 0)", one/1e6, one*8/1e6, one/kernel)
		fmt.Printf("  %-48s %10.1f MB/s %8.0f Mbit/s   %.2fx kernel TCP\n", "mptund, two unshaped paths", mp/1e6, mp*8/1e6, mp/kernel)
		fmt.Printf("  %-48s %10.2f MB/s %8.1f Mbit/s   %.0f%% of 20+10 Mbit/s (%v, incl. slow start)\n", "mptund, 20 + 10 Mbit/s, RTT +10/+40 ms", sh/1e6, sh*8/1e6, 100*sh/sum, shaped)
		b.ReportMetric(mp/1e6, "unshaped_MB/s")
		b.ReportMetric(one/1e6, "one_subflow_MB/s")
		b.ReportMetric(sh/sum, "shaped_fraction")
	}
}

// TestBenchHelper is not a test: BenchmarkIdleConnections runs the test
// binary again with MPTUND_BENCH_BACKEND=ADDR, in the backend's namespace,
// so that the backend's 10,000 sockets do not count against the
// benchmark process's file descriptors. It accepts connections and holds
// them until its stdin closes.
func TestBenchHelper(t *testing.T) {
	addr := os.Getenv("MPTUND_BENCH_BACKEND")
	if addr == "" {
		t.Skip("helper process only")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("listening")
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// BenchmarkIdleConnections opens 10,000 concurrent connections from
// kernel MPTCP clients through "mptund proxy --backend" to a kernel
// backend, 64 at a time, and reports the rate at which they open (until
// the proxy relays them all) and the proxy's memory per idle connection
// (resident set and Go heap, measured by the proxy itself, minus the
// figures before).
func BenchmarkIdleConnections(b *testing.B) {
	const n = 10000
	x := newBench(b, 1)
	cfg := filepath.Join(x.dir, "proxy.toml")
	os.WriteFile(cfg, []byte("[engine]\nbacklog = 4096\n[proxy]\nmax_flows = 20000\n"), 0o644)
	x.daemon(x.prx, "proxy", "proxy", "--config", cfg, "--path", "mpp0,addr=10.93.0.2/24,peer=10.93.0.1/24",
		"--backend", "10.92.0.2:7200", "--status", x.dir+"/p.sock", "--state-dir", x.dir+"/p")
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	helper := x.srv.Command(context.Background(), self, "-test.run=^TestBenchHelper$")
	helper.Env = append(os.Environ(), "MPTUND_BENCH_BACKEND=10.92.0.2:7200")
	stdin, _ := helper.StdinPipe()
	stdout, _ := helper.StdoutPipe()
	if err := helper.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); helper.Wait() })
	if _, err := io.ReadFull(stdout, make([]byte, len("listening"))); err != nil {
		b.Fatal("backend helper:", err)
	}
	for i := 0; i < b.N; i++ {
		before, err := readStatus(x.dir + "/p.sock")
		if err != nil {
			b.Fatal(err)
		}
		conns := make([]*net.TCPConn, n)
		var wg sync.WaitGroup
		var fails atomic.Int64
		sem := make(chan struct{}, 64)
		start := time.Now()
		for k := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := x.dial(x.cli, "10.93.0.2:5124", true)
				if err != nil {
					fails.Add(1)
					return
				}
				conns[k] = c
			}()
		}
		wg.Wait()
		var after *Status
		for time.Since(start) < 2*time.Minute {
			if after, err = readStatus(x.dir + "/p.sock"); err == nil && after.Totals.Active+int(fails.Load()) >= n {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		el := time.Since(start)
		time.Sleep(3 * time.Second) // let the proxy settle before measuring
		if after, err = readStatus(x.dir + "/p.sock"); err != nil {
			b.Fatal(err)
		}
		per := func(a, b uint64) float64 { return float64(int64(a)-int64(b)) / n / 1024 }
		fmt.Printf("\n%d concurrent connections, kernel MPTCP clients -> mptund proxy --backend -> kernel backend, 64 opening at a time:\n", n)
		fmt.Printf("  all relayed after %v: %.0f connections/s; %d failed; proxy relays %d\n", el.Round(time.Millisecond),
			float64(n)/el.Seconds(), fails.Load(), after.Totals.Active)
		fmt.Printf("  proxy memory per idle connection: %.1f KiB resident, %.1f KiB Go heap in use, %.1f goroutines\n",
			per(after.Memory.RSS, before.Memory.RSS), per(after.Memory.HeapInuse, before.Memory.HeapInuse),
			float64(after.Memory.Goroutines-before.Memory.Goroutines)/n)
		b.ReportMetric(float64(n)/el.Seconds(), "conns/s")
		b.ReportMetric(per(after.Memory.RSS, before.Memory.RSS), "KiB_RSS/conn")
		b.ReportMetric(per(after.Memory.HeapInuse, before.Memory.HeapInuse), "KiB_heap/conn")
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
}
