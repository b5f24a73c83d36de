package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
)

// engineTUN is the engine (package stack: a gVisor stack whose TCP is
// mptund's own) whose only NIC is an Endpoint on a TUN in a test namespace,
// laid out like gvisorTUN: the kernel side has kernel4/kernel6 and reaches
// gvisor4/gvisor6, the engine's addresses, through the TUN.
type engineTUN struct {
	ns  *netns.NS
	ifc string
	ep  *Endpoint
	eng *stack.Engine
	// mptcp: the engine runs MPTCP (its default) and kernel sockets
	// dial with MPTCP too; otherwise both speak plain TCP.
	mptcp bool
}

// newEngineTUN builds the topology. The engine runs with its default
// options (FIFO queueing discipline of DefaultQueueLen on the NIC, default
// TCP buffers), so that what is measured is what users get, except that
// MPTCP is disabled unless mptcp is set.
func newEngineTUN(tb testing.TB, cfg tunSetup, mptcp bool) *engineTUN {
	tb.Helper()
	netns.Require(tb)
	netns.RequireTools(tb, "tc")
	g := &engineTUN{ns: netns.New(tb, nsPrefix), ifc: "mptt0", mptcp: mptcp}
	if err := g.ns.Do(func() (err error) {
		g.ep, err = Create(g.ifc, cfg.mtu, cfg.opts...)
		return err
	}); err != nil {
		tb.Fatalf("creating TUN in %s: %v", g.ns.Name, err)
	}
	var opts stack.Options
	opts.MPTCP.Disabled = !mptcp
	if cfg.noFIFO {
		opts.QueueLen = -1
	}
	eng, err := stack.NewEngine(opts)
	if err != nil {
		g.ep.Close()
		tb.Fatal(err)
	}
	g.eng = eng
	tb.Cleanup(func() {
		g.eng.Close() // removes the NIC, which closes the TUN
		g.ep.Close()
		waitOrFail(tb, "Endpoint.Wait", 10*time.Second, g.ep.Wait)
	})
	if _, err := eng.AddNIC(g.ep, netip.PrefixFrom(gvisor4, 24), netip.PrefixFrom(gvisor6, 64)); err != nil {
		tb.Fatal(err)
	}
	g.ns.SetupLink(g.ifc, netns.LinkConfig{
		MTU:   cfg.mtu,
		QDisc: cfg.qdisc,
		Addrs: []string{kernel4.String() + "/24", kernel6.String() + "/64"},
	})
	return g
}

// pair opens one connection across the TUN and returns its sending and
// receiving ends for the direction: inbound, a kernel socket dials an
// engine listener; outbound, the engine dials a kernel listener (Go's
// listeners accept MPTCP by default, so with g.mptcp the connection is
// MPTCP both ways). v6 selects IPv6.
func (g *engineTUN) pair(dir direction, v6 bool) (w, r net.Conn, err error) {
	kAddr, eAddr := kernel4, gvisor4
	if v6 {
		kAddr, eAddr = kernel6, gvisor6
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if dir == inbound {
		ln, err := g.eng.Listen("tcp", netip.AddrPortFrom(eAddr, 0).String())
		if err != nil {
			return nil, nil, err
		}
		defer ln.Close()
		acc := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			acc <- c
		}()
		var kc net.Conn
		if err := g.ns.Do(func() (err error) {
			var d net.Dialer
			d.SetMultipathTCP(g.mptcp)
			kc, err = d.DialContext(ctx, "tcp", ln.Addr().String())
			return err
		}); err != nil {
			return nil, nil, fmt.Errorf("kernel dial: %w", err)
		}
		select {
		case ec := <-acc:
			if ec == nil {
				kc.Close()
				return nil, nil, errors.New("engine accept failed")
			}
			return kc, ec, nil
		case <-ctx.Done():
			kc.Close()
			return nil, nil, errors.New("engine accept timed out")
		}
	}
	return dialKernel(ctx, g.ns, kAddr, func(to netip.AddrPort) (net.Conn, error) {
		c, err := g.eng.Dial(ctx, "tcp", to.String())
		if err != nil {
			return nil, fmt.Errorf("engine dial: %w", err)
		}
		return c, nil
	})
}
