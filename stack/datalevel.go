package stack

import (
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
)

// dataLevel is what a Conn's application calls reach: the byte stream of
// the connection, over one TCP endpoint (plain TCP) or over the subflows
// of an MPTCP connection (mptcp.Conn, RFC 8684 §3.3). Every method is
// called with Conn.mu held; the implementations are sans-I/O.
type dataLevel interface {
	// Write queues bytes; tcp.ErrWouldBlock with the count queued when
	// the buffer is full.
	Write(p []byte) (int, error)
	// Read returns in-order bytes, (0, nil) at the end of the stream,
	// tcp.ErrWouldBlock when nothing is there yet.
	Read(p []byte) (int, error)
	// CloseWrite sends a FIN (DATA_FIN) after the queued bytes.
	CloseWrite() error
	// Close is CloseWrite, or an abort when received data is unread.
	Close() error
	// Abort resets the connection (RST, MP_FASTCLOSE).
	Abort()
	// SendBufferFree is how many bytes Write would take now.
	SendBufferFree() int
	// Err is the error that ended the connection, or nil.
	Err() error
	// Undelivered is how many written bytes the peer has not
	// acknowledged (at the data level).
	Undelivered() uint64
	// Delivered reports whether everything written and the FIN (once
	// queued) has been acknowledged.
	Delivered() bool
}

var (
	_ dataLevel = (*plainLevel)(nil)
	_ dataLevel = (*mptcp.Conn)(nil)
)

// plainLevel is a plain TCP connection's data level: its one endpoint.
type plainLevel struct {
	ep      *tcp.Endpoint
	written uint64 // bytes Write accepted
}

func (p *plainLevel) Write(b []byte) (int, error) {
	n, err := p.ep.Write(b)
	p.written += uint64(n)
	return n, err
}

func (p *plainLevel) Read(b []byte) (int, error) { return p.ep.Read(b) }
func (p *plainLevel) CloseWrite() error          { return p.ep.CloseWrite() }
func (p *plainLevel) Close() error               { return p.ep.Close() }
func (p *plainLevel) Abort()                     { p.ep.Abort() }
func (p *plainLevel) SendBufferFree() int        { return p.ep.SendBufferFree() }
func (p *plainLevel) Err() error                 { return p.ep.Err() }

func (p *plainLevel) Undelivered() uint64 {
	acked := p.ep.Info().BytesAcked
	if acked >= p.written {
		return 0
	}
	return p.written - acked
}

func (p *plainLevel) Delivered() bool {
	if p.Undelivered() > 0 {
		return false
	}
	switch p.ep.State() {
	case tcp.StateFinWait2, tcp.StateTimeWait:
		return true
	case tcp.StateClosed:
		return p.ep.Err() == nil
	}
	return false
}
