package conformance

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mptund/mptund/stack"
)

// TestEngineSlowReader has a kernel server (plain TCP, then MPTCP) send 24
// MiB to an engine client whose application reads slowly, so the
// connection-level receive window closes and reopens many times. It once
// lost data after a fallback: the subflow advertised the window rounded up
// to its scale and acknowledged bytes the connection-level buffer then
// refused. Every byte must arrive (SHA-256).
func TestEngineSlowReader(t *testing.T) {
	n := 24 << 20
	if testing.Short() {
		n = 8 << 20
	}
	for _, kernelMPTCP := range []bool{false, true} {
		name := map[bool]string{false: "plain-kernel", true: "mptcp-kernel"}[kernelMPTCP]
		t.Run(name, func(t *testing.T) {
			g := newEngineTUNWith(t, engineTUNConfig{mtu: 1500}) // MPTCP on
			ln := g.listenKernel(t, engKernel4, kernelMPTCP)
			acc := acceptAsync(ln)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ec, err := g.eng.Dial(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer ec.Close()
			kc := <-acc
			if kc == nil {
				t.Fatal("kernel accept failed")
			}
			sent := make(chan [32]byte, 1)
			go func() {
				h := sha256.New()
				rng := rand.NewChaCha8([32]byte{'s', 'l', 'o', 'w'})
				buf := make([]byte, 64<<10)
				for k := 0; k < n; k += len(buf) {
					rng.Read(buf)
					h.Write(buf)
					if _, err := kc.Write(buf); err != nil {
						t.Errorf("kernel write: %v", err)
						break
					}
				}
				kc.Close()
				sent <- [32]byte(h.Sum(nil))
			}()
			h := sha256.New()
			buf := make([]byte, 16<<10)
			got := 0
			ec.SetReadDeadline(time.Now().Add(2 * time.Minute))
			for {
				k, err := ec.Read(buf)
				h.Write(buf[:k])
				got += k
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("engine read after %d bytes: %v", got, err)
				}
				time.Sleep(2 * time.Millisecond) // about 8 MB/s
			}
			want := <-sent
			ci := ec.(*stack.Conn).ConnInfo()
			if got != n || [32]byte(h.Sum(nil)) != want {
				t.Fatalf("received %d of %d bytes (SHA-256 match: %v); %+v", got, n, [32]byte(h.Sum(nil)) == want, ci.Data)
			}
			if ci.MPTCP != kernelMPTCP {
				t.Errorf("MPTCP = %v, fallback %q", ci.MPTCP, ci.Fallback)
			}
			t.Logf("%s: %d bytes verified; reassembly %+v", name, got, ci.Data.Reassembly)
		})
	}
}
