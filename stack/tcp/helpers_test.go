package tcp_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip"
)

var (
	addrA = tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	addrB = tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
)

const port = 80

// pair is a client and a server endpoint over a simulated network.
type pair struct {
	t      testing.TB
	net    *simnet.Network
	ha, hb *simnet.Host
	ab, ba *simnet.Link
	a, b   *tcp.Endpoint
	ln     *tcp.Listener
}

type pairOpts struct {
	seed     int64
	ab, ba   simnet.LinkConfig
	client   tcp.Config
	server   tcp.Config
	listener tcp.ListenerConfig
}

// newPair builds the network, listens on B and dials from A; it returns
// before the handshake runs.
func newPair(t testing.TB, o pairOpts) *pair {
	t.Helper()
	p := &pair{t: t, net: simnet.New(o.seed)}
	p.ha, p.hb = p.net.AddHost(addrA), p.net.AddHost(addrB)
	p.ab, p.ba = p.net.Connect(addrA, addrB, o.ab, o.ba)
	lc := o.listener
	lc.Config = o.server
	ln, err := p.hb.Listen(port, lc)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	if o.client.ISS == 0 {
		o.client.ISS = 0x1000_0000
	}
	p.a, err = p.ha.Dial(0, addrB, port, o.client)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// establish runs the handshake and accepts the server side.
func (p *pair) establish() {
	p.t.Helper()
	ok := p.net.RunUntil(func() bool {
		if p.b == nil {
			p.b = p.hb.Accept(port)
		}
		return p.b != nil && p.a.State() == tcp.StateEstablished && p.b.State() == tcp.StateEstablished
	}, 30*time.Second)
	if !ok {
		p.t.Fatalf("handshake did not complete: client %v (err %v), server %v", p.a.State(), p.a.Err(), p.b)
	}
}

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// transfer writes data from src to dst (closing src's write side when
// closeAfter), reading everything at dst; it returns what dst read and the
// virtual time taken.
func (p *pair) transfer(src, dst *tcp.Endpoint, data []byte, closeAfter bool, limit time.Duration) ([]byte, time.Duration) {
	p.t.Helper()
	start := p.net.Now()
	var got bytes.Buffer
	off := 0
	buf := make([]byte, 64<<10)
	eof := false
	pump := func() bool {
		for off < len(data) {
			n, err := src.Write(data[off:])
			off += n
			if err != nil {
				if !errors.Is(err, tcp.ErrWouldBlock) {
					p.t.Fatalf("write: %v", err)
				}
				break
			}
		}
		if off == len(data) && closeAfter {
			src.CloseWrite()
		}
		for {
			n, err := dst.Read(buf)
			got.Write(buf[:n])
			if n == 0 {
				if err == nil {
					eof = true
				}
				break
			}
		}
		if closeAfter {
			return eof
		}
		return got.Len() >= len(data)
	}
	if !p.net.RunUntil(pump, limit) {
		p.t.Fatalf("transfer incomplete: sent %d/%d, received %d; src %v %+v; dst %v", off, len(data), got.Len(), src.State(), src.Info(), dst.State())
	}
	return got.Bytes(), p.net.Now().Sub(start)
}

func sameData(t testing.TB, want, got []byte) {
	t.Helper()
	if len(want) != len(got) || sha256.Sum256(want) != sha256.Sum256(got) {
		t.Fatalf("data mismatch: sent %d bytes, received %d", len(want), len(got))
	}
}
