package conformance

// Harness of the engine's MPTCP conformance tests (engine_mptcp_test.go):
// an engine with a chosen MPTCP configuration on a TUN whose kernel side
// lives in a fresh namespace, kernel MPTCP (or plain TCP) sockets in that
// namespace, and the kernel's three views of a connection used as ground
// truth: its MPTcpExt counters (nstat), `ss -Mtni`, and the MPTCP_INFO
// socket option of the kernel's own socket.
//
// It builds on the engine TCP harness (engine_tcp_test.go): the topology is
// an *engineTUN, so kernelCounters/checkKernelCounters and verifiedTransfer
// apply unchanged. newEngineTUN itself cannot be called because it fixes
// the engine's options (MPTCP on, no checksums) and the namespace prefix.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/tun"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"golang.org/x/sys/unix"
)

// mptcpNSPrefix names the namespaces of the engine MPTCP tests.
const mptcpNSPrefix = "mptm"

// mptcpIfc is the TUN device inside each namespace.
const mptcpIfc = "mptm0"

// mptcpRigConfig selects the engine's and the kernel's MPTCP settings.
type mptcpRigConfig struct {
	// MPTCP is the engine's configuration (stack.Options.MPTCP).
	MPTCP stack.MPTCPConfig
	// KernelChecksums sets net.mptcp.checksum_enabled=1 in the namespace:
	// the kernel then requests DSS checksums (RFC 8684 §3.1, flag A).
	KernelChecksums bool
	// Impair, when set, puts an impair.Endpoint (a userspace netem) between
	// the engine's NIC and the TUN, which is then read without GRO so that
	// impairment acts on wire packets.
	Impair *mptcpImpairment
}

// mptcpImpairment is the path impairment of an impaired rig, in the
// netem syntax of impair.Parse.
type mptcpImpairment struct {
	Egress  string // engine -> kernel
	Ingress string // kernel -> engine
	Seed    uint64
}

// mptcpRig is one engine-on-TUN topology for MPTCP tests.
type mptcpRig struct {
	*engineTUN
	cfg mptcpRigConfig
	imp *impair.Endpoint // nil unless cfg.Impair
	// syns counts the SYN-bearing segments that reach the kernel, below
	// the impairer; nil unless cfg.Impair (see checkSYNChallenges).
	syns *synTap
}

// newMPTCPRig builds the topology of newEngineTUN (kernel engKernel4/6 on
// the TUN, engine engEngine4/6 behind it, MTU 1500) with the engine and
// kernel MPTCP settings of cfg. Everything is removed at cleanup.
func newMPTCPRig(t *testing.T, cfg mptcpRigConfig) *mptcpRig {
	t.Helper()
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "nstat", "ss", "sysctl")
	r := &mptcpRig{cfg: cfg}
	ecfg := engineTUNConfig{prefix: mptcpNSPrefix, ifc: mptcpIfc, mtu: 1500, opts: stack.Options{MPTCP: cfg.MPTCP}}
	if cfg.Impair != nil {
		egress, err := impair.Parse(cfg.Impair.Egress)
		if err != nil {
			t.Fatal(err)
		}
		ingress, err := impair.Parse(cfg.Impair.Ingress)
		if err != nil {
			t.Fatal(err)
		}
		ecfg.tunOpts = []tun.Option{tun.WithGRO(false)}
		ecfg.wrap = func(ep *tun.Endpoint) gstack.LinkEndpoint {
			r.syns = newSynTap(ep)
			r.imp = impair.New(r.syns, egress, ingress, cfg.Impair.Seed)
			return r.imp
		}
	}
	r.engineTUN = newEngineTUNWith(t, ecfg)
	r.ns.Sysctl("net.mptcp.enabled", "1")
	r.ns.Sysctl("net.mptcp.checksum_enabled", map[bool]string{false: "0", true: "1"}[cfg.KernelChecksums])
	return r
}

// mptcpConn is one engine <-> kernel connection and its two ends.
type mptcpConn struct {
	eng          *stack.Conn
	kern         *net.TCPConn
	engineClient bool // the engine dialled (and sends, in open's convention)
	// kernLocal and kernPeer are the kernel socket's addresses as `ss`
	// prints them.
	kernLocal, kernPeer netip.AddrPort
}

