package main

// "mptund demo": the main job on a built-in default. It builds a client
// host with two paths of different rate and delay, a proxy host and a
// legacy backend in network namespaces, starts "mptund client" and
// "mptund proxy" there, runs an unmodified program (a kernel-TCP
// download) on the client host, shows the bytes each path carries as it
// goes, takes one path down and brings it back, and checks the data.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptund/mptund/internal/topo"
)

var demoCommand = &command{
	name:    "demo",
	summary: "run the built-in two-path demonstration in network namespaces",
	usage: `Usage:

	mptund demo [flags]

Demo needs root. It builds three network namespaces:

    client host                      proxy host                 backend host
    app (kernel TCP) -> mptund client  == path A ==> mptund proxy --TCP--> legacy server
                                       == path B ==>

Path A is 20 Mbit/s with 10 ms of round-trip delay, path B 10 Mbit/s
with 40 ms (tc tbf shapes the veths, the client's engine adds the delay).
The app is an ordinary kernel-TCP program: it uploads 2 MiB, then
downloads from the legacy server for --duration. The client captures its
connection and carries it over Multipath TCP through the proxy, which
speaks plain TCP to the server. Every second the demo prints what each
path carried; at --down-at it cuts path B (all its packets dropped) for
--down-for, then restores it. At the end it compares the goodput with
the sum of the path rates, lists the bytes per subflow and checks the
data both ways with SHA-256. It takes about --duration plus 10 seconds
and removes everything it made, also on Ctrl-C or failure.

Exit status: 0 when the data arrived intact, 1 when the demo failed or
cannot run here (it says what is missing), 2 on usage errors.
`,
}

// demoOptions are the demo's flags.
type demoOptions struct {
	duration, downAt, downFor time.Duration
	rateA, rateB              string
	delayA, delayB            time.Duration
	upload                    int
	verbose                   bool
	clientArgs, proxyArgs     listFlag
}

func init() {
	demoCommand.run = func(args []string, stdout, stderr io.Writer) int {
		fs := newFlagSet(programName+" demo", demoCommand.usage, stderr)
		o := demoOptions{}
		fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long the download runs")
		fs.DurationVar(&o.downAt, "down-at", 10*time.Second, "when path B goes down (0: never)")
		fs.DurationVar(&o.downFor, "down-for", 7*time.Second, "for how long")
		fs.StringVar(&o.rateA, "rate-a", "20mbit", "path A's rate each way")
		fs.StringVar(&o.rateB, "rate-b", "10mbit", "path B's rate each way")
		fs.DurationVar(&o.delayA, "delay-a", 5*time.Millisecond, "path A's delay each way")
		fs.DurationVar(&o.delayB, "delay-b", 20*time.Millisecond, "path B's delay each way")
		fs.IntVar(&o.upload, "upload", 2<<20, "bytes the app uploads first")
		fs.BoolVar(&o.verbose, "v", false, "show the daemons' logs")
		fs.Var(&o.clientArgs, "client-flag", "pass this `flag` to mptund client (repeatable), e.g. --client-flag=--scheduler=roundrobin")
		fs.Var(&o.proxyArgs, "proxy-flag", "pass this `flag` to mptund proxy (repeatable)")
		if _, err := parseInterspersed(fs, args); err != nil {
			return flagStatus(err)
		}
		if o.duration < 5*time.Second || o.duration > time.Hour {
			return usageError(stderr, fs, "--duration %v: want 5s..1h", o.duration)
		}
		if o.downAt > 0 && o.downAt+o.downFor >= o.duration {
			return usageError(stderr, fs, "--down-at + --down-for must end before --duration")
		}
		for _, r := range []string{o.rateA, o.rateB} {
			if _, err := parseRate(r); err != nil {
				return usageError(stderr, fs, "%v", err)
			}
		}
		if o.upload < 0 || o.upload > 1<<30 {
			return usageError(stderr, fs, "--upload %d: want 0..1 GiB", o.upload)
		}
		// A closed output pipe (mptund demo | head) ends the demo like
		// Ctrl-C: cleaned up, not killed.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
		defer stop()
		return runDemo(ctx, o, stdout, stderr)
	}
}

