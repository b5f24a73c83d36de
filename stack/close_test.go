package stack

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// closeVariants runs f over plain TCP and MPTCP.
func closeVariants(t *testing.T, f func(t *testing.T, opts Options)) {
	for _, v := range []struct {
		name string
		opts Options
	}{
		{"tcp", Options{MPTCP: MPTCPConfig{Disabled: true}}},
		{"mptcp", Options{}},
	} {
		t.Run(v.name, func(t *testing.T) { f(t, v.opts) })
	}
}

// TestCloseLingerDelivered: with a linger time, Close returns nil once the
// peer acknowledged every byte and the FIN.
func TestCloseLingerDelivered(t *testing.T) {
	closeVariants(t, func(t *testing.T, opts Options) {
		a, b := newPipePair(t, 1500, opts)
		d, c := connectPair(t, a, b, addrB4.Addr())
		const n = 3 << 20
		got := make(chan int64, 1)
		go func() {
			k, _ := io.Copy(io.Discard, c)
			got <- k
		}()
		if _, err := d.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		d.SetLinger(10)
		if err := d.Close(); err != nil {
			t.Fatalf("Close after a delivered transfer = %v", err)
		}
		if k := <-got; k != n {
			t.Fatalf("peer read %d bytes, want %d", k, n)
		}
	})
}

// undeliveredOf returns the UndeliveredError inside err, or nil.
func undeliveredOf(err error) *UndeliveredError {
	var ue *UndeliveredError
	if errors.As(err, &ue) {
		return ue
	}
	return nil
}

// TestCloseLingerUndelivered: the peer never reads, so its window closes
// with our data queued; Close with a linger time gives up, resets, and
// says how many bytes the peer never acknowledged: the peer can read the
// others.
func TestCloseLingerUndelivered(t *testing.T) {
	closeVariants(t, func(t *testing.T, opts Options) {
		a, b := newPipePair(t, 1500, opts)
		d, c := connectPair(t, a, b, addrB4.Addr())
		d.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 64<<10)
		var written uint64
		for {
			k, err := d.Write(buf)
			written += uint64(k)
			if err != nil {
				if !errors.Is(err, errDeadline) {
					t.Fatalf("Write: %v", err)
				}
				break
			}
		}
		d.SetLinger(1)
		start := time.Now()
		err := d.Close()
		ue := undeliveredOf(err)
		if ue == nil {
			t.Fatalf("Close with the peer's window shut = %v, want an UndeliveredError", err)
		}
		if !errors.Is(err, ErrLingerTimeout) {
			t.Errorf("Close error %v does not wrap ErrLingerTimeout", err)
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
			t.Errorf("Close lingered %v, want about 1 s", d)
		}
		if ue.Bytes == 0 || ue.Bytes > written {
			t.Fatalf("undelivered %d of %d written", ue.Bytes, written)
		}
		// The peer holds at least the acknowledged bytes (and perhaps a
		// few it received but had not acknowledged yet), then the reset.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, rerr := io.Copy(io.Discard, c)
		if uint64(k) < written-ue.Bytes || uint64(k) > written-ue.Bytes+64<<10 {
			t.Errorf("peer read %d bytes; written %d, undelivered %d: want about %d", k, written, ue.Bytes, written-ue.Bytes)
		}
		if !errors.Is(rerr, syscall.ECONNRESET) {
			t.Errorf("peer read ended with %v, want ECONNRESET", rerr)
		}
		if st := a.Stats(); st.UndeliveredCloses != 1 || st.UndeliveredBytes != ue.Bytes {
			t.Errorf("engine counted %d undelivered closes, %d bytes; want 1, %d", st.UndeliveredCloses, st.UndeliveredBytes, ue.Bytes)
		}
	})
}

// TestWriteAfterPeerResetUndelivered: once the peer reset the connection
// with our data unacknowledged, Write, CloseWrite and Close say how many
// bytes were lost, and the error still matches ECONNRESET.
func TestWriteAfterPeerResetUndelivered(t *testing.T) {
	closeVariants(t, func(t *testing.T, opts Options) {
		a, b := newPipePair(t, 1500, opts)
		d, c := connectPair(t, a, b, addrB4.Addr())
		// Fill the peer's window so that data stays unacknowledged.
		d.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 64<<10)
		for {
			if _, err := d.Write(buf); err != nil {
				break
			}
		}
		d.SetWriteDeadline(time.Time{})
		c.SetLinger(0)
		c.Close() // unread data: reset (MP_FASTCLOSE with MPTCP)
		deadline := time.Now().Add(5 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			if _, err = d.Write(buf[:1]); err != nil && !errors.Is(err, errDeadline) {
				break
			}
			d.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		}
		ue := undeliveredOf(err)
		if ue == nil || ue.Bytes == 0 {
			t.Fatalf("Write after the peer's reset = %v, want an UndeliveredError", err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("Write error %v does not match ECONNRESET", err)
		}
		if err := d.CloseWrite(); undeliveredOf(err) == nil {
			t.Errorf("CloseWrite after the reset = %v, want an UndeliveredError", err)
		}
		if err := d.Close(); undeliveredOf(err) == nil {
			t.Errorf("Close after the reset = %v, want an UndeliveredError", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" {
			t.Errorf("error %#v is not a write *net.OpError", err)
		}
	})
}
