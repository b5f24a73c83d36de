// Package netns builds throwaway network topologies in Linux network
// namespaces for tests: namespaces, veth pairs, addresses, commands run inside
// a namespace, packet captures and the kernel's MPTcpExt counters.
//
// Everything a test creates is removed by t.Cleanup, also when the test
// fails. Namespace names carry the creating process's PID so that leftovers
// of a killed run are recognised and removed by the next one.
//
// Tests that use this package need root, iproute2 and a kernel with network
// namespaces; Check reports why they cannot run, and Require skips the test
// with that reason.
package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Check reports why namespace tests cannot run here, or nil when they can.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs iproute2 (ip)")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return errors.New("kernel without network namespaces")
	}
	return nil
}

// CheckMPTCP is Check plus a kernel with MPTCP enabled.
func CheckMPTCP() error {
	if err := Check(); err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/sys/net/mptcp/enabled")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return errors.New("needs kernel MPTCP (net.mptcp.enabled=1)")
	}
	return nil
}

// Require skips t unless namespace tests can run.
func Require(t testing.TB) {
	t.Helper()
	if err := Check(); err != nil {
		t.Skip("skipping namespace test:", err)
	}
}

// RequireMPTCP skips t unless namespace tests can run against kernel MPTCP.
func RequireMPTCP(t testing.TB) {
	t.Helper()
	if err := CheckMPTCP(); err != nil {
		t.Skip("skipping namespace test:", err)
	}
}

// RequireTools skips t unless every named program is on PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
}

// NS is one network namespace. Its methods may be called from any goroutine.
type NS struct {
	Name string
	t    testing.TB
}

var seq atomic.Uint32

var sweepOnce sync.Once

// New creates a namespace named prefix-PID-N with loopback up. It is deleted
// when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	sweepOnce.Do(sweepStale)
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		// Kill what still runs inside, then delete the namespace.
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.MustRun("ip", "link", "set", "lo", "up")
	return n
}

// sweepStale deletes namespaces left behind by test processes that no longer
// exist (names end in -PID-N and PID is gone).
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		parts := strings.Split(f[0], "-")
		if len(parts) < 3 {
			continue
		}
		pid, err1 := strconv.Atoi(parts[len(parts)-2])
		_, err2 := strconv.Atoi(parts[len(parts)-1])
		if err1 != nil || err2 != nil || pid == os.Getpid() || pid <= 1 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", n.Name, name}, args...)
	return exec.CommandContext(ctx, "ip", full...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the namespace (key like net.mptcp.checksum_enabled).
func (n *NS) Sysctl(key, value string) {
	n.t.Helper()
	n.MustRun("sysctl", "-qw", key+"="+value)
}

// Veth creates a veth pair with one end (ifA, address cidrA) in a and the
// other (ifB, cidrB) in b, both up. An empty address assigns none.
func Veth(t testing.TB, a *NS, ifA, cidrA string, b *NS, ifB, cidrB string) {
	t.Helper()
	tmpA := fmt.Sprintf("vt%da%d", os.Getpid()%100000, seq.Add(1))
	tmpB := fmt.Sprintf("vt%db%d", os.Getpid()%100000, seq.Add(1))
	cmds := [][]string{
		{"ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB},
		{"ip", "link", "set", tmpA, "netns", a.Name, "name", ifA},
		{"ip", "link", "set", tmpB, "netns", b.Name, "name", ifB},
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "link", "del", tmpA).Run()
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	for _, e := range []struct {
		ns        *NS
		ifc, cidr string
	}{{a, ifA, cidrA}, {b, ifB, cidrB}} {
		if e.cidr != "" {
			e.ns.AddAddr(e.ifc, e.cidr)
		}
		e.ns.MustRun("ip", "link", "set", e.ifc, "up")
	}
}

// AddAddr assigns an address (CIDR) to an interface; IPv6 addresses skip
// duplicate address detection so they are usable at once.
func (n *NS) AddAddr(ifc, cidr string) {
	n.t.Helper()
	if strings.Contains(cidr, ":") {
		n.MustRun("ip", "addr", "add", cidr, "dev", ifc, "nodad")
		return
	}
	n.MustRun("ip", "addr", "add", cidr, "dev", ifc)
}

// Counters returns the namespace's SNMP/netstat counters as nstat reports
// them (absolute values, zeros included), without touching nstat's history.
func (n *NS) Counters() (map[string]uint64, error) {
	out, err := n.Run("nstat", "-a", "-z", "-s", "--json")
	if err != nil {
		return nil, err
	}
	// nstat --json prints {"kernel":{"Name":value,...}}.
	var doc map[string]map[string]uint64
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("parsing nstat output: %w", err)
	}
	return doc["kernel"], nil
}

// MPTCPCounters returns only the MPTcpExt* counters.
func (n *NS) MPTCPCounters() (map[string]uint64, error) {
	all, err := n.Counters()
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64)
	for k, v := range all {
		if strings.HasPrefix(k, "MPTcpExt") {
			m[k] = v
		}
	}
	return m, nil
}

// Capture starts tcpdump on iface ("any" for all of the namespace's
// interfaces) writing full packets to file, and returns once tcpdump is
// capturing. The returned stop function ends the capture and waits until the
// file is complete; it is also called at cleanup.
func (n *NS) Capture(t testing.TB, iface, file string, filter ...string) (stop func()) {
	t.Helper()
	args := append([]string{"-i", iface, "-s", "0", "-B", "32768", "-U", "--immediate-mode", "-w", file}, filter...)
	cmd := n.Command(context.Background(), "tcpdump", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	ready := make(chan error, 1)
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			tail.WriteString(line + "\n")
			if !signalled && strings.Contains(line, "listening on") {
				ready <- nil
				signalled = true
			}
		}
		if !signalled {
			ready <- fmt.Errorf("tcpdump exited: %s", tail.String())
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("tcpdump did not start within 10s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			// Give in-flight packets a moment to be written, then SIGINT
			// makes tcpdump flush and close the file.
			time.Sleep(100 * time.Millisecond)
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Do runs fn on an OS thread that has entered the namespace. File
// descriptors fn opens (sockets, TUN devices) belong to the namespace and
// stay there after Do returns; goroutines fn starts do not run in it.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is locked and, if it cannot be restored, never
		// unlocked, so the Go runtime discards it.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + n.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restoring namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Nft loads an nftables ruleset (nft -f syntax, e.g. a whole "table inet
// NAME { ... }") into the namespace. Tables it creates go away with the
// namespace.
func (n *NS) Nft(rules string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft -f: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
