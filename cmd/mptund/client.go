package main

// "mptund client": transparent Multipath TCP for unmodified applications.
// An app-facing TUN with a gVisor stack (internal/appstack) terminates the
// TCP connections the host routes into it; each is carried by the engine
// over MPTCP on every path, directly to the original destination or
// through an "mptund proxy" (RFC 8803 Convert protocol).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptund/mptund/convert"
	"github.com/mptund/mptund/internal/appstack"
	"github.com/mptund/mptund/internal/routing"
	"github.com/mptund/mptund/internal/splice"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/tun"
)

var clientCommand = &command{
	name:    "client",
	summary: "carry unmodified applications' TCP over Multipath TCP",
	usage: `Usage:

	mptund client [--config FILE] [flags]

Client terminates the TCP connections of ordinary programs on an
app-facing TUN (--app-tun) and carries each over Multipath TCP on every
path. Which connections: those to --route prefixes (repeatable), all of
them (--default-route; the host's own subnets stay direct), or those
carrying a routing mark (--fwmark; mark a cgroup's or a user's traffic
with nftables, e.g. meta skuid 1000 meta mark set 0x10). Only TCP is
captured; other protocols keep their routes.

--mode proxy (the default) reaches every destination through an
"mptund proxy" at --proxy ADDR:PORT, naming it with RFC 8803's Convert
header; --mode direct speaks MPTCP to the destination itself, falling
back to TCP when it does not. A connection the engine cannot open is
refused to the application with a RST.

Paths: --uplink DEV uses a real interface (eth0, wlan0): mptund gives
the engine a TUN for it, routes what the engine sends there out of DEV
(a routing table and rule per path) with source NAT to DEV's address,
and removes it all at exit. --path NAME,addr=CIDR[,peer=CIDR] is a TUN
path as in "mptund connect". The first path carries each connection's
initial subflow; the others open subflows (backup: used only when no
other path works; fullmesh: to every address the peer announces).
Per path: rate=R and subflow-rate=R (tc units: 20mbit, 2mbps) limit it
each way, delay=D adds delay each way.

--status SOCKET serves the live state (paths, connections, bytes per
subflow) as JSON; "mptund status SOCKET" prints it. SIGINT/SIGTERM stop
accepting, let open connections finish for up to engine.drain_timeout,
then reset the rest and undo every host change. SIGHUP re-reads the
config file and applies paths, rates and limits.

The configuration file is described in docs/daemon.md. Exit status: 0
after a clean stop, 1 when setup failed, 2 on usage errors.
`,
}

func init() {
	clientCommand.run = func(args []string, stdout, stderr io.Writer) int {
		return runDaemon("client", args, stderr)
	}
}

// runDaemon parses the flags of client or proxy, builds the
// configuration and runs it until a signal.
func runDaemon(role string, args []string, stderr io.Writer) int {
	c := clientCommand
	if role == "proxy" {
		c = proxyCommand
	}
	fs := newFlagSet(programName+" "+role, c.usage, stderr)
	f := &daemonFlags{}
	f.register(fs, role)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) != 0 {
		return usageError(stderr, fs, "unexpected arguments %q", pos)
	}
	cfg, err := buildConfig(role, f)
	if err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", programName, role, err)
		return exitUsage
	}
	if err := checkPrivileges(); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", programName, role, err)
		return exitFailed
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var run func(context.Context, *daemonConfig, *daemonFlags, io.Writer) error
	if role == "client" {
		run = runClient
	} else {
		run = runProxy
	}
	if err := run(ctx, cfg, f, stderr); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", programName, role, err)
		return exitFailed
	}
	return exitOK
}

// checkPrivileges says what is missing to create TUNs and change routes.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (TUN devices, routes, nftables)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("needs /dev/net/tun (modprobe tun)")
	}
	return nil
}

// client is a running "mptund client".
type client struct {
	*daemon
	app       *appstack.Stack
	capture   *routing.Setup
	transport converterTransport
	pending   atomic.Int64 // connections being opened
	flowCtx   context.Context
}