// sender and receiver return the ends for verifiedTransfer: the engine
// sends when it is the client, the kernel otherwise.
func (c *mptcpConn) sender() net.Conn {
	if c.engineClient {
		return c.eng
	}
	return c.kern
}

func (c *mptcpConn) receiver() net.Conn {
	if c.engineClient {
		return c.kern
	}
	return c.eng
}

// open connects the engine and the kernel: the engine dials a kernel
// listener when engineClient, otherwise a kernel socket dials an engine
// listener. kernelMPTCP selects an MPTCP or a plain TCP kernel socket.
func (r *mptcpRig) open(t *testing.T, engineClient, v6, kernelMPTCP bool) *mptcpConn {
	t.Helper()
	kAddr, eAddr := engKernel4, engEngine4
	if v6 {
		kAddr, eAddr = engKernel6, engEngine6
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &mptcpConn{engineClient: engineClient}
	if engineClient {
		ln := r.listenKernel(t, kAddr, kernelMPTCP)
		acc := acceptAsync(ln)
		ec, err := r.eng.Dial(ctx, "tcp", ln.Addr().String())
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
		ln, err := r.eng.Listen("tcp", netip.AddrPortFrom(eAddr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		acc := acceptAsync(ln)
		kc, err := r.dialKernel(ctx, ln.Addr().String(), kernelMPTCP)
		if err != nil {
			t.Fatalf("kernel dial: %v", err)
		}
		ec := <-acc
		if ec == nil {
			kc.Close()
			t.Fatal("engine accept failed")
		}
		c.eng, c.kern = ec.(*stack.Conn), kc
	}
	t.Cleanup(func() { c.eng.Close(); c.kern.Close() })
	c.kernLocal = c.kern.LocalAddr().(*net.TCPAddr).AddrPort()
	c.kernPeer = c.kern.RemoteAddr().(*net.TCPAddr).AddrPort()
	return c
}

// --- The kernel socket's own view: MPTCP_INFO -------------------------------

// mptcpInfoOpt is MPTCP_INFO, an option of level SOL_MPTCP (uapi
// linux/mptcp.h; x/sys/unix has SOL_MPTCP but not the option names).
const mptcpInfoOpt = 1

// mptcpInfoFlagFallback is MPTCP_INFO_FLAG_FALLBACK in mptcpi_flags.
const mptcpInfoFlagFallback = 1 << 0

// kernelMPTCPInfo is what the kernel reports about its own socket through
// getsockopt(SOL_MPTCP, MPTCP_INFO) (struct mptcp_info, uapi
// linux/mptcp.h).
type kernelMPTCPInfo struct {
	// Plain: the socket does not run MPTCP. The kernel refuses MPTCP_INFO
	// (EOPNOTSUPP for IPv4, ENOPROTOOPT for IPv6) on a socket that fell
	// back to TCP (RFC 8684 §3.7) and on a plain TCP socket; the
	// fallback flag is checked too.
	Plain bool
	Flags uint32
	// Token is the kernel's local token (RFC 8684 §3.2): the engine's
	// remote token.
	Token         uint32
	Subflows      uint8
	CsumEnabled   bool
	BytesSent     uint64 // zero on kernels whose struct is shorter
	BytesReceived uint64
}

// kernelMPTCPState reads MPTCP_INFO from the kernel socket c.
func kernelMPTCPState(c *net.TCPConn) (kernelMPTCPInfo, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return kernelMPTCPInfo{}, err
	}
	var buf [256]byte
	n := uint32(len(buf))
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_MPTCP, mptcpInfoOpt,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	}); err != nil {
		return kernelMPTCPInfo{}, err
	}
	switch errno {
	case 0:
	case unix.EOPNOTSUPP, unix.ENOPROTOOPT:
		return kernelMPTCPInfo{Plain: true}, nil
	default:
		return kernelMPTCPInfo{}, fmt.Errorf("getsockopt(SOL_MPTCP, MPTCP_INFO): %w", errno)
	}
	return parseMPTCPInfo(buf[:min(int(n), len(buf))])
}

