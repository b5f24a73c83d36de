package main

// Namespace tests of "mptund connect" and "mptund listen": the binary runs
// inside a test namespace (ip netns exec), creates its TUN there and
// configures the kernel side with --peer-addr; kernel sockets in the same
// namespace are its peers. Each test checks the data (SHA-256 both ways),
// the exit status and stderr, the --stats report against what was carried,
// the --pcap capture (pcaps.ReadFile and Analyze, and tshark when
// installed), and that the TUN is gone afterwards.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/pcaps"
)

// Names and addresses of the namespace topology.
const (
	nsPrefix   = "mptc"
	nsTUN      = "mptc0"
	enginePfx  = "10.77.0.2/24"
	engineAddr = "10.77.0.2"
	kernelPfx  = "10.77.0.1/24"
	kernelAddr = "10.77.0.1"
)

// TestNetcatNS builds the binary once and runs the namespace scenarios.
func TestNetcatNS(t *testing.T) {
	netns.Require(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: needs the go tool to build mptund")
	}
	bin := filepath.Join(t.TempDir(), "mptund")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("listen", func(t *testing.T) { testListen(t, bin, false) })
	t.Run("listen-mptcp", func(t *testing.T) { testListen(t, bin, true) })
	t.Run("listen-mptcp-checksum", func(t *testing.T) { testListen(t, bin, true, "--checksum") })
	t.Run("listen-no-mptcp", func(t *testing.T) { testListen(t, bin, true, "--no-mptcp") })
	t.Run("listen-multipath", func(t *testing.T) { testListenMultipath(t, bin) })
	t.Run("connect", func(t *testing.T) { testConnect(t, bin, false) })
	t.Run("connect-slow-readers", func(t *testing.T) { testConnect(t, bin, true) })
	t.Run("keep", func(t *testing.T) { testKeep(t, bin) })
	t.Run("refused", func(t *testing.T) { testRefused(t, bin) })
	t.Run("sigterm", func(t *testing.T) { testSIGTERM(t, bin) })
}

// proc is mptund running in a namespace.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when the process has exited
	err   error         // Wait's result, once done is closed

	mu    sync.Mutex
	lines []string      // stderr so far
	seen  chan struct{} // signalled on every stderr line
}

// startMptund runs bin args inside ns with stdout going to stdout. The
// process is killed at cleanup if it still runs.
func startMptund(t *testing.T, ns *netns.NS, bin string, stdout io.Writer, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: ns.Command(context.Background(), bin, args...), done: make(chan struct{}), seen: make(chan struct{}, 1)}
	p.cmd.Stdout = stdout
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.seen <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		<-stderrDone // Wait closes the pipe: read it all first
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) stderrLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits until a stderr line contains substr.
func (p *proc) waitLine(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	p.waitLines(t, substr, 1, timeout)
}

// waitLines waits until n stderr lines contain substr.
func (p *proc) waitLines(t *testing.T, substr string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		k := 0
		for _, l := range p.stderrLines() {
			if strings.Contains(l, substr) {
				k++
			}
		}
		if k >= n {
			return
		}
		select {
		case <-p.seen:
		case <-p.done:
			t.Fatalf("mptund exited (%v) before printing %q; stderr:\n%s", p.err, substr, strings.Join(p.stderrLines(), "\n"))
		case <-deadline:
			t.Fatalf("no %q on stderr within %v; stderr:\n%s", substr, timeout, strings.Join(p.stderrLines(), "\n"))
		}
	}
}

// wait waits for the exit and returns the exit status; a death by signal
// fails the test.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("mptund still running after %v; stderr:\n%s", timeout, strings.Join(p.stderrLines(), "\n"))
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatalf("mptund: %v", p.err)
	}
	code := p.cmd.ProcessState.ExitCode()
	if code < 0 {
		t.Fatalf("mptund died: %v; stderr:\n%s", p.cmd.ProcessState, strings.Join(p.stderrLines(), "\n"))
	}
	return code
}