func runClient(ctx context.Context, cfg *daemonConfig, f *daemonFlags, stderr io.Writer) error {
	d, err := newDaemon(cfg, f, stderr)
	if err != nil {
		return err
	}
	c := &client{daemon: d, transport: synTransport{}}
	defer c.close()
	flowCtx, abortFlows := context.WithCancel(context.Background())
	defer abortFlows()
	c.flowCtx = flowCtx
	d.status = func(st *Status) {
		st.Mode = cfg.Mode
		if cfg.Mode == "proxy" {
			st.Target = cfg.Proxy.String()
		}
		if c.app != nil {
			as := c.app.Stats()
			st.App = map[string]uint64{"accepted": as.Accepted, "refused": as.Refused, "pending_drops": as.PendingDrops, "pending": uint64(c.pending.Load())}
		}
	}

	// The app-facing TUN and its stack.
	ep, err := tun.Create(cfg.AppTUN, cfg.AppMTU)
	if err != nil {
		return fmt.Errorf("app TUN: %w", err)
	}
	if c.app, err = appstack.New(ep, appstack.Config{}, c.handle); err != nil {
		ep.Close()
		return err
	}
	if err := ip("link", "set", "dev", cfg.AppTUN, "up"); err != nil {
		return err
	}
	if c.capture, err = routing.New(routing.StateFile(cfg.StateDir, "client", cfg.AppTUN), d.debugf); err != nil {
		return err
	}
	if err := c.capture.AddCapture(routing.Capture{TUN: cfg.AppTUN, Table: cfg.Table, Priority: cfg.Priority + captureOffset,
		Routes: cfg.Routes, Default: cfg.DefaultRoute, FwMark: cfg.FwMark}); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if err := d.serveStatus(); err != nil {
		return err
	}
	what := fmt.Sprintf("routes %v", cfg.Routes)
	switch {
	case cfg.DefaultRoute:
		what = "default route"
	case cfg.FwMark != 0:
		what = fmt.Sprintf("fwmark 0x%x", cfg.FwMark)
	}
	via := "direct"
	if cfg.Mode == "proxy" {
		via = "via proxy " + cfg.Proxy.String()
	}
	names := []string{}
	for _, p := range d.pathsNow() {
		names = append(names, p.conf.Name+describePath(p.conf))
	}
	d.logf("ready: capturing TCP (%s) on %s, %s, paths: %s", what, cfg.AppTUN, via, strings.Join(names, "; "))

	refreshCtx, stopRefresh := context.WithCancel(ctx)
	refreshDone := make(chan struct{})
	go func() { d.refreshUplinks(refreshCtx); close(refreshDone) }()
	defer func() { stopRefresh(); <-refreshDone }()
	runSignals(ctx, d.reloadConfig)
	n := d.flows.active()
	d.logf("stopping: %d connections open, draining for up to %v", n, cfg.DrainTimeout)
	if !d.flows.drain(cfg.DrainTimeout) {
		d.logf("resetting %d connections left", d.flows.active())
	}
	abortFlows()
	d.flows.drain(5 * time.Second)
	return nil
}

func (c *client) close() {
	if c.capture != nil {
		if err := c.capture.Close(); err != nil {
			c.logf("undoing the capture: %v", err)
		}
	}
	if c.app != nil {
		c.app.Close()
	}
	c.daemon.close()
}