// parseMPTCPInfo decodes struct mptcp_info in host byte order:
//
//	u8 subflows, add_addr_signal, add_addr_accepted, subflows_max,
//	   add_addr_signal_max, add_addr_accepted_max; (2 bytes padding)
//	u32 flags (8); u32 token (12); u64 write_seq (16), snd_una (24),
//	rcv_nxt (32); u8 local_addr_used (40), local_addr_max (41),
//	csum_enabled (42); u32 retransmits (44); u64 bytes_retrans (48),
//	bytes_sent (56), bytes_received (64), bytes_acked (72); ...
func parseMPTCPInfo(b []byte) (kernelMPTCPInfo, error) {
	if len(b) < 43 {
		return kernelMPTCPInfo{}, fmt.Errorf("MPTCP_INFO: %d bytes, want at least 43", len(b))
	}
	ne := binary.NativeEndian
	i := kernelMPTCPInfo{
		Subflows:    b[0],
		Flags:       ne.Uint32(b[8:]),
		Token:       ne.Uint32(b[12:]),
		CsumEnabled: b[42] != 0,
	}
	if len(b) >= 72 {
		i.BytesSent = ne.Uint64(b[56:])
		i.BytesReceived = ne.Uint64(b[64:])
	}
	i.Plain = i.Flags&mptcpInfoFlagFallback != 0
	return i, nil
}

// --- ss -Mtni --------------------------------------------------------------

// ssMPTCPSocket is one MPTCP socket line of `ss -Mtni` and its token.
type ssMPTCPSocket struct {
	State       string
	Local, Peer string // as ss prints them: 10.0.0.1:80, [fd00::1]:80
	Token       uint32
	HasToken    bool
}

// parseSSMPTCP returns the MPTCP sockets of `ss -Mtni` output: the lines
// whose Netid column is "mptcp", each followed by an indented information
// line ("subflows_max:2 remote_key token:9110011b write_seq:..."). TCP
// subflow lines are skipped.
func parseSSMPTCP(out string) []ssMPTCPSocket {
	var socks []ssMPTCPSocket
	var cur *ssMPTCPSocket
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "token:"); ok {
						if tok, err := strconv.ParseUint(v, 16, 32); err == nil {
							cur.Token, cur.HasToken = uint32(tok), true
						}
					}
				}
			}
			cur = nil
			continue
		}
		cur = nil
		f := strings.Fields(line)
		// Netid State Recv-Q Send-Q Local Peer [Process]
		if len(f) < 6 || f[0] != "mptcp" {
			continue
		}
		socks = append(socks, ssMPTCPSocket{State: f[1], Local: f[4], Peer: f[5]})
		cur = &socks[len(socks)-1]
	}
	return socks
}

// ssWatch samples `ss -Mtni` in the namespace from a goroutine while a
// connection runs, looking for the kernel's MPTCP socket of that
// connection.
type ssWatch struct {
	ns          *netns.NS
	local, peer string
	now         chan chan struct{}
	stop        chan struct{}
	done        chan struct{}

	mu      sync.Mutex
	samples int // completed ss runs
	seen    int // runs that listed the connection's MPTCP socket
	tokens  []uint32
	errs    []string
}

// watchSS starts sampling every interval until stopped.
func (r *mptcpRig) watchSS(c *mptcpConn, interval time.Duration) *ssWatch {
	w := &ssWatch{
		ns: r.ns, local: c.kernLocal.String(), peer: c.kernPeer.String(),
		now: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case ack := <-w.now:
				w.sample()
				close(ack)
			case <-tick.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *ssWatch) sample() {
	out, err := w.ns.Run("ss", "-Mtni")
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs = append(w.errs, err.Error())
		return
	}
	w.samples++
	for _, s := range parseSSMPTCP(out) {
		if s.Local == w.local && s.Peer == w.peer {
			w.seen++
			if s.HasToken && !slices.Contains(w.tokens, s.Token) {
				w.tokens = append(w.tokens, s.Token)
			}
			return
		}
	}
}

// sampleNow makes the goroutine take a sample and waits for it.
func (w *ssWatch) sampleNow() {
	ack := make(chan struct{})
	select {
	case w.now <- ack:
		<-ack
	case <-w.done:
	}
}

