package main

// "mptund proxy": the MPTCP-to-TCP converter. The engine accepts MPTCP
// (and plain TCP) on its paths; each connection is forwarded with an
// ordinary kernel TCP socket to a fixed backend (reverse proxy) or to the
// destination the client names in its RFC 8803 Convert header.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptund/mptund/convert"
	"github.com/mptund/mptund/internal/splice"
	"github.com/mptund/mptund/stack"
)

var proxyCommand = &command{
	name:    "proxy",
	summary: "accept Multipath TCP and forward it over TCP (RFC 8803 converter)",
	usage: `Usage:

	mptund proxy [--config FILE] [flags]

Proxy accepts Multipath TCP (and plain TCP) connections on port --listen
(default 5124) of every engine address and forwards each with an
ordinary kernel TCP socket: to --backend HOST:PORT (a reverse proxy in
front of a legacy service; clients need not speak anything but MPTCP),
or, without --backend, to the destination the client names in an RFC
8803 Convert header (what "mptund client" sends), if the allow-list
(--allow PREFIX[:PORT[-PORT]], repeatable) admits it; other requests are
answered with the RFC's Error TLV and closed. --cookie requires clients
to send that Cookie TLV.

Paths are as for "mptund client": --path NAME,addr=CIDR[,peer=CIDR] is a
TUN path whose addresses the network routes to this host; --uplink DEV
exposes the engine on a real interface: TCP to DEV's address and
--listen port is forwarded (DNAT) to the engine, and the engine's
replies leave by DEV. Paths with "signal" are announced to clients
(ADD_ADDR; an uplink's own address). rate=R and subflow-rate=R limit a
path and each subflow on it, each way (the proxy's throttling moves
load to the other paths).

Flow control is end to end: each connection relays through two bounded
buffers, so a slow backend or client stalls its peer rather than growing
the proxy's memory.

--status, signals and the configuration file are as for "mptund client"
(docs/daemon.md).
`,
}

func init() {
	proxyCommand.run = func(args []string, stdout, stderr io.Writer) int {
		return runDaemon("proxy", args, stderr)
	}
}

// supportedKinds are the TCP option kinds a Connect TLV may ask for: the
// kernel sends them on its own (MSS, window scale, SACK-permitted,
// timestamps).
var supportedKinds = []uint8{2, 3, 4, 8}

// convertReadTimeout bounds the wait for a client's Convert header.
const convertReadTimeout = 10 * time.Second

// proxy is a running "mptund proxy".
type proxy struct {
	*daemon
	ln      *stack.Listener
	dialer  net.Dialer
	pending atomic.Int64

	mu     sync.Mutex // guards allow and cookie (SIGHUP)
	allow  []allowRule
	cookie []byte

	refusals [256]atomic.Uint64 // Error TLVs sent, by code
}

