package conformance

// TestEngineMPTCPSynFlood: 20,000 MP_CAPABLE SYNs in 0.2 s from spoofed
// sources that never answer hit an engine listener (forged on the
// kernel's side of the TUN with an AF_PACKET socket, rawinject_test.go;
// the engine's SYN/ACKs go to addresses the namespace does not forward).
// Genuine kernel MPTCP clients connect during the flood, right after it,
// and 1, 5, 10 and 16 s later: each must negotiate MPTCP (the engine's
// ConnInfo and the kernel's MPTCP_INFO: no fallback, RFC 8684 §3.1; the
// kernel listener side of RFC 4987 SYN cookies keeps MPTCP too, because
// MPTCP v1's third ACK echoes both keys) and move 1 MiB intact. The
// engine's memory (VmRSS of this process) must stay within 64 MiB of
// what it was before the flood.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/stack"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const (
	floodSYNs     = 20000
	floodDuration = 200 * time.Millisecond
	floodRSSLimit = 64 << 20
)

// vmRSS returns this process's resident set size and its peak (VmHWM).
func vmRSS() (rss, hwm uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}

// mpCapableSYNOptions are the options of a Linux MPTCP SYN: MSS, SACK
// permitted, timestamps, window scale, MP_CAPABLE v1 with flag H.
func mpCapableSYNOptions(tsval uint32) []byte {
	o := []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7, 30, 4, 0x01, 0x01}
	o[8], o[9], o[10], o[11] = byte(tsval>>24), byte(tsval>>16), byte(tsval>>8), byte(tsval)
	return o
}

// floodProbe is one genuine connection attempt.
type floodProbe struct {
	when     string
	at       time.Duration // since the flood started
	err      error
	mptcp    bool
	fallback string
	kernel   kernelMPTCPInfo
	elapsed  time.Duration
}