// Addresses of the demo topology.
const (
	demoCliA    = "10.91.1.2/24"
	demoPrxA    = "10.91.1.1/24"
	demoCliB    = "10.91.2.2/24"
	demoPrxB    = "10.91.2.1/24"
	demoPrxBack = "10.92.0.1/24"
	demoSrv     = "10.92.0.2/24"
	demoSrvAddr = "10.92.0.2:8080"
	demoProxy   = "10.93.0.2"
	demoBin     = "mptund"
)

// demoRun is one run's state.
type demoRun struct {
	o      demoOptions
	stdout io.Writer
	stderr io.Writer
	topo   *topo.Topology
	cli    *topo.NS
	prx    *topo.NS
	srv    *topo.NS
	dir    string
	procs  []*demoProc
}

func (r *demoRun) say(format string, args ...any) { fmt.Fprintf(r.stdout, format+"\n", args...) }

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) int {
	if err := topo.Check(); err != nil {
		fmt.Fprintf(stderr, "%s demo cannot run here: %v\n", programName, err)
		return exitFailed
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s demo: finding its own binary: %v\n", programName, err)
		return exitFailed
	}
	r := &demoRun{o: o, stdout: stdout, stderr: stderr, topo: topo.New("mptd")}
	defer r.cleanup()
	if r.dir, err = os.MkdirTemp("", "mptund-demo-"); err != nil {
		fmt.Fprintf(stderr, "%s demo: %v\n", programName, err)
		return exitFailed
	}
	if err := r.run(ctx, bin); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "%s demo: interrupted; cleaning up\n", programName)
		} else {
			fmt.Fprintf(stderr, "%s demo: %v\n", programName, err)
			for _, p := range r.procs {
				if tail := p.tail(); tail != "" {
					fmt.Fprintf(stderr, "--- %s log:\n%s", p.name, tail)
				}
			}
		}
		return exitFailed
	}
	return exitOK
}

