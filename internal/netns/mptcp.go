package netns

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MPTCPLimits sets the in-kernel path manager's limits in the namespace
// (`ip mptcp limits set subflows N add_addr_accepted M`): how many
// additional subflows a connection may have, and how many received
// ADD_ADDR announcements it may act on.
func (n *NS) MPTCPLimits(subflows, addAddrAccepted int) {
	n.t.Helper()
	n.MustRun("ip", "mptcp", "limits", "set",
		"subflows", strconv.Itoa(subflows), "add_addr_accepted", strconv.Itoa(addAddrAccepted))
}

// Endpoint describes an in-kernel path manager endpoint (`ip mptcp endpoint
// add ADDR [id ID] [port PORT] [dev IFC] FLAGS...`).
type Endpoint struct {
	Addr string // IPv4 or IPv6 address, no prefix length
	ID   int    // 0: let the kernel pick
	Port int    // 0: none (announced without a port)
	Dev  string // optional interface
	// Flags are the endpoint flags: "signal", "subflow", "backup",
	// "fullmesh".
	Flags []string
}

func (e Endpoint) args() []string {
	a := []string{e.Addr}
	if e.ID != 0 {
		a = append(a, "id", strconv.Itoa(e.ID))
	}
	if e.Port != 0 {
		a = append(a, "port", strconv.Itoa(e.Port))
	}
	if e.Dev != "" {
		a = append(a, "dev", e.Dev)
	}
	return append(a, e.Flags...)
}

// Args returns the endpoint as the arguments of `ip mptcp endpoint add`
// (for instance to build an `ip -batch` file).
func (e Endpoint) Args() []string { return e.args() }

// AddEndpoint adds a path manager endpoint and returns its ID (the one
// given, or the one the kernel assigned).
func (n *NS) AddEndpoint(e Endpoint) int {
	n.t.Helper()
	n.MustRun("ip", append([]string{"mptcp", "endpoint", "add"}, e.args()...)...)
	id, err := n.EndpointID(e.Addr)
	if err != nil {
		n.t.Fatal(err)
	}
	return id
}

// DelEndpoint deletes the endpoint with the given ID.
func (n *NS) DelEndpoint(id int) {
	n.t.Helper()
	n.MustRun("ip", "mptcp", "endpoint", "delete", "id", strconv.Itoa(id))
}

// ChangeEndpoint changes the flags of the endpoint with the given ID, e.g.
// "backup" or "nobackup" (`ip mptcp endpoint change id ID FLAG`); on an
// open connection the kernel announces the change with MP_PRIO.
func (n *NS) ChangeEndpoint(id int, flags ...string) {
	n.t.Helper()
	n.MustRun("ip", append([]string{"mptcp", "endpoint", "change", "id", strconv.Itoa(id)}, flags...)...)
}

// FlushEndpoints removes every path manager endpoint of the namespace.
func (n *NS) FlushEndpoints() {
	n.t.Helper()
	n.MustRun("ip", "mptcp", "endpoint", "flush")
}

// EndpointID returns the ID of the endpoint for addr, read from
// `ip mptcp endpoint show`.
func (n *NS) EndpointID(addr string) (int, error) {
	out, err := n.Run("ip", "mptcp", "endpoint", "show")
	if err != nil {
		return 0, err
	}
	// Lines look like "10.210.2.2 port 10100 id 2 signal dev s2".
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != addr {
			continue
		}
		for i := 1; i+1 < len(f); i++ {
			if f[i] == "id" {
				return strconv.Atoi(f[i+1])
			}
		}
	}
	return 0, fmt.Errorf("%s: no MPTCP endpoint for %s in %q", n.Name, addr, out)
}

// WaitCounter polls the namespace's MPTcpExt counter name (with or without
// the "MPTcpExt" prefix) until it reaches at least min, and returns its
// value. It fails t (the caller's test, so that a subtest fails alone)
// after timeout.
func (n *NS) WaitCounter(t testing.TB, name string, min uint64, timeout time.Duration) uint64 {
	t.Helper()
	if !strings.HasPrefix(name, "MPTcpExt") {
		name = "MPTcpExt" + name
	}
	deadline := time.Now().Add(timeout)
	for {
		c, err := n.MPTCPCounters()
		if err != nil {
			t.Fatal(err)
		}
		if v := c[name]; v >= min || time.Now().After(deadline) {
			if v < min {
				t.Fatalf("%s: %s = %d after %v, want >= %d", n.Name, name, v, timeout, min)
			}
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}