func runProxy(ctx context.Context, cfg *daemonConfig, f *daemonFlags, stderr io.Writer) error {
	d, err := newDaemon(cfg, f, stderr)
	if err != nil {
		return err
	}
	defer d.close()
	p := &proxy{daemon: d, allow: cfg.Allow, cookie: cfg.Cookie}
	p.dialer.Timeout = cfg.DialTimeout
	d.status = func(st *Status) {
		st.Mode = "convert"
		if cfg.Backend != "" {
			st.Mode, st.Target = "backend", cfg.Backend
		}
		st.App = map[string]uint64{"pending": uint64(p.pending.Load())}
		if p.ln != nil {
			// Connections whose first bytes (the Convert header) came in
			// the SYN.
			st.App["syn_data"] = p.ln.Stats().SynData
		}
		for code := range p.refusals {
			if n := p.refusals[code].Load(); n > 0 {
				st.App["refused_"+strings.ReplaceAll(convert.ErrorCode(code).String(), " ", "_")] = n
			}
		}
	}
	if p.ln, err = d.eng.ListenTCP("tcp", &net.TCPAddr{Port: int(cfg.Listen)}); err != nil {
		return err
	}
	// The Convert header comes in the SYN (RFC 8803 §4): a connection
	// is accepted as its SYN arrives, and the destination dialled while
	// the handshake completes.
	p.ln.SetAcceptSynData(true)
	if err := d.serveStatus(); err != nil {
		return err
	}
	flowCtx, abortFlows := context.WithCancel(context.Background())
	defer abortFlows()
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := p.ln.AcceptTCP()
			if err != nil {
				return
			}
			if !d.flows.enter() {
				abortConn(c)
				continue
			}
			go func() {
				defer d.flows.leave()
				p.serve(flowCtx, c)
			}()
		}
	}()
	mode := "Convert, allow " + fmt.Sprint(cfg.Allow)
	if cfg.Backend != "" {
		mode = "backend " + cfg.Backend
	}
	names := []string{}
	for _, rp := range d.pathsNow() {
		n := rp.conf.Name + describePath(rp.conf)
		if rp.public.IsValid() {
			n += fmt.Sprintf(" (%v:%d)", rp.public, cfg.Listen)
		}
		names = append(names, n)
	}
	d.logf("ready: listening on port %d, %s, paths: %s", cfg.Listen, mode, strings.Join(names, "; "))

	refreshCtx, stopRefresh := context.WithCancel(ctx)
	refreshDone := make(chan struct{})
	go func() { d.refreshUplinks(refreshCtx); close(refreshDone) }()
	defer func() { stopRefresh(); <-refreshDone }()
	runSignals(ctx, func() {
		d.reloadConfig()
		if nc, err := buildConfig("proxy", f); err == nil {
			p.mu.Lock()
			p.allow, p.cookie = nc.Allow, nc.Cookie
			p.mu.Unlock()
		}
	})
	p.ln.Close()
	<-acceptDone
	d.logf("stopping: %d connections open, draining for up to %v", d.flows.active(), cfg.DrainTimeout)
	if !d.flows.drain(cfg.DrainTimeout) {
		d.logf("resetting %d connections left", d.flows.active())
	}
	abortFlows()
	d.flows.drain(5 * time.Second)
	return nil
}

// serve handles one accepted connection: the Convert exchange (unless a
// backend is fixed), the connection to the destination, the relay.
func (p *proxy) serve(ctx context.Context, c *stack.Conn) {
	src := addrPortOf(c.RemoteAddr())
	if p.flows.active()+int(p.pending.Load()) >= p.cfg.MaxFlows {
		p.flows.failed.Add(1)
		p.refuse(c, &convert.Error{Code: convert.ErrorResourceExceeded})
		return
	}
	p.pending.Add(1)
	start := time.Now()
	dst, out, err := p.connect(ctx, c)
	p.pending.Add(-1)
	if err != nil {
		p.flows.failed.Add(1)
		p.debugf("%v: %v", src, err)
		return
	}
	f := &flow{src: src, dst: dst, start: start, conn: c}
	p.flows.add(f)
	p.debugf("%v -> %v: open in %v (%s)", src, dst, time.Since(start).Round(time.Microsecond), describeConn(c.ConnInfo()))
	res := splice.Run(ctx,
		splice.Side{Conn: c, Abort: func() { abortConn(c) }},
		splice.Side{Conn: out, Abort: func() { out.SetLinger(0); out.Close() }},
		&f.bytes)
	p.flows.remove(f)
	if res.Reset {
		p.flows.resets.Add(1)
	}
	p.debugf("%v -> %v: closed after %v, %d bytes out, %d in%s", src, dst, time.Since(start).Round(time.Millisecond), res.AToB, res.BToA, describeEnd(res))
}

