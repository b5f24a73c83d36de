package mptcp

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// The path manager decides which subflows a connection opens, which local
// addresses it announces, and what it does with the peer's announcements
// (RFC 8684 §3.4). It follows the model of the Linux kernel's in-kernel
// path manager (net/mptcp/pm_kernel.c, `ip mptcp endpoint` and
// `ip mptcp limits`):
//
//   - endpoints are local addresses with an ID and flags: "signal"
//     endpoints are announced to the peer with ADD_ADDR (one at a time,
//     each retransmitted until echoed); "subflow" endpoints open a subflow
//     to the peer's initial address (and, with "fullmesh", to every
//     address the peer announced); "backup" marks the subflows of an
//     endpoint as backups (MP_JOIN's B flag, MP_PRIO);
//   - limits bound the additional subflows of a connection (Subflows, the
//     kernel's default 2) and the ADD_ADDRs it accepts (AddAddrAccepted,
//     default 0), both at most MaxLimit;
//   - an ADD_ADDR with a bad HMAC is dropped and counted; a valid one is
//     echoed and, within the limits, joined;
//   - REMOVE_ADDR closes the subflows of the address (ID 0 included: the
//     connection's initial address) on both sides.
//
// A PathManager is shared by an engine's connections; each connection
// keeps its own state (pmConn) and acts on changes when its driver calls
// PMUpdate. The driver opens the subflows a connection asks for
// (TakeJoinRequests): creating an endpoint needs routes and ports.

// EndpointFlags are the flags of a path-manager endpoint.
type EndpointFlags uint8

// Endpoint flags (the kernel's MPTCP_PM_ADDR_FLAG_*).
const (
	// FlagSignal: announce the address to the peer with ADD_ADDR.
	FlagSignal EndpointFlags = 1 << iota
	// FlagSubflow: open a subflow from the address.
	FlagSubflow
	// FlagBackup: the address's subflows are backups.
	FlagBackup
	// FlagFullmesh: open a subflow from the address to every address of
	// the peer (with FlagSubflow).
	FlagFullmesh
)

func (f EndpointFlags) String() string {
	var parts []string
	for _, x := range []struct {
		f EndpointFlags
		n string
	}{{FlagSignal, "signal"}, {FlagSubflow, "subflow"}, {FlagBackup, "backup"}, {FlagFullmesh, "fullmesh"}} {
		if f&x.f != 0 {
			parts = append(parts, x.n)
		}
	}
	return strings.Join(parts, ",")
}

// Endpoint is a local address the path manager may use.
type Endpoint struct {
	// ID is the address ID announced for the address (RFC 8684 §3.4.1),
	// 1..255 (0 is the connection's initial address); 0 here picks the
	// lowest free one.
	ID    uint8
	Addr  netip.Addr
	Flags EndpointFlags
	// Port, with FlagSignal, is announced with the address: the peer
	// joins to that port (the engine listens there for joins only).
	Port uint16
}

func (e Endpoint) String() string {
	s := fmt.Sprintf("id %d %v %v", e.ID, e.Addr, e.Flags)
	if e.Port != 0 {
		s += fmt.Sprintf(" port %d", e.Port)
	}
	return s
}

// Limits bound what each connection does (the kernel's `ip mptcp limits`).
type Limits struct {
	// Subflows bounds the subflows of a connection beyond its first.
	Subflows int
	// AddAddrAccepted bounds the ADD_ADDRs a connection acts on.
	AddAddrAccepted int
}

// Defaults of the path manager: the Linux kernel's.
const (
	DefaultSubflowsLimit        = 2
	DefaultAddAddrAcceptedLimit = 0
	// MaxLimit bounds both limits (the kernel's MPTCP_PM_ADDR_MAX).
	MaxLimit = 8
	// MaxEndpoints bounds the endpoints of a path manager.
	MaxEndpoints = 64
	// DefaultAddAddrTimeout is the ADD_ADDR retransmission timeout (the
	// kernel's net.mptcp.add_addr_timeout, TCP_RTO_MAX).
	DefaultAddAddrTimeout = 120 * time.Second
	// DefaultAddAddrRetries is how often an unechoed ADD_ADDR is
	// retransmitted (the kernel's ADD_ADDR_RETRANS_MAX).
	DefaultAddAddrRetries = 3
	// maxRemoteAddrs bounds the peer's addresses a connection remembers.
	maxRemoteAddrs = 16
)

