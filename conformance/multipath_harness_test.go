package conformance

// Harness of the multipath conformance tests (multipath_test.go): the
// topology of the kernel's mptcp_join.sh with the engine in place of one
// of its two namespaces. One kernel namespace holds four TUN devices;
// path i (1..4) is TUN mpj<i>, whose kernel side has 10.0.i.1/24 and
// dead:beef:i::1/64 and behind which the engine has 10.0.i.2 and
// dead:beef:i::2 (one engine NIC per TUN):
//
//	kernel namespace                     engine (this process)
//	10.0.1.1  dead:beef:1::1  mpj1 <-TUN-> NIC 1  10.0.1.2  dead:beef:1::2
//	10.0.2.1  dead:beef:2::1  mpj2 <-TUN-> NIC 2  10.0.2.2  dead:beef:2::2
//	10.0.3.1  dead:beef:3::1  mpj3 <-TUN-> NIC 3  10.0.3.2  dead:beef:3::2
//	10.0.4.1  dead:beef:4::1  mpj4 <-TUN-> NIC 4  10.0.4.2  dead:beef:4::2
//
// The engine is a strong host (gVisor delivers a packet only on the NIC
// that owns its destination) and routes a subflow out of the NIC of its
// source address, so a subflow runs over the TUN of its engine-side
// address; the kernel is a weak host. What a case checks is what
// mptcp_join.sh checks (the chk_* helpers: join, ADD_ADDR, port,
// REMOVE_ADDR, MP_PRIO, stale, fastclose counters on the side that counts
// each, link usage), on both sides: the kernel's MPTcpExt counters (nstat)
// and the engine's counters of the same names (Engine.MPTCPStats), plus
// the subflow lists of both ends and the SHA-256 of a transfer in both
// directions at once.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/tun"
)

// mpNSPrefix names the namespaces of the multipath tests.
const mpNSPrefix = "mpj"

// mpPaths is the number of paths (TUN devices) of the topology.
const mpPaths = 4

// mpIfc is the TUN of path i (1-based) in the kernel namespace.
func mpIfc(path int) string { return fmt.Sprintf("mpj%d", path) }

// mpKernelAddr is the kernel's address on path i.
func mpKernelAddr(path int, v6 bool) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("dead:beef:%d::1", path))
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(path), 1})
}

// mpEngineAddr is the engine's address on path i.
func mpEngineAddr(path int, v6 bool) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("dead:beef:%d::2", path))
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(path), 2})
}

// mpPathOf returns the path of an address of either side (0 if none).
func mpPathOf(a netip.Addr) int {
	a = a.Unmap()
	for i := 1; i <= mpPaths; i++ {
		for _, v6 := range []bool{false, true} {
			if a == mpKernelAddr(i, v6) || a == mpEngineAddr(i, v6) {
				return i
			}
		}
	}
	return 0
}

// mpRigConfig is one topology's configuration: the engine's MPTCP
// settings and the kernel's path manager.
type mpRigConfig struct {
	// Engine is the engine's MPTCP configuration (endpoints, limits,
	// ADD_ADDR timeout, C flag).
	Engine stack.MPTCPConfig
	// KernelLimits are the kernel's `ip mptcp limits` (subflows,
	// add_addr_accepted); the kernel's own defaults (2, 0) when nil.
	KernelLimits *[2]int
	// KernelEndpoints are added with `ip mptcp endpoint add` before the
	// connection.
	KernelEndpoints []netns.Endpoint
	// KernelSysctls are set in the namespace (e.g.
	// net.mptcp.add_addr_timeout, net.mptcp.allow_join_initial_addr_port).
	KernelSysctls map[string]string
	// Nft, if set, is loaded into the namespace (nft -f) before the
	// connection.
	Nft string
	// ShapeMbit, if positive, limits every path to that rate in each
	// direction (tbf on the TUN for the kernel's packets, tbf on an ifb
	// fed by the TUN's ingress for the engine's), as mptcp_join.sh's
	// init_shapers does with netem rate: without a bottleneck one
	// subflow takes everything and the others stay idle.
	ShapeMbit int
	// ShapePaths is how many paths (from path 1) ShapeMbit shapes; all
	// when zero.
	ShapePaths int
}

// mpRig is the four-path topology of one case.
type mpRig struct {
	cfg  mpRigConfig
	ns   *netns.NS
	eng  *stack.Engine
	tuns []*tun.Endpoint // path i is tuns[i-1]
	log  *mpEventLog
	// capture is the pcap of every TUN (kernel side) while the case
	// runs; kept if the case fails.
	capture string
}

// mpCheck skips t unless the multipath tests can run here.
func mpCheck(t *testing.T) {
	t.Helper()
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "nstat", "ss", "sysctl")
}

