package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
)

// BenchmarkBulkTransfer measures the CPU cost per byte of two endpoints
// (sender and receiver, plus the simulator's encode/parse of each
// segment) over a lossless zero-delay link.
func BenchmarkBulkTransfer(b *testing.B) {
	for _, name := range []string{"plain", "nodelay-4MB"} {
		b.Run(name, func(b *testing.B) {
			cfg := tcp.Config{MaxReceiveBuffer: 4 << 20, ReceiveBuffer: 1 << 20, SendBuffer: 1 << 20, NoDelay: name != "plain"}
			p := newPair(b, pairOpts{client: cfg, server: cfg})
			p.establish()
			const chunk = 64 << 10
			data := randBytes(1, chunk)
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off, got := 0, 0
				ok := p.net.RunUntil(func() bool {
					if off < chunk {
						n, _ := p.a.Write(data[off:])
						off += n
					}
					for {
						n, _ := p.b.Read(buf)
						got += n
						if n == 0 {
							break
						}
					}
					return got == chunk
				}, time.Minute)
				if !ok {
					b.Fatalf("stalled at %d/%d", got, chunk)
				}
			}
		})
	}
}