// PMConfig configures a PathManager.
type PMConfig struct {
	Endpoints []Endpoint
	// Limits; nil fields select the defaults.
	Limits *Limits
	// AddAddrTimeout and AddAddrRetries (zero: defaults) govern ADD_ADDR
	// retransmission until the peer echoes it.
	AddAddrTimeout time.Duration
	AddAddrRetries int
	// DenyJoinInitial sets MP_CAPABLE's C flag: the peer must not open
	// subflows to our initial address (a server behind a load balancer;
	// the kernel's allow_join_initial_addr_port=0), and refuses them.
	DenyJoinInitial bool
}

// PathManager holds the endpoints and limits an engine's connections use.
// Safe for concurrent use.
type PathManager struct {
	mu        sync.Mutex
	endpoints []Endpoint
	limits    Limits
	timeout   time.Duration
	retries   int
	denyInit  bool
	gen       uint64 // bumped on every change, for connections to catch up
}

// NewPathManager returns a path manager with cfg's endpoints and limits.
func NewPathManager(cfg PMConfig) (*PathManager, error) {
	pm := &PathManager{limits: Limits{Subflows: DefaultSubflowsLimit, AddAddrAccepted: DefaultAddAddrAcceptedLimit},
		timeout: cfg.AddAddrTimeout, retries: cfg.AddAddrRetries, denyInit: cfg.DenyJoinInitial}
	if pm.timeout <= 0 {
		pm.timeout = DefaultAddAddrTimeout
	}
	if pm.retries <= 0 {
		pm.retries = DefaultAddAddrRetries
	}
	if cfg.Limits != nil {
		if err := pm.SetLimits(*cfg.Limits); err != nil {
			return nil, err
		}
	}
	for _, e := range cfg.Endpoints {
		if _, err := pm.AddEndpoint(e); err != nil {
			return nil, err
		}
	}
	return pm, nil
}

// Errors of the path manager's API.
var (
	ErrEndpointExists  = errors.New("mptcp: an endpoint with that ID or address exists")
	ErrNoEndpoint      = errors.New("mptcp: no such endpoint")
	ErrTooManyEndpoint = errors.New("mptcp: too many endpoints")
	ErrBadLimit        = fmt.Errorf("mptcp: limits must be within 0..%d", MaxLimit)
)

// AddEndpoint adds a local address and returns it with its ID.
func (pm *PathManager) AddEndpoint(e Endpoint) (Endpoint, error) {
	if !e.Addr.IsValid() || e.Addr.IsUnspecified() {
		return e, fmt.Errorf("mptcp: endpoint address %v unusable", e.Addr)
	}
	e.Addr = e.Addr.Unmap()
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if len(pm.endpoints) >= MaxEndpoints {
		return e, ErrTooManyEndpoint
	}
	used := map[uint8]bool{0: true}
	for _, x := range pm.endpoints {
		if x.Addr == e.Addr && x.Port == e.Port {
			return e, ErrEndpointExists
		}
		used[x.ID] = true
	}
	if e.ID == 0 {
		for id := 1; id < 256; id++ {
			if !used[uint8(id)] {
				e.ID = uint8(id)
				break
			}
		}
	} else if used[e.ID] {
		return e, ErrEndpointExists
	}
	pm.endpoints = append(pm.endpoints, e)
	sort.Slice(pm.endpoints, func(i, j int) bool { return pm.endpoints[i].ID < pm.endpoints[j].ID })
	pm.gen++
	return e, nil
}

