package stack

import (
	"context"
	"crypto/sha256"

	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
)

// Addresses of the two ends of the in-process pipe topology.
var (
	addrA4 = netip.MustParsePrefix("10.99.0.1/24")
	addrB4 = netip.MustParsePrefix("10.99.0.2/24")
	addrA6 = netip.MustParsePrefix("fd00:99::1/64")
	addrB6 = netip.MustParsePrefix("fd00:99::2/64")
)

// newPipePair returns two engines joined by a gVisor pipe link (MTU mtu,
// no checksum offload: every checksum is verified by the engine), A with
// addrA4/addrA6 and B with addrB4/addrB6.
func newPipePair(t testing.TB, mtu uint32, opts Options) (a, b *Engine) {
	t.Helper()
	la, lb := pipe.New("", "", mtu)
	a = newEngine(t, opts)
	b = newEngine(t, opts)
	if _, err := a.AddNIC(la, addrA4, addrA6); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddNIC(lb, addrB4, addrB6); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func newEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// connectPair opens a connection from a to a listener on b at addr and
// returns the dialing and accepted ends.
func connectPair(t testing.TB, a, b *Engine, addr netip.Addr) (dialed, accepted *Conn) {
	t.Helper()
	ln, err := b.ListenTCP("tcp", &net.TCPAddr{IP: addr.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan *Conn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := a.DialTCP(ctx, "tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c := <-acc
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { d.Close(); c.Close() })
	return d, c
}

// sendStream writes n pseudo-random bytes (seeded by seed) to w in chunks
// of random size and returns their SHA-256.
func sendStream(w io.Writer, n int64, seed uint64) ([sha256.Size]byte, error) {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	sizes := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, 96<<10)
	for n > 0 {
		k := int(min(n, int64(1+sizes.IntN(len(buf)))))
		rng.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [sha256.Size]byte{}, err
		}
		n -= int64(k)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// recvStream reads r to EOF and returns the byte count and SHA-256.
func recvStream(r io.Reader) (int64, [sha256.Size]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 64<<10))
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// transferVerified sends n bytes from w to r, half-closes w and checks that
// r received exactly those bytes followed by EOF.
func transferVerified(t testing.TB, w, r *Conn, n int64, seed uint64) {
	t.Helper()
	type result struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, sum, err := recvStream(r)
		done <- result{n, sum, err}
	}()
	want, err := sendStream(w, n, seed)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := w.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("receive after %d bytes: %v", res.n, res.err)
		}
		if res.n != n || res.sum != want {
			t.Fatalf("received %d bytes with SHA-256 %x, sent %d with %x", res.n, res.sum, n, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not finish within 60 s")
	}
}

func tcpAddr(p netip.Prefix, port int) *net.TCPAddr {
	return &net.TCPAddr{IP: p.Addr().AsSlice(), Port: port}
}

func addrString(p netip.Prefix, port int) string {
	return netip.AddrPortFrom(p.Addr(), uint16(port)).String()
}
