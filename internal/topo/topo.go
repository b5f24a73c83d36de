// Package topo builds small network topologies in Linux network
// namespaces for programs (the demo, benchmarks): namespaces, veth pairs,
// addresses, commands and sockets inside a namespace. Unlike
// internal/netns, which serves tests and reports through testing.TB, it
// returns errors and leaves cleanup to Topology.Close, which the caller
// defers (and runs on signals).
//
// Namespace names end in -PID-N; Sweep deletes those whose process is
// gone, so that a killed run's leftovers do not pile up.
package topo

import (
	"context"
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
	"time"

	"golang.org/x/sys/unix"
)

// Check reports what is missing to build topologies here, or nil.
func Check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, TUN devices)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun (modprobe tun)")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		missing = append(missing, "a kernel with network namespaces")
	}
	for _, tool := range []string{"ip", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install iproute2 nftables)")
		}
	}
	if len(missing) > 0 {
		return errors.New("needs " + strings.Join(missing, ", "))
	}
	return nil
}

// NS is one network namespace.
type NS struct {
	Name string
}

// Topology owns namespaces and deletes them on Close.
type Topology struct {
	prefix string
	mu     sync.Mutex
	nss    []*NS
	closed bool
}

var seq atomic.Uint32

// New returns an empty topology whose namespaces are named
// prefix-ROLE-PID-N; it first sweeps leftovers of dead processes with
// the same prefix.
func New(prefix string) *Topology {
	Sweep(prefix)
	return &Topology{prefix: prefix}
}

// Sweep deletes namespaces named prefix-*-PID-N whose PID is not running.
func Sweep(prefix string) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		parts := strings.Split(f[0], "-")
		if len(parts) < 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[len(parts)-2])
		if err != nil || pid == os.Getpid() || pid <= 1 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			killInside(f[0])
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// NewNS creates a namespace with loopback up.
func (t *Topology) NewNS(role string) (*NS, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.New("topo: closed")
	}
	name := fmt.Sprintf("%s-%s-%d-%d", t.prefix, role, os.Getpid(), seq.Add(1))
	t.mu.Unlock()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &NS{Name: name}
	t.mu.Lock()
	t.nss = append(t.nss, n)
	t.mu.Unlock()
	if _, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Close kills what runs in the namespaces and deletes them. It may be
// called more than once.
func (t *Topology) Close() error {
	t.mu.Lock()
	nss := t.nss
	t.nss = nil
	t.closed = true
	t.mu.Unlock()
	var errs []error
	for _, n := range nss {
		killInside(n.Name)
	}
	for _, n := range nss {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// killInside kills the processes in a namespace, waiting briefly.
func killInside(name string) {
	for range 50 {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil || len(strings.Fields(string(out))) == 0 {
			return
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Command returns a command that runs inside the namespace; it is killed
// if this process dies.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run runs a command inside the namespace and returns its output.
func (n *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Runs runs several commands, each a space-separated line, stopping at
// the first failure.
func (n *NS) Runs(lines ...string) error {
	for _, l := range lines {
		f := strings.Fields(l)
		if _, err := n.Run(f[0], f[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Veth connects a and b with a veth pair: ifA (address cidrA) in a, ifB
// (cidrB) in b, both up.
func Veth(a *NS, ifA, cidrA string, b *NS, ifB, cidrB string) error {
	tmpA := fmt.Sprintf("vd%da%d", os.Getpid()%100000, seq.Add(1))
	tmpB := fmt.Sprintf("vd%db%d", os.Getpid()%100000, seq.Add(1))
	for _, c := range [][]string{
		{"ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB},
		{"ip", "link", "set", tmpA, "netns", a.Name, "name", ifA},
		{"ip", "link", "set", tmpB, "netns", b.Name, "name", ifB},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "link", "del", tmpA).Run()
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	for _, e := range []struct {
		ns        *NS
		ifc, cidr string
	}{{a, ifA, cidrA}, {b, ifB, cidrB}} {
		if e.cidr != "" {
			if _, err := e.ns.Run("ip", "addr", "add", e.cidr, "dev", e.ifc); err != nil {
				return err
			}
		}
		if _, err := e.ns.Run("ip", "link", "set", e.ifc, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace: sockets fn
// opens belong to the namespace and stay there; goroutines it starts do
// not run in it.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
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
			// The thread stays locked, so the runtime discards it.
			errc <- errors.Join(ferr, fmt.Errorf("restoring namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
