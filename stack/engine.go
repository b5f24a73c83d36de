package stack

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Defaults used when the corresponding Options field is zero.
const (
	// DefaultMaxConnections bounds the connections of an Engine (all
	// states, TIME-WAIT included).
	DefaultMaxConnections = 1 << 16
	// DefaultQueueLen is the length of each NIC's FIFO queueing
	// discipline, which batches writes so the link can coalesce them. It
	// holds a whole grown send buffer (tcp.DefaultMaxSendBuffer) of
	// MSS-sized packets: the sender does not pace, so on a link without
	// segmentation offload it may burst its window into the queue, and a
	// shorter queue would drop the tail of every such burst.
	DefaultQueueLen = 4096
)

// Options configures an Engine. The zero value is usable.
type Options struct {
	// Clock supplies time to the stack, the TCP endpoints and deadlines;
	// nil selects tcpip.NewStdClock().
	Clock tcpip.Clock
	// TCP is the template for every connection: buffer sizes, congestion
	// control, timers (see tcp.Config). Clock, Output, Notify, ISS,
	// TSOffset and MSS are set per connection (MSS from the route's MTU).
	TCP tcp.Config
	// Backlog bounds each listener's SYN queue and, separately, its queue
	// of established connections not yet accepted; zero selects
	// tcp.DefaultBacklog.
	Backlog int
	// MaxConnections bounds the connections of the engine; further Dials
	// fail with ErrTooManyConnections and further SYNs are dropped.
	MaxConnections int
	// QueueLen is the length of each NIC's FIFO queueing discipline;
	// negative attaches none (every packet is written alone).
	QueueLen int // MPTCP configures Multipath TCP, which Dial and Listen use unless
	// MPTCP.Disabled is set.
	MPTCP MPTCPConfig
}

// Stats counts the engine's decisions outside individual connections.
type Stats struct {
	// ResetsSentUnknown counts RSTs sent for segments matching no
	// connection or listener (RFC 9293 §3.10.7.1).
	ResetsSentUnknown uint64
	// ChecksumErrors counts segments dropped for a bad TCP checksum.
	ChecksumErrors uint64
	// Malformed counts segments dropped as undecodable.
	Malformed uint64
	// MalformedOptions counts TCP options skipped as malformed in
	// segments that were processed (as Linux does).
	MalformedOptions uint64
	// AcceptQueueOverflows counts established connections reset because
	// their listener's accept queue was full.
	AcceptQueueOverflows uint64
	// ConnectionLimitDrops counts SYNs dropped and Dials refused at
	// MaxConnections.
	ConnectionLimitDrops uint64
	// UndeliveredCloses counts connections that ended (reset, timeout,
	// MP_FASTCLOSE, a linger that ran out) with bytes the application
	// wrote never acknowledged by the peer, and UndeliveredBytes those
	// bytes (see UndeliveredError).
	UndeliveredCloses uint64
	UndeliveredBytes  uint64
}

type statCounters struct {
	resetsSentUnknown    atomic.Uint64
	checksumErrors       atomic.Uint64
	malformed            atomic.Uint64
	malformedOptions     atomic.Uint64
	acceptQueueOverflows atomic.Uint64
	connLimitDrops       atomic.Uint64
	undeliveredCloses    atomic.Uint64
	undeliveredBytes     atomic.Uint64
}

// Engine is a gVisor stack with mptund's TCP as transport protocol 6. Its
// methods are safe for concurrent use.
type Engine struct {
	s        *stack.Stack
	clock    tcpip.Clock
	opts     Options
	secret   [32]byte // ISNs (RFC 6528) and SYN cookies (RFC 4987)
	tcpStats tcpip.TCPStats
	stats    statCounters

	nconns atomic.Int64 // registered connections, for MaxConnections
	// ackBatches: per NIC whose link reports receive-batch ends, the
	// connections with an ACK deferred to the end of the batch.
	ackBatches ackBatches
	tokens     *mptcp.Tokens
	// mib counts the engine's MPTCP events (names of the kernel's
	// MPTcpExt counters).
	mib mptcp.MIB
	// pm is the path manager of the engine's MPTCP connections.
	pm *mptcp.PathManager
	// joins builds the endpoints of accepted MP_JOIN subflows.
	joins *joinListener
	// joinPorts are the join-only endpoints of announced ports (guarded
	// by mu).
	joinPorts map[netip.AddrPort]*joinPortEndpoint

	mu      sync.Mutex // guards nextNIC, nics, closed
	nextNIC tcpip.NICID
	nics    map[tcpip.NICID]stack.LinkEndpoint
	closed  bool
}

