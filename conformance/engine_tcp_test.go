package conformance

// Interoperability of the engine's own TCP (package stack on stack/tcp)
// with the Linux kernel's TCP: the engine runs in this process on a TUN
// device whose kernel side lives in a test namespace, and kernel sockets in
// that namespace talk to it through the TUN.
//
// Each test reads like a kernel selftest: a topology (newEngineTUN), an
// action, then checks of data integrity (SHA-256), of the errors each side
// reports, and of the kernel's TCP error counters (nstat), which must not
// move.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/tun"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// engineNSPrefix names the namespaces of the engine interop tests.
const engineNSPrefix = "mpts"

// Addresses of the engine topology: the kernel side of the TUN and the
// engine behind it.
var (
	engKernel4 = netip.MustParseAddr("10.211.0.1")
	engEngine4 = netip.MustParseAddr("10.211.0.2")
	engKernel6 = netip.MustParseAddr("fd10:211::1")
	engEngine6 = netip.MustParseAddr("fd10:211::2")
)

// kernelErrorCounters must not change while the engine talks to the
// kernel: checksum and header errors, and connections the kernel had to
// abort.
var kernelErrorCounters = []string{
	"TcpInErrs",
	"TcpInCsumErrors",
	"TcpExtTCPAbortOnData",
	"TcpExtTCPAbortOnClose",
	"TcpExtTCPAbortOnMemory",
	"TcpExtTCPAbortOnTimeout",
	"TcpExtTCPAbortOnLinger",
	"TcpExtTCPAbortFailed",
}

// engineTUN is an engine whose only NIC is a TUN created in a fresh
// namespace; the kernel end has engKernel4/6 and reaches engEngine4/6
// through it.
type engineTUN struct {
	ns  *netns.NS
	ifc string
	ep  *tun.Endpoint
	eng *stack.Engine
}

func newEngineTUN(t *testing.T, mtu int) *engineTUN {
	t.Helper()
	// These tests are about the engine's TCP: MPTCP stays off, and the
	// kernel listens with plain TCP (Go listens with MPTCP by default).
	return newEngineTUNWith(t, engineTUNConfig{mtu: mtu, opts: stack.Options{MPTCP: stack.MPTCPConfig{Disabled: true}}})
}

// engineTUNConfig varies the topology of newEngineTUN.
type engineTUNConfig struct {
	prefix, ifc string // namespace prefix and TUN name; engineNSPrefix and "mpts0" if empty
	mtu         int
	opts        stack.Options // the engine's
	tunOpts     []tun.Option
	// wrap, if set, returns the link endpoint the engine's NIC uses, built
	// around the TUN (an impairer, taps); closing it must close the TUN.
	wrap func(*tun.Endpoint) gstack.LinkEndpoint
}

// newEngineTUNWith builds an engine whose only NIC is a TUN created in a
// fresh namespace: the kernel end has engKernel4/6 and reaches
// engEngine4/6 through it. Everything is removed at cleanup.
func newEngineTUNWith(t *testing.T, cfg engineTUNConfig) *engineTUN {
	t.Helper()
	netns.Require(t)
	netns.RequireTools(t, "nstat")
	if cfg.prefix == "" {
		cfg.prefix, cfg.ifc = engineNSPrefix, "mpts0"
	}
	g := &engineTUN{ns: netns.New(t, cfg.prefix), ifc: cfg.ifc}
	if err := g.ns.Do(func() (err error) {
		g.ep, err = tun.Create(g.ifc, cfg.mtu, cfg.tunOpts...)
		return err
	}); err != nil {
		t.Fatalf("creating TUN in %s: %v", g.ns.Name, err)
	}
	var link gstack.LinkEndpoint = g.ep
	if cfg.wrap != nil {
		link = cfg.wrap(g.ep)
	}
	eng, err := stack.NewEngine(cfg.opts)
	if err != nil {
		link.Close()
		t.Fatal(err)
	}
	g.eng = eng
	t.Cleanup(func() {
		g.eng.Close() // removes the NIC, which closes the link and the TUN
		link.Close()
		done := make(chan struct{})
		go func() { link.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("link endpoint goroutines did not stop within 10s")
		}
	})
	if _, err := eng.AddNIC(link, netip.PrefixFrom(engEngine4, 24), netip.PrefixFrom(engEngine6, 64)); err != nil {
		t.Fatal(err)
	}
	g.ns.SetupLink(g.ifc, netns.LinkConfig{
		MTU:   cfg.mtu,
		Addrs: []string{engKernel4.String() + "/24", engKernel6.String() + "/64"},
	})
	return g
}