// ssResult is what an ssWatch saw.
type ssResult struct {
	Samples, Seen int
	Tokens        []uint32
	Errs          []string
}

// finish stops the sampling and returns the result.
func (w *ssWatch) finish() ssResult {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return ssResult{Samples: w.samples, Seen: w.seen, Tokens: w.tokens, Errs: w.errs}
}

// --- Observing a transfer in its middle ---------------------------------------

// midTransfer is the state of both ends taken while a transfer runs.
type midTransfer struct {
	Taken  bool
	Engine stack.ConnInfo
	Kernel kernelMPTCPInfo
	KErr   error
}

// pausingConn is a sending net.Conn that, once more than after bytes were
// written, runs hook once before returning from Write: the connection is
// then established and carrying data, with the rest of the transfer still
// to come, so what hook observes is the connection in the middle of a
// transfer. CloseWrite is passed through for verifiedTransfer.
type pausingConn struct {
	net.Conn
	after   int64
	written int64
	once    sync.Once
	hook    func()
}

func (c *pausingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	if c.written > c.after {
		c.once.Do(c.hook)
	}
	return n, err
}

func (c *pausingConn) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// observedTransfer moves n verified bytes from c.sender() to c.receiver()
// with verifiedTransfer while `ss -Mtni` is sampled every 200 ms, and
// after the first quarter (at most 1 MiB) of the data it takes one more
// ss sample and snapshots both ends' MPTCP state. Both conns are closed on
// return.
func (r *mptcpRig) observedTransfer(c *mptcpConn, n int64, timeout time.Duration) (time.Duration, midTransfer, ssResult, error) {
	ss := r.watchSS(c, 200*time.Millisecond)
	var mid midTransfer
	w := &pausingConn{Conn: c.sender(), after: min(n/4, 1<<20), hook: func() {
		ss.sampleNow()
		mid.Taken = true
		mid.Engine = c.eng.ConnInfo()
		mid.Kernel, mid.KErr = kernelMPTCPState(c.kern)
	}}
	el, err := verifiedTransfer(w, c.receiver(), n, timeout)
	return el, mid, ss.finish(), err
}

// --- Kernel counters ----------------------------------------------------------

// mptcpCounters snapshots the namespace's MPTcpExt counters.
func (r *mptcpRig) mptcpCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	c, err := r.ns.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// settle waits until the namespace has no established MPTCP connection
// left (MPTcpExtMPCurrEstab back to zero) so that counters moved by the
// closing handshakes are in the next snapshot; it gives up silently after
// 5 s (a counter check then reports what is missing).
func (r *mptcpRig) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r.mptcpCounters(t)["MPTcpExtMPCurrEstab"] == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last ACKs of the closing handshakes
}

// movedCounters lists the counters that differ between two snapshots,
// sorted, as "Name: before -> after".
func movedCounters(before, after map[string]uint64) []string {
	var moved []string
	for k, v := range after {
		if before[k] != v {
			moved = append(moved, fmt.Sprintf("%s: %d -> %d", k, before[k], v))
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			moved = append(moved, fmt.Sprintf("%s: %d -> (gone)", k, v))
		}
	}
	slices.Sort(moved)
	return moved
}

// logMovedCounters logs the kernel MPTcpExt counters that moved.
func logMovedCounters(t *testing.T, label string, before, after map[string]uint64) {
	t.Helper()
	moved := movedCounters(before, after)
	if len(moved) == 0 {
		t.Logf("%s: no kernel MPTcpExt counter moved", label)
		return
	}
	t.Logf("%s: kernel MPTcpExt counters moved:\n\t%s", label, strings.Join(moved, "\n\t"))
}

// delta returns after[name]-before[name] for a counter named with or
// without its "MPTcpExt" prefix.
func delta(before, after map[string]uint64, name string) int64 {
	if !strings.HasPrefix(name, "MPTcpExt") {
		name = "MPTcpExt" + name
	}
	return int64(after[name] - before[name])
}