// newMPRig builds the topology: namespace, four TUNs, engine with one NIC
// per TUN, kernel sysctls, limits and endpoints. Everything is removed at
// cleanup.
func newMPRig(t *testing.T, cfg mpRigConfig) *mpRig {
	t.Helper()
	mpCheck(t)
	r := &mpRig{cfg: cfg, ns: netns.New(t, mpNSPrefix), log: &mpEventLog{start: time.Now()}}
	opts := stack.Options{MPTCP: cfg.Engine}
	opts.MPTCP.Tracer = mptcp.MultiTracer(cfg.Engine.Tracer, r.log.tracer())
	eng, err := stack.NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.eng = eng
	t.Cleanup(func() {
		r.eng.Close() // removes the NICs, which closes the TUNs
		done := make(chan struct{})
		go func() {
			for _, ep := range r.tuns {
				ep.Close()
				ep.Wait()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("TUN goroutines did not stop within 10s")
		}
	})
	// One sysctl and one `ip -batch` for the whole kernel side: a
	// command in the namespace costs about 10 ms, and there are many
	// rigs.
	sysctls := []string{"-qw", "net.mptcp.enabled=1", "net.mptcp.pm_type=0", "net.mptcp.checksum_enabled=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"}
	for _, k := range slices.Sorted(maps.Keys(cfg.KernelSysctls)) {
		sysctls = append(sysctls, k+"="+cfg.KernelSysctls[k])
	}
	r.ns.MustRun("sysctl", sysctls...)
	var batch strings.Builder
	for i := 1; i <= mpPaths; i++ {
		var ep *tun.Endpoint
		if err := r.ns.Do(func() (err error) {
			ep, err = tun.Create(mpIfc(i), 1500)
			return err
		}); err != nil {
			t.Fatalf("creating TUN %s: %v", mpIfc(i), err)
		}
		r.tuns = append(r.tuns, ep)
		if _, err := eng.AddNIC(ep, netip.PrefixFrom(mpEngineAddr(i, false), 24), netip.PrefixFrom(mpEngineAddr(i, true), 64)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&batch, "link set %[1]s mtu 1500\naddr add %[2]v/24 dev %[1]s\naddr add %[3]v/64 dev %[1]s nodad\nlink set %[1]s up\n",
			mpIfc(i), mpKernelAddr(i, false), mpKernelAddr(i, true))
	}
	if l := cfg.KernelLimits; l != nil {
		fmt.Fprintf(&batch, "mptcp limits set subflows %d add_addr_accepted %d\n", l[0], l[1])
	}
	for _, e := range cfg.KernelEndpoints {
		fmt.Fprintf(&batch, "mptcp endpoint add %s\n", strings.Join(e.Args(), " "))
	}
	batchFile := filepath.Join(t.TempDir(), "ip.batch")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r.ns.MustRun("ip", "-batch", batchFile)
	if cfg.ShapeMbit > 0 {
		netns.RequireTools(t, "tc")
		n := cfg.ShapePaths
		if n <= 0 {
			n = mpPaths
		}
		for i := 1; i <= n; i++ {
			r.shape(t, i, cfg.ShapeMbit)
		}
	}
	if cfg.Nft != "" {
		netns.RequireTools(t, "nft")
		if err := r.ns.Nft(cfg.Nft); err != nil {
			t.Fatal(err)
		}
	}
	r.captureOnFailure(t)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MPTUND_MP_EVENTS") == "1" {
			t.Logf("engine events:\n%s", r.log.String())
			if out, err := r.ns.Run("ip", "mptcp", "endpoint", "show"); err == nil {
				t.Logf("kernel endpoints:\n%s", out)
			}
		}
	})
	return r
}

// captureOnFailure records every TUN (kernel side, tcpdump -i any) while
// the case runs and keeps the capture in a fresh directory under
// os.TempDir() if the case fails. MPTUND_MP_CAPTURE=1 keeps it always.
func (r *mpRig) captureOnFailure(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil || os.Getenv("MPTUND_MP_CAPTURE") == "0" {
		return
	}
	file := filepath.Join(t.TempDir(), "mpj.pcap")
	// Headers and options only: a bulk transfer's payload is not needed
	// to see what the MPTCP signalling did.
	stop := r.ns.Capture(t, "any", file, "-s", "200", "tcp")
	r.capture = file
	t.Cleanup(func() {
		stop()
		if !t.Failed() && os.Getenv("MPTUND_MP_CAPTURE") != "1" {
			return
		}
		dir, err := os.MkdirTemp("", "mpj-capture-")
		if err != nil {
			t.Logf("keeping capture: %v", err)
			return
		}
		dst := filepath.Join(dir, strings.NewReplacer("/", "_").Replace(t.Name())+".pcap")
		keepCapture(t, file, dst)
		t.Logf("capture kept in %s", dst)
	})
}

// --- Engine events ------------------------------------------------------------

// mpEventLog records the engine's MPTCP events (its Tracer) with the time
// since the rig was built; dumped when a case fails.
type mpEventLog struct {
	start time.Time
	mu    sync.Mutex
	lines []string
	// closed are the subflows as they were when they closed (their
	// final byte counters), ConnInfo listing only live ones.
	closed []mptcp.SubflowInfo
}

func (l *mpEventLog) closedSubflows() []mptcp.SubflowInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.closed)
}

func (l *mpEventLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) < 2000 {
		l.lines = append(l.lines, fmt.Sprintf("%8.3fs ", time.Since(l.start).Seconds())+fmt.Sprintf(format, args...))
	}
}

func (l *mpEventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return "\t" + strings.Join(l.lines, "\n\t")
}

func sfString(s mptcp.SubflowInfo) string {
	return fmt.Sprintf("#%d %v->%v ids %d/%d join=%v backup=%v(local %v peer %v)", s.ID, s.Local, s.Remote, s.LocalID, s.RemoteID, s.Join, s.Backup, s.LocalBackup, s.PeerBackup)
}

