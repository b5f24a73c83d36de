package splice

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback TCP:", err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func side(c *net.TCPConn) Side {
	return Side{Conn: c, Abort: func() { c.SetLinger(0); c.Close() }}
}

// relay builds client <-> (a relay b) <-> server and runs the relay.
func relay(t *testing.T) (client, server *net.TCPConn, done chan Result) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	done = make(chan Result, 1)
	go func() { done <- Run(context.Background(), side(a), side(b), nil) }()
	return client, server, done
}

func TestHalfCloseBothWays(t *testing.T) {
	client, server, done := relay(t)
	up, down := make([]byte, 3<<20), make([]byte, 5<<20)
	rand.Read(up)
	rand.Read(down)
	go func() { client.Write(up); client.CloseWrite() }()
	got, err := io.ReadAll(server) // ends at the relayed FIN
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("server read %d bytes (%v), want %d", len(got), err, len(up))
	}
	// The other direction still works after the half-close.
	go func() { server.Write(down); server.CloseWrite() }()
	got, err = io.ReadAll(client)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(down) {
		t.Fatalf("client read %d bytes (%v), want %d", len(got), err, len(down))
	}
	r := <-done
	if r.Err != nil || r.Reset || r.AToB != int64(len(up)) || r.BToA != int64(len(down)) {
		t.Errorf("result %+v", r)
	}
}

func TestResetPropagates(t *testing.T) {
	client, server, done := relay(t)
	client.Write([]byte("hello"))
	buf := make([]byte, 5)
	io.ReadFull(server, buf)
	server.SetLinger(0)
	server.Close() // RST
	r := <-done
	if !r.Reset || r.Cause != "b" {
		t.Errorf("result %+v", r)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after the server's reset: %v, want ECONNRESET", err)
	}
}

// TestBackPressure: a reader that stops reading makes the writer on the
// other side block, and the relay holds no more than its buffers.
func TestBackPressure(t *testing.T) {
	client, server, done := relay(t)
	for _, c := range []*net.TCPConn{client, server} {
		c.SetReadBuffer(64 << 10)
		c.SetWriteBuffer(64 << 10)
	}
	written := make(chan int64, 1)
	go func() {
		var n int64
		buf := make([]byte, 64<<10)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		for {
			k, err := client.Write(buf)
			n += int64(k)
			if err != nil {
				written <- n
				return
			}
		}
	}()
	n := <-written // the deadline expired: the path is full
	if n > 32<<20 {
		t.Errorf("the writer got %d bytes in before blocking", n)
	}
	got, _ := io.ReadFull(server, make([]byte, n))
	if int64(got) != n {
		t.Errorf("server read %d of %d", got, n)
	}
	client.Close()
	server.Close()
	<-done
}

func TestContextCancelResets(t *testing.T) {
	client, a := tcpPair(t)
	b, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() { done <- Run(ctx, side(a), side(b), nil) }()
	cancel()
	r := <-done
	if !errors.Is(r.Err, context.Canceled) || !r.Reset {
		t.Errorf("result %+v", r)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read: %v, want ECONNRESET", err)
	}
}
