package stack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// synDataConnect dials b from a with synData in the SYN, b's listener
// accepting SYN data or not, and returns both ends.
func synDataConnect(t *testing.T, a, b *Engine, accept bool, synData []byte) (dialed, accepted *Conn) {
	t.Helper()
	ln, err := b.ListenTCP("tcp", tcpAddr(addrB4, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ln.SetAcceptSynData(accept)
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
	d, err := a.DialTCPSynData(ctx, "tcp", nil, ln.Addr().(*net.TCPAddr), synData)
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

// TestSynData: the first bytes ride in the SYN when the listener accepts
// them and in the stream when it does not; either way the peer reads them
// first, then the rest of the stream, intact both ways, over MPTCP and
// plain TCP.
func TestSynData(t *testing.T) {
	for _, tc := range []struct {
		name          string
		plain, accept bool
	}{
		{"mptcp-accepted", false, true},
		{"mptcp-ignored", false, false},
		{"tcp-accepted", true, true},
		{"tcp-ignored", true, false},
		// 3000 bytes: the SYN carries the first ~500, the rest follows.
		{"mptcp-long", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts Options
			opts.MPTCP.Disabled = tc.plain
			a, b := newPipePair(t, 1500, opts)
			hello := []byte("CONNECT 198.51.100.7:443 and the first bytes of the request")
			if tc.name == "mptcp-long" {
				hello = bytes.Repeat([]byte("0123456789"), 300)
			}
			d, c := synDataConnect(t, a, b, tc.accept, hello)
			got := make([]byte, len(hello))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, hello) {
				t.Fatalf("server read %q (%v), want %q", got, err, hello)
			}
			c.SetReadDeadline(time.Time{})
			accepted := d.Info().SynData
			switch {
			case tc.accept && (accepted == 0 || accepted > 536):
				t.Fatalf("client: %d bytes of SYN data acknowledged", accepted)
			case !tc.accept && accepted != 0:
				t.Fatalf("client: %d bytes acknowledged by a listener that ignores SYN data", accepted)
			}
			if ci := d.ConnInfo(); ci.MPTCP == tc.plain {
				t.Fatalf("MPTCP %v, want %v (fallback %q)", ci.MPTCP, !tc.plain, ci.Fallback)
			}
			transferVerified(t, d, c, 2<<20, 1)
			transferVerified(t, c, d, 1<<20, 2)
		})
	}
}

// TestSynDataEarlyAccept: a connection whose SYN carried accepted data is
// accepted at once; a Write on it waits for the handshake and arrives.
func TestSynDataEarlyAccept(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := synDataConnect(t, a, b, true, []byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	d.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(d, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q %v", buf, err)
	}
}

// firstOnlyLink delivers the first packet written to it and drops the
// rest: the peer gets our SYN and nothing after it.
type firstOnlyLink struct {
	*pipe.Endpoint
	sent atomic.Int64
}

func (l *firstOnlyLink) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	n := pkts.Len()
	if l.sent.Add(int64(n)) == int64(n) && n == 1 {
		return l.Endpoint.WritePackets(pkts)
	}
	return n, nil
}

// TestSynDataHandshakeNeverCompletes: a connection accepted from a SYN
// with data whose handshake never completes (the client's ACKs are lost,
// or its address was forged) gives the application the SYN's data, then a
// read error once the SYN-ACK retransmissions give up; a Write waiting for
// the handshake fails too. Nothing hangs.
func TestSynDataHandshakeNeverCompletes(t *testing.T) {
	pa, pb := pipe.New("", "", 1500)
	la := &firstOnlyLink{Endpoint: pa}
	opts := Options{}
	opts.TCP.SynRetries = 1
	a, b := newEngine(t, opts), newEngine(t, opts)
	if _, err := a.AddNIC(la, addrA4, addrA6); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddNIC(pb, addrB4, addrB6); err != nil {
		t.Fatal(err)
	}
	ln, err := b.ListenTCP("tcp", tcpAddr(addrB4, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.SetAcceptSynData(true)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if c, err := a.DialTCPSynData(ctx, "tcp", nil, ln.Addr().(*net.TCPAddr), []byte("hello")); err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("answer"))
		werr <- err
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the SYN data: %d bytes, %v; want the handshake's failure", n, err)
	}
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("a write on a connection whose handshake failed succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write still blocked after the handshake failed")
	}
}
