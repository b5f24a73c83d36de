package impair

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestGVisorTCP runs gVisor's own TCP between two stacks joined by a pipe,
// one side wrapped in an Endpoint impairing both directions, and checks the
// bytes arrive intact: the wrapper holds and releases real packets (with
// their pushed headers) correctly, and the impairment is survivable.
func TestGVisorTCP(t *testing.T) {
	const n = 1 << 20
	cfg, err := Parse("delay 2ms 1ms loss 1% reorder 5% duplicate 1%")
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := pipe.New("\x02\x00\x00\x00\x00\x01", "\x02\x00\x00\x00\x00\x02", 1500)
	imp := New(p1, cfg, cfg, 21)
	addr := func(b byte) tcpip.Address { return tcpip.AddrFrom4([4]byte{10, 0, 0, b}) }
	newStack := func(ep stack.LinkEndpoint, a tcpip.Address) *stack.Stack {
		s := stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
		})
		if err := s.CreateNIC(1, ep); err != nil {
			t.Fatal(err)
		}
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: a.WithPrefix()}
		pa.AddressWithPrefix.PrefixLen = 24
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
		s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
		return s
	}
	s1, s2 := newStack(imp, addr(1)), newStack(p2, addr(2))

	ln, err := gonet.ListenTCP(s2, tcpip.FullAddress{NIC: 1, Addr: addr(2), Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		k, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = k, err
		done <- r
	}()
	c, err := gonet.DialTCP(s1, tcpip.FullAddress{NIC: 1, Addr: addr(2), Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	r := <-done
	c.Close()
	ln.Close()
	if r.err != nil || r.n != n || !bytes.Equal(r.sum[:], sha256Sum(data)) {
		t.Errorf("received %d bytes (%v), want %d intact", r.n, r.err, n)
	}
	st := imp.Stats()
	t.Logf("%+v", st)
	for _, s := range []DirStats{st.Egress, st.Ingress} {
		if s.Dropped == 0 || s.Delayed == 0 {
			t.Errorf("impairment did not happen: %+v", s)
		}
	}
	s1.Destroy()
	s2.Destroy()
	imp.Wait()
	if st := imp.Stats(); st.Egress.Queued != 0 || st.Ingress.Queued != 0 {
		t.Errorf("packets queued after the stack destroyed the NIC: %+v", st)
	}
	checkLeaks(t)
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