// mptcpErrorCounters are the MPTcpExt counters of this kernel (6.18,
// net/mptcp/mib.c) that move only when the peer did something wrong or a
// connection could not stay MPTCP, with the reason each is an error for a
// clean engine <-> kernel connection. Tests that provoke a fallback allow
// the fallback counters they expect (see checkMPTCPErrors).
var mptcpErrorCounters = []struct{ name, why string }{
	// Handshake fallbacks (RFC 8684 §3.1, §3.7).
	{"MPCapableFallbackACK", "kernel server fell back: the third ACK carried no MP_CAPABLE"},
	{"MPCapableFallbackSYNACK", "kernel client fell back: the SYN/ACK carried no MP_CAPABLE"},
	{"MPCapableDataFallback", "fell back: the first packet after the handshake had neither DSS nor MP_CAPABLE"},
	{"MPCapableSYNTXDrop", "kernel client fell back after its MP_CAPABLE SYNs went unanswered (blackhole detection)"},
	{"MPCapableSYNTXDisabled", "active MPTCP disabled in the namespace after a detected blackhole"},
	{"Blackhole", "the kernel detected a path that drops MPTCP options"},
	{"MPFallbackTokenInit", "the kernel could not allocate a token and fell back"},
	{"MD5SigFallback", "fallback because of TCP-MD5: not used here"},
	{"SimultConnectFallback", "fallback of a simultaneous open: not used here"},
	// Data-level fallbacks and corruption (RFC 8684 §3.3, §3.7).
	{"DssFallback", "fell back on a bad or missing DSS mapping"},
	{"FallbackFailed", "a fallback was required but impossible: the subflow was reset"},
	{"DSSNotMatching", "a mapping contradicted the previous one for the same bytes"},
	{"DSSNoMatchTCP", "a mapping did not match the TCP sequence space of its segment"},
	{"DSSCorruptionFallback", "DSS corruption detected, fell back"},
	{"DSSCorruptionReset", "DSS corruption detected, subflow reset"},
	{"DataCsumErr", "a DSS checksum did not verify (RFC 8684 §3.3.1)"},
	{"InfiniteMapTx", "the kernel sent an infinite mapping (it fell back mid-connection)"},
	{"InfiniteMapRx", "the engine sent an infinite mapping (it fell back mid-connection)"},
	{"MPFailTx", "the kernel reported a checksum failure with MP_FAIL (RFC 8684 §3.7)"},
	{"MPFailRx", "the engine sent MP_FAIL"},
	{"NoDSSInWindow", "data mapped outside the kernel's data-level receive window (RFC 8684 §3.3.4)"},
	// Joins and addresses: this topology has one path and the kernel has no
	// endpoints, so nothing may be joined, announced or removed.
	{"MPJoinNoTokenFound", "an MP_JOIN carried an unknown token"},
	{"MPJoinSynAckHMacFailure", "an MP_JOIN SYN/ACK carried a bad HMAC"},
	{"MPJoinAckHMacFailure", "an MP_JOIN ACK carried a bad HMAC"},
	{"MPJoinRejected", "an MP_JOIN was refused"},
	{"MPJoinSynTxCreatSkErr", "the kernel failed to create a join subflow"},
	{"MPJoinSynTxBindErr", "the kernel failed to bind a join subflow"},
	{"MPJoinSynTxConnectErr", "the kernel failed to connect a join subflow"},
	{"MismatchPortSynRx", "an MP_JOIN SYN arrived on a port not announced"},
	{"MismatchPortAckRx", "an MP_JOIN ACK arrived on a port not announced"},
	{"AddAddrDrop", "an ADD_ADDR was dropped"},
	{"AddAddrTxDrop", "an ADD_ADDR could not be sent"},
	{"EchoAddTxDrop", "an ADD_ADDR echo could not be sent"},
	{"RmAddrDrop", "a REMOVE_ADDR was dropped"},
	{"RmAddrTxDrop", "a REMOVE_ADDR could not be sent"},
}

// mptcpAbortCounters move when a connection is aborted rather than
// closed: errors for a transfer that ends with both DATA_FINs, expected in
// the fastclose tests.
var mptcpAbortCounters = []string{"MPFastcloseTx", "MPFastcloseRx", "MPRstTx", "MPRstRx"}

