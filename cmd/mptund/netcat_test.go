package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/pcaps"
)

// TestNetcatUsage covers the argument checks of connect and listen. Every
// case fails before a TUN would be created.
func TestNetcatUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // substring expected on stdout
		stderr string // substring expected on stderr
	}{
		{[]string{"help"}, exitOK, "listen ", ""},
		{[]string{"help", "connect"}, exitOK, "mptund connect [flags] ADDR:PORT", ""},
		{[]string{"help", "listen"}, exitOK, "mptund listen [flags] [ADDR:]PORT", ""},
		{[]string{"connect", "-h"}, exitOK, "", "-peer-addr"},
		{[]string{"listen", "--help"}, exitOK, "", "-keep"},
		{[]string{"connect"}, exitUsage, "", "want exactly one ADDR:PORT, got 0 arguments"},
		{[]string{"connect", "10.0.0.1:1", "10.0.0.1:2"}, exitUsage, "", "got 2 arguments"},
		{[]string{"connect", "example.com:80"}, exitUsage, "", `"example.com" is not an IP address`},
		{[]string{"connect", "10.0.0.1"}, exitUsage, "", "missing port"},
		{[]string{"connect", "10.0.0.1:0"}, exitUsage, "", "want an IP address and a port"},
		{[]string{"connect", ":80"}, exitUsage, "", "want an IP address and a port"},
		{[]string{"connect", "--addr", "10.0.0.1", "10.0.0.2:80"}, exitUsage, "", "want an address with prefix length"},
		{[]string{"connect", "--peer-addr", "fe80::1%eth0/64", "10.0.0.2:80"}, exitUsage, "", "invalid value"},
		{[]string{"connect", "--mtu", "100", "10.0.0.2:80"}, exitUsage, "", "--mtu 100 out of range"},
		{[]string{"connect", "--addr", "fd00::1/64", "--mtu", "1000", "[fd00::2]:80"}, exitUsage, "", "IPv6 needs at least 1280"},
		{[]string{"connect", "--addr", "10.0.0.1/24", "--peer-addr", "10.0.0.1/24", "10.0.0.2:80"}, exitUsage, "", "10.0.0.1 is both --addr and --peer-addr"},
		{[]string{"connect", "--timeout", "-1s", "10.0.0.2:80"}, exitUsage, "", "--timeout -1s is negative"},
		{[]string{"connect", "--tun", "a/b", "10.0.0.2:80"}, exitUsage, "", "not a valid interface name"},
		{[]string{"connect", "--tun", "abcdefghijklmnop", "10.0.0.2:80"}, exitUsage, "", "not a valid interface name"},
		{[]string{"connect", "--tun", "a:1", "10.0.0.2:80"}, exitUsage, "", "not a valid interface name"},
		{[]string{"connect", "--keep", "10.0.0.2:80"}, exitUsage, "", "flag provided but not defined: -keep"},
		{[]string{"listen"}, exitUsage, "", "want exactly one [ADDR:]PORT, got 0 arguments"},
		{[]string{"listen", "0"}, exitUsage, "", "other than 0"},
		{[]string{"listen", "70000"}, exitUsage, "", "70000"},
		{[]string{"listen", "x:80"}, exitUsage, "", `"x" is not an IP address`},
		{[]string{"listen", "--timeout", "1s", "80"}, exitUsage, "", "flag provided but not defined: -timeout"},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("%q: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out, errOut)
		}
	}
}

// TestNetcatSetupErrors covers failures to set up the run, which must
// leave nothing behind. Safe as root too: "lo" exists and is not a TUN, so
// the kernel refuses it without changing anything.
func TestNetcatSetupErrors(t *testing.T) {
	pcapPath := filepath.Join(t.TempDir(), "x.pcapng")
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"connect", "--pcap", "/nonexistent/dir/x.pcapng", "--stats", "10.0.0.2:80"}, "no such file or directory"},
		{[]string{"connect", "--tun", "lo", "--stats", "10.0.0.2:80"}, `creating TUN "lo"`},
		{[]string{"listen", "--tun", "lo", "--pcap", pcapPath, "--stats", "80"}, `creating TUN "lo"`},
		{[]string{"connect", "--pcap", "/dev/full", "--stats", "10.0.0.2:80"}, "no space left on device"},
	} {
		if tc.args[2] == "/dev/full" {
			if _, err := os.Stat("/dev/full"); err != nil {
				continue
			}
		}
		code, out, errOut := runCLI(tc.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != exitFailed || out != "" || len(lines) != 2 || !strings.Contains(lines[0], tc.stderr) {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", tc.args, code, out, errOut)
			continue
		}
		var r Report
		if err := json.Unmarshal([]byte(lines[1]), &r); err != nil || !strings.Contains(r.Error, tc.stderr) || len(r.Connections) != 0 {
			t.Errorf("%q: report %v: %+v", tc.args, err, r)
		}
	}
	// The capture file was closed as a valid, empty capture.
	if pkts, err := pcaps.ReadFile(pcapPath); err != nil || len(pkts) != 0 {
		t.Errorf("capture after a failed setup: %d packets, %v", len(pkts), err)
	}
}

func TestParseListenAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" for an error
	}{
		{"5001", ":5001"},
		{":5001", ":5001"},
		{"10.77.0.2:80", "10.77.0.2:80"},
		{"[fd77::2]:443", "[fd77::2]:443"},
		{"0", ""},
		{"65536", ""},
		{"10.77.0.2", ""},
		{"fd77::2", ""},
		{"host:80", ""},
		{"", ""},
	} {
		a, err := parseListenAddr(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q: got %v, want an error", tc.in, a)
		case tc.want != "" && (err != nil || a.String() != tc.want):
			t.Errorf("%q: got %v, %v; want %s", tc.in, a, err, tc.want)
		}
	}
}

func TestPrefixList(t *testing.T) {
	var p prefixList
	for _, s := range []string{"10.77.0.2/24", "fd77::2/64"} {
		if err := p.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	for _, s := range []string{"10.77.0.2", "10.77.0.2/33", "::ffff:10.0.0.1/120", "fe80::1%eth0/64", "x/24"} {
		if err := p.Set(s); err == nil {
			t.Errorf("Set(%q) accepted", s)
		}
	}
	if got := p.String(); got != "10.77.0.2/24,fd77::2/64" {
		t.Errorf("String() = %q", got)
	}
	f := netcatFlags{tun: "t0", mtu: 1500}
	if err := f.validate(); err != nil || f.addrs.String() != defaultAddr {
		t.Errorf("validate without --addr: %v, addrs %v; want the default %s", err, f.addrs.String(), defaultAddr)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		acc <- c
	}()
	a, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// blockingReader never returns: a terminal nobody types into.
type blockingReader struct{ ch chan struct{} }

func (r blockingReader) Read([]byte) (int, error) { <-r.ch; return 0, io.EOF }

// endlessReader returns data forever.
type endlessReader struct{}

func (endlessReader) Read(b []byte) (int, error) { return len(b), nil }

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// runTransfer runs transfer on c and returns its error, what went to
// stdout, and the counters.
func runTransfer(ctx context.Context, c netConn, stdin io.Reader, stdout io.Writer) (err error, sent, received uint64) {
	var s, r atomic.Uint64
	err = transfer(ctx, c, newStdinPump(stdin), stdout, make([]byte, copyBufSize), &s, &r)
	return err, s.Load(), r.Load()
}

// TestTransferClean moves data both ways over kernel loopback TCP: stdin
// to the peer then a FIN, the peer's data to stdout until its FIN.
func TestTransferClean(t *testing.T) {
	c, peer := tcpPair(t)
	req, rep := randomBytes(3<<20+17), randomBytes(1<<20+5)
	peerErr := make(chan error, 1)
	go func() {
		// Write while reading, then half-close: both directions overlap.
		werr := make(chan error, 1)
		go func() {
			_, err := peer.Write(rep)
			if err == nil {
				err = peer.CloseWrite()
			}
			werr <- err
		}()
		got, err := io.ReadAll(peer)
		if err == nil && !bytes.Equal(got, req) {
			err = errors.New("peer received other bytes than stdin")
		}
		peerErr <- errors.Join(err, <-werr)
	}()
	var stdout bytes.Buffer
	err, sent, received := runTransfer(context.Background(), c, bytes.NewReader(req), &stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-peerErr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), rep) || sent != uint64(len(req)) || received != uint64(len(rep)) {
		t.Errorf("stdout %d bytes (want %d), sent %d (want %d), received %d", stdout.Len(), len(rep), sent, len(req), received)
	}
}

// TestTransferReset: the peer resets while stdin still has data (and
// never ends); transfer reports the reset promptly.
func TestTransferReset(t *testing.T) {
	c, peer := tcpPair(t)
	go func() {
		buf := make([]byte, 64<<10)
		io.ReadFull(peer, buf)
		peer.SetLinger(0)
		peer.Close()
	}()
	start := time.Now()
	err, sent, _ := runTransfer(context.Background(), c, endlessReader{}, io.Discard)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("transfer: %v, want a reset", err)
	}
	if sent < 64<<10 || time.Since(start) > 10*time.Second {
		t.Errorf("sent %d bytes in %v", sent, time.Since(start))
	}
}