// NewEngine creates an engine with no NICs.
func NewEngine(opts Options) (*Engine, error) {
	if opts.Clock == nil {
		opts.Clock = tcpip.NewStdClock()
	}
	if opts.Backlog <= 0 {
		opts.Backlog = tcp.DefaultBacklog
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if !opts.MPTCP.Disabled && opts.TCP.MaxReceiveBuffer < mptcp.DefaultMaxReceiveBuffer {
		// Subflows advertise the connection-level window, which auto-tunes
		// up to mptcp.DefaultMaxReceiveBuffer: their window scale must
		// reach it (RFC 7323 §2.3).
		opts.TCP.MaxReceiveBuffer = mptcp.DefaultMaxReceiveBuffer
	}
	e := &Engine{tokens: mptcp.NewTokens(), clock: opts.Clock, opts: opts, nextNIC: 1, nics: make(map[tcpip.NICID]stack.LinkEndpoint),
		joinPorts: make(map[netip.AddrPort]*joinPortEndpoint)}
	pm, err := mptcp.NewPathManager(mptcp.PMConfig{Endpoints: opts.MPTCP.Endpoints, Limits: opts.MPTCP.Limits,
		AddAddrTimeout: opts.MPTCP.AddAddrTimeout, AddAddrRetries: opts.MPTCP.AddAddrRetries, DenyJoinInitial: opts.MPTCP.DenyJoinInitial})
	if err != nil {
		return nil, fmt.Errorf("stack: MPTCP path manager: %w", err)
	}
	e.pm = pm
	if _, err := mptcp.NewScheduler(opts.MPTCP.Scheduler); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if _, err := rand.Read(e.secret[:]); err != nil {
		return nil, fmt.Errorf("stack: seeding secret: %w", err)
	}
	// Validate the TCP template once, so that Dial and Listen cannot fail
	// on it later.
	probe := opts.TCP
	probe.Clock, probe.Output = opts.Clock, tcp.OutputFunc(func(*tcp.OutSegment) {})
	if _, err := tcp.NewEndpoint(probe); err != nil {
		return nil, fmt.Errorf("stack: TCP configuration: %w", err)
	}
	e.s = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			// Addresses are assigned by the user: no duplicate address
			// detection, usable at once.
			ipv6.NewProtocolWithOptions(ipv6.Options{}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			func(*stack.Stack) stack.TransportProtocol { return &protocol{eng: e} },
		},
		Clock: opts.Clock,
	})
	e.tcpStats = e.s.Stats().TCP
	if err := e.newJoinListener(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	e.syncJoinPorts()
	return e, nil
}

// Stack returns the underlying gVisor stack (NIC statistics, routes,
// addresses). Registering other TCP endpoints on it is not supported.
func (e *Engine) Stack() *stack.Stack { return e.s }

// Clock returns the engine's clock.
func (e *Engine) Clock() tcpip.Clock { return e.clock }

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{
		ResetsSentUnknown:    e.stats.resetsSentUnknown.Load(),
		ChecksumErrors:       e.stats.checksumErrors.Load(),
		Malformed:            e.stats.malformed.Load(),
		MalformedOptions:     e.stats.malformedOptions.Load(),
		AcceptQueueOverflows: e.stats.acceptQueueOverflows.Load(),
		ConnectionLimitDrops: e.stats.connLimitDrops.Load(),
		UndeliveredCloses:    e.stats.undeliveredCloses.Load(),
		UndeliveredBytes:     e.stats.undeliveredBytes.Load(),
	}
}

// MPTCPStats returns the engine's MPTCP counters by name, zeros
// included; the names are the Linux kernel's MPTcpExt counters where the
// kernel counts the same event (see mptcp.Counter).
func (e *Engine) MPTCPStats() map[string]uint64 { return e.mib.Snapshot() }

// MPTCPCounter returns one MPTCP counter.
func (e *Engine) MPTCPCounter(c mptcp.Counter) uint64 { return e.mib.Get(c) }