// report parses the --stats line, the last line of stderr.
func (p *proc) report(t *testing.T) *Report {
	t.Helper()
	lines := p.stderrLines()
	if len(lines) == 0 {
		t.Fatal("nothing on stderr, want the --stats report")
	}
	var r Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("--stats report: %v\n%s", err, lines[len(lines)-1])
	}
	return &r
}

// kernelDo runs fn on a thread inside ns (sockets it opens live there).
func kernelDo(t *testing.T, ns *netns.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// exchange writes out to c and half-closes while reading c to its end; it
// returns what was read.
func exchange(c *net.TCPConn, out []byte, timeout time.Duration) ([]byte, error) {
	return exchangeFrom(c, c, out, timeout)
}

// exchangeFrom is exchange reading through r (c, or c slowed down).
func exchangeFrom(c *net.TCPConn, r io.Reader, out []byte, timeout time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(timeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(out)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	in, err := io.ReadAll(r)
	return in, errors.Join(err, <-werr)
}

// pacedReader is a slow reader: it sleeps a millisecond before each read of
// at most 16 KiB.
type pacedReader struct{ r io.Reader }

func (p pacedReader) Read(b []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return p.r.Read(b[:min(len(b), 16<<10)])
}

// checkRun checks a clean run that carried sent bytes from stdin and
// received bytes to stdout over one connection: the report, the capture
// and the TUN's removal.
func checkRun(t *testing.T, ns *netns.NS, p *proc, pcapPath string, sent, received int) {
	t.Helper()
	r := p.report(t)
	if r.Error != "" || r.BytesSent != uint64(sent) || r.BytesReceived != uint64(received) || len(r.Connections) != 1 {
		t.Fatalf("report: error %q, %d bytes sent, %d received, %d connections; want %d and %d over 1",
			r.Error, r.BytesSent, r.BytesReceived, len(r.Connections), sent, received)
	}
	// The side whose FIN goes second ends in CLOSED, the other one in
	// TIME-WAIT. The TCP counters are those of the connection's (only)
	// subflow.
	c := r.Connections[0]
	if (c.State != "TIME-WAIT" && c.State != "CLOSED") || c.BytesSent != uint64(sent) || c.BytesReceived != uint64(received) ||
		c.TCP.BytesAcked != uint64(sent) || c.TCP.BytesReceived != uint64(received) {
		t.Errorf("connection report: state %s, bytes %d/%d, tcp.Info acked %d received %d; want TIME-WAIT or CLOSED, %d sent, %d received",
			c.State, c.BytesSent, c.BytesReceived, c.TCP.BytesAcked, c.TCP.BytesReceived, sent, received)
	}
	if c.Local.Addr().String() != engineAddr || c.Remote.Addr().String() != kernelAddr {
		t.Errorf("connection %v -> %v", c.Local, c.Remote)
	}
	if r.Capture == nil {
		t.Fatal("report without capture counters")
	}
	if r.Capture.Dropped != 0 || r.Capture.Packets != r.Link.RXPackets+r.Link.TXPackets {
		t.Errorf("capture %+v: want every packet of the link (%d read, %d written) recorded", r.Capture, r.Link.RXPackets, r.Link.TXPackets)
	}
	checkCapture(t, pcapPath, int(r.Capture.Packets), int(c.TCP.BytesSent), received)
	if out, err := ns.Run("ip", "link", "show", nsTUN); err == nil {
		t.Errorf("%s still exists after exit:\n%s", nsTUN, out)
	}
}

// checkCapture reads the capture with our reader, inspector and, if
// installed, tshark: records packets in all (TCP or not), one clean flow
// whose payload from the engine adds up to the connection's transmissions
// (fromEngine, retransmissions included) and from the kernel to at least
// toEngine.
func checkCapture(t *testing.T, path string, records, fromEngine, toEngine int) {
	t.Helper()
	checkSize(t, path)
	pkts, err := pcaps.ReadFile(path)
	if err != nil {
		t.Fatalf("pcaps.ReadFile: %v", err)
	}
	rep := pcaps.Analyze(pkts)
	if rep.Plain+len(rep.Connections) != 1 || rep.Unanalyzed != 0 || len(rep.Problems) != 0 {
		t.Errorf("inspector: %d plain flows, %d MPTCP connections, %d unanalyzed, problems %v",
			rep.Plain, len(rep.Connections), rep.Unanalyzed, rep.Problems)
	}
	var out, in int
	for _, p := range pkts {
		if p.Src.Addr().String() == engineAddr {
			out += p.PayloadLen
		} else {
			in += p.PayloadLen
		}
	}
	if out != fromEngine || in < toEngine {
		t.Errorf("capture payload: %d bytes from the engine, %d to it; want %d, at least %d", out, in, fromEngine, toEngine)
	}

	if _, err := exec.LookPath("tshark"); err != nil {
		t.Log("tshark not installed: capture not checked with it")
		return
	}
	tout, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.packet_flags_direction", "-e", "ip.src").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(tout)), "\n")
	if len(lines) != records {
		t.Errorf("tshark read %d frames, want %d", len(lines), records)
	}
	for i, l := range lines {
		dir, src, _ := strings.Cut(l, "\t")
		want := "0x00000001" // inbound: from the kernel to the engine
		if src == engineAddr {
			want = "0x00000002"
		}
		if dir != want {
			t.Errorf("tshark frame %d from %q: direction %q, want %s", i+1, src, dir, want)
			break
		}
	}
}

// plainListen listens with a kernel TCP socket that does not offer MPTCP
// (Go's listeners do by default): these tests are about plain TCP.
func plainListen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

// checkSize fails the test if the capture is too large to read into
// memory: pcaps.ReadFile holds it all, decoded.
func checkSize(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 256<<20 {
		t.Fatalf("capture %s has %d MiB, more than this test carried", path, fi.Size()>>20)
	}
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// testListen: a kernel client sends 8 MiB to "mptund listen" and reads its
// reply, fed on stdin.
// testListen: a kernel client (plain TCP, or MPTCP with kernelMPTCP) sends
// 8 MiB to "mptund listen" and reads the 2 MiB fed to its stdin; extra
// flags go to mptund. The --stats report must say whether MPTCP ran.
func testListen(t *testing.T, bin string, kernelMPTCP bool, extra ...string) {
	ns := netns.New(t, nsPrefix)
	pcapPath := filepath.Join(t.TempDir(), "listen.pcapng")
	var stdout bytes.Buffer
	args := append([]string{"listen", "-v", "--tun", nsTUN, "--addr", enginePfx, "--peer-addr", kernelPfx,
		"--pcap", pcapPath, "--stats"}, extra...)
	p := startMptund(t, ns, bin, &stdout, append(args, "5001")...)
	req, reply := randomBytes(8<<20), randomBytes(2<<20+3)
	go func() {
		p.stdin.Write(reply)
		p.stdin.Close()
	}()
	p.waitLine(t, "listening on", 20*time.Second)

	var c *net.TCPConn
	kernelDo(t, ns, func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		d.SetMultipathTCP(kernelMPTCP)
		nc, err := d.Dial("tcp", engineAddr+":5001")
		if err == nil {
			c = nc.(*net.TCPConn)
		}
		return err
	})
	defer c.Close()
	got, err := exchange(c, req, time.Minute)
	if err != nil {
		t.Fatalf("kernel client: %v", err)
	}
	if sum(got) != sum(reply) {
		t.Errorf("kernel client read %d bytes, not the %d fed to stdin", len(got), len(reply))
	}
	if code := p.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
	}
	if sum(stdout.Bytes()) != sum(req) {
		t.Errorf("stdout has %d bytes, not the %d the client sent", stdout.Len(), len(req))
	}
	checkRun(t, ns, p, pcapPath, len(reply), len(req))
	r := p.report(t)
	if len(r.Connections) != 1 || r.Connections[0].MPTCP == nil {
		t.Fatalf("report has no MPTCP view: %+v", r.Connections)
	}
	mi := r.Connections[0].MPTCP
	noMPTCP, csum := slices.Contains(extra, "--no-mptcp"), slices.Contains(extra, "--checksum")
	want := kernelMPTCP && !noMPTCP
	if mi.MPTCP != want || (want && (mi.LocalToken == 0 || mi.RemoteToken == 0 || mi.Checksums != csum)) {
		t.Errorf("--stats MPTCP view: in use %v (want %v), tokens %08x/%08x, checksums %v (want %v), fallback %q",
			mi.MPTCP, want, mi.LocalToken, mi.RemoteToken, mi.Checksums, csum, mi.Fallback)
	}
	if !want && !noMPTCP && mi.Fallback == "" {
		t.Errorf("plain-TCP client but no fallback reason in --stats")
	}
}

// testListenMultipath: "mptund listen" on two TUNs announces its second
// address (--endpoint ...,signal); a kernel MPTCP client that accepts one
// ADD_ADDR joins it, and both subflows carry the transfer. Checked from
// both sides: the kernel's MPTcpExt counters and --stats.
func testListenMultipath(t *testing.T, bin string) {
	netns.RequireMPTCP(t)
	ns := netns.New(t, nsPrefix)
	ns.MPTCPLimits(2, 1)
	before, err := ns.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	p := startMptund(t, ns, bin, &stdout, "listen", "-v", "--tun", nsTUN, "--addr", enginePfx, "--peer-addr", kernelPfx,
		"--path", "mptc1,addr=10.78.0.2/24,peer=10.78.0.1/24", "--endpoint", "10.78.0.2,signal", "--stats", "5001")
	req, reply := randomBytes(16<<20), randomBytes(16<<20)
	go func() {
		p.stdin.Write(reply)
		p.stdin.Close()
	}()
	p.waitLine(t, "listening on", 20*time.Second)
	var c *net.TCPConn
	kernelDo(t, ns, func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		d.SetMultipathTCP(true)
		nc, err := d.Dial("tcp", engineAddr+":5001")
		if err == nil {
			c = nc.(*net.TCPConn)
		}
		return err
	})
	defer c.Close()
	got, err := exchange(c, req, time.Minute)
	if err != nil {
		t.Fatalf("kernel client: %v", err)
	}
	if sum(got) != sum(reply) {
		t.Errorf("kernel client read %d bytes, not the %d fed to stdin", len(got), len(reply))
	}
	if code := p.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
	}
	if sum(stdout.Bytes()) != sum(req) {
		t.Errorf("stdout has %d bytes, not the %d the client sent", stdout.Len(), len(req))
	}
	after, err := ns.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"MPTcpExtAddAddr": 1, "MPTcpExtMPJoinSynAckRx": 1} {
		if d := after[name] - before[name]; d != want {
			t.Errorf("kernel %s moved by %d, want %d", name, d, want)
		}
	}
	for _, name := range []string{"MPTcpExtMPJoinSynAckHMacFailure", "MPTcpExtDSSNotMatching", "MPTcpExtDataCsumErr", "MPTcpExtAddAddrDrop", "MPTcpExtMPRstRx"} {
		if d := after[name] - before[name]; d != 0 {
			t.Errorf("kernel error counter %s moved by %d", name, d)
		}
	}
	r := p.report(t)
	if len(r.Connections) != 1 || r.Connections[0].MPTCP == nil {
		t.Fatalf("report has no MPTCP view: %+v", r.Connections)
	}
	subs := r.Connections[0].MPTCP.Subflows
	if len(subs) != 2 {
		t.Fatalf("--stats lists %d subflows, want 2: %+v", len(subs), subs)
	}
	for _, s := range subs {
		if s.BytesSent < 1<<20 {
			t.Errorf("subflow %v -> %v sent %d bytes of 16 MiB", s.Local, s.Remote, s.BytesSent)
		}
	}
	if r.MPTCP["AddAddrTx"] == 0 || r.MPTCP["EchoAdd"] != 1 || r.MPTCP["MPJoinAckRx"] != 1 {
		t.Errorf("engine counters: %v", r.MPTCP)
	}
}

