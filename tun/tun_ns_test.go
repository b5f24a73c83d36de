package tun

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// bulkSize is what each direction carries in TestTUNBulk: 256 MiB, or
// 16 MiB with -short.
func bulkSize() int64 {
	if testing.Short() {
		return 16 << 20
	}
	return 256 << 20
}

// TestTUNBulk moves bulkSize bytes each way between the kernel and gVisor's
// TCP through the Endpoint, IPv4 and IPv6, at MTU 1500 and 1280, and checks
// the SHA-256 of what arrived, then the Endpoint's and the kernel's counters.
func TestTUNBulk(t *testing.T) {
	for _, mtu := range []int{1500, 1280} {
		t.Run("mtu"+strconv.Itoa(mtu), func(t *testing.T) {
			g := newGVisorTUN(t, tunSetup{mtu: mtu})
			n := bulkSize()
			var sent, received int64
			for _, v6 := range []bool{false, true} {
				fam := "ipv4"
				if v6 {
					fam = "ipv6"
				}
				for _, dir := range []direction{inbound, outbound} {
					w, r, err := g.pair(dir, v6)
					if err != nil {
						t.Fatalf("%s %v: connecting: %v", fam, dir, err)
					}
					res, err := transfer(w, r, n, true, 3*time.Minute)
					if err != nil {
						t.Fatalf("%s %v: %v", fam, dir, err)
					}
					t.Logf("%s %v: %d MiB verified in %v (%.0f MB/s)", fam, dir, n>>20,
						res.elapsed.Round(time.Millisecond), float64(n)/res.elapsed.Seconds()/1e6)
					if dir == inbound {
						received += n
					} else {
						sent += n
					}
				}
			}

			st := g.ep.Stats()
			t.Logf("stats: %+v", st)
			if st.RXBytes < uint64(received) || st.TXBytes < uint64(sent) {
				t.Errorf("RXBytes %d / TXBytes %d below the %d / %d payload bytes carried", st.RXBytes, st.TXBytes, received, sent)
			}
			// An MTU-sized segment carries at most MTU-40 payload bytes.
			if minPkts := uint64(received) / uint64(mtu-40); st.RXPackets < minPkts {
				t.Errorf("RXPackets %d < %d: segments larger than the MTU?", st.RXPackets, minPkts)
			}
			if st.RXBatches == 0 || st.TXBatches == 0 || st.TXPackets == 0 {
				t.Errorf("batch counters did not move: %+v", st)
			}
			if st.RXBatches >= st.RXPackets {
				t.Errorf("RXBatches %d >= RXPackets %d: reads never returned more than one packet", st.RXBatches, st.RXPackets)
			}
			// gVisor's GRO must have merged some of the kernel's segments.
			if st.RXDelivered >= st.RXPackets {
				t.Errorf("RXDelivered %d >= RXPackets %d: nothing coalesced", st.RXDelivered, st.RXPackets)
			}
			// Everything the kernel handed us carried valid checksums,
			// including segments wireguard/tun cut from TSO super-packets.
			if st.RXBadChecksum != 0 || st.RXMalformed != 0 || st.RXOversize != 0 || st.TXDrops != 0 {
				t.Errorf("drops on a clean link: %+v", st)
			}
			// wireguard/tun coalesces our writes: the kernel counts one
			// packet per coalesced super-packet.
			kRX, _, _, _, err := g.ns.LinkCounters(g.ifc)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("kernel %s rx_packets %d for %d packets written (%.1f per skb)", g.ifc, kRX, st.TXPackets, float64(st.TXPackets)/float64(max(kRX, 1)))
			if kRX >= st.TXPackets {
				t.Errorf("kernel received %d packets for %d written: no write coalescing", kRX, st.TXPackets)
			}
		})
	}
}