// handle opens the connection an application asked for and relays it.
// Runs on a goroutine of its own per connection.
func (c *client) handle(r *appstack.Request) {
	if c.flows.active()+int(c.pending.Load()) >= c.cfg.MaxFlows || !c.flows.enter() {
		c.flows.failed.Add(1)
		r.Refuse()
		return
	}
	defer c.flows.leave()
	c.pending.Add(1)
	ctx, cancel := context.WithTimeout(c.flowCtx, c.cfg.DialTimeout)
	start := time.Now()
	conn, err := c.open(ctx, r.Dst)
	cancel()
	c.pending.Add(-1)
	if err != nil {
		c.flows.failed.Add(1)
		c.debugf("%v -> %v: refused: %v", r.Src, r.Dst, err)
		r.Refuse()
		return
	}
	app, err := r.Accept()
	if err != nil {
		c.flows.failed.Add(1)
		abortConn(conn)
		c.debugf("%v -> %v: %v", r.Src, r.Dst, err)
		return
	}
	f := &flow{src: r.Src, dst: r.Dst, start: start, conn: conn}
	c.flows.add(f)
	ci := conn.ConnInfo()
	c.debugf("%v -> %v: open in %v (%s)", r.Src, r.Dst, time.Since(start).Round(time.Microsecond), describeConn(ci))
	res := splice.Run(c.flowCtx,
		splice.Side{Conn: app, Abort: app.Abort},
		splice.Side{Conn: conn, Abort: func() { abortConn(conn) }},
		&f.bytes)
	c.flows.remove(f)
	if res.Reset {
		c.flows.resets.Add(1)
	}
	c.debugf("%v -> %v: closed after %v, %d bytes out, %d in%s", r.Src, r.Dst, time.Since(start).Round(time.Millisecond), res.AToB, res.BToA, describeEnd(res))
}

func describeConn(ci stack.ConnInfo) string {
	if ci.MPTCP {
		return fmt.Sprintf("MPTCP, %d subflows", len(ci.Subflows))
	}
	if ci.Fallback != "" {
		return "TCP, fallback: " + ci.Fallback
	}
	return "TCP"
}

func describeEnd(r splice.Result) string {
	if r.Err == nil {
		return ""
	}
	side := map[string]string{"a": "application", "b": "peer", "": "stop"}[r.Cause]
	return fmt.Sprintf(", reset (%s: %v)", side, r.Err)
}

// open connects to dst through the engine: directly, or through the proxy
// with a Convert request.
func (c *client) open(ctx context.Context, dst netip.AddrPort) (*stack.Conn, error) {
	if c.cfg.Mode == "direct" {
		return c.eng.DialTCP(ctx, "tcp", nil, net.TCPAddrFromAddrPort(dst))
	}
	req := convert.NewRequest(dst, c.cfg.Cookie)
	conn, _, err := c.transport.Open(ctx, c.eng, net.TCPAddrFromAddrPort(c.cfg.Proxy), req.Append(nil))
	return conn, err
}

// converterTransport carries a Convert request to the proxy and returns
// the connection once the proxy's answer has been read (the application's
// bytes follow it), or the proxy's Error TLV as the error.
type converterTransport interface {
	Open(ctx context.Context, eng *stack.Engine, proxy *net.TCPAddr, request []byte) (*stack.Conn, convert.Reply, error)
}

// synTransport puts the Convert request in the SYN's payload (RFC 8803
// §4: TCP Fast Open without a cookie), so that the proxy opens the
// connection to the destination as the SYN arrives, a round trip before
// the handshake completes. A proxy, or a middlebox, that does not take
// the SYN's data costs nothing but that round trip: the engine sends the
// request again as the first bytes of the stream.
type synTransport struct{}

func (synTransport) Open(ctx context.Context, eng *stack.Engine, proxy *net.TCPAddr, request []byte) (*stack.Conn, convert.Reply, error) {
	conn, err := eng.DialTCPSynData(ctx, "tcp", nil, proxy, request)
	if err != nil {
		return nil, convert.Reply{}, err
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	fail := func(err error) (*stack.Conn, convert.Reply, error) {
		abortConn(conn)
		return nil, convert.Reply{}, err
	}
	m, _, err := convert.ReadMessage(conn, nil)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("proxy closed the connection before its Convert answer: %w", syscall.ECONNRESET)
		}
		return fail(fmt.Errorf("proxy %v: %w", proxy, err))
	}
	rep, err := convert.ParseReply(m)
	if err != nil {
		return fail(fmt.Errorf("proxy %v: %w", proxy, err))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	return conn, rep, nil
}