// pingPong sends a few bytes each way between a and b and reads them.
func pingPong(a, b net.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	defer a.SetDeadline(time.Time{})
	defer b.SetDeadline(time.Time{})
	for _, d := range []struct{ w, r net.Conn }{{a, b}, {b, a}} {
		msg := []byte("ping")
		if _, err := d.w.Write(msg); err != nil {
			return fmt.Errorf("ping write: %w", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(d.r, got); err != nil || string(got) != string(msg) {
			return fmt.Errorf("ping read %q: %v", got, err)
		}
	}
	return nil
}

func TestEngineMPTCPSynFlood(t *testing.T) {
	r := newMPTCPRig(t, mptcpRigConfig{})
	// Room for the whole flood in the TUN's queue, so that it reaches the
	// engine rather than the device's drop counter.
	r.ns.SetTxQueueLen(r.ifc, 25000)
	ln, err := r.eng.Listen("tcp", netip.AddrPortFrom(engEngine4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lport := uint16(ln.Addr().(*net.TCPAddr).Port)
	ps, err := openPacketSock(r.ns, r.ifc, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()

	// The engine side of the probes: accept and echo nothing, just read
	// (verifiedTransfer runs kernel -> engine).
	accepted := make(chan *stack.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c.(*stack.Conn)
		}
	}()
	before := r.mptcpCounters(t)
	runtime.GC()
	rss0, _ := vmRSS()
	link0 := r.ep.Stats()

	var mu sync.Mutex
	var probes []floodProbe
	probe := func(when string, start time.Time) {
		p := floodProbe{when: when, at: time.Since(start)}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		kc, err := r.dialKernel(ctx, ln.Addr().String(), true)
		cancel()
		if err != nil {
			p.err = fmt.Errorf("kernel dial: %w", err)
		} else {
			var ec *stack.Conn
			select {
			case ec = <-accepted:
			case <-time.After(10 * time.Second):
			}
			if ec == nil {
				kc.Close()
				p.err = fmt.Errorf("engine accept failed")
			} else {
				// A short exchange each way first: the kernel decides
				// on its fallback when it sees the engine's first
				// segments (MPCapableDataFallback), after connect.
				p.err = pingPong(kc, ec)
				p.kernel, _ = kernelMPTCPState(kc)
				ci := ec.ConnInfo()
				p.mptcp, p.fallback = ci.MPTCP, ci.Fallback
				if p.err == nil {
					_, p.err = verifiedTransfer(kc, ec, 1<<20, 30*time.Second)
				} else {
					kc.Close()
					ec.Close()
				}
			}
		}
		p.elapsed = time.Since(t0)
		mu.Lock()
		probes = append(probes, p)
		mu.Unlock()
	}

	// The flood: spoofed sources in 10.212.0.0/16, random ports and ISNs,
	// paced in bursts over floodDuration.
	rng := rand.New(rand.NewPCG(2024, 4987))
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(floodDuration / 2)
		probe("during", start)
	}()
	const bursts = 40
	var sendErrs int
	for b := range bursts {
		for range floodSYNs / bursts {
			src := netip.AddrFrom4([4]byte{10, 212, byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
			seg := rawSeg{
				Src: netip.AddrPortFrom(src, uint16(1024+rng.IntN(60000))), Dst: netip.AddrPortFrom(engEngine4, lport),
				Seq: rng.Uint32(), Flags: header.TCPFlagSyn, Window: 64240, Options: mpCapableSYNOptions(rng.Uint32()),
			}
			if err := ps.send(seg.bytes()); err != nil {
				sendErrs++
			}
		}
		if d := time.Until(start.Add(floodDuration * time.Duration(b+1) / bursts)); d > 0 {
			time.Sleep(d)
		}
	}
	floodTime := time.Since(start)
	_, hwmFlood := vmRSS()
	rssFlood, _ := vmRSS()
	probe("right after", start)
	for _, at := range []time.Duration{time.Second, 5 * time.Second, 10 * time.Second, 16 * time.Second} {
		if d := time.Until(start.Add(floodTime + at)); d > 0 {
			time.Sleep(d)
		}
		probe(fmt.Sprintf("+%v", at), start)
	}
	wg.Wait()
	link := r.ep.Stats()
	runtime.GC()
	rss1, hwm1 := vmRSS()
	after := r.mptcpCounters(t)
	logMovedCounters(t, "flood", before, after)
	t.Logf("flood: %d SYNs sent in %v (%d send errors); engine's TUN read %d packets meanwhile; engine Stats %+v",
		floodSYNs, floodTime.Round(time.Millisecond), sendErrs, link.RXPackets-link0.RXPackets, r.eng.Stats())
	t.Logf("engine process RSS: %d MiB before, %d MiB at the end of the flood, %d MiB after the probes (peak VmHWM %d MiB during, %d MiB at the end)",
		rss0>>20, rssFlood>>20, rss1>>20, hwmFlood>>20, hwm1>>20)
	if rss1 > rss0+floodRSSLimit || rssFlood > rss0+floodRSSLimit {
		t.Errorf("engine RSS grew by more than %d MiB: %d MiB before, %d MiB after the flood, %d MiB after the probes", floodRSSLimit>>20, rss0>>20, rssFlood>>20, rss1>>20)
	}
	mu.Lock()
	defer mu.Unlock()
	bad := 0
	for _, p := range probes {
		t.Logf("probe %-12s at %6v: MPTCP=%v fallback=%q kernel plain=%v subflows=%d, 1 MiB in %v, err %v",
			p.when, p.at.Round(time.Millisecond), p.mptcp, p.fallback, p.kernel.Plain, p.kernel.Subflows, p.elapsed.Round(time.Millisecond), p.err)
		switch {
		case p.err != nil:
			t.Errorf("probe %s (%v after the flood started): %v", p.when, p.at.Round(time.Millisecond), p.err)
			bad++
		case !p.mptcp || p.fallback != "" || p.kernel.Plain:
			t.Errorf("probe %s (%v after the flood started): not MPTCP: engine MPTCP=%v fallback %q, kernel plain=%v",
				p.when, p.at.Round(time.Millisecond), p.mptcp, p.fallback, p.kernel.Plain)
			bad++
		}
	}
	if len(probes) != 6 {
		t.Errorf("%d probes ran, want 6", len(probes))
	}
	t.Logf("%d of %d genuine connections failed or fell back", bad, len(probes))
}