// pacedWriter is a slow stdout: it sleeps 4 ms per write (of at most
// 32 KiB: what exec copies from mptund's stdout at a time, so about
// 8 MB/s), so the engine's receive buffer fills and its window closes.
type pacedWriter struct{ w io.Writer }

func (p pacedWriter) Write(b []byte) (int, error) {
	time.Sleep(4 * time.Millisecond)
	return p.w.Write(b)
}

// testConnect: "mptund connect" sends 8 MiB from stdin to a kernel server
// and writes its 8 MiB reply to stdout. With slow, both readers are slow
// (mptund's stdout, the kernel server's socket), so that the windows of
// both directions fill up and reopen, and FINs arrive while data waits.
func testConnect(t *testing.T, bin string, slow bool) {
	ns := netns.New(t, nsPrefix)
	var ln net.Listener
	kernelDo(t, ns, func() (err error) {
		ln, err = plainListen("0.0.0.0:5002")
		return err
	})
	defer ln.Close()
	req, reply := randomBytes(8<<20), randomBytes(8<<20+1)
	type result struct {
		got []byte
		err error
	}
	srv := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		defer c.Close()
		var r io.Reader = c
		if slow {
			r = pacedReader{c}
		}
		got, err := exchangeFrom(c.(*net.TCPConn), r, reply, time.Minute)
		srv <- result{got, err}
	}()

	pcapPath := filepath.Join(t.TempDir(), "connect.pcapng")
	var stdout bytes.Buffer
	var w io.Writer = &stdout
	if slow {
		w = pacedWriter{&stdout}
	}
	p := startMptund(t, ns, bin, w, "connect", "-v", "--tun", nsTUN, "--addr", enginePfx, "--peer-addr", kernelPfx,
		"--pcap", pcapPath, "--stats", "--timeout", "10s", kernelAddr+":5002")
	go func() {
		p.stdin.Write(req)
		p.stdin.Close()
	}()
	code := p.wait(t, time.Minute)
	var res result
	select {
	case res = <-srv:
	case <-time.After(10 * time.Second):
		t.Fatal("kernel server did not finish")
	}
	if code != exitOK {
		t.Fatalf("exit %d (server: %v); stderr:\n%s", code, res.err, strings.Join(p.stderrLines(), "\n"))
	}
	if res.err != nil || sum(res.got) != sum(req) {
		t.Errorf("kernel server read %d bytes (%v), want the %d of stdin", len(res.got), res.err, len(req))
	}
	if sum(stdout.Bytes()) != sum(reply) {
		t.Errorf("stdout has %d bytes, not the server's %d", stdout.Len(), len(reply))
	}
	p.waitLine(t, "connected "+engineAddr, time.Second)
	checkRun(t, ns, p, pcapPath, len(req), len(reply))
}

