package main

// The machinery "mptund connect" and "mptund listen" share: flags, the TUN
// and engine of a run, copying between stdin/stdout and a connection, the
// closing handshake, signals and the --stats report.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/mptund/mptund/internal/capture"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/tun"
)

// Defaults of the shared flags.
const (
	defaultTUN  = "mptund0"
	defaultAddr = "10.77.0.2/24"
	defaultMTU  = 1500
)

const (
	// copyBufSize is the size of each copy buffer (two for stdin, one
	// for stdout).
	copyBufSize = 128 << 10
	// lingerClean bounds the wait, after both directions ended, for the
	// peer to acknowledge every byte sent and our FIN (at the data level
	// with MPTCP): Close lingers that long (stack.Conn.SetLinger) and
	// fails, naming the bytes lost, if they were not all delivered.
	lingerClean = 30 * time.Second
	// lingerInterrupted is that bound after a signal or an error.
	lingerInterrupted = time.Second
	// closeWait bounds the wait for the closing handshake after that
	// (TIME-WAIT: the peer's FIN received and ours acknowledged), so
	// that the engine does not reset a connection the peer considers
	// cleanly closed.
	closeWait = 5 * time.Second
	// tunWaitTimeout bounds the wait for the TUN's goroutines at exit.
	tunWaitTimeout = 10 * time.Second
)

// errInterrupted reports a run ended by SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// sharedFlagsHelp documents the flags of connect and listen, for their
// usage texts.
const sharedFlagsHelp = `The engine gets its own TUN device (--tun) with the address(es) --addr;
with --peer-addr the kernel side of the TUN is given that address and
brought up (otherwise configure the interface yourself, e.g. with ip addr
and ip link). Closing the device at exit removes the interface.

Stdin is sent to the peer and a FIN follows its end; what the peer sends is
written to stdout. The command ends when both directions are done. SIGINT
or SIGTERM closes the connection, flushes the capture and removes the TUN
(a second signal kills at once).

--pcap records every packet the engine sends to or receives from the TUN
(pcapng, raw IP, nanosecond timestamps, epb_flags direction: inbound =
received by the engine), below receive coalescing: each kernel segment is
one record. Read it with 'mptund pcap inspect' or tshark.

Connections speak MPTCP (RFC 8684) by default and fall back to plain TCP
when the peer or the path does not; --no-mptcp speaks plain TCP from the
start, --checksum asks for DSS checksums.

Multipath: --path NAME,addr=CIDR[,peer=CIDR] adds one more TUN (one per
path; repeatable), and --endpoint tells the path manager what to do with a
local address, as 'ip mptcp endpoint add' does: "signal" announces it to
the peer (ADD_ADDR; with port=N on that port), "subflow" opens a subflow
from it to the peer's initial address, "backup" makes its subflows
backups, "fullmesh" (with subflow) joins every address the peer
announced. --subflows (default 2) and --add-addr-accepted (default 0)
are the per-connection limits ('ip mptcp limits'), --scheduler picks the
packet scheduler. Example, a client with two paths:

    mptund connect --peer-addr 10.77.0.1/24 \
        --path mpt1,addr=10.78.0.2/24,peer=10.78.0.1/24 \
        --endpoint 10.78.0.2,subflow 10.77.0.1:5001

--stats prints one JSON object on stderr at exit: addresses, duration,
bytes each way, for each connection its TCP state and counters (tcp.Info)
and its MPTCP view (mptcp: in use or the fallback reason, tokens, checksums,
data-level counters, every subflow with its addresses, IDs, priority and
TCP counters), and the engine's (MPTCP counters named like the kernel's
MPTcpExt), each TUN's and the capture's counters.
`

// prefixList is a repeatable flag of CIDR prefixes (an address with its
// prefix length, like 10.77.0.2/24 or fd77::2/64).
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(s string) error {
	x, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("want an address with prefix length, like 10.77.0.2/24: %w", err)
	}
	if x.Addr().Zone() != "" || x.Addr().Is4In6() {
		return fmt.Errorf("%s: want a plain IPv4 or IPv6 address", s)
	}
	*p = append(*p, x)
	return nil
}

// netcatFlags are the flags connect and listen share. Flags that change
// how the engine speaks (MPTCP on or off, DSS checksums) belong here and
// in engineOptions.
type netcatFlags struct {
	tun       string
	addrs     prefixList
	peerAddrs prefixList
	mtu       int
	pcap      string
	stats     bool
	verbose   bool
	noMPTCP   bool
	checksum  bool
	// Multipath: extra TUNs, path-manager endpoints and limits, the
	// scheduler.
	paths           pathList
	endpoints       endpointList
	subflows        int
	addAddrAccepted int
	scheduler       string
}

