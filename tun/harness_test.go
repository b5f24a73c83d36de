package tun

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// nsPrefix names this package's test namespaces.
const nsPrefix = "mptt"

// Addresses of the TUN topology: the kernel end of the TUN (in the test
// namespace) and the gVisor stack behind the Endpoint.
var (
	kernel4 = netip.MustParseAddr("10.77.0.1")
	gvisor4 = netip.MustParseAddr("10.77.0.2")
	kernel6 = netip.MustParseAddr("fd00:77::1")
	gvisor6 = netip.MustParseAddr("fd00:77::2")
)

// direction of a bulk transfer, seen from the stack under test.
type direction int

const (
	// inbound: the kernel sends, the stack under test receives.
	inbound direction = iota
	// outbound: the stack under test sends, the kernel receives.
	outbound
)

func (d direction) String() string {
	if d == inbound {
		return "kernel->stack"
	}
	return "stack->kernel"
}

// gvisorTUN is a gVisor stack (gVisor's own TCP) whose only NIC is an
// Endpoint on a TUN created in a test namespace, whose kernel side has
// kernel4/kernel6 and routes gvisor4/gvisor6 through the TUN.
type gvisorTUN struct {
	ns    *netns.NS
	ifc   string
	ep    *Endpoint
	s     *stack.Stack
	nicID tcpip.NICID
}

type tunSetup struct {
	mtu    int
	qdisc  string // kernel qdisc on the TUN, "" for the default
	noFIFO bool   // no gVisor FIFO qdisc on the NIC
	opts   []Option
}

func newGVisorTUN(tb testing.TB, cfg tunSetup) *gvisorTUN {
	tb.Helper()
	netns.Require(tb)
	netns.RequireTools(tb, "tc")
	ns := netns.New(tb, nsPrefix)
	g := &gvisorTUN{ns: ns, ifc: "mptt0", nicID: 1}
	if err := ns.Do(func() (err error) {
		g.ep, err = Create(g.ifc, cfg.mtu, cfg.opts...)
		return err
	}); err != nil {
		tb.Fatalf("creating TUN in %s: %v", ns.Name, err)
	}

	g.s = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			// No duplicate address detection: the address is usable at once.
			ipv6.NewProtocolWithOptions(ipv6.Options{}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	g.s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// Room for a bandwidth-delay product at a few GB/s and sub-ms RTT.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	g.s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	g.s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	g.s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)

	nicOpts := stack.NICOptions{Name: g.ifc}
	if !cfg.noFIFO {
		nicOpts.QDisc = fifo.New(g.ep, 1, 1000)
	}
	if err := g.s.CreateNICWithOptions(g.nicID, g.ep, nicOpts); err != nil {
		tb.Fatalf("CreateNIC: %v", err)
	}
	for _, a := range []netip.Addr{gvisor4, gvisor6} {
		proto, plen := ipv4.ProtocolNumber, 24
		if a.Is6() {
			proto, plen = ipv6.ProtocolNumber, 64
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		pa.AddressWithPrefix.PrefixLen = plen
		if err := g.s.AddProtocolAddress(g.nicID, pa, stack.AddressProperties{}); err != nil {
			tb.Fatalf("AddProtocolAddress %v: %v", a, err)
		}
	}
	g.s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: g.nicID},
		{Destination: header.IPv6EmptySubnet, NIC: g.nicID},
	})
	tb.Cleanup(func() {
		g.ep.Close()
		waitOrFail(tb, "Endpoint.Wait", 10*time.Second, g.ep.Wait)
		g.s.Close()
		g.s.Wait()
	})

	ns.SetupLink(g.ifc, netns.LinkConfig{
		MTU:   cfg.mtu,
		QDisc: cfg.qdisc,
		Addrs: []string{kernel4.String() + "/24", kernel6.String() + "/64"},
	})
	return g
}

func waitOrFail(tb testing.TB, what string, d time.Duration, fn func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		tb.Errorf("%s did not return within %v", what, d)
	}
}

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// pair opens one TCP connection across the TUN and returns its sending and
// receiving ends for the direction. v6 selects IPv6.
func (g *gvisorTUN) pair(dir direction, v6 bool) (w, r net.Conn, err error) {
	kAddr, gAddr := kernel4, gvisor4
	if v6 {
		kAddr, gAddr = kernel6, gvisor6
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch dir {
	case inbound:
		ln, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: g.nicID, Addr: tcpip.AddrFromSlice(gAddr.AsSlice())}, netProto(gAddr))
		if err != nil {
			return nil, nil, err
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		acc := make(chan net.Conn, 1)
		accErr := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				accErr <- err
				return
			}
			acc <- c
		}()
		var kc net.Conn
		if err := g.ns.Do(func() (err error) {
			var d net.Dialer
			kc, err = d.DialContext(ctx, "tcp", net.JoinHostPort(gAddr.String(), strconv.Itoa(port)))
			return err
		}); err != nil {
			return nil, nil, fmt.Errorf("kernel dial: %w", err)
		}
		select {
		case gc := <-acc:
			return kc, gc, nil
		case err := <-accErr:
			kc.Close()
			return nil, nil, err
		case <-ctx.Done():
			kc.Close()
			return nil, nil, errors.New("gVisor accept timed out")
		}
	default:
		return dialKernel(ctx, g.ns, kAddr, func(to netip.AddrPort) (net.Conn, error) {
			c, err := gonet.DialContextTCP(ctx, g.s, tcpip.FullAddress{Addr: tcpip.AddrFromSlice(to.Addr().AsSlice()), Port: to.Port()}, netProto(to.Addr()))
			if err != nil {
				return nil, fmt.Errorf("gVisor dial: %w", err)
			}
			return c, nil
		})
	}
}