// listenKernel opens a listening kernel socket in the namespace, MPTCP
// (IPPROTO_MPTCP) or plain TCP (Go's listeners default to MPTCP, so this
// is always explicit).
func (g *engineTUN) listenKernel(t *testing.T, addr netip.Addr, mptcp bool) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := g.ns.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(mptcp)
		ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialKernel connects a kernel socket, MPTCP or plain TCP, from the
// namespace.
func (g *engineTUN) dialKernel(ctx context.Context, addr string, mptcp bool) (*net.TCPConn, error) {
	var c net.Conn
	err := g.ns.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(mptcp)
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// pair opens one connection and returns its sending and receiving ends:
// engineSends selects engine → kernel, otherwise kernel → engine. The
// engine dials in the first case and accepts in the second, so both the
// active and the passive open are exercised.
func (g *engineTUN) pair(t *testing.T, engineSends, v6 bool) (w, r net.Conn) {
	t.Helper()
	kAddr, eAddr := engKernel4, engEngine4
	if v6 {
		kAddr, eAddr = engKernel6, engEngine6
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if engineSends {
		ln := g.listenKernel(t, kAddr, false)
		acc := acceptAsync(ln)
		ec, err := g.eng.Dial(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("engine dial: %v", err)
		}
		kc := <-acc
		if kc == nil {
			t.Fatal("kernel accept failed")
		}
		return ec, kc
	}
	ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(eAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := acceptAsync(ln)
	kc, err := g.dialKernel(ctx, ln.Addr().String(), false)
	if err != nil {
		t.Fatalf("kernel dial: %v", err)
	}
	ec := <-acc
	if ec == nil {
		t.Fatal("engine accept failed")
	}
	return kc, ec
}

func acceptAsync(ln net.Listener) <-chan net.Conn {
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	return acc
}

// kernelCounters snapshots the kernel's error counters in the namespace.
func (g *engineTUN) kernelCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	all, err := g.ns.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint64, len(kernelErrorCounters))
	for _, k := range kernelErrorCounters {
		m[k] = all[k]
	}
	return m
}

// checkKernelCounters fails the test for every error counter that moved
// since before, and for engine-side drops of invalid segments.
func (g *engineTUN) checkKernelCounters(t *testing.T, before map[string]uint64) {
	t.Helper()
	g.checkKernelCountersExcept(t, before)
}

// checkKernelCountersExcept is checkKernelCounters without the kernel
// counters named in except, which the caller checks more precisely.
func (g *engineTUN) checkKernelCountersExcept(t *testing.T, before map[string]uint64, except ...string) {
	t.Helper()
	after := g.kernelCounters(t)
	for _, k := range kernelErrorCounters {
		if after[k] != before[k] && !slices.Contains(except, k) {
			t.Errorf("kernel counter %s moved: %d -> %d", k, before[k], after[k])
		}
	}
	if st := g.eng.Stats(); st.ChecksumErrors != 0 || st.Malformed != 0 {
		t.Errorf("engine dropped segments from the kernel: %+v", st)
	}
}

// verifiedTransfer sends n seeded pseudo-random bytes from w to r, then
// half-closes w, and checks r read exactly them (SHA-256) and then EOF.
// Both conns are closed on return.
func verifiedTransfer(w, r net.Conn, n int64, timeout time.Duration) (time.Duration, error) {
	defer w.Close()
	defer r.Close()
	deadline := time.Now().Add(timeout)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)
	type result struct {
		n   int64
		sum []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		h := sha256.New()
		k, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
		done <- result{k, h.Sum(nil), err}
	}()
	start := time.Now()
	rng := rand.NewChaCha8([32]byte{'e', 'n', 'g'})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var sendErr error
	for sent := int64(0); sent < n; {
		k := int(min(int64(len(buf)), n-sent))
		rng.Read(buf[:k])
		h.Write(buf[:k])
		m, err := w.Write(buf[:k])
		sent += int64(m)
		if err != nil {
			sendErr = fmt.Errorf("write after %d bytes: %w", sent, err)
			r.Close()
			break
		}
	}
	if sendErr == nil {
		sendErr = w.(interface{ CloseWrite() error }).CloseWrite()
	}
	res := <-done
	elapsed := time.Since(start)
	switch {
	case sendErr != nil:
		return elapsed, sendErr
	case res.err != nil:
		return elapsed, fmt.Errorf("read after %d bytes: %w", res.n, res.err)
	case res.n != n:
		return elapsed, fmt.Errorf("received %d bytes, sent %d", res.n, n)
	case !bytes.Equal(res.sum, h.Sum(nil)):
		return elapsed, fmt.Errorf("SHA-256 mismatch: received %x, sent %x", res.sum, h.Sum(nil))
	}
	return elapsed, nil
}