// checkMPTCPErrors fails t for every error counter that moved between the
// snapshots, except those in allow.
func checkMPTCPErrors(t *testing.T, label string, before, after map[string]uint64, allow ...string) {
	t.Helper()
	for _, c := range mptcpErrorCounters {
		if slices.Contains(allow, c.name) {
			continue
		}
		if d := delta(before, after, c.name); d != 0 {
			t.Errorf("%s: kernel error counter MPTcpExt%s moved by %d (%s)", label, c.name, d, c.why)
		}
	}
}

// checkNoAborts fails t if a connection was aborted (fastclose or
// MP_TCPRST) between the snapshots.
func checkNoAborts(t *testing.T, label string, before, after map[string]uint64) {
	t.Helper()
	for _, name := range mptcpAbortCounters {
		if d := delta(before, after, name); d != 0 {
			t.Errorf("%s: kernel counter MPTcpExt%s moved by %d: a connection was aborted", label, name, d)
		}
	}
}

// wantDeltas checks exact counter deltas: want maps counter names
// (without prefix) to how much each must have moved.
func wantDeltas(t *testing.T, label string, before, after map[string]uint64, want map[string]int64) {
	t.Helper()
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if d := delta(before, after, k); d != want[k] {
			t.Errorf("%s: kernel counter MPTcpExt%s moved by %d, want %d", label, k, d, want[k])
		}
	}
}

// --- Does the engine speak MPTCP yet? -----------------------------------------

var engineMPTCPProbe struct {
	mu     sync.Mutex
	probed bool
	speaks bool
	why    string
}

// engineSpeaksMPTCP reports whether the engine, with its default options,
// establishes MPTCP with a kernel MPTCP server: it dials one once per test
// binary (in its own namespace) and reads ConnInfo().MPTCP.
func engineSpeaksMPTCP(t *testing.T) bool {
	t.Helper()
	p := &engineMPTCPProbe
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.probed {
		r := newMPTCPRig(t, mptcpRigConfig{})
		c := r.open(t, true, false, true)
		if _, err := verifiedTransfer(c.sender(), c.receiver(), 1<<10, 10*time.Second); err != nil {
			t.Fatalf("engine MPTCP probe: %v", err)
		}
		ci := c.eng.ConnInfo()
		p.speaks = ci.MPTCP
		p.why = fmt.Sprintf("MPTCP=%v Fallback=%q", ci.MPTCP, ci.Fallback)
		p.probed = true
	}
	return p.speaks
}

// requireEngineMPTCP skips t unless the engine speaks MPTCP
// (engineSpeaksMPTCP): assertions about the engine's final MPTCP
// behaviour live behind it.
func requireEngineMPTCP(t *testing.T) {
	t.Helper()
	if !engineSpeaksMPTCP(t) {
		t.Skipf("engine MPTCP not implemented yet (probe against a kernel MPTCP server: %s)", engineMPTCPProbe.why)
	}
}

// --- Middlebox: TCPOPTSTRIP ---------------------------------------------------

// stripComment tags the mangle rules installed by stripMPTCP.
const stripComment = "mptm-strip"

// stripMPTCP makes the namespace strip MPTCP options (TCP option kind 30)
// from segments that match, in both directions on the TUN's kernel side:
// mangle PREROUTING -i (engine -> kernel) and POSTROUTING -o (kernel ->
// engine), for IPv4 and IPv6. match returns the iptables match of a
// family, e.g. "--tcp-flags SYN SYN". Rules are replaced on every call.
func (r *mptcpRig) stripMPTCP(t *testing.T, match func(v6 bool) []string) {
	t.Helper()
	netns.RequireTools(t, "iptables", "ip6tables")
	for _, cmd := range []string{"iptables", "ip6tables"} {
		r.ns.MustRun(cmd, "-t", "mangle", "-F")
		for _, hook := range [][]string{{"PREROUTING", "-i"}, {"POSTROUTING", "-o"}} {
			args := []string{"-t", "mangle", "-A", hook[0], hook[1], r.ifc, "-p", "tcp"}
			args = append(args, match(cmd == "ip6tables")...)
			args = append(args, "-m", "comment", "--comment", stripComment,
				"-j", "TCPOPTSTRIP", "--strip-options", "30")
			if _, err := r.ns.Run(cmd, args...); err != nil {
				t.Skipf("TCPOPTSTRIP unavailable: %v", err)
			}
		}
	}
}

