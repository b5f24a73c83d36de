// Package appstack terminates the TCP connections of unmodified
// applications: a gVisor network stack, with gVisor's own TCP, on an
// app-facing link (a TUN device that the host routes application traffic
// into). The stack's NIC is promiscuous (it accepts packets for any
// destination address) and spoofing (it answers from that address), and a
// tcp.Forwarder hands every new connection to the caller before the
// handshake completes: the caller opens the real connection first, then
// accepts the application's (SYN+ACK) or refuses it (RST), the way the
// original destination would have.
//
// This is the app side of "mptund client": the caller carries each
// accepted connection over Multipath TCP, directly to the original
// destination or through an "mptund proxy".
package appstack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Defaults of Config.
const (
	// DefaultMaxPending bounds the connections whose handshake waits for
	// the caller's decision; SYNs beyond it are dropped (the application
	// retransmits them) and counted.
	DefaultMaxPending = 4096
	// DefaultReceiveBuffer and DefaultSendBuffer are the initial buffer
	// sizes of each application connection; receive buffers grow with
	// the flow's demand (moderation) up to MaxBuffer.
	DefaultReceiveBuffer = 128 << 10
	DefaultSendBuffer    = 256 << 10
	// DefaultMaxBuffer bounds each connection's buffers.
	DefaultMaxBuffer = 4 << 20
	// queueLen is the length of the NIC's FIFO queueing discipline, which
	// hands the link batches of packets.
	queueLen = 1024
)

// Config configures a Stack. The zero value is usable.
type Config struct {
	// MaxPending bounds handshakes waiting for a decision (0:
	// DefaultMaxPending).
	MaxPending int
	// ReceiveBuffer, SendBuffer and MaxBuffer size the connections'
	// buffers (0: the defaults).
	ReceiveBuffer, SendBuffer, MaxBuffer int
}

// Stack is the app-facing stack. Its methods are safe for concurrent use.
type Stack struct {
	s   *stack.Stack
	nic tcpip.NICID
	fwd *tcp.Forwarder

	accepted, refused atomic.Uint64

	mu     sync.Mutex
	closed bool
}

// New creates a stack on link and calls handle, on a goroutine of its own,
// for every connection an application opens through it. handle must call
// exactly one of Accept, Refuse or Drop on the request, and may take its
// time: the application's SYN retransmissions are absorbed meanwhile. The
// stack owns link from now on.
func New(link stack.LinkEndpoint, cfg Config, handle func(*Request)) (*Stack, error) {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.ReceiveBuffer <= 0 {
		cfg.ReceiveBuffer = DefaultReceiveBuffer
	}
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = DefaultSendBuffer
	}
	if cfg.MaxBuffer <= 0 {
		cfg.MaxBuffer = DefaultMaxBuffer
	}
	cfg.MaxBuffer = max(cfg.MaxBuffer, cfg.ReceiveBuffer, cfg.SendBuffer)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	fail := func(what string, err tcpip.Error) (*Stack, error) {
		s.Close()
		s.Wait()
		return nil, fmt.Errorf("appstack: %s: %s", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("SACK", err)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		return fail("receive buffer moderation", err)
	}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: cfg.ReceiveBuffer, Max: cfg.MaxBuffer}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fail("receive buffer", err)
	}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: cfg.SendBuffer, Max: cfg.MaxBuffer}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
		return fail("send buffer", err)
	}
	const nic = 1
	// The handler is in place before the NIC starts delivering packets.
	st := &Stack{s: s, nic: nic}
	st.fwd = tcp.NewForwarder(s, cfg.ReceiveBuffer, cfg.MaxPending, func(r *tcp.ForwarderRequest) {
		id := r.ID()
		handle(&Request{
			Src: netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort),
			Dst: netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort),
			r:   r,
			st:  st,
		})
	})
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, st.fwd.HandlePacket)
	if err := s.CreateNICWithOptions(nic, link, stack.NICOptions{QDisc: fifo.New(link, 1, queueLen)}); err != nil {
		return fail("creating the NIC", err)
	}
	// Promiscuous: accept packets for any address; spoofing: answer from
	// the address they were sent to.
	if err := s.SetPromiscuousMode(nic, true); err != nil {
		return fail("promiscuous mode", err)
	}
	if err := s.SetSpoofing(nic, true); err != nil {
		return fail("spoofing", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nic},
		{Destination: header.IPv6EmptySubnet, NIC: nic},
	})
	return st, nil
}

func addrOf(a tcpip.Address) netip.Addr {
	x, _ := netip.AddrFromSlice(a.AsSlice())
	return x
}

// Stats are the stack's counters of interest.
type Stats struct {
	// PendingDrops counts SYNs dropped at MaxPending.
	PendingDrops uint64
	// ResetsSent counts RSTs the stack sent.
	ResetsSent uint64
	// Accepted counts connections accepted (handshake completed),
	// Refused those answered with a RST.
	Accepted, Refused uint64
}

// Stats returns a snapshot of the counters.
func (s *Stack) Stats() Stats {
	t := s.s.Stats().TCP
	return Stats{
		PendingDrops: t.ForwardMaxInFlightDrop.Value(),
		ResetsSent:   t.ResetsSent.Value(),
		Accepted:     s.accepted.Load(),
		Refused:      s.refused.Load(),
	}
}

// Close resets every connection, removes the NIC (closing the link) and
// waits for the stack's goroutines.
func (s *Stack) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.s.Close()
	s.s.RemoveNIC(s.nic)
	s.s.Wait()
}

// Request is an application's connection attempt, held in SYN-RECEIVED
// until the handler decides.
type Request struct {
	// Src is the application's address and port; Dst the destination it
	// asked for.
	Src, Dst netip.AddrPort

	r    *tcp.ForwarderRequest
	st   *Stack
	done bool
}

// ErrDecided is returned by a second decision on a Request.
var ErrDecided = errors.New("appstack: request already answered")

// Accept completes the application's handshake (SYN+ACK from Dst) and
// returns the connection.
func (q *Request) Accept() (*Conn, error) {
	if q.done {
		return nil, ErrDecided
	}
	q.done = true
	defer q.r.Complete(false)
	var wq waiter.Queue
	ep, err := q.r.CreateEndpoint(&wq)
	if err != nil {
		return nil, fmt.Errorf("appstack: completing the handshake with %v: %s", q.Src, err)
	}
	ep.SocketOptions().SetKeepAlive(true)
	q.st.accepted.Add(1)
	return &Conn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

// Refuse answers the application with a RST, as a destination that does
// not listen does (ECONNREFUSED).
func (q *Request) Refuse() {
	if q.done {
		return
	}
	q.done = true
	q.st.refused.Add(1)
	q.r.Complete(true)
}

// Drop forgets the attempt without answering, as an unreachable
// destination does; the application's next SYN retransmission makes a new
// Request.
func (q *Request) Drop() {
	if q.done {
		return
	}
	q.done = true
	q.r.Complete(false)
}

// Conn is an application's connection: a net.Conn with CloseWrite
// (half-close) and Abort (reset).
type Conn struct {
	*gonet.TCPConn
	ep    tcpip.Endpoint
	abort sync.Once
}

// Abort resets the connection (RST) and releases it; blocked Reads and
// Writes return. Safe to call more than once.
func (c *Conn) Abort() {
	c.abort.Do(func() {
		c.ep.Abort()
		c.ep.Close()
	})
}

// Close closes the connection: a FIN after the queued data (or a RST if
// received data was left unread).
func (c *Conn) Close() error {
	c.abort.Do(func() { c.ep.Close() })
	return nil
}
