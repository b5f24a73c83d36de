package stack

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/mptcp"
)

// BenchmarkEnginePair moves bulk data between two engines over a gVisor
// pipe link (no TUN, no kernel), with MPTCP on one subflow and with plain
// TCP, so the cost of the MPTCP layer shows on its own. It reports MB/s of
// the wall clock; run both in one invocation to compare:
//
//	go test -run '^$' -bench BenchmarkEnginePair -benchtime 5x ./stack/
func BenchmarkEnginePair(b *testing.B) {
	const n = 64 << 20
	for _, mode := range []struct {
		name string
		cfg  MPTCPConfig
	}{
		{"tcp", MPTCPConfig{Disabled: true}},
		{"mptcp", MPTCPConfig{}},
		{"mptcp-checksum", MPTCPConfig{Checksums: true}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			a, e := newPipePair(b, 1500, Options{MPTCP: mode.cfg})
			buf := make([]byte, 256<<10)
			b.SetBytes(n)
			var elapsed time.Duration
			for range b.N {
				d, c := connectPair(b, a, e, addrB4.Addr())
				done := make(chan error, 1)
				go func() {
					_, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
					done <- err
				}()
				start := time.Now()
				for sent := 0; sent < n; sent += len(buf) {
					if _, err := d.Write(buf); err != nil {
						b.Fatal(err, "; peer:", c.mc.Err())
					}
				}
				d.CloseWrite()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
				if ci := d.ConnInfo(); ci.MPTCP == mode.cfg.Disabled {
					b.Fatalf("MPTCP = %v", ci.MPTCP)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds()/1e6, "MB/s")
		})
	}
}

// BenchmarkEnginePairTwoPaths moves bulk data between two engines joined
// by two gVisor pipe links, over MPTCP with one subflow and with two (the
// server announces its second address and the client joins it), in both
// directions, so that the cost of spreading a connection over subflows
// shows without TUN, kernel or daemon:
//
//	go test -run '^$' -bench BenchmarkEnginePairTwoPaths -benchtime 3x ./stack/
func BenchmarkEnginePairTwoPaths(b *testing.B) {
	const n = 64 << 20
	for _, subflows := range []int{1, 2} {
		for _, serverSends := range []bool{false, true} {
			name := fmt.Sprintf("subflows=%d/client-sends", subflows)
			if serverSends {
				name = fmt.Sprintf("subflows=%d/server-sends", subflows)
			}
			b.Run(name, func(b *testing.B) {
				limits := &mptcp.Limits{Subflows: 2, AddAddrAccepted: 1}
				srv := Options{MPTCP: MPTCPConfig{Limits: limits}}
				if subflows == 2 {
					srv.MPTCP.Endpoints = []mptcp.Endpoint{{Addr: addrB4b.Addr(), Flags: mptcp.FlagSignal}}
				}
				a, e := newTwoPathPair(b, Options{MPTCP: MPTCPConfig{Limits: limits}}, srv)
				buf := make([]byte, 256<<10)
				b.SetBytes(n)
				var elapsed time.Duration
				for range b.N {
					d, c := connectPair(b, a, e, addrB4.Addr())
					if _, err := c.Write([]byte("x")); err != nil { // fully establishes the client
						b.Fatal(err)
					}
					if _, err := io.ReadFull(d, make([]byte, 1)); err != nil {
						b.Fatal(err)
					}
					waitSubflows(b, d, subflows)
					waitSubflows(b, c, subflows)
					w, r := d, c
					if serverSends {
						w, r = c, d
					}
					done := make(chan error, 1)
					go func() {
						_, err := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
						done <- err
					}()
					start := time.Now()
					for sent := 0; sent < n; sent += len(buf) {
						if _, err := w.Write(buf); err != nil {
							b.Fatal(err)
						}
					}
					w.CloseWrite()
					if err := <-done; err != nil {
						b.Fatal(err)
					}
					elapsed += time.Since(start)
					per := ""
					for _, s := range w.ConnInfo().Subflows {
						per += fmt.Sprintf(" %d", s.BytesSent)
					}
					b.Logf("bytes per subflow:%s", per)
					d.Close()
					c.Close()
				}
				b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds()/1e6, "MB/s")
			})
		}
	}
}
