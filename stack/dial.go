package stack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Dial connects to address on the named network ("tcp", "tcp4" or
// "tcp6") like net.Dialer.DialContext. address is "host:port" where host
// is an IP literal (the engine does no name resolution). ctx bounds the
// handshake; cancelling it aborts the attempt.
func (e *Engine) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	raddr, err := ResolveTCPAddr(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	c, err := e.DialTCP(ctx, network, nil, raddr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// DialTCP is Dial with parsed addresses. laddr may be nil or leave the IP
// or port unspecified: the route to raddr chooses the source address and
// an ephemeral port is picked. The connection is returned once
// ESTABLISHED; a RST in reply to the SYN fails with ECONNREFUSED, no
// answer with ETIMEDOUT after tcp.Config.SynRetries retransmissions.
func (e *Engine) DialTCP(ctx context.Context, network string, laddr, raddr *net.TCPAddr) (*Conn, error) {
	return e.dialTCP(ctx, network, laddr, raddr, nil)
}

// DialTCPSynData is DialTCP with synData as the first bytes of the stream,
// sent in the SYN (TCP Fast Open without a cookie, RFC 7413; RFC 8803's
// Transport Converter takes its Convert header so). The SYN carries what
// fits (about 500 bytes); a peer that accepts it (Linux with
// net.ipv4.tcp_fastopen's server and "no cookie" bits, an mptund proxy,
// Listener.SetAcceptSynData) acknowledges it in its SYN-ACK and may act on
// it a round trip early. Whatever the peer did not accept is queued as the
// first bytes of the stream before DialTCPSynData returns, so the peer
// receives all of synData either way. A retransmitted SYN carries no data.
func (e *Engine) DialTCPSynData(ctx context.Context, network string, laddr, raddr *net.TCPAddr, synData []byte) (*Conn, error) {
	return e.dialTCP(ctx, network, laddr, raddr, synData)
}

func (e *Engine) dialTCP(ctx context.Context, network string, laddr, raddr *net.TCPAddr, synData []byte) (*Conn, error) {
	fail := func(err error) error {
		var src net.Addr
		if laddr != nil {
			src = laddr
		}
		return &net.OpError{Op: "dial", Net: network, Source: src, Addr: raddr, Err: err}
	}
	if raddr == nil {
		return nil, fail(fmt.Errorf("%w: missing remote address", ErrAddress))
	}
	remote, netProto, err := tcpipAddr(network, raddr.IP)
	if err != nil {
		return nil, fail(err)
	}
	if remote.Unspecified() || raddr.Port <= 0 || raddr.Port > 0xffff {
		return nil, fail(fmt.Errorf("%w: %v", ErrAddress, raddr))
	}
	var local tcpip.Address
	var lport uint16
	if laddr != nil {
		if laddr.IP != nil && !laddr.IP.IsUnspecified() {
			var lproto tcpip.NetworkProtocolNumber
			if local, lproto, err = tcpipAddr(network, laddr.IP); err != nil {
				return nil, fail(err)
			}
			if lproto != netProto {
				return nil, fail(fmt.Errorf("%w: mixed address families", ErrAddress))
			}
		}
		if laddr.Port < 0 || laddr.Port > 0xffff {
			return nil, fail(fmt.Errorf("%w: %v", ErrAddress, laddr))
		}
		lport = uint16(laddr.Port)
	}
	if e.isClosed() {
		return nil, fail(ErrEngineClosed)
	}
	if !e.reserveConn() {
		return nil, fail(ErrTooManyConnections)
	}
	r, terr := e.s.FindRoute(0, local, remote, netProto, false)
	if terr != nil {
		e.releaseConn()
		return nil, fail(&connError{errno: syscall.ENETUNREACH, err: fmt.Errorf("%w: no route to %v: %s", ErrAddress, raddr, terr)})
	}
	c := newConn(e, r, tcpipID(r.LocalAddress(), 0, remote, uint16(raddr.Port)), netProto)
	c.connLimited = true
	sub := c.first

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := sub.bindLocked(lport); err != nil {
		c.teardownLocked()
		return nil, fail(err)
	}
	c.laddr.Port = int(sub.id.LocalPort)
	var mc *mptcp.Conn
	if !e.opts.MPTCP.Disabled {
		var err error
		mc, sub.sf, err = mptcp.NewClient(c.mptcpConfig())
		if err != nil {
			c.teardownLocked()
			return nil, fail(err)
		}
	}
	cfg := sub.config()
	cfg.ISS = tcp.ISN(&e.secret, sub.flow(), e.clock.NowMonotonic())
	cfg.TSOffset = rand.Uint32() // RFC 7323 §5.4
	ep, err := tcp.NewEndpoint(cfg)
	if err != nil {
		if mc != nil {
			mc.Release()
		}
		c.teardownLocked()
		return nil, fail(err)
	}
	c.setEndpoint(ep, mc, sub.sf)
	ep.SetGSOMaxSize(gsoMaxPayload(r)) // TSO when the link segments
	e.tcpStats.ActiveConnectionOpenings.Increment()
	if err := ep.ConnectData(synData); err != nil {
		c.teardownLocked()
		return nil, fail(err)
	}
	c.updateLocked()
	c.flushLocked()
	for {
		st := ep.State()
		switch {
		case st >= tcp.StateEstablished:
			if rest := synData[min(ep.SynDataAccepted(), len(synData)):]; len(rest) > 0 {
				if err := c.queueLocked(rest); err != nil {
					c.dl.Abort()
					c.flushLocked()
					c.teardownLocked()
					return nil, fail(mapError(err))
				}
			}
			return c, nil
		case c.dead || st == tcp.StateClosed:
			e.tcpStats.FailedConnectionAttempts.Increment()
			err := ep.Err()
			if err == nil {
				err = tcp.ErrAborted // closed by Close or Engine.Close
			}
			c.teardownLocked()
			return nil, fail(mapError(err))
		}
		ch := c.writers.get()
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			if !c.dead {
				c.dl.Abort()
				c.flushLocked()
				c.teardownLocked()
			}
			e.tcpStats.FailedConnectionAttempts.Increment()
			return nil, fail(mapCtxError(ctx.Err()))
		}
	}
}

// mapCtxError reports a context error the way net.Dialer does.
func mapCtxError(err error) error {
	if err == context.DeadlineExceeded {
		return errDeadline
	}
	return err
}

// ResolveTCPAddr parses "host:port" for network "tcp", "tcp4" or "tcp6"
// without name resolution: host must be an IP literal or empty (any
// address), port a number or a service name.
func ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, net.UnknownNetworkError(network)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := net.LookupPort(network, portStr)
		if lerr != nil {
			return nil, lerr
		}
		port = uint64(p)
	}
	a := &net.TCPAddr{Port: int(port)}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not an IP address", ErrAddress, host)
		}
		a.IP = net.IP(ip.Unmap().AsSlice())
		a.Zone = ip.Zone()
		if _, _, err := tcpipAddr(network, a.IP); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// tcpipAddr converts ip for network, checking the family.
func tcpipAddr(network string, ip net.IP) (tcpip.Address, tcpip.NetworkProtocolNumber, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return tcpip.Address{}, 0, fmt.Errorf("%w: %v", ErrAddress, ip)
	}
	a = a.Unmap()
	switch {
	case a.Is4() && network != "tcp6":
		return tcpip.AddrFrom4(a.As4()), ipv4.ProtocolNumber, nil
	case a.Is6() && network != "tcp4":
		return tcpip.AddrFrom16(a.As16()), ipv6.ProtocolNumber, nil
	}
	return tcpip.Address{}, 0, fmt.Errorf("%w: %v is not a %s address", ErrAddress, ip, network)
}

func tcpipID(laddr tcpip.Address, lport uint16, raddr tcpip.Address, rport uint16) stack.TransportEndpointID {
	return stack.TransportEndpointID{LocalPort: lport, LocalAddress: laddr, RemotePort: rport, RemoteAddress: raddr}
}