func dirName(engineSends bool) string {
	if engineSends {
		return "engine->kernel"
	}
	return "kernel->engine"
}

// TestEngineTCPKernelBulk moves 256 MiB each way (engine as client sending
// to a kernel server, kernel client sending to an engine server), IPv4 and
// IPv6, and verifies the bytes by SHA-256. With -short it moves 16 MiB.
func TestEngineTCPKernelBulk(t *testing.T) {
	n := int64(256 << 20)
	if testing.Short() {
		n = 16 << 20
	}
	g := newEngineTUN(t, 1500)
	before := g.kernelCounters(t)
	for _, v6 := range []bool{false, true} {
		for _, engineSends := range []bool{true, false} {
			name := dirName(engineSends) + map[bool]string{false: "/ipv4", true: "/ipv6"}[v6]
			w, r := g.pair(t, engineSends, v6)
			ec := r
			if engineSends {
				ec = w
			}
			el, err := verifiedTransfer(w, r, n, 3*time.Minute)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			info := ec.(*stack.Conn).Info()
			t.Logf("%s: %d MiB verified in %v (%.0f MB/s); engine retransmitted %d bytes, %d RTOs",
				name, n>>20, el.Round(time.Millisecond), float64(n)/el.Seconds()/1e6, info.BytesRetrans, info.RTOs)
		}
	}
	g.checkKernelCounters(t, before)
}