// testKeep: "mptund listen --keep" serves two kernel clients one after the
// other: stdin goes to the first, the second gets a FIN at once, what both
// send goes to stdout; SIGTERM between connections ends it with status 0.
func testKeep(t *testing.T, bin string) {
	ns := netns.New(t, nsPrefix)
	var stdout bytes.Buffer
	p := startMptund(t, ns, bin, &stdout, "listen", "--keep", "-v", "--stats", "--tun", nsTUN, "--peer-addr", kernelPfx, "5004")
	go func() {
		p.stdin.Write([]byte("hello\n"))
		p.stdin.Close()
	}()
	p.waitLine(t, "listening on", 20*time.Second)
	for i, tc := range []struct{ send, want string }{{"one", "hello\n"}, {"two", ""}} {
		var c *net.TCPConn
		kernelDo(t, ns, func() error {
			d := net.Dialer{Timeout: 10 * time.Second}
			d.SetMultipathTCP(false)
			nc, err := d.Dial("tcp", engineAddr+":5004")
			if err == nil {
				c = nc.(*net.TCPConn)
			}
			return err
		})
		got, err := exchange(c, []byte(tc.send), 30*time.Second)
		c.Close()
		if err != nil || string(got) != tc.want {
			t.Fatalf("client %d: read %q, %v; want %q", i+1, got, err, tc.want)
		}
		p.waitLines(t, ": done, ", i+1, 10*time.Second)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
	}
	if stdout.String() != "onetwo" {
		t.Errorf("stdout %q, want %q", stdout.String(), "onetwo")
	}
	r := p.report(t)
	if r.Error != "" || len(r.Connections) != 2 || r.BytesSent != 6 || r.BytesReceived != 6 ||
		r.Connections[0].BytesSent != 6 || r.Connections[1].BytesSent != 0 {
		t.Errorf("report: error %q, %d connections, %d bytes sent, %d received", r.Error, len(r.Connections), r.BytesSent, r.BytesReceived)
	}
}