// connect reads the client's request (Convert mode), connects to the
// destination and answers. On failure it has answered the client (Error
// TLV, or a reset in backend mode) and closed the connection.
func (p *proxy) connect(ctx context.Context, c *stack.Conn) (netip.AddrPort, *net.TCPConn, error) {
	if p.cfg.Backend != "" {
		out, err := p.dial(ctx, p.cfg.Backend)
		if err != nil {
			abortConn(c)
			return netip.AddrPort{}, nil, fmt.Errorf("backend %s: %w", p.cfg.Backend, err)
		}
		return addrPortOf(out.RemoteAddr()), out, nil
	}
	c.SetReadDeadline(time.Now().Add(convertReadTimeout))
	m, _, err := convert.ReadMessage(c, nil)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		var fe *convert.FormatError
		switch {
		case errors.As(err, &fe):
			p.refuse(c, convert.ErrorFor(err))
			return netip.AddrPort{}, nil, fmt.Errorf("refused: %v", err)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded):
			// Part of a message, then the end of the stream or
			// silence: a message that never completes.
			p.refuse(c, &convert.Error{Code: convert.ErrorMalformedMessage})
			return netip.AddrPort{}, nil, fmt.Errorf("refused: incomplete Convert message: %v", err)
		}
		abortConn(c)
		return netip.AddrPort{}, nil, fmt.Errorf("reading the Convert header: %w", err)
	}
	req, rerr := convert.ParseRequest(m, supportedKinds)
	if rerr == nil {
		rerr = p.authorize(req)
	}
	if rerr != nil {
		p.refuse(c, rerr)
		return netip.AddrPort{}, nil, fmt.Errorf("refused %v: %v", req.Dest, rerr)
	}
	if !req.Dest.IsValid() { // Info only
		p.answer(c, convert.Supported(append([]uint8{30}, supportedKinds...)))
		c.Close()
		return netip.AddrPort{}, nil, errors.New("answered an Info request")
	}
	out, err := p.dial(ctx, req.Dest.String())
	if err != nil {
		e := dialError(err)
		p.refuse(c, e)
		return req.Dest, nil, fmt.Errorf("%v: %v (%v)", req.Dest, err, e)
	}
	if err := p.answer(c, convert.Accept(nil)); err != nil {
		out.SetLinger(0)
		out.Close()
		abortConn(c)
		return req.Dest, nil, err
	}
	return req.Dest, out, nil
}

// authorize applies the cookie and the allow-list.
func (p *proxy) authorize(req convert.Request) *convert.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cookie) > 0 {
		if req.Cookie == nil {
			return &convert.Error{Code: convert.ErrorMissingCookie}
		}
		// The cookie travels padded to a word boundary with zeros.
		want := append([]byte(nil), p.cookie...)
		for len(want)%4 != 0 {
			want = append(want, 0)
		}
		if subtle.ConstantTimeCompare(req.Cookie, want) != 1 {
			return &convert.Error{Code: convert.ErrorNotAuthorized}
		}
	}
	if !req.Dest.IsValid() {
		return nil
	}
	for _, a := range p.allow {
		if a.allows(req.Dest) {
			return nil
		}
	}
	return &convert.Error{Code: convert.ErrorNotAuthorized}
}

// dial opens the kernel TCP connection to the destination.
func (p *proxy) dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialError maps a failed connection to the destination to the Error TLV
// (RFC 8803 §4.2.6): reset (refused) by the destination, unreachable
// (ICMP or timeout), or the converter's own resources or network.
func dialError(err error) *convert.Error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return &convert.Error{Code: convert.ErrorConnectionReset}
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EADDRNOTAVAIL):
		return &convert.Error{Code: convert.ErrorResourceExceeded}
	case errors.Is(err, syscall.ENETDOWN):
		return &convert.Error{Code: convert.ErrorNetworkFailure}
	}
	return &convert.Error{Code: convert.ErrorDestinationUnreachable}
}

// answer writes a Convert message to the client.
func (p *proxy) answer(c *stack.Conn, m convert.Message) error {
	c.SetWriteDeadline(time.Now().Add(convertReadTimeout))
	defer c.SetWriteDeadline(time.Time{})
	_, err := c.Write(m.Append(nil))
	return err
}

// refuse answers with an Error TLV and closes the connection: a FIN
// after the answer, then what the client still sends is read and dropped
// for a moment (closing with unread bytes would reset the connection,
// and the reset could overtake the answer).
func (p *proxy) refuse(c *stack.Conn, e *convert.Error) {
	p.refusals[e.Code].Add(1)
	if p.cfg.Backend != "" {
		abortConn(c)
		return
	}
	if err := p.answer(c, convert.Refuse(e)); err != nil {
		abortConn(c)
		return
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(refuseLinger))
	if _, err := io.Copy(io.Discard, io.LimitReader(c, refuseDrain)); err != nil {
		abortConn(c)
		return
	}
	c.Close()
}

// A refused client's bytes are drained for refuseLinger, at most
// refuseDrain of them.
const (
	refuseLinger = 2 * time.Second
	refuseDrain  = 64 << 10
)