func (l *mpEventLog) tracer() *mptcp.Tracer {
	return &mptcp.Tracer{
		Established: func(c *mptcp.Conn) { l.add("established") },
		Closed:      func(c *mptcp.Conn, err error) { l.add("closed: %v", err) },
		Fallback:    func(c *mptcp.Conn, r mptcp.FallbackReason) { l.add("fallback: %v", r) },
		SubflowAdded: func(c *mptcp.Conn, s mptcp.SubflowInfo) {
			l.add("subflow added %s", sfString(s))
		},
		SubflowEstablished: func(c *mptcp.Conn, s mptcp.SubflowInfo) {
			l.add("subflow established %s", sfString(s))
		},
		SubflowClosed: func(c *mptcp.Conn, s mptcp.SubflowInfo, err error) {
			l.add("subflow closed %s sent=%d received=%d: %v", sfString(s), s.TCP.BytesSent, s.TCP.BytesReceived, err)
			l.mu.Lock()
			l.closed = append(l.closed, s)
			l.mu.Unlock()
		},
		SubflowPriority: func(c *mptcp.Conn, s mptcp.SubflowInfo, local bool) {
			l.add("subflow priority (local=%v) %s", local, sfString(s))
		},
		AddressAnnounced: func(c *mptcp.Conn, a mptcp.Address, local bool) {
			l.add("address announced (local echo=%v) id %d %v port %d", local, a.ID, a.Addr, a.Port)
		},
		AddressRemoved: func(c *mptcp.Conn, id uint8, local bool) { l.add("address removed (local=%v) id %d", local, id) },
		Reinjected: func(c *mptcp.Conn, n int, from, to uint32) {
			l.add("reinjected %d bytes from #%d to #%d", n, from, to)
		},
	}
}

// --- Connections ----------------------------------------------------------------

// mpConn is one engine <-> kernel MPTCP connection of a rig.
type mpConn struct {
	eng          *stack.Conn
	kern         *net.TCPConn
	engineClient bool
	v6           bool
	// serverPort is the server's port (the connection's initial port).
	serverPort uint16
}

// engineAddr and kernelAddr are the addresses of the initial subflow.
func (c *mpConn) engineAddr() netip.Addr { return mpEngineAddr(1, c.v6) }
func (c *mpConn) kernelAddr() netip.Addr { return mpKernelAddr(1, c.v6) }