// TestTUNLinkEvents takes the kernel interface down and up and changes its
// MTU, and checks that the Endpoint reports each change once, that the event
// handler can disable and re-enable the NIC, and that traffic flows after.
func TestTUNLinkEvents(t *testing.T) {
	events := make(chan Event, 64)
	// The handler runs from Create on (the first link-up comes while the
	// kernel side is configured), so it finds the stack through a pointer
	// set once the topology exists.
	var gp atomic.Pointer[gvisorTUN]
	g := newGVisorTUN(t, tunSetup{mtu: 1500, opts: []Option{WithEventHandler(func(ev Event) {
		// The documented use: follow the link state with the NIC.
		if g := gp.Load(); g != nil {
			switch ev.Kind {
			case LinkDown:
				g.s.DisableNIC(g.nicID)
			case LinkUp:
				g.s.EnableNIC(g.nicID)
			}
		}
		events <- ev
	})}})
	gp.Store(g)
	expect := func(kind EventKind, mtu int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Kind != kind {
					t.Fatalf("got event %v (MTU %d), want %v", ev.Kind, ev.MTU, kind)
				}
				if mtu != 0 && ev.MTU != mtu {
					t.Fatalf("event %v with MTU %d, want %d", ev.Kind, ev.MTU, mtu)
				}
				return
			case <-deadline:
				t.Fatalf("no %v event within 10s", kind)
			}
		}
	}
	noMore := func() {
		t.Helper()
		select {
		case ev := <-events:
			t.Fatalf("unexpected event %v (MTU %d)", ev.Kind, ev.MTU)
		case <-time.After(1500 * time.Millisecond):
		}
	}

	expect(LinkUp, 0)
	if !g.ep.LinkUp() {
		t.Error("LinkUp() false after a link-up event")
	}
	noMore()

	g.ns.MustRun("ip", "link", "set", g.ifc, "down")
	expect(LinkDown, 0)
	if g.ep.LinkUp() {
		t.Error("LinkUp() true after a link-down event")
	}
	if g.s.CheckNIC(g.nicID) {
		t.Error("NIC still enabled after the handler disabled it")
	}
	noMore()

	g.ns.MustRun("ip", "link", "set", g.ifc, "up")
	expect(LinkUp, 0)
	// IPv6 addresses are flushed on link down; restore ours.
	g.ns.AddAddr(g.ifc, kernel6.String()+"/64")

	g.ns.MustRun("ip", "link", "set", g.ifc, "mtu", "1400")
	expect(MTUChanged, 1400)
	if got := g.ep.MTU(); got != 1400 {
		t.Errorf("MTU() = %d after the kernel MTU became 1400", got)
	}
	noMore()

	for _, v6 := range []bool{false, true} {
		for _, dir := range []direction{inbound, outbound} {
			w, r, err := g.pair(dir, v6)
			if err != nil {
				t.Fatalf("after the flap, v6=%v %v: %v", v6, dir, err)
			}
			if _, err := transfer(w, r, 4<<20, true, time.Minute); err != nil {
				t.Fatalf("after the flap, v6=%v %v: %v", v6, dir, err)
			}
		}
	}
}

// TestTUNCloseUnderLoad closes the Endpoint while bulk transfers run both
// ways: Close must not hang or panic, the goroutines must stop, the stack
// must lose the NIC, and the transfers must fail rather than hang.
func TestTUNCloseUnderLoad(t *testing.T) {
	g := newGVisorTUN(t, tunSetup{mtu: 1500})
	errc := make(chan error, 2)
	for _, dir := range []direction{inbound, outbound} {
		w, r, err := g.pair(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := transfer(w, r, 1<<40, false, 5*time.Second)
			errc <- err
		}()
	}
	// Let traffic build up.
	deadline := time.Now().Add(5 * time.Second)
	for g.ep.Stats().RXBytes < 16<<20 || g.ep.Stats().TXBytes < 16<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("traffic did not start: %+v", g.ep.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}

	closed := make(chan struct{})
	go func() { g.ep.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
	waitOrFail(t, "Wait after Close", 10*time.Second, g.ep.Wait)
	if g.s.HasNIC(g.nicID) {
		t.Error("stack still has the NIC after the Endpoint closed")
	}
	before := g.ep.Stats()
	for range 2 {
		select {
		case err := <-errc:
			if err == nil {
				t.Error("a 1 TiB transfer completed across a closed endpoint")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("transfer still running 30s after Close")
		}
	}
	time.Sleep(100 * time.Millisecond)
	if after := g.ep.Stats(); after.RXPackets != before.RXPackets {
		t.Errorf("packets still received after Wait: %d -> %d", before.RXPackets, after.RXPackets)
	}
	t.Logf("stats at close: %s", fmt.Sprintf("%+v", before))
}