// RemoveEndpoint forgets the endpoint with id; connections send
// REMOVE_ADDR for it and close its subflows at their next PMUpdate.
func (pm *PathManager) RemoveEndpoint(id uint8) (Endpoint, error) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for i, x := range pm.endpoints {
		if x.ID == id {
			pm.endpoints = append(pm.endpoints[:i], pm.endpoints[i+1:]...)
			pm.gen++
			return x, nil
		}
	}
	return Endpoint{}, ErrNoEndpoint
}

// RemoveEndpoints forgets the endpoints with the given IDs at once, so
// that connections announce their removal in one REMOVE_ADDR (RFC 8684
// §3.4.2 allows several IDs; Linux drops a REMOVE_ADDR that arrives while
// it still handles the previous one). No ID: every endpoint (a flush).
func (pm *PathManager) RemoveEndpoints(ids ...uint8) []Endpoint {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	var gone []Endpoint
	keep := pm.endpoints[:0]
	for _, x := range pm.endpoints {
		drop := len(ids) == 0
		for _, id := range ids {
			if x.ID == id {
				drop = true
			}
		}
		if drop {
			gone = append(gone, x)
		} else {
			keep = append(keep, x)
		}
	}
	pm.endpoints = keep
	if len(gone) > 0 {
		pm.gen++
	}
	return gone
}

// SetBackup changes an endpoint's backup flag; connections send MP_PRIO
// on its subflows at their next PMUpdate.
func (pm *PathManager) SetBackup(id uint8, backup bool) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for i := range pm.endpoints {
		if pm.endpoints[i].ID == id {
			if backup {
				pm.endpoints[i].Flags |= FlagBackup
			} else {
				pm.endpoints[i].Flags &^= FlagBackup
			}
			pm.gen++
			return nil
		}
	}
	return ErrNoEndpoint
}