// open connects the engine and a kernel MPTCP socket over path 1: the
// engine dials a kernel listener (dual stack, as mptcp_join.sh's "::"
// listener) when engineClient, otherwise a kernel socket dials an engine
// listener. Then a few bytes go each way so that both ends are fully
// established (RFC 8684 §3.1) and their path managers act.
func (r *mpRig) open(t *testing.T, engineClient, v6 bool) *mpConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &mpConn{engineClient: engineClient, v6: v6}
	if engineClient {
		var ln net.Listener
		if err := r.ns.Do(func() (err error) {
			var lc net.ListenConfig
			lc.SetMultipathTCP(true)
			ln, err = lc.Listen(context.Background(), "tcp", ":0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// The listener stays open with the connection, as mptcp_join.sh's
		// server does: the kernel takes joins to the initial port
		// through it.
		t.Cleanup(func() { ln.Close() })
		c.serverPort = uint16(ln.Addr().(*net.TCPAddr).Port)
		acc := acceptAsync(ln)
		ec, err := r.eng.Dial(ctx, "tcp", netip.AddrPortFrom(c.kernelAddr(), c.serverPort).String())
		if err != nil {
			t.Fatalf("engine dial: %v", err)
		}
		kc := <-acc
		if kc == nil {
			ec.Close()
			t.Fatal("kernel accept failed")
		}
		c.eng, c.kern = ec.(*stack.Conn), kc.(*net.TCPConn)
	} else {
		ln, err := r.eng.Listen("tcp", netip.AddrPortFrom(c.engineAddr(), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		c.serverPort = uint16(ln.Addr().(*net.TCPAddr).Port)
		acc := acceptAsync(ln)
		var kc net.Conn
		if err := r.ns.Do(func() (err error) {
			var d net.Dialer
			d.SetMultipathTCP(true)
			kc, err = d.DialContext(ctx, "tcp", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatalf("kernel dial: %v", err)
		}
		ec := <-acc
		if ec == nil {
			kc.Close()
			t.Fatal("engine accept failed")
		}
		c.eng, c.kern = ec.(*stack.Conn), kc.(*net.TCPConn)
	}
	t.Cleanup(func() { c.eng.Close(); c.kern.Close() })
	// Hello both ways.
	for _, p := range []struct {
		w, r net.Conn
		what string
	}{{c.eng, c.kern, "engine->kernel"}, {c.kern, c.eng, "kernel->engine"}} {
		p.r.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.w.Write([]byte("hello")); err != nil {
			t.Fatalf("%s hello: %v", p.what, err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(p.r, buf); err != nil {
			t.Fatalf("%s hello: %v", p.what, err)
		}
		p.r.SetReadDeadline(time.Time{})
	}
	if ci := c.eng.ConnInfo(); !ci.MPTCP {
		t.Fatalf("the connection is not MPTCP: fallback %q", ci.Fallback)
	}
	return c
}

// liveSubflows returns the engine's subflows that are established and
// not closed.
func liveSubflows(ci stack.ConnInfo) []stack.SubflowInfo {
	var live []stack.SubflowInfo
	for _, s := range ci.Subflows {
		if s.Established && !s.Closed {
			live = append(live, s)
		}
	}
	return live
}

func subflowList(subs []stack.SubflowInfo) string {
	var b strings.Builder
	for _, s := range subs {
		fmt.Fprintf(&b, "\n\t%s established=%v closed=%v stale=%v sent=%d", sfString(s), s.Established, s.Closed, s.Stale, s.BytesSent)
	}
	return b.String()
}

// kernelSubflows counts the kernel's established MPTCP subflow sockets
// (TCP sockets with the mptcp ULP), as mptcp_join.sh's chk_subflow_nr
// does with `ss -tOni | grep -c token`.
func (r *mpRig) kernelSubflows(t *testing.T) int {
	t.Helper()
	n, err := r.kernelSubflowCount()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// kernelSubflowCount is kernelSubflows for any goroutine.
func (r *mpRig) kernelSubflowCount() (int, error) {
	out, err := r.ns.Run("ss", "-tnOi", "state", "established")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "tcp-ulp-mptcp") {
			n++
		}
	}
	return n, nil
}

// waitFor polls cond every 10 ms until it holds or timeout passes; it
// reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- Counters -----------------------------------------------------------------

// mpSnap is both sides' MPTCP counters at one moment: the kernel's
// MPTcpExt counters (prefix removed) and the engine's.
type mpSnap struct {
	kernel, engine map[string]uint64
}

func (r *mpRig) snap(t *testing.T) mpSnap {
	t.Helper()
	k, err := r.ns.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	s := mpSnap{kernel: make(map[string]uint64, len(k)), engine: r.eng.MPTCPStats()}
	for name, v := range k {
		s.kernel[strings.TrimPrefix(name, "MPTcpExt")] = v
	}
	return s
}

// mpTCPErrors are the kernel's TCP counters of segments it found broken
// (bad checksum or header): they must not move whatever a case does. (The
// TcpExtTCPAbortOn* counters of kernelErrorCounters move legitimately
// here: subflows are reset.)
var mpTCPErrors = []string{"TcpInErrs", "TcpInCsumErrors"}

// kernelTCP returns the kernel's mpTCPErrors counters.
func (r *mpRig) kernelTCP(t *testing.T) map[string]uint64 {
	t.Helper()
	all, err := r.ns.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint64, len(mpTCPErrors))
	for _, k := range mpTCPErrors {
		m[k] = all[k]
	}
	return m
}

// checkWire fails t if the kernel found broken segments since before, or
// the engine dropped undecodable ones.
func (r *mpRig) checkWire(t *testing.T, before map[string]uint64) {
	t.Helper()
	after := r.kernelTCP(t)
	for _, k := range mpTCPErrors {
		if after[k] != before[k] {
			t.Errorf("kernel counter %s moved: %d -> %d", k, before[k], after[k])
		}
	}
	if st := r.eng.Stats(); st.ChecksumErrors != 0 || st.Malformed != 0 || st.MalformedOptions != 0 {
		t.Errorf("engine dropped segments from the kernel: %+v", st)
	}
}

// rng is an expected counter range: exactly lo when hi == lo, at least lo
// when hi < 0.
type rng struct{ lo, hi int64 }

func exactly(n int64) rng { return rng{n, n} }
func atLeast(n int64) rng { return rng{n, -1} }
func between(lo, hi int64) rng {
	return rng{lo, hi}
}

func (x rng) ok(v int64) bool { return v >= x.lo && (x.hi < 0 || v <= x.hi) }

func (x rng) String() string {
	switch {
	case x.hi == x.lo:
		return fmt.Sprint(x.lo)
	case x.hi < 0:
		return fmt.Sprintf(">= %d", x.lo)
	}
	return fmt.Sprintf("%d..%d", x.lo, x.hi)
}

// mpExpect is what a case expects each side to count, in mptcp_join.sh's
// terms. Counters without an expectation are checked only if they are
// error counters (must not move, mpKernelErrors and mpEngineErrors)
// unless listed in allow.
type mpExpect struct {
	kernel, engine           map[string]rng
	allowKernel, allowEngine []string
	// notes explain an expectation in its failure message.
	notes map[string]string
}

func newExpect() *mpExpect {
	return &mpExpect{kernel: map[string]rng{}, engine: map[string]rng{}, notes: map[string]string{}}
}

// note attaches an explanation to the expectations of counter name.
func (x *mpExpect) note(name, why string) { x.notes[name] = why }

func (x *mpExpect) side(kernel bool) map[string]rng {
	if kernel {
		return x.kernel
	}
	return x.engine
}

// add adds n to an exact expectation (creating it at n).
func (x *mpExpect) add(kernel bool, name string, n int64) {
	m := x.side(kernel)
	v := m[name]
	m[name] = exactly(v.lo + n)
}

// set sets an expectation.
func (x *mpExpect) set(kernel bool, name string, r rng) { x.side(kernel)[name] = r }

// allow lets an error counter of one side move without check.
func (x *mpExpect) allow(kernel bool, names ...string) {
	if kernel {
		x.allowKernel = append(x.allowKernel, names...)
	} else {
		x.allowEngine = append(x.allowEngine, names...)
	}
}

// join is chk_join_nr: the listener of the joins received syn MP_JOIN
// SYNs and ack valid third ACKs, the initiator synack valid SYN/ACKs and
// sent syn SYNs (chk_join_tx_nr); no HMAC failed.
func (x *mpExpect) join(listenerKernel bool, syn, synack, ack int64) {
	x.add(listenerKernel, "MPJoinSynRx", syn)
	x.add(listenerKernel, "MPJoinAckRx", ack)
	x.add(!listenerKernel, "MPJoinSynAckRx", synack)
	x.add(!listenerKernel, "MPJoinSynTx", syn)
	x.add(listenerKernel, "MPJoinAckHMacFailure", 0)
	x.add(!listenerKernel, "MPJoinSynAckHMacFailure", 0)
}

// addAddr is chk_add_tx_nr and chk_add_nr: the announcer sent addTx
// ADD_ADDRs and received echo echoes, the receiver counted add valid
// ADD_ADDRs and sent echoTx echoes.
func (x *mpExpect) addAddr(announcerKernel bool, addTx, add, echoTx, echo int64) {
	x.add(announcerKernel, "AddAddrTx", addTx)
	x.add(announcerKernel, "EchoAdd", echo)
	x.add(!announcerKernel, "AddAddr", add)
	x.add(!announcerKernel, "EchoAddTx", echoTx)
}

// rm is chk_rm_tx_nr and chk_rm_nr: the side that removed an address
// sent rmTx REMOVE_ADDRs and closed rmSubflow subflows of its own
// (the kernel's MPTCP_MIB_RMSUBFLOW); the other counted rmAddr removed
// address IDs (MPTCP_MIB_RMADDR).
func (x *mpExpect) rm(removerKernel bool, rmTx, rmAddr, rmSubflow int64) {
	x.set(removerKernel, "RmAddrTx", exactly(rmTx))
	x.set(removerKernel, "RmSubflow", exactly(rmSubflow))
	x.set(!removerKernel, "RmAddr", exactly(rmAddr))
}

// prio is chk_prio_nr: MP_PRIO sent by one side, received by the other.
func (x *mpExpect) prio(senderKernel bool, n int64) {
	x.add(senderKernel, "MPPrioTx", n)
	x.add(!senderKernel, "MPPrioRx", n)
}

// mpKernelErrors are the kernel's MPTcpExt counters that must not move
// unless a case expects them: mptcpErrorCounters (the single-path
// harness's list, which includes every join and address error) and the
// abort counters.
func mpKernelErrors() []string {
	var names []string
	for _, c := range mptcpErrorCounters {
		names = append(names, c.name)
	}
	return append(names, mptcpAbortCounters...)
}

// mpEngineErrors are the engine's counters that must not move unless a
// case expects them: each is a fault the kernel peer must never cause
// (or the engine's own fallback or abort).
//
// NoDSSInWindow is not among them: a Linux sender takes its window end
// as the newest Data ACK plus the window of the subflow that carried it,
// and a subflow's TCP keeps an older, larger window when a pure ACK
// brings a smaller one (RFC 9293's SND.WL1/WL2 rule), so with several
// subflows and a reader falling behind it can send past the edge the
// engine offered, by more than the reassembler's slack. The engine then
// drops and counts those bytes as Linux does (MPTcpExtNoDSSInWindow) and
// the sender retransmits them: data is verified in every case, and
// TestMultipathReceiveWindow checks that the engine refuses nothing it
// offered.
var mpEngineErrors = []string{
	"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSNotMatching", "InfiniteMapTx", "InfiniteMapRx",
	"DataCsumErr", "OFODrop", "DataAckInvalid", "DataFinInvalid", "MPFastcloseTx",
	"MPFastcloseRx", "MPFastcloseBadKey", "MPRstTx", "MPRstRx", "DssFallback", "FallbackNoKey",
	"OptionIgnored", "DataAckStallReset", "MPJoinNoTokenFound", "MPJoinRejected",
	"MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure", "AddAddrDrop",
}

// check compares the counters that moved between two snapshots with x.
func (x *mpExpect) check(t *testing.T, label string, before, after mpSnap) {
	t.Helper()
	for _, sd := range []struct {
		name     string
		b, a     map[string]uint64
		want     map[string]rng
		errs     []string
		allowed  []string
		isKernel bool
	}{
		{"kernel", before.kernel, after.kernel, x.kernel, mpKernelErrors(), x.allowKernel, true},
		{"engine", before.engine, after.engine, x.engine, mpEngineErrors, x.allowEngine, false},
	} {
		for _, name := range slices.Sorted(maps.Keys(sd.want)) {
			if _, ok := sd.a[name]; !ok {
				t.Errorf("%s: %s has no counter %s", label, sd.name, name)
				continue
			}
			d := int64(sd.a[name] - sd.b[name])
			if want := sd.want[name]; !want.ok(d) {
				why := ""
				if n := x.notes[name]; n != "" {
					why = " (" + n + ")"
				}
				t.Errorf("%s: %s %s moved by %d, want %v%s", label, sd.name, name, d, want, why)
			}
		}
		for _, name := range sd.errs {
			if _, ok := sd.want[name]; ok || slices.Contains(sd.allowed, name) {
				continue
			}
			if d := int64(sd.a[name] - sd.b[name]); d != 0 {
				t.Errorf("%s: %s error counter %s moved by %d", label, sd.name, name, d)
			}
		}
	}
}

// logMoved logs both sides' counters that moved.
func logMoved(t *testing.T, label string, before, after mpSnap) {
	t.Helper()
	for _, sd := range []struct {
		name string
		b, a map[string]uint64
	}{{"kernel", before.kernel, after.kernel}, {"engine", before.engine, after.engine}} {
		var moved []string
		for _, k := range slices.Sorted(maps.Keys(sd.a)) {
			if d := int64(sd.a[k] - sd.b[k]); d != 0 && k != "MPCurrEstab" {
				moved = append(moved, fmt.Sprintf("%s=%d", k, d))
			}
		}
		t.Logf("%s: %s counters moved: %s", label, sd.name, strings.Join(moved, " "))
	}
}

// --- Transfers ----------------------------------------------------------------

// mpXfer describes a transfer in both directions at once.
type mpXfer struct {
	// n bytes each way.
	n int64
	// rate, if positive, paces each writer to about rate bytes/s, so
	// that something can happen in the middle of the transfer;
	// kernelUnpaced leaves the kernel's writer unpaced.
	rate          float64
	kernelUnpaced bool
	// at, with hook, runs hook once in the engine's writer after it wrote
	// at bytes (the kernel's writer goes on meanwhile); kernelAt and
	// kernelHook likewise in the kernel's writer.
	at         int64
	hook       func()
	kernelAt   int64
	kernelHook func()
	// timeout bounds the whole transfer.
	timeout time.Duration
}

// mpXferResult is what a transfer did.
type mpXferResult struct {
	elapsed time.Duration
	// engineErr and kernelErr are the first error of each direction
	// (writer or reader), nil when it arrived intact (SHA-256).
	e2k, k2e error
	// linkBefore and linkAfter are the kernel's counters of every TUN.
	linkBefore, linkAfter [mpPaths + 1]mpLinkBytes
	// hookWritten is how much the engine's writer had written when the
	// hook ran, and kernWrittenAtHook the kernel's writer.
	hookWritten, kernWrittenAtHook int64
	// received are the bytes read by the kernel and by the engine,
	// readErr their readers' errors and writeErr the writers' (engine,
	// kernel).
	received, mismatch [2]int64
	readErr, writeErr  [2]error
	// info is the engine's view of the connection right after the
	// transfer (its live subflows), closed the subflows closed by then.
	info   stack.ConnInfo
	closed []stack.SubflowInfo
}

// subflowBytes returns what the engine sent and received on the subflows
// matching w during the transfer's connection (whole life: the live
// subflows and those closed meanwhile).
func (res *mpXferResult) subflowBytes(w mpSubflowWant) (sent, rcvd int64, found bool) {
	seen := map[uint32]bool{}
	for _, s := range append(slices.Clone(res.info.Subflows), res.closed...) {
		// ConnInfo lists the last closed subflows too, and the event log
		// has them: count each subflow once.
		if seen[s.ID] {
			continue
		}
		seen[s.ID] = true
		if w.matchesAddrs(s) {
			sent += int64(s.TCP.BytesSent)
			rcvd += int64(s.TCP.BytesReceived)
			found = true
		}
	}
	return sent, rcvd, found
}

// mpLinkBytes are the kernel's byte counters of a TUN: rx is what the
// engine sent over it, tx what the kernel sent.
type mpLinkBytes struct{ rx, tx uint64 }

func (r *mpRig) linkBytes(t *testing.T) (out [mpPaths + 1]mpLinkBytes) {
	t.Helper()
	for i := 1; i <= mpPaths; i++ {
		_, rx, _, tx, err := r.ns.LinkCounters(mpIfc(i))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = mpLinkBytes{rx: rx, tx: tx}
	}
	return out
}

// usage returns the share (percent) of the bytes of direction e2k (or
// k2e) that crossed path i during the transfer, relative to n, as
// mptcp_join.sh's chk_link_usage computes it (link bytes, headers
// included, over payload bytes).
func (res *mpXferResult) usage(i int, e2k bool, n int64) int64 {
	b, a := res.linkBefore[i], res.linkAfter[i]
	d := a.tx - b.tx
	if e2k {
		d = a.rx - b.rx
	}
	return int64(d) * 100 / n
}

// pacedWriter writes seeded pseudo-random bytes, paced to rate.
type mpWriter struct {
	w       net.Conn
	n       int64
	rate    float64
	seed    byte
	at      int64
	hook    func()
	written int64
	mu      sync.Mutex
}

func (p *mpWriter) progress() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written
}

// run writes, then half-closes; it returns the SHA-256 of what it wrote.
func (p *mpWriter) run() ([]byte, error) {
	rng := rand.NewChaCha8([32]byte{'m', 'p', 'j', p.seed})
	h := sha256.New()
	chunk := int64(64 << 10)
	buf := make([]byte, chunk)
	start := time.Now()
	hooked := p.hook == nil
	for sent := int64(0); sent < p.n; {
		k := min(chunk, p.n-sent)
		if !hooked && p.at > sent && p.at < sent+k {
			k = p.at - sent
		}
		rng.Read(buf[:k])
		h.Write(buf[:k])
		m, err := p.w.Write(buf[:k])
		sent += int64(m)
		p.mu.Lock()
		p.written = sent
		p.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("write after %d bytes: %w", sent, err)
		}
		if !hooked && sent >= p.at {
			hooked = true
			p.hook()
		}
		if p.rate > 0 {
			if d := time.Duration(float64(sent)/p.rate*float64(time.Second)) - time.Since(start); d > 0 {
				time.Sleep(d)
			}
		}
	}
	if err := p.w.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return nil, fmt.Errorf("close write: %w", err)
	}
	return h.Sum(nil), nil
}

// mpReader reads a connection to EOF, hashing what it reads (SHA-256)
// and comparing it with the stream the writer with the same seed
// produces, so that a transfer cut short (a reset) can still be checked
// byte for byte up to where it stopped.
type mpReader struct {
	n        int64
	sum      []byte
	mismatch int64 // offset of the first byte that differs, -1 if none
	err      error
}

func readAll(r net.Conn, seed byte) mpReader {
	want := rand.NewChaCha8([32]byte{'m', 'p', 'j', seed})
	h := sha256.New()
	res := mpReader{mismatch: -1}
	buf := make([]byte, 256<<10)
	exp := make([]byte, len(buf))
	for {
		k, err := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			want.Read(exp[:k])
			if res.mismatch < 0 {
				for i := range k {
					if buf[i] != exp[i] {
						res.mismatch = res.n + int64(i)
						break
					}
				}
			}
			res.n += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.sum = h.Sum(nil)
	return res
}

// transfer moves x.n bytes each way at once over c and checks each
// direction's SHA-256; the conns are not closed.
func (r *mpRig) transfer(t *testing.T, c *mpConn, x mpXfer) *mpXferResult {
	t.Helper()
	if x.timeout == 0 {
		x.timeout = 30 * time.Second
	}
	res := &mpXferResult{linkBefore: r.linkBytes(t)}
	deadline := time.Now().Add(x.timeout)
	c.eng.SetDeadline(deadline)
	c.kern.SetDeadline(deadline)
	defer c.eng.SetDeadline(time.Time{})
	defer c.kern.SetDeadline(time.Time{})
	ew := &mpWriter{w: c.eng, n: x.n, rate: x.rate, seed: 'e'}
	kw := &mpWriter{w: c.kern, n: x.n, rate: x.rate, seed: 'k'}
	if x.kernelUnpaced {
		kw.rate = 0
	}
	if x.hook != nil {
		ew.at = x.at
		ew.hook = func() {
			res.hookWritten = x.at
			res.kernWrittenAtHook = kw.progress()
			x.hook()
		}
	}
	if x.kernelHook != nil {
		kw.at, kw.hook = x.kernelAt, x.kernelHook
	}
	var wg sync.WaitGroup
	var eSum, kSum []byte
	var eErr, kErr error
	var toKernel, toEngine mpReader
	start := time.Now()
	wg.Add(4)
	go func() { defer wg.Done(); eSum, eErr = ew.run() }()
	go func() { defer wg.Done(); kSum, kErr = kw.run() }()
	go func() { defer wg.Done(); toKernel = readAll(c.kern, 'e') }()
	go func() { defer wg.Done(); toEngine = readAll(c.eng, 'k') }()
	wg.Wait()
	res.elapsed = time.Since(start)
	res.linkAfter = r.linkBytes(t)
	verdict := func(wErr error, sum []byte, d mpReader) error {
		switch {
		case d.mismatch >= 0:
			return fmt.Errorf("received bytes differ from those sent from offset %d on (%d received)", d.mismatch, d.n)
		case wErr != nil:
			return wErr
		case d.err != nil:
			return fmt.Errorf("read after %d bytes: %w", d.n, d.err)
		case d.n != x.n:
			return fmt.Errorf("received %d bytes, sent %d", d.n, x.n)
		case string(d.sum) != string(sum):
			return fmt.Errorf("SHA-256 mismatch: received %x, sent %x", d.sum, sum)
		}
		return nil
	}
	res.e2k = verdict(eErr, eSum, toKernel)
	res.k2e = verdict(kErr, kSum, toEngine)
	res.received = [2]int64{toKernel.n, toEngine.n}
	res.mismatch = [2]int64{toKernel.mismatch, toEngine.mismatch}
	res.readErr = [2]error{toKernel.err, toEngine.err}
	res.writeErr = [2]error{eErr, kErr}
	res.info = c.eng.ConnInfo()
	res.closed = r.log.closedSubflows()
	return res
}

// mustTransfer is transfer that fails t unless both directions arrived
// intact.
func (r *mpRig) mustTransfer(t *testing.T, c *mpConn, x mpXfer) *mpXferResult {
	t.Helper()
	res := r.transfer(t, c, x)
	if res.e2k != nil {
		t.Errorf("engine -> kernel: %v", res.e2k)
	}
	if res.k2e != nil {
		t.Errorf("kernel -> engine: %v", res.k2e)
	}
	t.Logf("%d KiB each way in %v", x.n>>10, res.elapsed.Round(time.Millisecond))
	return res
}

// finish closes both ends and waits until the connection is gone on both
// sides (the kernel's MPCurrEstab back to where it was, the engine's
// Conn done), so that the counters of the closing handshakes are in.
func (r *mpRig) finish(t *testing.T, c *mpConn) {
	t.Helper()
	r.finishWithin(t, c, 5*time.Second)
}

// finishWithin is finish with a bound on the wait (a case whose paths
// failed leaves subflows that cannot finish their closing handshakes).
func (r *mpRig) finishWithin(t *testing.T, c *mpConn, wait time.Duration) {
	t.Helper()
	eErr := c.eng.Close()
	c.kern.Close()
	if eErr != nil && !errors.Is(eErr, net.ErrClosed) {
		t.Errorf("engine Close after a complete transfer: %v", eErr)
	}
	engineDone := func() bool {
		select {
		case <-c.eng.Finished():
			return true
		default:
			return false
		}
	}
	if !waitFor(wait, func() bool {
		k, err := r.ns.MPTCPCounters()
		return err == nil && k["MPTcpExtMPCurrEstab"] == 0 && engineDone()
	}) {
		t.Logf("connection not closed on both sides within %v (engine done=%v)", wait, engineDone())
	}
	time.Sleep(50 * time.Millisecond)
}

// --- Subflow expectations --------------------------------------------------------

// mpSubflowWant is one subflow a case expects the engine to list: its
// engine-side and kernel-side addresses (ports checked when non-zero),
// the address IDs each side gave it, whether it was opened by MP_JOIN,
// and its backup flags.
type mpSubflowWant struct {
	engine, kernel          netip.AddrPort
	engineID, kernelID      int // -1: not checked
	join                    bool
	localBackup, peerBackup bool
}

func (w mpSubflowWant) String() string {
	return fmt.Sprintf("engine %v id %d <-> kernel %v id %d join=%v backup(local %v peer %v)", w.engine, w.engineID, w.kernel, w.kernelID, w.join, w.localBackup, w.peerBackup)
}

// matchesAddrs reports whether s has w's addresses.
func (w mpSubflowWant) matchesAddrs(s stack.SubflowInfo) bool {
	eq := func(want, got netip.AddrPort) bool {
		return want.Addr() == got.Addr().Unmap() && (want.Port() == 0 || want.Port() == got.Port())
	}
	return eq(w.engine, s.Local) && eq(w.kernel, s.Remote)
}

func (w mpSubflowWant) matches(s stack.SubflowInfo) bool {
	eq := func(want, got netip.AddrPort) bool {
		return want.Addr() == got.Addr().Unmap() && (want.Port() == 0 || want.Port() == got.Port())
	}
	return eq(w.engine, s.Local) && eq(w.kernel, s.Remote) && s.Join == w.join &&
		(w.engineID < 0 || int(s.LocalID) == w.engineID) && (w.kernelID < 0 || int(s.RemoteID) == w.kernelID) &&
		s.LocalBackup == w.localBackup && s.PeerBackup == w.peerBackup
}

// sub returns the expectation of a subflow between the engine's address
// on path ep and the kernel's on path kp.
func sub(v6 bool, ep, kp int) mpSubflowWant {
	return mpSubflowWant{engine: netip.AddrPortFrom(mpEngineAddr(ep, v6), 0), kernel: netip.AddrPortFrom(mpKernelAddr(kp, v6), 0),
		engineID: -1, kernelID: -1, join: true}
}

func (w mpSubflowWant) ids(engineID, kernelID int) mpSubflowWant {
	w.engineID, w.kernelID = engineID, kernelID
	return w
}

func (w mpSubflowWant) ports(engine, kernel uint16) mpSubflowWant {
	w.engine = netip.AddrPortFrom(w.engine.Addr(), engine)
	w.kernel = netip.AddrPortFrom(w.kernel.Addr(), kernel)
	return w
}

func (w mpSubflowWant) backup(local, peer bool) mpSubflowWant {
	w.localBackup, w.peerBackup = local, peer
	return w
}

// initialSub is the expectation of the connection's first subflow.
func initialSub(c *mpConn) mpSubflowWant {
	w := sub(c.v6, 1, 1).ids(0, 0)
	w.join = false
	if c.engineClient {
		w.kernel = netip.AddrPortFrom(w.kernel.Addr(), c.serverPort)
	} else {
		w.engine = netip.AddrPortFrom(w.engine.Addr(), c.serverPort)
	}
	return w
}

// checkSubflows compares the engine's live subflows with want (in any
// order, one each) and the kernel's count of established subflows.
func (r *mpRig) checkSubflows(t *testing.T, label string, c *mpConn, want ...mpSubflowWant) {
	t.Helper()
	live := liveSubflows(c.eng.ConnInfo())
	used := make([]bool, len(live))
	var missing []string
	for _, w := range want {
		found := false
		for i, s := range live {
			if !used[i] && w.matches(s) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, w.String())
		}
	}
	var extra []stack.SubflowInfo
	for i, s := range live {
		if !used[i] {
			extra = append(extra, s)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s: engine subflows differ: missing %d:\n\t%s\nunexpected %d:%s\nall live:%s", label, len(missing),
			strings.Join(missing, "\n\t"), len(extra), subflowList(extra), subflowList(live))
	}
	if k := r.kernelSubflows(t); k != len(want) {
		t.Errorf("%s: kernel has %d established subflows, want %d", label, k, len(want))
	}
}

// waitSubflows waits until the engine lists n live subflows and the
// kernel n established subflow sockets (or timeout), and returns whether
// they did.
func (r *mpRig) waitSubflows(t *testing.T, c *mpConn, n int, timeout time.Duration) bool {
	t.Helper()
	return waitFor(timeout, func() bool {
		return len(liveSubflows(c.eng.ConnInfo())) == n && r.kernelSubflows(t) == n
	})
}

// --- Paths --------------------------------------------------------------------

// shape limits path i to mbit in each direction.
func (r *mpRig) shape(t *testing.T, path, mbit int) {
	t.Helper()
	ifc, ifb := mpIfc(path), fmt.Sprintf("mpjb%d", path)
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
		if _, err := r.ns.Run(cmd[0], cmd[1:]...); err != nil {
			t.Skipf("cannot shape the paths: %v", err)
		}
	}
}

// setLink takes the kernel side of path i's TUN down or up.
func (r *mpRig) setLink(t *testing.T, path int, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	r.ns.MustRun("ip", "link", "set", mpIfc(path), state)
}

// blackhole drops every packet crossing path i's TUN, both ways, in the
// kernel namespace (nftables).
func (r *mpRig) blackhole(t *testing.T, path int) {
	t.Helper()
	netns.RequireTools(t, "nft")
	if err := r.ns.Nft(fmt.Sprintf(`table inet mpj_blackhole%d {
	chain in {
		type filter hook prerouting priority -300;
		iifname "%s" counter drop
	}
	chain out {
		type filter hook postrouting priority 300;
		oifname "%s" counter drop
	}
}
`, path, mpIfc(path), mpIfc(path))); err != nil {
		t.Fatal(err)
	}
}

// --- Misc -----------------------------------------------------------------------

// mpSize is the default transfer size of each direction.
func mpSize() int64 {
	if *mpLong {
		return 32 << 20
	}
	return 4 << 20
}