// stripHits returns the packet counters of the stripping rules, keyed
// "iptables PREROUTING" etc.
func (r *mptcpRig) stripHits(t *testing.T) map[string]uint64 {
	t.Helper()
	hits := make(map[string]uint64)
	for _, cmd := range []string{"iptables", "ip6tables"} {
		out := r.ns.MustRun(cmd, "-t", "mangle", "-L", "-v", "-x", "-n")
		for k, v := range parseRuleHits(out, stripComment) {
			hits[cmd+" "+k] = v
		}
	}
	return hits
}

// parseRuleHits reads `iptables -L -v -x -n` output and returns, per
// chain, the packet count of the rule whose line contains the comment
// tag.
func parseRuleHits(out, tag string) map[string]uint64 {
	hits := make(map[string]uint64)
	chain := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "Chain" {
			chain = f[1]
			continue
		}
		if chain == "" || len(f) == 0 || !strings.Contains(line, "/* "+tag+" */") {
			continue
		}
		if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			hits[chain] += n
		}
	}
	return hits
}

// --- Captures -----------------------------------------------------------------

// captureFailures records the TUN's packets (kernel side) for the rest of
// t and, if t fails, keeps the capture in a fresh directory under
// os.TempDir() and logs its path. Meant for the small transfers of the
// fallback and abort tests; without tcpdump it does nothing.
func (r *mptcpRig) captureFailures(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		return
	}
	file := filepath.Join(t.TempDir(), "tun.pcap")
	stop := r.ns.Capture(t, r.ifc, file, "tcp")
	t.Cleanup(func() {
		stop()
		if !t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "mptm-capture-")
		if err != nil {
			t.Logf("keeping capture: %v", err)
			return
		}
		dst := filepath.Join(dir, strings.NewReplacer("/", "_").Replace(t.Name())+".pcap")
		keepCapture(t, file, dst)
		t.Logf("capture of the failed test kept in %s", dst)
	})
}

// --- Small helpers ------------------------------------------------------------

// isConnReset reports whether err is a connection reset as a kernel socket
// reports it.
func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func roleName(engineClient bool) string {
	if engineClient {
		return "engine-client"
	}
	return "kernel-client"
}