// TestEngineTCPKernelHalfClose half-closes each side in turn: the side
// that sent its FIN first must still receive the other side's data, then
// EOF; both active and passive closes end without a reset.
func TestEngineTCPKernelHalfClose(t *testing.T) {
	g := newEngineTUN(t, 1500)
	before := g.kernelCounters(t)
	for _, engineFirst := range []bool{true, false} {
		name := "engine-FIN-first"
		if !engineFirst {
			name = "kernel-FIN-first"
		}
		t.Run(name, func(t *testing.T) {
			// The engine dials in one case and accepts in the other.
			w, r := g.pair(t, engineFirst, false)
			first, second := w, r // first sends "request" and its FIN first
			defer first.Close()
			defer second.Close()
			for _, c := range []net.Conn{first, second} {
				c.SetDeadline(time.Now().Add(20 * time.Second))
			}
			req := bytes.Repeat([]byte("request."), 10000)
			resp := bytes.Repeat([]byte("response"), 20000)
			if _, err := first.Write(req); err != nil {
				t.Fatal(err)
			}
			if err := first.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(second)
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("second side read %d bytes, %v; want the %d-byte request then EOF", len(got), err, len(req))
			}
			// Sending after having received the FIN (CLOSE-WAIT).
			if _, err := second.Write(resp); err != nil {
				t.Fatalf("write in CLOSE-WAIT: %v", err)
			}
			if err := second.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// Receiving after having sent the FIN (FIN-WAIT-2).
			got, err = io.ReadAll(first)
			if err != nil || !bytes.Equal(got, resp) {
				t.Fatalf("first side read %d bytes, %v; want the %d-byte response then EOF", len(got), err, len(resp))
			}
			ec := second
			if engineFirst {
				ec = first
			}
			// The engine's side ends in TIME-WAIT (it closed first) or
			// CLOSED (LAST-ACK acknowledged), never by a reset.
			deadline := time.Now().Add(5 * time.Second)
			for {
				st := ec.(*stack.Conn).State()
				if engineFirst && st.String() == "TIME-WAIT" || !engineFirst && st.String() == "CLOSED" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("engine connection in %v, want %s", st, map[bool]string{true: "TIME-WAIT", false: "CLOSED"}[engineFirst])
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	g.checkKernelCounters(t, before)
}

// TestEngineTCPKernelRefused checks RST generation both ways: the engine
// answers a kernel SYN to a port without listener with a RST (the kernel's
// connect fails with ECONNREFUSED), and the kernel's RST makes the
// engine's Dial fail with ECONNREFUSED.
func TestEngineTCPKernelRefused(t *testing.T) {
	g := newEngineTUN(t, 1500)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range []netip.Addr{engEngine4, engEngine6} {
		before := g.eng.Stats().ResetsSentUnknown
		_, err := g.dialKernel(ctx, netip.AddrPortFrom(a, 9).String(), false)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("kernel connect to engine %v port 9: %v, want ECONNREFUSED", a, err)
		}
		if after := g.eng.Stats().ResetsSentUnknown; after != before+1 {
			t.Errorf("engine ResetsSentUnknown %d -> %d, want one RST", before, after)
		}
	}
	for _, a := range []netip.Addr{engKernel4, engKernel6} {
		_, err := g.eng.Dial(ctx, "tcp", netip.AddrPortFrom(a, 9).String())
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) || oe.Op != "dial" {
			t.Errorf("engine dial to kernel %v port 9: %v, want a dial *net.OpError with ECONNREFUSED", a, err)
		}
	}
}

// TestEngineTCPKernelShortConnections opens 1000 short request/response
// connections in a row each way. The kernel side always closes first, so
// the kernel holds TIME-WAIT and the engine exercises the passive close
// (CLOSE-WAIT, LAST-ACK); every connection must complete without a reset.
func TestEngineTCPKernelShortConnections(t *testing.T) {
	const n = 1000
	g := newEngineTUN(t, 1500)
	before := g.kernelCounters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	msg := func(i int) []byte { return []byte(fmt.Sprintf("connection %04d says hello", i)) }

	t.Run("engine-client", func(t *testing.T) {
		ln := g.listenKernel(t, engKernel4, false)
		go func() {
			for i := 0; ; i++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// Read the fixed-size request, answer, close first.
				buf := make([]byte, len(msg(0)))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
				c.Close()
			}
		}()
		start := time.Now()
		for i := range n {
			c, err := g.eng.Dial(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(msg(i)); err != nil {
				t.Fatalf("connection %d: write: %v", i, err)
			}
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg(i)) {
				t.Fatalf("connection %d: read %q, %v", i, got, err)
			}
			c.Close()
		}
		t.Logf("%d connections in %v", n, time.Since(start).Round(time.Millisecond))
	})

	t.Run("kernel-client", func(t *testing.T) {
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(engEngine4, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(c)
				if err == nil {
					c.Write(got)
				}
				c.Close()
			}
		}()
		start := time.Now()
		for i := range n {
			c, err := g.dialKernel(ctx, ln.Addr().String(), false)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(msg(i)); err != nil {
				t.Fatalf("connection %d: write: %v", i, err)
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg(i)) {
				t.Fatalf("connection %d: read %q, %v", i, got, err)
			}
			c.Close()
		}
		t.Logf("%d connections in %v", n, time.Since(start).Round(time.Millisecond))
	})
	g.checkKernelCounters(t, before)
	if got := strconv.Itoa(int(g.eng.Stats().AcceptQueueOverflows)); got != "0" {
		t.Errorf("engine accept queue overflowed %s times", got)
	}
}