// cleanup stops the daemons (they undo their host changes), deletes the
// namespaces and the temporary directory.
func (r *demoRun) cleanup() {
	for _, p := range r.procs {
		p.stop(5 * time.Second)
	}
	if err := r.topo.Close(); err != nil {
		fmt.Fprintf(r.stderr, "%s demo: cleanup: %v\n", programName, err)
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
}

func (r *demoRun) run(ctx context.Context, bin string) error {
	o := r.o
	rateA, _ := parseRate(o.rateA)
	rateB, _ := parseRate(o.rateB)
	r.say("mptund demo: an unmodified kernel-TCP download over two paths, through mptund client and mptund proxy")
	r.say("  path A: %s, RTT +%v      path B: %s, RTT +%v", formatRate(rateA), 2*o.delayA, formatRate(rateB), 2*o.delayB)
	var err error
	if r.cli, err = r.topo.NewNS("cli"); err != nil {
		return err
	}
	if r.prx, err = r.topo.NewNS("prx"); err != nil {
		return err
	}
	if r.srv, err = r.topo.NewNS("srv"); err != nil {
		return err
	}
	if err := topo.Veth(r.cli, "c1", demoCliA, r.prx, "r1", demoPrxA); err != nil {
		return err
	}
	if err := topo.Veth(r.cli, "c2", demoCliB, r.prx, "r2", demoPrxB); err != nil {
		return err
	}
	if err := topo.Veth(r.prx, "b0", demoPrxBack, r.srv, "b1", demoSrv); err != nil {
		return err
	}
	if err := r.srv.Runs("ip route add default via 10.92.0.1"); err != nil {
		return err
	}
	if err := r.prx.Runs("sysctl -qw net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	// Rates: tbf on both ends of each path's veth.
	for _, s := range []struct {
		ns   *topo.NS
		dev  string
		rate int64
	}{{r.cli, "c1", rateA}, {r.prx, "r1", rateA}, {r.cli, "c2", rateB}, {r.prx, "r2", rateB}} {
		burst := max(s.rate/100, 16<<10)
		if _, err := s.ns.Run("tc", "qdisc", "add", "dev", s.dev, "root", "tbf", "rate", strconv.FormatInt(s.rate*8, 10)+"bit",
			"burst", strconv.FormatInt(burst, 10), "latency", "50ms"); err != nil {
			return fmt.Errorf("shaping with tc tbf (needs the kernel's sch_tbf): %w", err)
		}
	}
	// The legacy backend: a plain kernel TCP server in its namespace.
	back := &demoBackend{results: make(chan demoResult, 1)}
	if err := r.srv.Do(func() error {
		ln, err := net.Listen("tcp", demoSrvAddr)
		back.ln = ln
		return err
	}); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer back.ln.Close()
	go back.serve()

	// The daemons.
	proxyStatus := r.dir + "/proxy.sock"
	clientStatus := r.dir + "/client.sock"
	pargs := append([]string{"proxy", "--path", "mpp0,addr=" + demoProxy + "/24,peer=10.93.0.1/24",
		"--allow", "10.92.0.0/24", "--status", proxyStatus, "--state-dir", r.dir, "-v"}, o.proxyArgs...)
	if _, err := r.start(ctx, r.prx, "proxy", bin, pargs...); err != nil {
		return err
	}
	cargs := append([]string{"client",
		"--uplink", fmt.Sprintf("c1,gw=10.91.1.1,tun=mpta,delay=%v", o.delayA),
		"--uplink", fmt.Sprintf("c2,gw=10.91.2.1,tun=mptb,delay=%v", o.delayB),
		"--proxy", demoProxy + ":5124", "--route", "10.92.0.0/24", "--status", clientStatus, "--state-dir", r.dir, "-v"}, o.clientArgs...)
	if _, err := r.start(ctx, r.cli, "client", bin, cargs...); err != nil {
		return err
	}
	r.say("  topology up: client %s, proxy %s, backend %s; mptund client and proxy ready", r.cli.Name, r.prx.Name, r.srv.Name)

	// The unmodified application: kernel TCP in the client namespace.
	var app *net.TCPConn
	dialStart := time.Now()
	if err := r.cli.Do(func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.DialContext(ctx, "tcp", demoSrvAddr)
		if err == nil {
			app = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		return fmt.Errorf("the app's connection to %s: %w", demoSrvAddr, err)
	}
	defer app.Close()
	r.say("  app connected to %s in %v (its SYN went to mptund's app TUN; MPTCP to the proxy, TCP to the backend)", demoSrvAddr, time.Since(dialStart).Round(time.Millisecond))
	stopApp := context.AfterFunc(ctx, func() { app.SetLinger(0); app.Close() })
	defer stopApp()

	upHash := sha256.New()
	if _, err := fmt.Fprintf(app, "MPTUND-DEMO %d %d\n", o.duration.Milliseconds(), o.upload); err != nil {
		return err
	}
	if _, err := io.CopyN(app, io.TeeReader(demoStream(1), upHash), int64(o.upload)); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	var got atomic.Int64
	downHash := sha256.New()
	readDone := make(chan error, 1)
	start := time.Now()
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := app.Read(buf)
			downHash.Write(buf[:n])
			got.Add(int64(n))
			if err == io.EOF {
				readDone <- nil
				return
			}
			if err != nil {
				readDone <- err
				return
			}
		}
	}()

	// Live progress.
	r.say("")
	r.say("  %5s  %-22s  %-22s  %-12s  %s", "time", "path A (MB/s, Mbit/s)", "path B (MB/s, Mbit/s)", "app goodput", "of A+B")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last map[string]uint64
	lastApp := int64(0)
	lastT := start
	var final *Status
	downState := 0 // 0 before, 1 down, 2 restored
	recovered := false
	var steady []float64 // goodput / (A+B), each second both paths worked
	sum := float64(rateA + rateB)
	var readErr error
	finished := false
	for !finished {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case readErr = <-readDone:
			finished = true
		case now := <-tick.C:
			el := now.Sub(start)
			if o.downAt > 0 && downState == 0 && el >= o.downAt {
				if err := r.pathB(false); err != nil {
					return err
				}
				downState = 1
				r.say("  %5s  path B goes down: every packet on it is dropped", fmtSec(el))
			} else if downState == 1 && el >= o.downAt+o.downFor {
				if err := r.pathB(true); err != nil {
					return err
				}
				downState = 2
				r.say("  %5s  path B is back", fmtSec(el))
			}
			st, err := readStatus(clientStatus)
			if err != nil {
				continue
			}
			per := perPath(st)
			if len(st.Flows) > 0 {
				final = st
			}
			dt := now.Sub(lastT).Seconds()
			a := rateOf(per["mpta"], last["mpta"], dt)
			b := rateOf(per["mptb"], last["mptb"], dt)
			g := float64(got.Load()-lastApp) / dt
			r.say("  %5s  %5.2f  %5.1f %-10s  %5.2f  %5.1f %-10s  %5.1f Mbit/s  %3.0f%%", fmtSec(el),
				a/1e6, a*8/1e6, "", b/1e6, b*8/1e6, "", g*8/1e6, 100*g/sum)
			switch {
			case downState == 2 && !recovered && b > 0.5*float64(rateB):
				recovered = true
				r.say("  %5s  path B carries its share again, %.0f s after it came back (its subflow resumed at its next retransmission timeout)",
					fmtSec(el), (el - o.downAt - o.downFor).Seconds())
			case (downState == 0 && el >= 3*time.Second) || (downState == 2 && recovered):
				steady = append(steady, g/sum)
			}
			last, lastApp, lastT = per, got.Load(), now
		}
	}
	el := time.Since(start)
	backendDone := o.duration
	if readErr != nil {
		return fmt.Errorf("download: %w", readErr)
	}
	// The app has the whole download; the client still relays the
	// half-open connection: read its final per-subflow counters.
	if st, err := readStatus(clientStatus); err == nil && len(st.Flows) > 0 {
		final = st
	}
	app.CloseWrite()
	res := <-back.results
	total := got.Load()

	r.say("")
	r.say("summary:")
	goodput := float64(total) / el.Seconds()
	avail := float64(rateA)*el.Seconds() + float64(rateB)*(el.Seconds()-boolSec(o.downAt > 0, o.downFor))
	r.say("  downloaded %.1f MB in %.1f s: goodput %.1f Mbit/s = %.0f%% of the sum of the path rates (%s + %s)",
		float64(total)/1e6, el.Seconds(), goodput*8/1e6, 100*goodput/sum, formatRate(rateA), formatRate(rateB))
	if len(steady) > 0 {
		slices.Sort(steady)
		r.say("  while both paths worked (median of %d one-second samples): %.0f%% of the sum of the path rates", len(steady), 100*steady[len(steady)/2])
	}
	if o.downAt > 0 {
		r.say("  with path B down for %v, the paths could carry %.1f MB: the download used %.0f%% of that", o.downFor, avail/1e6, 100*float64(total)/avail)
	}
	if tail := el - backendDone; tail > time.Second {
		r.say("  the backend stopped sending after %v; the last %.1f s delivered what the buffers along the way held", backendDone, tail.Seconds())
	}
	if final != nil && len(final.Flows) > 0 {
		f := final.Flows[0]
		kind := "MPTCP"
		if !f.MPTCP {
			kind = "TCP (fallback: " + f.Fallback + ")"
		}
		r.say("  the connection ran %s with %d subflows; bytes received per subflow (client side):", kind, len(f.Subflows))
		var all uint64
		for _, s := range f.Subflows {
			all += s.BytesReceived
		}
		for _, s := range f.Subflows {
			name := map[string]string{"mpta": "path A", "mptb": "path B"}[s.Path]
			r.say("    %-7s %v -> %v  %7.1f MB  %3.0f%%  (sent %.1f MB up, srtt %.0f ms)", name, s.Local, s.Remote,
				float64(s.BytesReceived)/1e6, 100*float64(s.BytesReceived)/float64(max(all, 1)), float64(s.BytesSent)/1e6, s.SRTTms)
		}
	}
	okDown := hex.EncodeToString(downHash.Sum(nil)) == res.downHash && total == res.downBytes
	okUp := hex.EncodeToString(upHash.Sum(nil)) == res.upHash && int64(o.upload) == res.upBytes
	r.say("  SHA-256 down: backend sent %d bytes %s…, app received %d bytes %s…  %s", res.downBytes, res.downHash[:16],
		total, hex.EncodeToString(downHash.Sum(nil))[:16], okWord(okDown))
	r.say("  SHA-256 up:   app sent %d bytes %s…, backend received %d bytes %s…  %s", o.upload, hex.EncodeToString(upHash.Sum(nil))[:16],
		res.upBytes, res.upHash[:16], okWord(okUp))
	if res.err != nil {
		return fmt.Errorf("backend: %w", res.err)
	}
	if !okDown || !okUp {
		return errors.New("the data did not arrive intact")
	}
	r.say("cleaning up: stopping the daemons (they undo their routes and NAT), deleting the namespaces")
	return nil
}