func (f *netcatFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tun, "tun", defaultTUN, "name of the TUN device to create")
	fs.Var(&f.addrs, "addr", "the engine's address on the TUN, CIDR; repeatable, IPv4 and/or IPv6 (default "+defaultAddr+")")
	fs.Var(&f.peerAddrs, "peer-addr", "assign this CIDR to the kernel side of the TUN and bring it up; repeatable")
	fs.IntVar(&f.mtu, "mtu", defaultMTU, "MTU of the TUN")
	fs.StringVar(&f.pcap, "pcap", "", "write every packet on the TUN to this pcapng `file`")
	fs.BoolVar(&f.stats, "stats", false, "print a JSON report on stderr at exit")
	fs.BoolVar(&f.verbose, "v", false, "report progress on stderr (listening, connected)")
	fs.BoolVar(&f.noMPTCP, "no-mptcp", false, "speak plain TCP: send no MP_CAPABLE and answer MP_CAPABLE SYNs as plain TCP")
	fs.BoolVar(&f.checksum, "checksum", false, "request DSS checksums (MP_CAPABLE flag A); used if either side asks")
	fs.Var(&f.paths, "path", "one more TUN device for another path: `NAME,addr=CIDR[,peer=CIDR]...`; repeatable")
	fs.Var(&f.endpoints, "endpoint", "a path-manager endpoint: `ADDR[,signal][,subflow][,backup][,fullmesh][,port=N][,id=N]`; repeatable")
	fs.IntVar(&f.subflows, "subflows", mptcp.DefaultSubflowsLimit, "limit: subflows per connection beyond the first (0..8)")
	fs.IntVar(&f.addAddrAccepted, "add-addr-accepted", mptcp.DefaultAddAddrAcceptedLimit, "limit: ADD_ADDRs a connection acts on (0..8)")
	fs.StringVar(&f.scheduler, "scheduler", mptcp.DefaultScheduler, "packet scheduler: "+strings.Join(mptcp.Schedulers(), ", "))
}

// validate checks the flags and fills in defaults.
func (f *netcatFlags) validate() error {
	if len(f.addrs) == 0 {
		f.addrs = prefixList{netip.MustParsePrefix(defaultAddr)}
	}
	if !validIfName(f.tun) {
		return fmt.Errorf("--tun %q: not a valid interface name", f.tun)
	}
	seen := map[string]bool{f.tun: true}
	for _, p := range f.paths {
		if seen[p.tun] {
			return fmt.Errorf("--path %s: TUN name used twice", p.tun)
		}
		seen[p.tun] = true
	}
	if f.subflows < 0 || f.subflows > mptcp.MaxLimit || f.addAddrAccepted < 0 || f.addAddrAccepted > mptcp.MaxLimit {
		return fmt.Errorf("--subflows and --add-addr-accepted must be within 0..%d", mptcp.MaxLimit)
	}
	if _, err := mptcp.NewScheduler(f.scheduler); err != nil {
		return fmt.Errorf("--scheduler: %v", err)
	}
	if f.noMPTCP && (len(f.endpoints) > 0 || len(f.paths) > 0) {
		return fmt.Errorf("--endpoint and --path need MPTCP: drop --no-mptcp")
	}
	if f.mtu < 576 || f.mtu > 65535 {
		return fmt.Errorf("--mtu %d out of range [576, 65535]", f.mtu)
	}
	var has6 bool
	all := append(f.addrs[:len(f.addrs):len(f.addrs)], f.peerAddrs...)
	for _, p := range f.paths {
		all = append(append(all, p.addrs...), p.peers...)
	}
	for _, p := range all {
		has6 = has6 || p.Addr().Is6()
	}
	if has6 && f.mtu < 1280 {
		return fmt.Errorf("--mtu %d: IPv6 needs at least 1280", f.mtu)
	}
	for _, a := range f.addrs {
		for _, p := range f.peerAddrs {
			if a.Addr() == p.Addr() {
				return fmt.Errorf("%v is both --addr and --peer-addr", a.Addr())
			}
		}
	}
	return nil
}

// engineOptions returns the engine configuration the flags select.
func (f *netcatFlags) engineOptions() stack.Options {
	return stack.Options{MPTCP: stack.MPTCPConfig{
		Disabled:  f.noMPTCP,
		Checksums: f.checksum,
		Endpoints: f.endpoints,
		Limits:    &mptcp.Limits{Subflows: f.subflows, AddAddrAccepted: f.addAddrAccepted},
		Scheduler: f.scheduler,
	}}
}

