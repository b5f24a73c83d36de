package stack

import (
	"io"
	"testing"
	"time"
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