// testRefused: connecting to a closed port fails with one line.
func testRefused(t *testing.T, bin string) {
	ns := netns.New(t, nsPrefix)
	p := startMptund(t, ns, bin, io.Discard, "connect", "--tun", nsTUN, "--peer-addr", kernelPfx, kernelAddr+":9")
	p.stdin.Close()
	if code := p.wait(t, 30*time.Second); code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	lines := p.stderrLines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "mptund connect: ") || !strings.Contains(lines[0], "connection refused") {
		t.Errorf("stderr: %q, want one line saying connection refused", lines)
	}
}

// countWriter counts what is written and closes reached once it has
// seen at least threshold bytes.
type countWriter struct {
	n         atomic.Int64
	threshold int64
	once      sync.Once
	reached   chan struct{}
}

func (w *countWriter) Write(b []byte) (int, error) {
	if w.n.Add(int64(len(b))) >= w.threshold {
		w.once.Do(func() { close(w.reached) })
	}
	return len(b), nil
}

// testSIGTERM: SIGTERM in the middle of a transfer (a kernel server
// streaming without end, stdin open) ends mptund promptly with status 1,
// a complete capture and the TUN removed.
func testSIGTERM(t *testing.T, bin string) {
	ns := netns.New(t, nsPrefix)
	var ln net.Listener
	kernelDo(t, ns, func() (err error) {
		ln, err = plainListen("0.0.0.0:5003")
		return err
	})
	defer ln.Close()
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Paced at about 16 MB/s, so that the capture stays small
		// whatever the delays before the signal.
		buf := make([]byte, 16<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	pcapPath := filepath.Join(t.TempDir(), "sigterm.pcapng")
	out := &countWriter{threshold: 4 << 20, reached: make(chan struct{})}
	p := startMptund(t, ns, bin, out, "connect", "--tun", nsTUN, "--peer-addr", kernelPfx,
		"--pcap", pcapPath, "--stats", kernelAddr+":5003")
	defer p.stdin.Close() // open until the end: stdin never ends by itself
	select {
	case <-out.reached:
	case <-p.done:
		t.Fatalf("mptund exited early: %v; stderr:\n%s", p.err, strings.Join(p.stderrLines(), "\n"))
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d bytes received in 30s", out.n.Load())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code := p.wait(t, 10*time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to exit after SIGTERM", d)
	}
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	r := p.report(t)
	if r.Error != errInterrupted.Error() || len(r.Connections) != 1 || r.BytesReceived != uint64(out.n.Load()) {
		t.Errorf("report: error %q, %d connections, %d bytes received (stdout got %d)", r.Error, len(r.Connections), r.BytesReceived, out.n.Load())
	}
	lines := p.stderrLines()
	if len(lines) != 2 || lines[0] != "mptund connect: interrupted" {
		t.Errorf("stderr: %q, want the interruption then the report", lines)
	}
	// The capture is complete: every record read back, none cut short.
	checkSize(t, pcapPath)
	pkts, err := pcaps.ReadFile(pcapPath)
	if err != nil {
		t.Fatalf("pcaps.ReadFile: %v", err)
	}
	if r.Capture == nil || len(pkts) == 0 || uint64(len(pkts)) > r.Capture.Packets {
		t.Errorf("capture: %d TCP packets read, report %+v", len(pkts), r.Capture)
	}
	if rep := pcaps.Analyze(pkts); len(rep.Problems) != 0 {
		t.Errorf("inspector problems: %v", rep.Problems)
	}
	if out, err := ns.Run("ip", "link", "show", nsTUN); err == nil {
		t.Errorf("%s still exists after exit:\n%s", nsTUN, out)
	}
	select {
	case <-srvDone:
	case <-time.After(10 * time.Second):
		t.Error("the kernel server's writes did not fail after mptund exited")
	}
}
