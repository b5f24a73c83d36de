package stack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/mptund/mptund/stack/tcp"
)

// Sentinel errors of the engine.
var (
	// ErrEngineClosed is returned by operations on a closed Engine.
	ErrEngineClosed = errors.New("stack: engine closed")
	// ErrTooManyConnections is returned by Dial when Options.MaxConnections
	// connections exist already.
	ErrTooManyConnections = errors.New("stack: too many connections")
	// ErrAddress is returned for an address the engine cannot use: not an
	// IP literal, wrong family for the network, or no route.
	ErrAddress = errors.New("stack: unusable address")
	// ErrBadChecksum counts segments dropped for a wrong TCP checksum.
	errBadChecksum = errors.New("stack: bad TCP checksum")
)

// connError is a connection failure as the net package reports it: the
// errno a kernel socket would return (so errors.Is(err, syscall.ECONNRESET)
// holds), wrapping the tcp package's sentinel (so errors.Is(err,
// tcp.ErrConnectionReset) holds too).
type connError struct {
	errno syscall.Errno
	err   error
}

func (e *connError) Error() string { return e.errno.Error() }

// Unwrap returns both the errno and the tcp sentinel.
func (e *connError) Unwrap() []error { return []error{e.errno, e.err} }

// Timeout reports whether the error is a timeout (net.Error).
func (e *connError) Timeout() bool { return e.errno.Timeout() }

// Temporary implements the deprecated net.Error method.
func (e *connError) Temporary() bool { return e.errno.Temporary() }

// errnoOf maps the tcp package's connection errors to the errno a kernel
// socket reports in the same situation.
func errnoOf(err error) (syscall.Errno, bool) {
	switch {
	case errors.Is(err, tcp.ErrConnectionReset):
		return syscall.ECONNRESET, true
	case errors.Is(err, tcp.ErrConnectionRefused):
		return syscall.ECONNREFUSED, true
	case errors.Is(err, tcp.ErrTimeout):
		return syscall.ETIMEDOUT, true
	case errors.Is(err, tcp.ErrAborted):
		return syscall.ECONNABORTED, true
	case errors.Is(err, tcp.ErrClosedForSend):
		return syscall.EPIPE, true
	case errors.Is(err, tcp.ErrNotConnected):
		return syscall.ENOTCONN, true
	}
	return 0, false
}

// mapError turns a tcp package error into what a net.Conn returns inside
// its *net.OpError.
func mapError(err error) error {
	if errno, ok := errnoOf(err); ok {
		return &connError{errno: errno, err: err}
	}
	return err
}

// opError wraps err the way the net package does.
func opError(op string, local, remote net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: local, Addr: remote, Err: err}
}

// errDeadline is what an operation returns when its deadline passed.
var errDeadline error = os.ErrDeadlineExceeded

// UndeliveredError reports bytes the application wrote that the peer
// never acknowledged (for MPTCP: at the data level, RFC 8684 §3.3.2)
// because the connection ended first: a reset, a timeout, MP_FASTCLOSE,
// or a Close whose linger time ran out. Close, Write and CloseWrite
// return it (inside a *net.OpError) once the connection has given up;
// it wraps the reason, so errors.Is(err, syscall.ECONNRESET) and the like
// still hold.
type UndeliveredError struct {
	// Bytes is how many written bytes were not acknowledged.
	Bytes uint64
	// Err is why the connection ended.
	Err error
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("%d bytes not delivered: %v", e.Bytes, e.Err)
}

// Unwrap returns the reason the connection ended.
func (e *UndeliveredError) Unwrap() error { return e.Err }

// UndeliveredBytes returns Bytes.
func (e *UndeliveredError) UndeliveredBytes() uint64 { return e.Bytes }

// ErrLingerTimeout is the reason of an UndeliveredError from a Close
// whose linger time (SetLinger) passed before everything was delivered.
var ErrLingerTimeout = errors.New("stack: linger time passed before the peer acknowledged everything")