// transferResult describes one bulk transfer.
type transferResult struct {
	bytes   int64
	elapsed time.Duration
}

type closeWriter interface{ CloseWrite() error }

// transfer sends n bytes from w to r and waits until r has read them all
// and seen EOF. With verify, the bytes are a seeded ChaCha8 stream and the
// SHA-256 of what was received must equal that of what was sent; without,
// one buffer is sent over and over (the benchmark). Both conns are closed
// when it returns.
func transfer(w, r net.Conn, n int64, verify bool, timeout time.Duration) (transferResult, error) {
	defer w.Close()
	defer r.Close()
	deadline := time.Now().Add(timeout)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)

	const chunk = 256 << 10
	type recvResult struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	recvc := make(chan recvResult, 1)
	go func() {
		buf := make([]byte, chunk)
		var total int64
		h := sha256.New()
		for {
			k, err := r.Read(buf)
			if k > 0 {
				total += int64(k)
				if verify {
					h.Write(buf[:k])
				}
			}
			if err == io.EOF {
				var res recvResult
				res.n = total
				copy(res.sum[:], h.Sum(nil))
				recvc <- res
				return
			}
			if err != nil {
				recvc <- recvResult{n: total, err: err}
				return
			}
		}
	}()

	start := time.Now()
	buf := make([]byte, chunk)
	var rng *rand.ChaCha8
	if verify {
		rng = rand.NewChaCha8([32]byte{'m', 'p', 't', 'u', 'n', 'd'})
	} else {
		for i := range buf {
			buf[i] = byte(i * 7)
		}
	}
	h := sha256.New()
	var sent int64
	var sendErr error
	for sent < n {
		k := int(min(int64(chunk), n-sent))
		if verify {
			rng.Read(buf[:k])
			h.Write(buf[:k])
		}
		m, err := w.Write(buf[:k])
		sent += int64(m)
		if err != nil {
			sendErr = fmt.Errorf("write after %d bytes: %w", sent, err)
			break
		}
	}
	if sendErr == nil {
		if cw, ok := w.(closeWriter); ok {
			sendErr = cw.CloseWrite()
		} else {
			sendErr = w.Close()
		}
	} else {
		r.Close() // unblock the reader
	}
	res := <-recvc
	elapsed := time.Since(start)
	if sendErr != nil {
		return transferResult{}, sendErr
	}
	if res.err != nil {
		return transferResult{}, fmt.Errorf("read after %d bytes: %w", res.n, res.err)
	}
	if res.n != n {
		return transferResult{}, fmt.Errorf("received %d bytes, sent %d", res.n, n)
	}
	if verify {
		var want [sha256.Size]byte
		copy(want[:], h.Sum(nil))
		if res.sum != want {
			return transferResult{}, fmt.Errorf("SHA-256 mismatch: received %x, sent %x", res.sum, want)
		}
	}
	return transferResult{bytes: n, elapsed: elapsed}, nil
}

// runConcurrently runs fns at once and returns their errors joined.
func runConcurrently(fns ...func() error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(fns))
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dialKernel has dial (the stack under test) connect to a kernel listener
// opened on kAddr in ns, and returns the stack's end and the kernel's.
func dialKernel(ctx context.Context, ns *netns.NS, kAddr netip.Addr, dial func(to netip.AddrPort) (net.Conn, error)) (w, r net.Conn, err error) {
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(kAddr.String(), "0"))
		return err
	}); err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			acc <- c
		}
		close(acc)
	}()
	sc, err := dial(netip.AddrPortFrom(kAddr, uint16(ln.Addr().(*net.TCPAddr).Port)))
	if err != nil {
		return nil, nil, err
	}
	select {
	case kc, ok := <-acc:
		if !ok {
			sc.Close()
			return nil, nil, errors.New("kernel accept failed")
		}
		return sc, kc, nil
	case <-ctx.Done():
		sc.Close()
		return nil, nil, errors.New("kernel accept timed out")
	}
}