func famName(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// --- Tests of the harness's own parsers (no namespace needed) ----------------

// ssSample is `ss -Mtni` output of this machine (iproute2 6.1) for one
// MPTCP connection over loopback (two TCP subflow lines, then the two
// MPTCP sockets, some subflow details cut), with the second socket's
// addresses changed to IPv6 and a listener added, both in the format ss
// prints them.
const ssSample = `Netid State Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   ESTAB 0      0          127.0.0.1:60342    127.0.0.1:45677
	 bbr wscale:10,10 rto:204 rtt:0.018/0.01 mss:32768 cwnd:11 tcp-ulp-mptcp flags:Mmec token:0000(id:0)/9110011b(id:0) seq:e9deaf5b56d4dace sfseq:1 ssnoff:8ee66ac1 maplen:0
tcp   ESTAB 0      0          127.0.0.1:45677    127.0.0.1:60342
	 bbr wscale:10,10 rto:204 tcp-ulp-mptcp flags:Mec token:0000(id:0)/5caed8b7(id:0) seq:4edce00218d6b4bf sfseq:1 ssnoff:424a9634 maplen:3e8
mptcp ESTAB 0      0          127.0.0.1:60342    127.0.0.1:45677
	 subflows_max:2 remote_key token:9110011b write_seq:4edce00218d6b8a7 snd_una:4edce00218d6b8a7 rcv_nxt:e9deaf5b56d4dace
mptcp ESTAB 1832   0      [fd10:211::1]:45677 [fd10:211::2]:60342
	 subflows_max:2 remote_key token:5caed8b7 write_seq:e9deaf5b56d4dace snd_una:e9deaf5b56d4dace rcv_nxt:4edce00218d6b8a7
mptcp LISTEN 0      4096       10.211.0.1:5201   0.0.0.0:*
`

func TestMPTCPHarnessParseSS(t *testing.T) {
	want := []ssMPTCPSocket{
		{State: "ESTAB", Local: "127.0.0.1:60342", Peer: "127.0.0.1:45677", Token: 0x9110011b, HasToken: true},
		{State: "ESTAB", Local: "[fd10:211::1]:45677", Peer: "[fd10:211::2]:60342", Token: 0x5caed8b7, HasToken: true},
		{State: "LISTEN", Local: "10.211.0.1:5201", Peer: "0.0.0.0:*"},
	}
	if got := parseSSMPTCP(ssSample); !slices.Equal(got, want) {
		t.Errorf("parseSSMPTCP:\n got %+v\nwant %+v", got, want)
	}
	// The TCP subflow lines alone, and every truncation of the sample,
	// must not produce phantom sockets or panic.
	if got := parseSSMPTCP(ssSample[:strings.Index(ssSample, "mptcp ")]); len(got) != 0 {
		t.Errorf("TCP lines parsed as MPTCP sockets: %+v", got)
	}
	for i := range len(ssSample) {
		if got := parseSSMPTCP(ssSample[:i]); len(got) > len(want) {
			t.Fatalf("prefix %d: %d sockets", i, len(got))
		}
	}
}

func TestMPTCPHarnessParseRuleHits(t *testing.T) {
	out := `Chain PREROUTING (policy ACCEPT 10 packets, 900 bytes)
    pkts      bytes target     prot opt in     out     source               destination
     121     9000 TCPOPTSTRIP  6    --  mptm0  *       0.0.0.0/0            0.0.0.0/0            tcp flags:0x02/0x00 /* mptm-strip */ TCPOPTSTRIP options 30
       7      500 ACCEPT       6    --  *      *       0.0.0.0/0            0.0.0.0/0

Chain POSTROUTING (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination
      97     8000 TCPOPTSTRIP  6    --  *      mptm0   0.0.0.0/0            0.0.0.0/0            tcp flags:0x02/0x00 /* mptm-strip */ TCPOPTSTRIP options 30
       5      300 TCPOPTSTRIP  6    --  *      mptm0   0.0.0.0/0            0.0.0.0/0            /* other */ TCPOPTSTRIP options 30
`
	got := parseRuleHits(out, stripComment)
	want := map[string]uint64{"PREROUTING": 121, "POSTROUTING": 97}
	if len(got) != len(want) || got["PREROUTING"] != 121 || got["POSTROUTING"] != 97 {
		t.Errorf("parseRuleHits = %v, want %v", got, want)
	}
}

func TestMPTCPHarnessParseMPTCPInfo(t *testing.T) {
	ne := binary.NativeEndian
	b := make([]byte, 88)
	b[0] = 1                         // subflows
	ne.PutUint32(b[8:], 2)           // flags: remote key received
	ne.PutUint32(b[12:], 0xdeadbeef) // token
	b[42] = 1                        // csum_enabled
	ne.PutUint64(b[56:], 1000)       // bytes_sent
	ne.PutUint64(b[64:], 2000)       // bytes_received
	want := kernelMPTCPInfo{Flags: 2, Token: 0xdeadbeef, Subflows: 1, CsumEnabled: true, BytesSent: 1000, BytesReceived: 2000}
	if got, err := parseMPTCPInfo(b); err != nil || got != want {
		t.Errorf("parseMPTCPInfo = %+v, %v; want %+v", got, err, want)
	}
	// The fallback flag makes the socket plain.
	ne.PutUint32(b[8:], 3)
	if got, _ := parseMPTCPInfo(b); !got.Plain {
		t.Errorf("fallback flag set, Plain = false")
	}
	// A struct of an old kernel (up to csum_enabled) has no byte counters.
	if got, err := parseMPTCPInfo(b[:44]); err != nil || got.BytesSent != 0 || !got.CsumEnabled {
		t.Errorf("short struct: %+v, %v", got, err)
	}
	for i := range 43 {
		if _, err := parseMPTCPInfo(b[:i]); err == nil {
			t.Errorf("%d bytes accepted", i)
		}
	}
}
