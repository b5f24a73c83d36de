package stack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
)

func TestTransferBothFamilies(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b netip.Prefix
	}{
		{"ipv4", addrA4, addrB4},
		{"ipv6", addrA6, addrB6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newPipePair(t, 1500, Options{})
			d, c := connectPair(t, a, b, tc.b.Addr())
			if got := d.RemoteAddr().(*net.TCPAddr); !got.IP.Equal(tc.b.Addr().AsSlice()) {
				t.Errorf("RemoteAddr = %v, want %v", got, tc.b.Addr())
			}
			if got := c.RemoteAddr().(*net.TCPAddr); !got.IP.Equal(tc.a.Addr().AsSlice()) || got.Port != d.LocalAddr().(*net.TCPAddr).Port {
				t.Errorf("accepted RemoteAddr = %v, dialer LocalAddr = %v", got, d.LocalAddr())
			}
			// Dialer to acceptor, then the other way on the half-closed
			// connection.
			transferVerified(t, d, c, 4<<20+123, 1)
			transferVerified(t, c, d, 4<<20+321, 2)
			for _, conn := range []*Conn{d, c} {
				// The NIC's FIFO queue may overflow in slow start: not
				// an error.
				info := conn.Info()
				t.Logf("%v: sent %d bytes, retransmitted %d", conn.LocalAddr(), info.BytesSent, info.BytesRetrans)
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	a, _ := newPipePair(t, 1500, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Dial(ctx, "tcp", addrString(addrB4, 9))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("Dial error = %#v, want *net.OpError with Op dial", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, tcp.ErrConnectionRefused) {
		t.Fatalf("Dial error = %v, want ECONNREFUSED", err)
	}
}

func TestDialContextCancel(t *testing.T) {
	// Nobody answers on the far side of a NIC with no peer attached.
	a, _ := newPipePair(t, 1500, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := a.Dial(ctx, "tcp", "10.99.0.77:80")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Dial error = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial returned after %v", d)
	}
}

func TestHalfClose(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := connectPair(t, a, b, addrB4.Addr())
	if _, err := d.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := d.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("acceptor read %q, %v; want ping then EOF", got, err)
	}
	// The acceptor can still send on the half-closed connection.
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatalf("write after peer's FIN: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(d)
	if err != nil || string(got) != "pong" {
		t.Fatalf("dialer read %q, %v; want pong then EOF", got, err)
	}
	if _, err := d.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after CloseWrite = %v, want EPIPE", err)
	}
}

func TestDeadlines(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := connectPair(t, a, b, addrB4.Addr())

	d.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 10)
	start := time.Now()
	_, err := d.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read = %v, want a timeout", err)
	}
	if el := time.Since(start); el < 40*time.Millisecond || el > 5*time.Second {
		t.Fatalf("Read timed out after %v, deadline was 50ms", el)
	}
	// Past deadline: immediate failure, even with data available.
	c.Write([]byte("hello"))
	d.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := d.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with past deadline = %v", err)
	}
	// Cleared deadline: the data is there.
	d.SetReadDeadline(time.Time{})
	n, err := io.ReadAtLeast(d, buf, 5)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}

	// A deadline set while a Read is blocked wakes it.
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(buf)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	d.SetDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Read = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Read not woken by a new deadline")
	}

	// Write deadline: the peer does not read, the buffers fill up.
	big := make([]byte, 16<<20)
	d.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err = d.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n >= len(big) {
		t.Fatalf("Write = %d, %v; want a partial write and a timeout; %+v", n, err, d.Info())
	}
}

func TestCloseUnreadResets(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := connectPair(t, a, b, addrB4.Addr())
	if _, err := d.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	// Wait until the data arrived, then close without reading: RST.
	deadline := time.Now().Add(5 * time.Second)
	for c.Info().BytesReceived < 6 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	d.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := d.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) || !errors.Is(err, tcp.ErrConnectionReset) {
		t.Fatalf("Read after peer reset = %v, want ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %#v is not a read *net.OpError", err)
	}
}

func TestCloseUnblocks(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, _ := connectPair(t, a, b, addrB4.Addr())
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
}

func TestEngineCloseAborts(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := connectPair(t, a, b, addrB4.Addr())
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.ECONNABORTED) {
			t.Fatalf("Read after Engine.Close = %v, want ECONNABORTED", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Engine.Close did not unblock Read")
	}
	// The peer saw the RST (unless it was lost with the NIC, which the
	// pipe does not do).
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer Read = %v, want ECONNRESET", err)
	}
	if _, err := a.Dial(context.Background(), "tcp", addrString(addrB4, 80)); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("Dial on closed engine = %v", err)
	}
}

func TestListenerClose(t *testing.T) {
	_, b := newPipePair(t, 1500, Options{})
	ln, err := b.Listen("tcp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	// The port is free again.
	ln2, err := b.Listen("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatalf("re-listening on %v: %v", ln.Addr(), err)
	}
	ln2.Close()
}

func TestManyShortConnections(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	ln, err := b.ListenTCP("tcp", tcpAddr(addrB4, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	const n = 200
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.DialTCP(ctx, "tcp", nil, ln.Addr().(*net.TCPAddr))
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		msg := []byte("hello")
		c.Write(msg)
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("connection %d: echo %q, %v", i, got, err)
		}
		c.Close()
	}
}