// TestTransferInterrupted: cancelling the context ends a session whose
// stdin never ends and whose peer is silent; the peer sees our FIN.
func TestTransferInterrupted(t *testing.T) {
	c, peer := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	stdin := blockingReader{make(chan struct{})}
	defer close(stdin.ch)
	start := time.Now()
	err, _, _ := runTransfer(ctx, c, stdin, io.Discard)
	if !errors.Is(err, errInterrupted) {
		t.Fatalf("transfer: %v, want %v", err, errInterrupted)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to stop", d)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("peer read %d, %v; want EOF", n, err)
	}
}

// TestTransferLocalErrors: failing to write stdout or to read stdin ends
// the session with an error naming the stream, and closes the connection.
func TestTransferLocalErrors(t *testing.T) {
	t.Run("stdout", func(t *testing.T) {
		c, peer := tcpPair(t)
		go peer.Write([]byte("hello"))
		stdin := blockingReader{make(chan struct{})}
		defer close(stdin.ch)
		err, _, received := runTransfer(context.Background(), c, stdin, failingWriter{})
		var se *stdoutError
		if !errors.As(err, &se) || !errors.Is(err, syscall.EPIPE) || received != 0 {
			t.Fatalf("transfer: %v (received %d), want a stdout error", err, received)
		}
		if !strings.HasPrefix(err.Error(), "writing stdout: ") {
			t.Errorf("message %q", err)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		c, peer := tcpPair(t)
		errBad := errors.New("bad disk")
		stdin := io.MultiReader(strings.NewReader("some bytes"), &errReader{errBad})
		err, sent, _ := runTransfer(context.Background(), c, stdin, io.Discard)
		var se *stdinError
		if !errors.As(err, &se) || !errors.Is(err, errBad) || sent != 10 {
			t.Fatalf("transfer: %v (sent %d), want a stdin error after 10 bytes", err, sent)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(peer); string(got) != "some bytes" || err != nil {
			t.Errorf("peer read %q, %v", got, err)
		}
	})
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// chokeConn accepts limit bytes, then fails; it records what it accepted
// and whether it was half-closed.
type chokeConn struct {
	net.Conn // nil: only Write and CloseWrite are used
	limit    int
	mu       sync.Mutex
	got      []byte
	fin      bool
}

var errChoked = errors.New("choked")

func (c *chokeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(b), c.limit-len(c.got))
	c.got = append(c.got, b[:n]...)
	if n < len(b) {
		return n, errChoked
	}
	return n, nil
}

func (c *chokeConn) CloseWrite() error { c.fin = true; return nil }

// TestStdinPumpCarryOver: bytes read from stdin but not taken by a
// connection that failed go to the next connection (listen --keep), in
// order, and later connections get the FIN at once.
func TestStdinPumpCarryOver(t *testing.T) {
	in := randomBytes(3*copyBufSize + 1234)
	p := newStdinPump(bytes.NewReader(in))
	stop := make(chan struct{})
	var sent atomic.Uint64
	first := &chokeConn{limit: copyBufSize/2 + 7}
	if err := p.send(first, stop, &sent); !errors.Is(err, errChoked) {
		t.Fatalf("first send: %v", err)
	}
	second := &chokeConn{limit: len(in)}
	if err := p.send(second, stop, &sent); err != nil || !second.fin {
		t.Fatalf("second send: %v, FIN %v", err, second.fin)
	}
	if got := append(first.got, second.got...); !bytes.Equal(got, in) || sent.Load() != uint64(len(in)) {
		t.Errorf("connections got %d+%d bytes (sent %d), want %d in order", len(first.got), len(second.got), sent.Load(), len(in))
	}
	third := &chokeConn{}
	if err := p.send(third, stop, &sent); err != nil || !third.fin || len(third.got) != 0 {
		t.Errorf("after EOF: %v, FIN %v, %d bytes", err, third.fin, len(third.got))
	}
	// Stopped while stdin has nothing to give.
	blocked := newStdinPump(blockingReader{make(chan struct{})})
	close(stop)
	if err := blocked.send(&chokeConn{}, stop, &sent); !errors.Is(err, errStopped) {
		t.Errorf("stopped send: %v", err)
	}
}