func okWord(ok bool) string {
	if ok {
		return "OK"
	}
	return "MISMATCH"
}

func boolSec(b bool, d time.Duration) float64 {
	if b {
		return d.Seconds()
	}
	return 0
}

func fmtSec(d time.Duration) string { return fmt.Sprintf("%.0fs", d.Seconds()) }

func rateOf(now, before uint64, dt float64) float64 {
	if now < before || dt <= 0 {
		return 0
	}
	return float64(now-before) / dt
}

// perPath adds up the bytes the client's subflows received, by path.
func perPath(st *Status) map[string]uint64 {
	m := map[string]uint64{}
	for _, f := range st.Flows {
		for _, s := range f.Subflows {
			m[s.Path] += s.BytesReceived
		}
	}
	return m
}

// pathB cuts (up=false) or restores path B: an nftables table in the
// proxy host drops everything forwarded through r2.
func (r *demoRun) pathB(up bool) error {
	if up {
		_, err := r.prx.Run("nft", "delete", "table", "inet", "mptd_down")
		return err
	}
	cmd := r.prx.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table inet mptd_down {
	chain cut {
		type filter hook forward priority -10; policy accept;
		iifname "r2" drop
		oifname "r2" drop
	}
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cutting path B: %v: %s", err, out)
	}
	return nil
}

