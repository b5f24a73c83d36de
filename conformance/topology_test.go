package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
)

// nsPrefix is the namespace name prefix of this package's tests.
const nsPrefix = "mptw"

// Addresses of the topology: two links between the client and the server
// namespaces, each with an IPv4 and an IPv6 subnet.
const (
	clientV4Link1 = "10.210.1.1"
	serverV4Link1 = "10.210.1.2"
	clientV4Link2 = "10.210.2.1"
	serverV4Link2 = "10.210.2.2"
	clientV6Link1 = "fd10:210:1::1"
	serverV6Link1 = "fd10:210:1::2"
	clientV6Link2 = "fd10:210:2::1"
	serverV6Link2 = "fd10:210:2::2"
)

// topology is two namespaces, "client" and "server", joined by two veth
// pairs: c1-s1 (10.210.1.0/24, fd10:210:1::/64) and c2-s2 (10.210.2.0/24,
// fd10:210:2::/64). Offloads are off so that captures show the segments
// as they travel, and both path managers accept 4 subflows and 4 ADD_ADDRs.
type topology struct {
	client, server *netns.NS
}

func newTopology(t *testing.T, checksums bool) *topology {
	t.Helper()
	c := netns.New(t, nsPrefix)
	s := netns.New(t, nsPrefix)
	netns.Veth(t, c, "c1", clientV4Link1+"/24", s, "s1", serverV4Link1+"/24")
	netns.Veth(t, c, "c2", clientV4Link2+"/24", s, "s2", serverV4Link2+"/24")
	c.AddAddr("c1", clientV6Link1+"/64")
	s.AddAddr("s1", serverV6Link1+"/64")
	c.AddAddr("c2", clientV6Link2+"/64")
	s.AddAddr("s2", serverV6Link2+"/64")
	for _, e := range []struct {
		ns   *netns.NS
		ifcs []string
	}{{c, []string{"c1", "c2"}}, {s, []string{"s1", "s2"}}} {
		for _, ifc := range e.ifcs {
			// Not every offload exists on every kernel: ignore errors.
			_, _ = e.ns.Run("ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off")
		}
		// Source-based routing: traffic from an address of link 2 leaves
		// by link 2 whatever its destination, so that a subflow from
		// the second address to the first address of the peer (the
		// in-kernel path manager's "subflow" endpoints) is symmetric.
		for _, fam := range []struct{ flag, from, to string }{
			{"-4", "10.210.2.0/24", "10.210.0.0/16"},
			{"-6", "fd10:210:2::/64", "fd10:210::/32"},
		} {
			e.ns.MustRun("ip", fam.flag, "rule", "add", "from", fam.from, "table", "102")
			e.ns.MustRun("ip", fam.flag, "route", "add", fam.to, "dev", e.ifcs[1], "table", "102")
		}
		e.ns.MPTCPLimits(4, 4)
		e.ns.Sysctl("net.mptcp.enabled", "1")
		if checksums {
			e.ns.Sysctl("net.mptcp.checksum_enabled", "1")
		}
	}
	return &topology{client: c, server: s}
}

// event is one JSON line printed by kpeer.
type event struct {
	Event      string `json:"event"`
	Addr       string `json:"addr"`
	Local      string `json:"local"`
	Remote     string `json:"remote"`
	Multipath  bool   `json:"multipath"`
	Sent       int64  `json:"sent"`
	SentSHA256 string `json:"sent_sha256"`
	Recv       int64  `json:"recv"`
	RecvSHA256 string `json:"recv_sha256"`
	ReadErr    string `json:"read_err"`
	WriteErr   string `json:"write_err"`
}

// peer is a running kpeer process.
type peer struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	waited chan struct{}
	stderr strings.Builder
	mu     sync.Mutex
}

// startPeer runs kpeer with args inside ns. The process is killed at
// cleanup if it still runs.
func startPeer(t *testing.T, ns *netns.NS, name string, args ...string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	p := &peer{t: t, name: name, events: make(chan event, 16), waited: make(chan struct{})}
	p.cmd = ns.Command(ctx, kpeer(t), args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("%s: bad output line %q: %v", name, sc.Text(), err)
				continue
			}
			p.events <- e
		}
		close(p.events)
		_ = p.cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.waited
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// wait returns the next event, which must be named want.
func (p *peer) wait(want string, timeout time.Duration) event {
	p.t.Helper()
	select {
	case e, ok := <-p.events:
		if !ok {
			<-p.waited
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("%s exited before %q: %v: %s", p.name, want, p.cmd.ProcessState, p.stderr.String())
		}
		if e.Event != want {
			p.t.Fatalf("%s: got event %+v, want %q", p.name, e, want)
		}
		return e
	case <-time.After(timeout):
		p.t.Fatalf("%s: no %q event within %v", p.name, want, timeout)
	}
	return event{}
}

// resume answers a client's "paused" event.
func (p *peer) resume() {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, "go"); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// counterDelta returns after-before for every MPTcpExt counter.
func counterDelta(before, after map[string]uint64) map[string]uint64 {
	d := make(map[string]uint64)
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

// errorCounters are the MPTcpExt counters of this kernel (net/mptcp/mib.c)
// that only move when something went wrong: a failed handshake or HMAC, a
// broken mapping or checksum, a fallback to TCP, a dropped announcement.
var errorCounters = []string{
	"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableSYNTXDrop",
	"MPFallbackTokenInit", "MPCapableDataFallback", "MD5SigFallback",
	"DssFallback", "SimultConnectFallback", "FallbackFailed",
	"MPJoinNoTokenFound", "MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure",
	"MPJoinRejected", "MPJoinSynTxCreatSkErr", "MPJoinSynTxBindErr",
	"MPJoinSynTxConnectErr", "MismatchPortSynRx", "MismatchPortAckRx",
	"DSSNotMatching", "DSSCorruptionFallback", "DSSCorruptionReset",
	"DSSNoMatchTCP", "DataCsumErr", "InfiniteMapTx", "InfiniteMapRx",
	"MPFailTx", "MPFailRx", "NoDSSInWindow",
	"AddAddrDrop", "AddAddrTxDrop", "EchoAddTxDrop", "RmAddrDrop", "RmAddrTxDrop",
	"Blackhole",
}