// link is the TUN devices and the engine of one run.
type link struct {
	eng  *stack.Engine
	ep   *tun.Endpoint   // the first TUN (--tun)
	eps  []*tun.Endpoint // every TUN, the first one first
	pcap *capture.Writer // nil without --pcap
}

// openLink creates the capture file, the TUN device and the engine, and
// configures the kernel side of the TUN. On error everything created is
// closed again.
func openLink(f *netcatFlags) (*link, error) {
	l := &link{}
	if err := l.open(f); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *link) open(f *netcatFlags) error {
	var err error
	if f.pcap != "" {
		if l.pcap, err = capture.Create(f.pcap, capture.Options{Interface: f.tun}); err != nil {
			return err
		}
	}
	if l.eng, err = stack.NewEngine(f.engineOptions()); err != nil {
		return err
	}
	paths := append(pathList{{tun: f.tun, addrs: f.addrs, peers: f.peerAddrs}}, f.paths...)
	for i, p := range paths {
		dev, err := wgtun.CreateTUN(p.tun, f.mtu)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("creating TUN %q: %w (needs root or CAP_NET_ADMIN)", p.tun, err)
			}
			return fmt.Errorf("creating TUN %q: %w", p.tun, err)
		}
		if l.pcap != nil {
			ifc := 0
			if i > 0 {
				if ifc, err = l.pcap.AddInterface(p.tun); err != nil {
					dev.Close()
					return err
				}
			}
			dev = capture.NewDevice(dev, l.pcap, ifc)
		}
		ep, err := tun.New(dev, f.mtu)
		if err != nil {
			dev.Close()
			return err
		}
		l.eps = append(l.eps, ep)
		if i == 0 {
			l.ep = ep
		}
		if _, err = l.eng.AddNIC(ep, p.addrs...); err != nil {
			return err
		}
		if len(p.peers) > 0 {
			if err := configurePeer(p.tun, p.peers); err != nil {
				return err
			}
		}
	}
	return nil
}