// demoProc is a daemon the demo runs.
type demoProc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
	done chan struct{}
}

func (p *demoProc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.log
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// stop sends SIGTERM and waits, then kills.
func (p *demoProc) stop(wait time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// start runs a daemon in ns and waits for its "ready" line.
func (r *demoRun) start(ctx context.Context, ns *topo.NS, name, bin string, args ...string) (*demoProc, error) {
	var logTo io.Writer
	if r.o.verbose {
		logTo = r.stderr
	}
	p, err := startDaemonProc(ctx, ns, name, bin, logTo, args...)
	if p != nil {
		r.procs = append(r.procs, p)
	}
	return p, err
}

// startDaemonProc runs "bin args..." in ns, copies its stderr lines to
// logTo (if not nil) and keeps the last ones, and waits for its "ready"
// line. On failure the process, if started, is returned too (to be
// stopped and its log shown).
func startDaemonProc(ctx context.Context, ns *topo.NS, name, bin string, logTo io.Writer, args ...string) (*demoProc, error) {
	p := &demoProc{name: name, cmd: ns.Command(context.Background(), bin, args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			if len(p.log) > 1000 {
				p.log = p.log[len(p.log)-500:]
			}
			p.mu.Unlock()
			if logTo != nil {
				fmt.Fprintf(logTo, "    [%s] %s\n", name, line)
			}
			if !signalled && strings.Contains(line, ": ready:") {
				signalled = true
				close(ready)
			}
		}
		p.cmd.Wait()
		close(p.done)
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.done:
		return p, fmt.Errorf("%s exited during setup", name)
	case <-time.After(20 * time.Second):
		return p, fmt.Errorf("%s not ready after 20 s", name)
	case <-ctx.Done():
		return p, ctx.Err()
	}
}

// demoStream returns the deterministic pseudo-random bytes the demo
// sends.
func demoStream(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), 'm', 'p', 't', 'u', 'n', 'd'})
}

// demoBackend is the legacy TCP server: it reads "MPTUND-DEMO MS UPLOAD"
// and UPLOAD bytes, then sends pseudo-random bytes for MS milliseconds
// and a FIN.
type demoBackend struct {
	ln      net.Listener
	results chan demoResult
}

type demoResult struct {
	upHash, downHash   string
	upBytes, downBytes int64
	err                error
}

func (b *demoBackend) serve() {
	c, err := b.ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	res := demoResult{}
	defer func() { b.results <- res }()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		res.err = err
		return
	}
	var ms, up int64
	if _, err := fmt.Sscanf(line, "MPTUND-DEMO %d %d\n", &ms, &up); err != nil {
		res.err = fmt.Errorf("bad request %q", line)
		return
	}
	uh := sha256.New()
	n, err := io.CopyN(uh, br, up)
	res.upBytes, res.upHash = n, hex.EncodeToString(uh.Sum(nil))
	if err != nil {
		res.err = err
		return
	}
	dh := sha256.New()
	src := demoStream(2)
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	for time.Now().Before(deadline) {
		src.Read(buf)
		k, err := c.Write(buf)
		dh.Write(buf[:k])
		res.downBytes += int64(k)
		if err != nil {
			res.err = err
			break
		}
	}
	res.downHash = hex.EncodeToString(dh.Sum(nil))
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, br)
}