// AddNIC attaches a link endpoint (a TUN, or a simulated link in tests) as
// a new NIC with the given addresses. For each address it adds the on-link
// route of its prefix, and for each address family present a default
// route through this NIC (after those of earlier NICs). Unless
// Options.QueueLen is negative, the NIC gets a FIFO queueing discipline so
// that writes reach the link in batches.
func (e *Engine) AddNIC(ep stack.LinkEndpoint, addrs ...netip.Prefix) (tcpip.NICID, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, ErrEngineClosed
	}
	id := e.nextNIC
	e.nextNIC++
	e.nics[id] = ep
	e.mu.Unlock()
	defer func() {
		if _, ok := e.s.NICInfo()[id]; !ok {
			e.mu.Lock()
			delete(e.nics, id)
			e.mu.Unlock()
		}
	}()

	nicOpts := stack.NICOptions{}
	if e.opts.QueueLen > 0 {
		nicOpts.QDisc = fifo.New(ep, 1, e.opts.QueueLen)
	}
	if err := e.s.CreateNICWithOptions(id, ep, nicOpts); err != nil {
		return 0, fmt.Errorf("stack: creating NIC %d: %s", id, err)
	}
	e.ackBatches.attach(id, ep)
	var has4, has6 bool
	for _, p := range addrs {
		if !p.IsValid() {
			e.s.RemoveNIC(id)
			return 0, fmt.Errorf("%w: invalid prefix %v", ErrAddress, p)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
			has6 = true
		} else {
			has4 = true
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if err := e.s.AddProtocolAddress(id, pa, stack.AddressProperties{}); err != nil {
			e.s.RemoveNIC(id)
			return 0, fmt.Errorf("stack: adding %v: %s", p, err)
		}
		e.s.AddRoute(tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: id})
	}
	if has4 {
		e.s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: id})
	}
	if has6 {
		e.s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: id})
	}
	return id, nil
}

// RemoveNIC detaches a NIC (a path going away: its interface is down or
// gone) and closes the link endpoint. MPTCP connections announce its
// addresses as removed (REMOVE_ADDR, RFC 8684 §3.4.2) and close their
// subflows over it, whose data goes to the other subflows; path-manager
// endpoints of those addresses are removed. A connection left without a
// subflow fails.
func (e *Engine) RemoveNIC(id tcpip.NICID) error {
	info, ok := e.s.NICInfo()[id]
	if !ok {
		return fmt.Errorf("stack: no NIC %d", id)
	}
	gone := map[netip.Addr]bool{}
	for _, pa := range info.ProtocolAddresses {
		if a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice()); ok {
			gone[a.Unmap()] = true
		}
	}
	for _, ep := range e.pm.Endpoints() {
		if gone[ep.Addr] {
			e.pm.RemoveEndpoint(ep.ID)
		}
	}
	e.syncJoinPorts()
	for _, mc := range e.tokens.All() {
		c, ok := ownerOf(mc)
		if !ok {
			continue
		}
		c.mu.Lock()
		if !c.dead && c.mc == mc {
			c.mc.PMUpdate() // REMOVE_ADDR for the endpoints removed
			for _, s := range c.mc.Info().Subflows {
				if gone[s.Local.Addr()] && !s.Closed {
					c.mc.RemoveAddr(s.LocalID)
				}
			}
			c.updateLocked()
			c.flushLocked()
		}
		c.mu.Unlock()
	}
	e.mu.Lock()
	ep := e.nics[id]
	delete(e.nics, id)
	e.mu.Unlock()
	if ep != nil {
		e.ackBatches.detach(id, ep)
	}
	if err := e.s.RemoveNIC(id); err != nil {
		return fmt.Errorf("stack: removing NIC %d: %s", id, err)
	}
	return nil
}

