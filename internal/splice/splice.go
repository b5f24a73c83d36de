// Package splice relays bytes between two TCP connections in both
// directions, the way a transparent proxy must: a FIN (half-close) on one
// side becomes a FIN on the other, a reset or error on one side becomes a
// reset on the other, and neither side can make the relay buffer without
// bound.
//
// # Flow control
//
// Each direction copies through one buffer: it reads from its source only
// after the previous chunk was written to its destination, and a write
// blocks while the destination's send buffer is full. So a slow reader on
// one side closes the window of the writer on the other side (TCP's own
// back-pressure), and a relay holds at most two buffers whatever the
// rates. Buffers are small while a direction is idle (SmallBuffer, owned
// by the relay) and large while it streams (LargeBuffer, borrowed from a
// pool and returned as soon as reads come back short), so that many idle
// relays cost little memory.
package splice

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Buffer sizes.
const (
	// SmallBuffer is what an idle direction reads into.
	SmallBuffer = 4 << 10
	// LargeBuffer is what a streaming direction reads into.
	LargeBuffer = 64 << 10
)

var largePool = sync.Pool{New: func() any { b := make([]byte, LargeBuffer); return &b }}

// Conn is one side of a relay: a TCP connection that can half-close.
type Conn interface {
	net.Conn
	// CloseWrite sends a FIN after the queued data.
	CloseWrite() error
}

// Side is a connection and how to reset it.
type Side struct {
	Conn Conn
	// Abort resets the connection (RST, or MP_FASTCLOSE for MPTCP) and
	// releases it; it must be safe to call more than once and
	// concurrently with blocked Reads and Writes, which it must wake up.
	Abort func()
}

// Result is how a relay ended.
type Result struct {
	// AToB and BToA count the bytes relayed each way.
	AToB, BToA int64
	// Err is the first failure (a read or write error, or the context's
	// error); nil when both directions ended with a FIN.
	Err error
	// Reset is set when the relay reset the connections because of Err.
	Reset bool
	// Cause says which side failed: "a", "b" or "" (context, or none).
	Cause string
}

// Run relays between a and b until both directions have ended (each with
// a FIN, then both connections are closed), one side fails (then both are
// reset), or ctx is done (both are reset). It returns when both copying
// goroutines have. counters, if not nil, are updated as bytes move
// (index 0: a to b, 1: b to a), for live statistics.
func Run(ctx context.Context, a, b Side, counters *[2]atomic.Int64) Result {
	var (
		mu     sync.Mutex
		res    Result
		failed bool
	)
	if counters == nil {
		counters = new([2]atomic.Int64)
	}
	fail := func(err error, cause string) {
		mu.Lock()
		first := !failed
		if first {
			failed = true
			res.Err, res.Cause, res.Reset = err, cause, true
		}
		mu.Unlock()
		if first {
			a.Abort()
			b.Abort()
		}
	}
	// One direction on a goroutine of its own, the other on the caller's:
	// a relay costs one extra goroutine.
	done := make(chan struct{})
	go func() { defer close(done); pump(a, b, "a", "b", &counters[0], fail) }()
	stop := context.AfterFunc(ctx, func() { fail(ctx.Err(), "") })
	pump(b, a, "b", "a", &counters[1], fail)
	<-done
	stop()
	mu.Lock()
	clean := !failed
	failed = true // a context that ends now changes nothing
	out := res
	mu.Unlock()
	out.AToB, out.BToA = counters[0].Load(), counters[1].Load()
	if clean {
		a.Conn.Close()
		b.Conn.Close()
	}
	return out
}

// pump copies src to dst until src's FIN (then it half-closes dst) or a
// failure, which it reports with fail (naming the side at fault).
func pump(src, dst Side, srcName, dstName string, n *atomic.Int64, fail func(error, string)) {
	small := make([]byte, SmallBuffer)
	var large *[]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	buf := small
	for {
		k, rerr := src.Conn.Read(buf)
		if k > 0 {
			if _, werr := dst.Conn.Write(buf[:k]); werr != nil {
				fail(werr, dstName)
				return
			}
			n.Add(int64(k))
		}
		switch {
		case rerr == io.EOF:
			if err := dst.Conn.CloseWrite(); err != nil {
				fail(err, dstName)
			}
			return
		case rerr != nil:
			fail(rerr, srcName)
			return
		}
		// Grow while the source streams, shrink when it slows down.
		switch {
		case large == nil && k == len(small):
			large = largePool.Get().(*[]byte)
			buf = *large
		case large != nil && k < SmallBuffer:
			largePool.Put(large)
			large, buf = nil, small
		}
	}
}

// IsClosed reports whether err says the connection was closed locally
// (by an abort), which follows a failure elsewhere.
func IsClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