// Endpoints returns the endpoints, by ID.
func (pm *PathManager) Endpoints() []Endpoint {
	if pm == nil {
		return nil
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return append([]Endpoint(nil), pm.endpoints...)
}

// SetLimits replaces the limits.
func (pm *PathManager) SetLimits(l Limits) error {
	if l.Subflows < 0 || l.Subflows > MaxLimit || l.AddAddrAccepted < 0 || l.AddAddrAccepted > MaxLimit {
		return ErrBadLimit
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.limits = l
	pm.gen++
	return nil
}

// Limits returns the limits.
func (pm *PathManager) Limits() Limits {
	if pm == nil {
		return Limits{Subflows: DefaultSubflowsLimit, AddAddrAccepted: DefaultAddAddrAcceptedLimit}
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.limits
}

// snapshot returns the state a connection acts on.
func (pm *PathManager) snapshot() (eps []Endpoint, l Limits, gen uint64) {
	if pm == nil {
		return nil, Limits{Subflows: DefaultSubflowsLimit}, 0
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return append([]Endpoint(nil), pm.endpoints...), pm.limits, pm.gen
}

// EndpointFor returns the endpoint of local address a (port 0 matches
// any), if one exists.
func (pm *PathManager) EndpointFor(a netip.Addr, port uint16) (Endpoint, bool) {
	if pm == nil {
		return Endpoint{}, false
	}
	a = a.Unmap()
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for _, e := range pm.endpoints {
		if e.Addr == a && (port == 0 || e.Port == 0 || e.Port == port) {
			return e, true
		}
	}
	return Endpoint{}, false
}

func (pm *PathManager) localBackup(a netip.Addr) bool { return pm.EndpointBackup(a) }

// EndpointBackup reports whether local address a is a backup endpoint.
func (pm *PathManager) EndpointBackup(a netip.Addr) bool {
	e, ok := pm.EndpointFor(a, 0)
	return ok && e.Flags&FlagBackup != 0
}

func (pm *PathManager) addAddrTimeout() (time.Duration, int) {
	if pm == nil {
		return DefaultAddAddrTimeout, DefaultAddAddrRetries
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.timeout, pm.retries
}

// DenyJoinInitial reports the C-flag setting.
func (pm *PathManager) DenyJoinInitial() bool {
	if pm == nil {
		return false
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.denyInit
}

// Address is an address of the peer (or one of ours that we announced).
type Address struct {
	ID   uint8
	Addr netip.Addr
	Port uint16 // 0: the connection's initial port
}

// JoinRequest asks the driver to open a subflow (NewJoinSubflow with
// these arguments, after creating the route and endpoint).
type JoinRequest struct {
	// Local is the source address (its port is the driver's choice); the
	// zero Addr lets the driver's routing pick one (LocalID is then the
	// ID of the address picked).
	Local    netip.Addr
	LocalID  uint8
	Remote   netip.AddrPort
	RemoteID uint8
	Backup   bool
}

// announceState is one of our addresses being announced.
type announceState struct {
	ep       Endpoint
	echoed   bool
	tries    int
	deadline tcpip.MonotonicTime
	removed  bool
}

// pmConn is a connection's path-manager state.
type pmConn struct {
	gen       uint64
	started   bool // fully established: the path manager acts
	announce  []announceState
	remotes   []Address // the peer's addresses: ID 0 (initial) and announced
	accepted  int       // ADD_ADDRs acted on
	requests  []JoinRequest
	tried     map[[2]netip.Addr]bool // (local, remote) pairs already joined or tried
	endpoints []Endpoint             // as of the last PMUpdate
	// signals waiting for a pure ACK to ride on: echoes of ADD_ADDRs,
	// REMOVE_ADDRs, and ADD_ADDRs (first send and retransmissions).
	echoes  []options.AddAddr
	removes []uint8
	adds    []options.AddAddr
}

// PMUpdate lets the path manager act: start once the connection is fully
// established, follow changes to the engine's endpoints and limits,
// retransmit ADD_ADDRs. The driver calls it after Update (it is cheap
// when nothing changed) and serves TakeJoinRequests afterwards.
func (c *Conn) PMUpdate() {
	defer c.flush()
	c.pmUpdate()
}

func (c *Conn) pmUpdate() {
	if c.fallback != FallbackNone || c.state == StateReset || c.state == StateClosed || c.state == StateHandshake {
		return
	}
	p := &c.pm
	if !p.started {
		if !c.fullyEstablished || !c.initialJoined() {
			return
		}
		p.started = true
		p.tried = make(map[[2]netip.Addr]bool)
		if s := c.initial(); s != nil {
			p.remotes = append(p.remotes, Address{ID: 0, Addr: s.Remote.Addr(), Port: s.Remote.Port()})
			if c.cfg.PM.EndpointBackup(s.Local.Addr()) {
				// A backup endpoint on the initial address: its subflow
				// becomes a backup (MP_PRIO), as Linux does.
				c.SetSubflowBackup(s, true)
			}
		}
	}
	eps, limits, gen := c.cfg.PM.snapshot()
	if gen != p.gen || p.endpoints == nil {
		c.pmEndpointsChanged(p.endpoints, eps)
		p.gen, p.endpoints = gen, eps
		if p.endpoints == nil {
			p.endpoints = []Endpoint{}
		}
	}
	if c.state != StateEstablished {
		return // no new subflows or announcements once closing
	}
	// Announce our signal endpoints, one at a time (the kernel waits
	// for each echo before the next).
	init := c.initial()
	pending := false
	for i := range p.announce {
		if !p.announce[i].echoed && !p.announce[i].removed {
			pending = true
		}
	}
	if !pending {
		for _, e := range eps {
			if e.Flags&FlagSignal == 0 || (init != nil && e.Addr == init.Local.Addr()) || p.announced(e.ID) {
				continue
			}
			p.announce = append(p.announce, announceState{ep: e})
			c.sendAddAddr(&p.announce[len(p.announce)-1])
			break
		}
	}
	// Subflows to the addresses the peer announced (and we accepted),
	// from whatever local address routing picks, unless fullmesh
	// endpoints do it (below).
	for _, r := range p.remotes {
		if r.ID != 0 && !p.hasFullmesh(r.Addr) {
			c.pmRequest(netip.Addr{}, 0, r, false, limits)
		}
	}
	// Subflows from our subflow endpoints to the peer's initial address
	// (and, with fullmesh, to every address it announced).
	for _, e := range eps {
		if e.Flags&FlagSubflow == 0 {
			continue
		}
		for _, r := range p.remotes {
			if r.ID != 0 && e.Flags&FlagFullmesh == 0 {
				continue
			}
			if r.ID == 0 && c.peerNoNewToSource {
				continue
			}
			c.pmRequest(e.Addr, e.ID, r, e.Flags&FlagBackup != 0, limits)
		}
	}
	_ = limits
}

// initial returns the connection's first subflow.
func (c *Conn) initial() *Subflow {
	for _, s := range c.subflows {
		if !s.join {
			return s
		}
	}
	return nil
}

func (c *Conn) initialJoined() bool {
	s := c.initial()
	return s != nil && s.ep != nil && s.ep.State() >= tcp.StateEstablished
}

func (p *pmConn) announced(id uint8) bool {
	for _, a := range p.announce {
		if a.ep.ID == id && !a.removed {
			return true
		}
	}
	return false
}

// pmRequest asks for a subflow from local to remote address r if the
// limits allow and the pair was not tried before.
func (c *Conn) pmRequest(local netip.Addr, localID uint8, r Address, backup bool, limits Limits) {
	p := &c.pm
	if (local.IsValid() && local.Is4() != r.Addr.Is4()) || c.openedSubflows() >= limits.Subflows || c.liveSubflows() >= 1+limits.Subflows {
		return
	}
	key := [2]netip.Addr{local, r.Addr}
	if p.tried[key] {
		return
	}
	for _, s := range c.subflows {
		if s.Local.Addr() == local && s.Remote.Addr() == r.Addr {
			p.tried[key] = true
			return
		}
	}
	port := r.Port
	if port == 0 {
		if s := c.initial(); s != nil {
			port = s.Remote.Port()
		}
	}
	p.tried[key] = true
	p.requests = append(p.requests, JoinRequest{Local: local, LocalID: localID, Remote: netip.AddrPortFrom(r.Addr, port), RemoteID: r.ID, Backup: backup})
}

// openedSubflows counts the subflows this side opened (joins it
// initiated, live or being opened), against Limits.Subflows.
func (c *Conn) openedSubflows() int {
	n := len(c.pm.requests)
	for _, s := range c.subflows {
		if s.initiator && !s.dead && !s.closing {
			n++
		}
	}
	return n
}

// hasFullmesh reports whether a fullmesh subflow endpoint of the family
// of a exists: the peer's announced addresses are then joined from those
// endpoints only (the kernel's fill_local_addresses_vec).
func (p *pmConn) hasFullmesh(a netip.Addr) bool {
	for _, e := range p.endpoints {
		if e.Flags&FlagSubflow != 0 && e.Flags&FlagFullmesh != 0 && e.Addr.Is4() == a.Is4() {
			return true
		}
	}
	return false
}

// forgetTried lets the path manager try again the pairs involving a
// (a local address removed, or a peer's address removed and perhaps
// announced again later).
func (p *pmConn) forgetTried(a netip.Addr) {
	for k := range p.tried {
		if k[0] == a || k[1] == a {
			delete(p.tried, k)
		}
	}
}

// TakeJoinRequests returns (and forgets) the subflows the path manager
// wants opened; the driver opens each with NewJoinSubflow, or reports
// JoinFailed.
func (c *Conn) TakeJoinRequests() []JoinRequest {
	r := c.pm.requests
	c.pm.requests = nil
	return r
}

// JoinFailed tells the path manager a requested subflow could not be
// created (no route, no port): it does not count against the limit.
func (c *Conn) JoinFailed(r JoinRequest) {}

// pmEndpointsChanged acts on endpoints removed or changed since the last
// update: REMOVE_ADDR and subflow closing for removed addresses, MP_PRIO
// for a changed backup flag.
func (c *Conn) pmEndpointsChanged(old, cur []Endpoint) {
	if old == nil {
		return
	}
	byID := make(map[uint8]Endpoint, len(cur))
	for _, e := range cur {
		byID[e.ID] = e
	}
	var gone []Endpoint
	for _, o := range old {
		n, ok := byID[o.ID]
		switch {
		case !ok:
			gone = append(gone, o)
		case n.Flags&FlagBackup != o.Flags&FlagBackup:
			for _, s := range c.subflows {
				if s.Local.Addr() == o.Addr && !s.dead {
					c.SetSubflowBackup(s, n.Flags&FlagBackup != 0)
				}
			}
		}
	}
	if len(gone) > 0 {
		c.removeLocalAddrs(gone)
	}
}

// removeLocalAddrs announces that local addresses are gone (one
// REMOVE_ADDR with every ID, RFC 8684 §3.4.2) and closes their subflows.
func (c *Conn) removeLocalAddrs(eps []Endpoint) {
	p := &c.pm
	var closing []*Subflow
	for _, e := range eps {
		for i := range p.announce {
			if p.announce[i].ep.ID == e.ID {
				p.announce[i].removed = true
			}
		}
		used := false
		for _, s := range c.subflows {
			if s.Local.Addr() == e.Addr && !s.dead && !s.closing {
				used = true
				closing = append(closing, s)
			}
		}
		if used || p.announced(e.ID) {
			p.removes = append(p.removes, e.ID)
			c.cfg.MIB.Inc(RmAddrTx)
			c.trace(func(t *Tracer) {
				if t.AddressRemoved != nil {
					t.AddressRemoved(c, e.ID, true)
				}
			})
		}
		p.forgetTried(e.Addr)
	}
	// The REMOVE_ADDR goes out first (on a subflow that stays), and the
	// subflows carry nothing new from now on; they close with a FIN a
	// little later (removeDelay), after the peer had time to handle the
	// removal: Linux handles REMOVE_ADDR in a worker that skips
	// subflows already closing, and then neither closes them itself nor
	// frees the ADD_ADDR slot for a later re-announcement.
	for _, s := range closing {
		s.closing = true
		c.reinjectFrom(s)
	}
	c.kickSignals()
	now := c.cfg.Clock.NowMonotonic()
	for _, s := range closing {
		c.cfg.MIB.Inc(RmSubflow)
		d := removeDelay
		if s.ep != nil {
			d = max(d, 2*s.ep.SRTT())
		}
		s.closeAt = now.Add(d)
	}
	c.notify(tcp.EventTimer)
}

// removeDelay is the least time between a REMOVE_ADDR and the FIN of the
// subflows it removes (see removeLocalAddrs).
const removeDelay = 50 * time.Millisecond

// RemoveAddr announces that the local address with address ID id is gone
// and closes its subflows (the userspace path manager's remove). ID 0 is
// the connection's initial address.
func (c *Conn) RemoveAddr(id uint8) {
	defer c.flush()
	var addr netip.Addr
	if id == 0 {
		if s := c.initial(); s != nil {
			addr = s.Local.Addr()
		}
	} else {
		for _, s := range c.subflows {
			if s.localID == id {
				addr = s.Local.Addr()
			}
		}
		for _, a := range c.pm.announce {
			if a.ep.ID == id {
				addr = a.ep.Addr
			}
		}
	}
	if !addr.IsValid() {
		return
	}
	c.removeLocalAddrs([]Endpoint{{ID: id, Addr: addr}})
}

// sendAddAddr queues an ADD_ADDR (first send or retransmission).
func (c *Conn) sendAddAddr(a *announceState) {
	timeout, _ := c.cfg.PM.addAddrTimeout()
	a.tries++
	a.deadline = c.cfg.Clock.NowMonotonic().Add(timeout)
	c.notify(tcp.EventTimer)
	opt := options.AddAddr{AddrID: a.ep.ID, Addr: a.ep.Addr, HasPort: a.ep.Port != 0, Port: a.ep.Port}
	opt.HMAC = handshake.AddAddrHMAC(c.localKey, c.remoteKey, a.ep.ID, a.ep.Addr, a.ep.Port)
	c.pm.adds = append(c.pm.adds, opt)
	c.cfg.MIB.Inc(AddAddrTx)
	c.kickSignals()
}

// pmTimers retransmits unechoed ADD_ADDRs.
func (c *Conn) pmTimers(now tcpip.MonotonicTime) {
	_, retries := c.cfg.PM.addAddrTimeout()
	for i := range c.pm.announce {
		a := &c.pm.announce[i]
		if a.echoed || a.removed || a.deadline == (tcpip.MonotonicTime{}) || now.Before(a.deadline) {
			continue
		}
		if a.tries > retries {
			a.deadline = tcpip.MonotonicTime{}
			a.echoed = true // give up, and let the next one go
			c.pmUpdate()
			continue
		}
		c.sendAddAddr(a)
	}
}

// pmDeadline returns the earliest ADD_ADDR retransmission.
func (c *Conn) pmDeadline() (tcpip.MonotonicTime, bool) {
	var at tcpip.MonotonicTime
	ok := false
	for _, a := range c.pm.announce {
		if a.echoed || a.removed || a.deadline == (tcpip.MonotonicTime{}) {
			continue
		}
		if !ok || a.deadline.Before(at) {
			at, ok = a.deadline, true
		}
	}
	return at, ok
}

// onAddAddr processes a received ADD_ADDR (RFC 8684 §3.4.1).
func (c *Conn) onAddAddr(s *Subflow, a options.AddAddr) {
	if a.Echo {
		for i := range c.pm.announce {
			x := &c.pm.announce[i]
			if x.ep.ID == a.AddrID && x.ep.Addr == a.Addr.Unmap() && !x.echoed {
				x.echoed = true
				c.cfg.MIB.Inc(EchoAdd)
				c.trace(func(t *Tracer) {
					if t.AddressAnnounced != nil {
						t.AddressAnnounced(c, Address{ID: x.ep.ID, Addr: x.ep.Addr, Port: x.ep.Port}, true)
					}
				})
				c.pmUpdate() // the next announcement may go
				return
			}
		}
		c.cfg.MIB.Inc(OptionIgnored)
		return
	}
	if !handshake.VerifyAddAddr(c.remoteKey, c.localKey, a.AddrID, a.Addr, a.Port, a.HMAC) {
		c.cfg.MIB.Inc(AddAddrDrop)
		return
	}
	c.cfg.MIB.Inc(AddAddr)
	if a.HasPort {
		c.cfg.MIB.Inc(PortAdd)
	}
	// Echo it (even a repeat: our echo may have been lost).
	echo := a
	echo.Echo, echo.HMAC = true, 0
	c.pm.echoes = append(c.pm.echoes, echo)
	c.cfg.MIB.Inc(EchoAddTx)
	c.kickSignals()
	addr := Address{ID: a.AddrID, Addr: a.Addr.Unmap(), Port: a.Port}
	p := &c.pm
	for _, r := range p.remotes {
		if r.ID == addr.ID && r.Addr == addr.Addr {
			return // a retransmission
		}
	}
	c.trace(func(t *Tracer) {
		if t.AddressAnnounced != nil {
			t.AddressAnnounced(c, addr, false)
		}
	})
	_, limits, _ := c.cfg.PM.snapshot()
	if p.accepted >= limits.AddAddrAccepted || len(p.remotes) >= maxRemoteAddrs {
		return
	}
	p.accepted++
	p.remotes = append(p.remotes, addr)
	if !p.started || c.state != StateEstablished {
		return // joined once the path manager starts (pmUpdate)
	}
	// Join it: from every fullmesh subflow endpoint if there are any,
	// else from whatever local address routing picks (as the kernel
	// does).
	if !p.hasFullmesh(addr.Addr) {
		c.pmRequest(netip.Addr{}, 0, addr, false, limits)
	}
	for _, e := range p.endpoints {
		if e.Flags&FlagSubflow != 0 && e.Flags&FlagFullmesh != 0 {
			c.pmRequest(e.Addr, e.ID, addr, e.Flags&FlagBackup != 0, limits)
		}
	}
}

// onRemoveAddr processes a received REMOVE_ADDR (RFC 8684 §3.4.2): the
// subflows to those addresses of the peer are closed.
func (c *Conn) onRemoveAddr(ids []uint8) {
	for _, id := range ids {
		c.cfg.MIB.Inc(RmAddr)
		p := &c.pm
		for i := 0; i < len(p.remotes); i++ {
			if r := p.remotes[i]; r.ID == id {
				p.remotes = append(p.remotes[:i], p.remotes[i+1:]...)
				i--
				if r.ID != 0 && p.accepted > 0 {
					p.accepted-- // the peer may announce it again
				}
				p.forgetTried(r.Addr)
			}
		}
		for _, s := range c.subflows {
			if s.remoteID == id && !s.dead && !s.closing {
				p.forgetTried(s.Remote.Addr())
				c.closeSubflowGracefully(s)
			}
		}
		c.trace(func(t *Tracer) {
			if t.AddressRemoved != nil {
				t.AddressRemoved(c, id, false)
			}
		})
	}
}

// SetSubflowBackup changes the priority this host asks the peer to give
// subflow s (MP_PRIO, RFC 8684 §3.3.8), sent on s.
func (c *Conn) SetSubflowBackup(s *Subflow, backup bool) {
	defer c.flush()
	if s.backup == backup || s.dead {
		return
	}
	s.backup = backup
	s.prioPending = true
	c.cfg.MIB.Inc(MPPrioTx)
	if s.ep != nil && s.ep.State() >= tcp.StateEstablished {
		s.ep.SendAck()
	}
	c.trace(func(t *Tracer) {
		if t.SubflowPriority != nil {
			t.SubflowPriority(c, s.Info(), true)
		}
	})
}

// onPrio processes a received MP_PRIO on s.
func (c *Conn) onPrio(s *Subflow, backup bool) {
	c.cfg.MIB.Inc(MPPrioRx)
	if s.peerBackup == backup {
		return
	}
	s.peerBackup = backup
	c.notify(tcp.EventWritable)
	c.trace(func(t *Tracer) {
		if t.SubflowPriority != nil {
			t.SubflowPriority(c, s.Info(), false)
		}
	})
}

// kickSignals sends a pure ACK on a usable subflow so that the queued
// ADD_ADDR / echo / REMOVE_ADDR options go out.
func (c *Conn) kickSignals() {
	if len(c.pm.echoes)+len(c.pm.removes)+len(c.pm.adds) == 0 {
		return
	}
	for _, s := range c.subflows {
		if s.usable() {
			s.ep.SendAck()
			return
		}
	}
}

// signalOption returns the next queued path-manager option to put on a
// pure ACK, consuming it.
func (c *Conn) signalOption(s *Subflow) options.Option {
	p := &c.pm
	switch {
	case len(p.echoes) > 0:
		s.aa = p.echoes[0]
		p.echoes = p.echoes[1:]
		return &s.aa
	case len(p.removes) > 0:
		n := min(len(p.removes), 8)
		s.ra = options.RemoveAddr{IDs: append(s.ra.IDs[:0], p.removes[:n]...)}
		p.removes = p.removes[n:]
		return &s.ra
	case len(p.adds) > 0:
		s.aa = p.adds[0]
		p.adds = p.adds[1:]
		return &s.aa
	}
	return nil
}