// Close resets every connection, closes every listener, removes the NICs
// (closing their link endpoints) and waits for the stack's goroutines.
// Operations on the engine's connections fail afterwards.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	nics := e.nics
	e.nics = nil
	e.mu.Unlock()
	e.s.Close() // Abort on every registered Conn and Listener
	// Remove the NICs, which closes their link endpoints, before waiting
	// for them: Stack.Wait waits for a link endpoint's goroutines before
	// closing it, which never returns for an endpoint blocked reading a
	// device (tun.Endpoint).
	for id, ep := range nics {
		e.ackBatches.detach(id, ep)
		e.s.RemoveNIC(id)
		ep.Wait()
	}
	e.s.Wait()
	return nil
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// tcpConfig returns the per-connection configuration: the template with
// the engine's clock and an MSS derived from the route's MTU (the largest
// TCP segment the link carries minus the fixed TCP header, RFC 9293
// §3.7.1), capped by the template's MSS when one is set.
func (e *Engine) tcpConfig(r *stack.Route) tcp.Config {
	cfg := e.opts.TCP
	cfg.Clock = e.clock
	mss := int(r.MTU()) - header.TCPMinimumSize
	if cfg.MSS <= 0 || mss < cfg.MSS {
		cfg.MSS = mss
	}
	return cfg
}

// mptcpConfig returns the engine's part of a connection's MPTCP
// configuration (the connection adds its Notify).
func (e *Engine) mptcpConfig() mptcp.Config {
	return mptcp.Config{
		Clock:     e.clock,
		Tokens:    e.tokens,
		Checksums: e.opts.MPTCP.Checksums,
		MIB:       &e.mib,
		PM:        e.pm,
		Scheduler: e.opts.MPTCP.Scheduler,
		Tracer:    e.opts.MPTCP.Tracer,
	}
}

// PathManager returns the engine's path manager: its endpoints and limits.
// Change them with AddEndpoint, RemoveEndpoint, SetEndpointBackup and
// SetLimits, which also bring the open connections up to date.
func (e *Engine) PathManager() *mptcp.PathManager { return e.pm }

// AddEndpoint adds a local address to the path manager (an endpoint with
// flags signal, subflow, backup, fullmesh, and for signal an optional
// port, on which the engine then accepts joins) and lets every open MPTCP
// connection act on it: announce it, open subflows from it. It returns the
// endpoint with its ID.
func (e *Engine) AddEndpoint(ep mptcp.Endpoint) (mptcp.Endpoint, error) {
	ep, err := e.pm.AddEndpoint(ep)
	if err != nil {
		return ep, err
	}
	e.syncJoinPorts()
	e.pmUpdateAll()
	return ep, nil
}

// RemoveEndpoint removes a local address from the path manager: every
// connection sends REMOVE_ADDR for it and closes its subflows (RFC 8684
// §3.4.2).
func (e *Engine) RemoveEndpoint(id uint8) error {
	if _, err := e.pm.RemoveEndpoint(id); err != nil {
		return err
	}
	e.syncJoinPorts()
	e.pmUpdateAll()
	return nil
}

// RemoveEndpoints removes several endpoints at once (none given: all of
// them, a flush): connections announce them in one REMOVE_ADDR with every
// ID, as Linux's flush does (it drops a REMOVE_ADDR that arrives while it
// still handles the previous one).
func (e *Engine) RemoveEndpoints(ids ...uint8) {
	if len(e.pm.RemoveEndpoints(ids...)) == 0 {
		return
	}
	e.syncJoinPorts()
	e.pmUpdateAll()
}

// SetEndpointBackup changes an endpoint's backup flag: the connections
// send MP_PRIO on its subflows (RFC 8684 §3.3.8).
func (e *Engine) SetEndpointBackup(id uint8, backup bool) error {
	if err := e.pm.SetBackup(id, backup); err != nil {
		return err
	}
	e.pmUpdateAll()
	return nil
}

// SetLimits changes the path manager's limits.
func (e *Engine) SetLimits(l mptcp.Limits) error {
	if err := e.pm.SetLimits(l); err != nil {
		return err
	}
	e.pmUpdateAll()
	return nil
}

// pmUpdateAll lets every MPTCP connection act on a path-manager change.
func (e *Engine) pmUpdateAll() {
	for _, mc := range e.tokens.All() {
		c, ok := ownerOf(mc)
		if !ok {
			continue
		}
		c.mu.Lock()
		if !c.dead && c.mc == mc {
			c.mc.PMUpdate()
			c.updateLocked()
			c.flushLocked()
		}
		c.mu.Unlock()
	}
}

// reserveConn counts a new connection against MaxConnections.
func (e *Engine) reserveConn() bool {
	if e.nconns.Add(1) > int64(e.opts.MaxConnections) {
		e.nconns.Add(-1)
		e.stats.connLimitDrops.Add(1)
		return false
	}
	return true
}

func (e *Engine) releaseConn() { e.nconns.Add(-1) }