// configurePeer gives the kernel side of the TUN ifc its addresses (IPv6
// without duplicate address detection, so they are usable at once) and
// brings it up, with iproute2.
func configurePeer(ifc string, addrs []netip.Prefix) error {
	for _, a := range addrs {
		args := []string{"addr", "add", a.String(), "dev", ifc}
		if a.Addr().Is6() {
			args = append(args, "nodad")
		}
		if err := ip(args...); err != nil {
			return err
		}
	}
	return ip("link", "set", "dev", ifc, "up")
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// close closes the engine (resetting what is still open and removing the
// NIC, which closes the TUN device and so removes the interface), waits
// for the TUN's goroutines, and closes the capture. It returns the
// capture's error.
func (l *link) close() error {
	if l.eng != nil {
		l.eng.Close()
	}
	for _, ep := range l.eps {
		ep.Close() // in case the engine never owned it
		done := make(chan struct{})
		go func() { ep.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(tunWaitTimeout):
		}
	}
	if l.pcap != nil {
		return l.pcap.Close()
	}
	return nil
}

// netConn is what a netcat session needs of a connection: *stack.Conn, or
// *net.TCPConn in tests.
type netConn interface {
	net.Conn
	CloseWrite() error
}

// stdinPump reads stdin on its own goroutine, into two buffers that it
// hands over in turn, so that a session can stop waiting for stdin (a
// terminal may never send EOF) and a chunk read but not yet sent when a
// connection ended is sent on the next one (listen --keep).
//
// One session at a time may call send.
type stdinPump struct {
	chunks  chan []byte // filled buffers; closed after EOF or error
	free    chan []byte // buffers to fill
	err     error       // the read error other than EOF; set before chunks closes
	pending []byte      // the unsent rest of a chunk, owned by send
	full    []byte      // the buffer pending belongs to
}

func newStdinPump(r io.Reader) *stdinPump {
	p := &stdinPump{chunks: make(chan []byte), free: make(chan []byte, 2)}
	p.free <- make([]byte, copyBufSize)
	p.free <- make([]byte, copyBufSize)
	go p.run(r)
	return p
}

func (p *stdinPump) run(r io.Reader) {
	defer close(p.chunks)
	for {
		b := <-p.free
		n, err := r.Read(b[:cap(b)])
		if n > 0 {
			p.chunks <- b[:n]
		} else {
			p.free <- b
		}
		if err != nil {
			if err != io.EOF {
				p.err = err
			}
			return
		}
	}
}

// errStopped is send's result when stop closed first.
var errStopped = errors.New("stopped")

// stdinError is a failure to read stdin.
type stdinError struct{ err error }

func (e *stdinError) Error() string { return "reading stdin: " + e.err.Error() }
func (e *stdinError) Unwrap() error { return e.err }

// stdoutError is a failure to write stdout.
type stdoutError struct{ err error }

func (e *stdoutError) Error() string { return "writing stdout: " + e.err.Error() }
func (e *stdoutError) Unwrap() error { return e.err }

// send copies stdin to c until stdin's end, then half-closes c (RFC 9293
// §3.10.4: the FIN follows the data). It returns nil after the
// half-close, the error of c.Write or c.CloseWrite, a *stdinError, or
// errStopped once stop is closed. sent counts the bytes c accepted.
func (p *stdinPump) send(c netConn, stop <-chan struct{}, sent *atomic.Uint64) error {
	for {
		if p.pending == nil {
			select {
			case b, ok := <-p.chunks:
				if !ok {
					if p.err != nil {
						return &stdinError{p.err}
					}
					return c.CloseWrite()
				}
				p.pending, p.full = b, b
			case <-stop:
				return errStopped
			}
		}
		n, err := c.Write(p.pending)
		sent.Add(uint64(n))
		p.pending = p.pending[n:]
		if err != nil {
			return err
		}
		p.free <- p.full
		p.pending, p.full = nil, nil
	}
}

// receive copies c to stdout until c's end (the peer's FIN). It returns
// nil at the end, c's read error, or a *stdoutError. received counts the
// bytes written to stdout.
func receive(stdout io.Writer, c netConn, buf []byte, received *atomic.Uint64) error {
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := stdout.Write(buf[:n]); werr != nil {
				return &stdoutError{werr}
			}
			received.Add(uint64(n))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// transfer runs one session on c: stdin to c and c to stdout, at once,
// until both directions are done (then it returns nil), a direction
// fails, or ctx is cancelled (errInterrupted). On failure or interruption
// it closes c, which sends a FIN, or a RST if received data was left
// unread; after a clean end c is left for the caller to close. It returns
// only when both copying goroutines have.
func transfer(ctx context.Context, c netConn, pump *stdinPump, stdout io.Writer, buf []byte, sent, received *atomic.Uint64) error {
	stop := make(chan struct{})
	sendDone := make(chan error, 1)
	recvDone := make(chan error, 1)
	go func() { sendDone <- pump.send(c, stop, sent) }()
	go func() { recvDone <- receive(stdout, c, buf, received) }()

	// cause is what ended the session early; errors that follow from
	// closing c (the other direction's) do not replace it.
	var cause, sendErr error
	sending, receiving := true, true
	stopped := false
	fail := func(err error) {
		if cause == nil {
			cause = err
		}
		if !stopped {
			stopped = true
			close(stop)
			c.Close()
		}
	}
	done := ctx.Done()
	for sending || receiving {
		select {
		case err := <-sendDone:
			sending = false
			var se *stdinError
			switch {
			case err == nil || errors.Is(err, errStopped):
			case errors.As(err, &se):
				fail(err)
			default:
				// A write error means the connection is gone: the
				// receiver hears of it too, and says more.
				sendErr = err
			}
		case err := <-recvDone:
			receiving = false
			if err != nil {
				fail(err)
			}
		case <-done:
			done = nil
			fail(errInterrupted)
		}
	}
	if cause != nil {
		return cause
	}
	return sendErr
}

// session drives one connection of a run: transfer, close, wait for the
// closing handshake, and record it in the report.
type session struct {
	name   string // "connect" or "listen", for messages
	flags  *netcatFlags
	stdout io.Writer
	stderr io.Writer
	pump   *stdinPump
	buf    []byte
	report *Report
}

// logf reports progress with -v.
func (s *session) logf(format string, args ...any) {
	if s.flags.verbose {
		fmt.Fprintf(s.stderr, "%s %s: %s\n", programName, s.name, fmt.Sprintf(format, args...))
	}
}

// serve runs one connection to its end and returns how it ended.
func (s *session) serve(ctx context.Context, c *stack.Conn) error {
	cr := ConnReport{Local: addrPortOf(c.LocalAddr()), Remote: addrPortOf(c.RemoteAddr()), Start: time.Now()}
	var sent, received atomic.Uint64
	err := transfer(ctx, c, s.pump, s.stdout, s.buf, &sent, &received)
	linger := lingerClean
	if err != nil || ctx.Err() != nil {
		linger = lingerInterrupted
	}
	// Success means delivered: Close waits until the peer acknowledged
	// every byte and our FIN, and says how many it did not.
	c.SetLinger(int((linger + time.Second - 1) / time.Second))
	if cerr := c.Close(); cerr != nil && err == nil {
		err = cerr
	}
	waitClosed(ctx, c, min(linger, closeWait))
	cr.Duration = time.Since(cr.Start).Seconds()
	cr.BytesSent, cr.BytesReceived = sent.Load(), received.Load()
	var ue *stack.UndeliveredError
	if errors.As(err, &ue) {
		cr.BytesUndelivered = ue.Bytes
	}
	cr.State = c.State().String()
	cr.TCP = c.Info()
	ci := c.ConnInfo()
	cr.MPTCP = &ci
	if err != nil {
		cr.Error = err.Error()
	}
	s.report.addConn(cr)
	if err == nil {
		s.logf("%v: done, %d bytes sent and acknowledged, %d received", cr.Remote, cr.BytesSent, cr.BytesReceived)
	} else {
		s.logf("%v: failed after %d bytes sent (%d not delivered), %d received: %v", cr.Remote, cr.BytesSent, cr.BytesUndelivered, cr.BytesReceived, err)
	}
	return err
}

// waitClosed waits, at most linger (cut to lingerInterrupted by ctx), until
// c has finished its closing handshake: every subflow in TIME-WAIT (our FIN
// acknowledged and the peer's received) or CLOSED.
func waitClosed(ctx context.Context, c *stack.Conn, linger time.Duration) {
	t := time.NewTimer(linger)
	defer t.Stop()
	select {
	case <-c.Finished():
	case <-t.C:
	case <-ctx.Done():
		select {
		case <-c.Finished():
		case <-t.C:
		case <-time.After(lingerInterrupted):
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// runNetcat is the frame of connect and listen: it sets up the link, runs
// body, tears down, reports, and returns the exit status. body returns
// how the run ended: nil for a clean end.
func runNetcat(ctx context.Context, name string, f *netcatFlags, target string, stdin io.Reader, stdout, stderr io.Writer,
	body func(ctx context.Context, l *link, s *session) error) int {
	report := &Report{
		Command:   name,
		TUN:       f.tun,
		MTU:       f.mtu,
		Addrs:     f.addrs,
		PeerAddrs: f.peerAddrs,
		Target:    target,
		Start:     time.Now(),
	}
	s := &session{name: name, flags: f, stdout: stdout, stderr: stderr, report: report, buf: make([]byte, copyBufSize)}
	var err error
	l, lerr := openLink(f)
	if lerr != nil {
		err = lerr
	} else {
		s.pump = newStdinPump(stdin)
		err = body(ctx, l, s)
		report.Engine = l.eng.Stats()
		if !f.noMPTCP {
			report.MPTCP = nonZero(l.eng.MPTCPStats())
		}
		cerr := l.close()
		report.Link = l.ep.Stats()
		if len(l.eps) > 1 {
			report.Paths = map[string]tun.Stats{}
			for i, ep := range l.eps {
				name := f.tun
				if i > 0 {
					name = f.paths[i-1].tun
				}
				report.Paths[name] = ep.Stats()
			}
		}
		if l.pcap != nil {
			cs := l.pcap.Stats()
			report.Capture = &cs
		}
		switch {
		case cerr == nil:
		case err == nil:
			// A capture that could not be written fails a run that
			// otherwise went well.
			err = fmt.Errorf("%s: %w", f.pcap, cerr)
		default:
			// The session's outcome comes first.
			fmt.Fprintf(stderr, "%s %s: %s: %v\n", programName, name, f.pcap, cerr)
		}
	}
	report.finish(err)
	if err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", programName, name, err)
	}
	if f.stats {
		if werr := report.write(stderr); werr != nil {
			fmt.Fprintf(stderr, "%s %s: writing stats: %v\n", programName, name, werr)
		}
	}
	if err != nil {
		return exitFailed
	}
	return exitOK
}

// nonZero returns the counters of m that are not zero.
func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// withSignals runs fn with a context cancelled by the first SIGINT or
// SIGTERM; after that, the signals' default action is restored so that a
// second one ends the process at once.
func withSignals(fn func(ctx context.Context) int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	return fn(ctx)
}

// interruptedErr returns errInterrupted if ctx was cancelled, else err.
func interruptedErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errInterrupted
	}
	return err
}
