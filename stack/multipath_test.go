package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/mptcp"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
)

// Second path of the two-path pipe topology.
var (
	addrA4b = netip.MustParsePrefix("10.98.0.1/24")
	addrB4b = netip.MustParsePrefix("10.98.0.2/24")
)

// newTwoPathPair returns two engines joined by two pipe links: A has
// addrA4 and addrA4b, B addrB4 and addrB4b.
func newTwoPathPair(t testing.TB, aOpts, bOpts Options) (a, b *Engine) {
	t.Helper()
	a, b = newEngine(t, aOpts), newEngine(t, bOpts)
	l1a, l1b := pipe.New("", "", 1500)
	l2a, l2b := pipe.New("", "", 1500)
	for _, x := range []struct {
		e  *Engine
		l  *pipe.Endpoint
		ap netip.Prefix
	}{{a, l1a, addrA4}, {b, l1b, addrB4}, {a, l2a, addrA4b}, {b, l2b, addrB4b}} {
		if _, err := x.e.AddNIC(x.l, x.ap); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// waitSubflows waits until c has n established subflows.
func waitSubflows(t testing.TB, c *Conn, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		k := 0
		for _, s := range c.ConnInfo().Subflows {
			if s.Established {
				k++
			}
		}
		if k >= n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("subflows: %+v", c.ConnInfo().Subflows)
}

// TestMultipathAddAddr: the server announces its second address with
// ADD_ADDR; the client, accepting one, joins it; data flows over both
// subflows both ways.
func TestMultipathAddAddr(t *testing.T) {
	limits := &mptcp.Limits{Subflows: 2, AddAddrAccepted: 1}
	log := NewEventLog(64)
	a, b := newTwoPathPair(t, Options{MPTCP: MPTCPConfig{Limits: limits, Tracer: log.Tracer()}},
		Options{MPTCP: MPTCPConfig{Limits: limits, Endpoints: []mptcp.Endpoint{{Addr: addrB4b.Addr(), Flags: mptcp.FlagSignal}}}})
	d, c := connectPair(t, a, b, addrB4.Addr())
	// The client is fully established once the server's first DSS
	// arrives; a little data from the server does it.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitSubflows(t, d, 2)
	waitSubflows(t, c, 2)
	done := make(chan struct{})
	go func() { transferVerified(t, c, d, 8<<20, 2); close(done) }()
	buf := make([]byte, 5)
	if _, err := d.Read(buf); err != nil {
		t.Fatal(err)
	}
	transferVerified(t, d, c, 8<<20, 1)
	<-done
	for _, x := range []*Conn{d, c} {
		for _, s := range x.ConnInfo().Subflows {
			if s.BytesSent < 200<<10 {
				t.Errorf("subflow %v->%v sent %d bytes of 8 MiB", s.Local, s.Remote, s.BytesSent)
			}
		}
	}
	// The client's event stream told the story.
	seen := map[EventKind]int{}
	for len(log.Events()) > 0 {
		ev := <-log.Events()
		seen[ev.Kind]++
		if ev.Kind == EventAddressAnnounced && (ev.Local || ev.Address.Addr != addrB4b.Addr()) {
			t.Errorf("announcement event %+v", ev)
		}
	}
	for _, k := range []EventKind{EventConnEstablished, EventAddressAnnounced, EventSubflowAdded, EventSubflowEstablished} {
		if seen[k] != 1 {
			t.Errorf("%d %q events, want 1 (all: %v)", seen[k], k, seen)
		}
	}
	for _, k := range []struct {
		e    *Engine
		c    mptcp.Counter
		want uint64
	}{
		{b, mptcp.AddAddrTx, 1}, {a, mptcp.AddAddr, 1}, {a, mptcp.EchoAddTx, 1}, {b, mptcp.EchoAdd, 1},
		{a, mptcp.MPJoinSynTx, 1}, {b, mptcp.MPJoinSynRx, 1}, {a, mptcp.MPJoinSynAckRx, 1}, {b, mptcp.MPJoinAckRx, 1},
	} {
		if got := k.e.MPTCPCounter(k.c); got != k.want {
			t.Errorf("%v = %d, want %d", k.c, got, k.want)
		}
	}
}

// TestMultipathRemoveNIC: the client's second path goes away in the middle
// of a transfer (its NIC is removed): the client announces REMOVE_ADDR,
// both sides close that subflow, and the transfer completes on the first.
func TestMultipathRemoveNIC(t *testing.T) {
	limits := &mptcp.Limits{Subflows: 2, AddAddrAccepted: 1}
	a, b := newTwoPathPair(t, Options{MPTCP: MPTCPConfig{Limits: limits}},
		Options{MPTCP: MPTCPConfig{Limits: limits, Endpoints: []mptcp.Endpoint{{Addr: addrB4b.Addr(), Flags: mptcp.FlagSignal}}}})
	d, c := connectPair(t, a, b, addrB4.Addr())
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := d.Read(buf); err != nil {
		t.Fatal(err)
	}
	waitSubflows(t, d, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(20 * time.Millisecond)
		if err := a.RemoveNIC(2); err != nil {
			t.Error(err)
		}
	}()
	transferVerified(t, d, c, 16<<20, 3)
	<-done
	deadline := time.Now().Add(5 * time.Second)
	live := func(c *Conn) int {
		n := 0
		for _, s := range c.ConnInfo().Subflows {
			if !s.Closed {
				n++
			}
		}
		return n
	}
	for live(c) != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := live(c); n != 1 {
		t.Errorf("server still has %d subflows", n)
	}
	if a.MPTCPCounter(mptcp.RmAddrTx) != 1 || b.MPTCPCounter(mptcp.RmAddr) != 1 {
		t.Errorf("REMOVE_ADDR sent %d received %d", a.MPTCPCounter(mptcp.RmAddrTx), b.MPTCPCounter(mptcp.RmAddr))
	}
}
