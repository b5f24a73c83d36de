package main

// What "mptund client" and "mptund proxy" share: the engine and its paths
// (TUN devices, delay and rate limits, host routing), the live status
// socket, the signals (SIGINT/SIGTERM drain and exit, SIGHUP reloads
// paths and limits) and the table of relayed flows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/routing"
	"github.com/mptund/mptund/internal/shaper"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/tun"
)

// daemon is the common part of a running client or proxy.
type daemon struct {
	cfg    *daemonConfig
	flags  *daemonFlags
	stderr io.Writer
	eng    *stack.Engine
	start  time.Time

	mu    sync.Mutex
	paths []*runPath // in configuration order
	// routeMu serialises the uplink routes' refresh with the removal
	// of paths, so that a refresh never puts back a removed route.
	routeMu sync.Mutex

	flows flowTable
	// status builds the role's part of the status report.
	status func(*Status)
	sock   net.Listener
}

// runPath is one path while the daemon runs.
type runPath struct {
	conf   pathConf
	index  int // position when opened: its table and rule priority
	ep     *tun.Endpoint
	shaper *shaper.Endpoint // nil without a rate
	nic    tcpip.NICID
	epIDs  []uint8 // path-manager endpoints
	setup  *routing.Setup
	public netip.Addr // an uplink's address (proxy: announced)
}

func (d *daemon) logf(format string, args ...any) {
	fmt.Fprintf(d.stderr, "%s %s: %s\n", programName, d.cfg.Role, fmt.Sprintf(format, args...))
}

func (d *daemon) debugf(format string, args ...any) {
	if d.cfg.Verbose {
		d.logf(format, args...)
	}
}

// newDaemon creates the engine and opens every path. On error what was
// made is undone.
func newDaemon(cfg *daemonConfig, flags *daemonFlags, stderr io.Writer) (*daemon, error) {
	d := &daemon{cfg: cfg, flags: flags, stderr: stderr, start: time.Now()}
	d.flows.m = map[uint64]*flow{}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	var tcfg tcp.Config
	if cfg.SendBuffer > 0 {
		tcfg.SendBuffer, tcfg.MaxSendBuffer = min(cfg.SendBuffer, tcp.DefaultSendBuffer), cfg.SendBuffer
	}
	if cfg.ReceiveBuffer > 0 {
		tcfg.ReceiveBuffer, tcfg.MaxReceiveBuffer = min(cfg.ReceiveBuffer, tcp.DefaultReceiveBuffer), cfg.ReceiveBuffer
	}
	eng, err := stack.NewEngine(stack.Options{
		TCP:            tcfg,
		Backlog:        cfg.Backlog,
		MaxConnections: cfg.MaxConnections,
		MPTCP: stack.MPTCPConfig{
			Checksums: cfg.Checksum,
			Limits:    &mptcp.Limits{Subflows: cfg.Subflows, AddAddrAccepted: cfg.AddAddrAccepted},
			Scheduler: cfg.Scheduler,
		},
	})
	if err != nil {
		return nil, err
	}
	d.eng = eng
	for i, pc := range cfg.Paths {
		if err := d.openPath(pc, i); err != nil {
			d.close()
			return nil, fmt.Errorf("path %s: %w", pc.Name, err)
		}
	}
	return d, nil
}

// refreshInterval is how often uplink routes are put back (an interface
// that went down and came back lost them).
const refreshInterval = 3 * time.Second

// refreshUplinks keeps the uplinks' default routes in place until ctx
// ends.
func (d *daemon) refreshUplinks(ctx context.Context) {
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.routeMu.Lock()
		for _, p := range d.pathsNow() {
			if p.conf.Uplink != "" {
				_ = routing.RefreshDefault(p.conf.Uplink, p.conf.Gateway, d.cfg.Table+1+p.index)
			}
		}
		d.routeMu.Unlock()
	}
}

// pathLinkConfig is the shaper configuration of a path (both ways alike).
func pathLinkConfig(pc pathConf) shaper.Config {
	return shaper.Config{Rate: pc.Rate, FlowRate: pc.SubflowRate}
}

// openPath creates the path's TUN, wraps it with the delay and the rate
// limits, adds it to the engine, configures the host (kernel side,
// routing, NAT) and the path manager's endpoints.
func (d *daemon) openPath(pc pathConf, index int) (err error) {
	p := &runPath{conf: pc, index: index}
	if pc.Uplink != "" && !routing.InterfaceExists(pc.Uplink) {
		return fmt.Errorf("uplink interface %s does not exist", pc.Uplink)
	}
	p.setup, err = routing.New(routing.StateFile(d.cfg.StateDir, d.cfg.Role, pc.Name), d.debugf)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.closePath(p)
		}
	}()
	if p.ep, err = tun.Create(pc.Name, d.cfg.MTU); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w (needs root or CAP_NET_ADMIN)", err)
		}
		return err
	}
	var link gstack.LinkEndpoint = p.ep
	if pc.Delay > 0 {
		c := impair.Config{Delay: pc.Delay, Limit: impair.MaxLimit / 16}
		link = impair.New(link, c, c, uint64(time.Now().UnixNano()))
	}
	if pc.Rate > 0 || pc.SubflowRate > 0 {
		p.shaper = shaper.New(link, pathLinkConfig(pc), pathLinkConfig(pc))
		link = p.shaper
	}
	if p.nic, err = d.eng.AddNIC(link, pc.Addrs...); err != nil {
		link.Close()
		return err
	}
	if len(pc.Peers) > 0 {
		if err := configurePeer(pc.Name, pc.Peers); err != nil {
			return err
		}
	}
	// Host routing.
	prio := d.cfg.Priority + index
	table := d.cfg.Table + 1 + index
	nft := fmt.Sprintf("mptund_%s_%s", d.cfg.Role, pc.Name)
	switch {
	case pc.Uplink != "" && d.cfg.Role == "client":
		err = p.setup.AddUplink(routing.Uplink{TUN: pc.Name, Engine: pc.Addrs[0].Addr(), Dev: pc.Uplink, Gateway: pc.Gateway,
			Table: table, Priority: prio, NftTable: nft})
	case pc.Uplink != "":
		err = p.setup.AddIngress(routing.Ingress{TUN: pc.Name, Engine: pc.Addrs[0].Addr(), Dev: pc.Uplink, Port: d.cfg.Listen,
			Gateway: pc.Gateway, Table: table, Priority: prio, NftTable: nft})
	case d.cfg.Role == "client":
		// The engine's packets keep the main table, never the app TUN.
		err = p.setup.EngineRule(pc.Name, "main", prio)
	}
	if err != nil {
		return err
	}
	if pc.Uplink != "" {
		p.public, _ = routing.InterfaceAddr(pc.Uplink)
	}
	// Path-manager endpoints.
	for _, ep := range d.endpointsFor(p, index == 0) {
		got, err := d.eng.AddEndpoint(ep)
		if err != nil {
			return fmt.Errorf("endpoint %v: %w", ep, err)
		}
		p.epIDs = append(p.epIDs, got.ID)
	}
	d.mu.Lock()
	d.paths = append(d.paths, p)
	d.mu.Unlock()
	d.debugf("path %s up: engine %v%s", pc.Name, pc.Addrs, describePath(pc))
	return nil
}

func describePath(pc pathConf) string {
	var s []string
	if pc.Uplink != "" {
		s = append(s, "over "+pc.Uplink)
	}
	if pc.Rate > 0 {
		s = append(s, "rate "+formatRate(pc.Rate))
	}
	if pc.SubflowRate > 0 {
		s = append(s, "subflow rate "+formatRate(pc.SubflowRate))
	}
	if pc.Delay > 0 {
		s = append(s, "delay "+pc.Delay.String())
	}
	if pc.Backup {
		s = append(s, "backup")
	}
	if len(s) == 0 {
		return ""
	}
	return ", " + strings.Join(s, ", ")
}

// endpointsFor returns the path manager's endpoints for a path: the
// client opens subflows from every path but the first (which carries the
// initial subflow); the proxy announces its signal paths.
func (d *daemon) endpointsFor(p *runPath, first bool) []mptcp.Endpoint {
	pc := p.conf
	var eps []mptcp.Endpoint
	switch d.cfg.Role {
	case "client":
		if first && !pc.Fullmesh {
			return nil
		}
		for _, a := range pc.Addrs {
			e := mptcp.Endpoint{Addr: a.Addr(), Flags: mptcp.FlagSubflow}
			if pc.Backup {
				e.Flags |= mptcp.FlagBackup
			}
			if pc.Fullmesh {
				e.Flags |= mptcp.FlagFullmesh
			}
			eps = append(eps, e)
		}
	case "proxy":
		if !pc.Signal {
			return nil
		}
		addrs := []netip.Addr{}
		if pc.Uplink != "" && p.public.IsValid() {
			// Behind DNAT the peer must join the interface's address.
			addrs = append(addrs, p.public)
		} else {
			for _, a := range pc.Addrs {
				addrs = append(addrs, a.Addr())
			}
		}
		for _, a := range addrs {
			e := mptcp.Endpoint{Addr: a, Flags: mptcp.FlagSignal}
			if pc.Backup {
				e.Flags |= mptcp.FlagBackup
			}
			eps = append(eps, e)
		}
	}
	return eps
}

// closePath undoes openPath for a path removed at run time: its endpoints
// (REMOVE_ADDR, its subflows closed), its NIC in the engine (and with it
// the TUN), its host configuration.
func (d *daemon) closePath(p *runPath) {
	d.routeMu.Lock()
	defer d.routeMu.Unlock()
	for _, id := range p.epIDs {
		_ = d.eng.RemoveEndpoint(id)
	}
	p.epIDs = nil
	if p.nic != 0 {
		routing.LinkDown(p.conf.Name)
		if err := d.eng.RemoveNIC(p.nic); err != nil {
			d.logf("path %s: %v", p.conf.Name, err)
		}
		p.nic = 0
	} else if p.ep != nil {
		p.ep.Close()
	}
	if p.setup != nil {
		if err := p.setup.Close(); err != nil {
			d.logf("path %s: undoing host changes: %v", p.conf.Name, err)
		}
	}
}

// close tears the daemon down: the engine (resetting what is left and
// closing the TUNs), then the host changes of every path.
func (d *daemon) close() {
	if d.sock != nil {
		d.sock.Close()
		os.Remove(d.cfg.Status)
	}
	if d.eng != nil {
		d.eng.Close()
	}
	d.mu.Lock()
	paths := d.paths
	d.paths = nil
	d.mu.Unlock()
	for _, p := range paths {
		if p.setup != nil {
			if err := p.setup.Close(); err != nil {
				d.logf("path %s: undoing host changes: %v", p.conf.Name, err)
			}
		}
	}
}

// reload applies a new configuration's paths and limits (SIGHUP).
func (d *daemon) reload(nc *daemonConfig) {
	if err := d.eng.SetLimits(mptcp.Limits{Subflows: nc.Subflows, AddAddrAccepted: nc.AddAddrAccepted}); err != nil {
		d.logf("reload: limits: %v", err)
	} else {
		d.cfg.Subflows, d.cfg.AddAddrAccepted = nc.Subflows, nc.AddAddrAccepted
	}
	d.mu.Lock()
	old := slices.Clone(d.paths)
	d.mu.Unlock()
	byName := map[string]pathConf{}
	for _, p := range nc.Paths {
		byName[p.Name] = p
	}
	next := 0
	for _, p := range old {
		next = max(next, p.index+1)
		np, keep := byName[p.conf.Name]
		if !keep || np.Uplink != p.conf.Uplink || !slices.Equal(np.Addrs, p.conf.Addrs) {
			d.logf("reload: removing path %s", p.conf.Name)
			d.mu.Lock()
			d.paths = slices.DeleteFunc(d.paths, func(x *runPath) bool { return x == p })
			d.mu.Unlock()
			d.closePath(p)
			continue
		}
		delete(byName, p.conf.Name)
		if np.Rate != p.conf.Rate || np.SubflowRate != p.conf.SubflowRate {
			if p.shaper != nil {
				p.shaper.SetConfig(pathLinkConfig(np), pathLinkConfig(np))
				d.logf("reload: path %s: rate %s, subflow rate %s", np.Name, formatRate(np.Rate), formatRate(np.SubflowRate))
			} else {
				d.logf("reload: path %s: a rate on a path opened without one needs a restart", np.Name)
			}
		}
		if np.Delay != p.conf.Delay {
			d.logf("reload: path %s: a delay change needs a restart", np.Name)
		}
		if np.Backup != p.conf.Backup {
			for _, id := range p.epIDs {
				_ = d.eng.SetEndpointBackup(id, np.Backup)
			}
		}
		if np.Signal != p.conf.Signal || np.Fullmesh != p.conf.Fullmesh {
			for _, id := range p.epIDs {
				_ = d.eng.RemoveEndpoint(id)
			}
			p.epIDs = nil
			p.conf.Signal, p.conf.Fullmesh = np.Signal, np.Fullmesh
			for _, ep := range d.endpointsFor(p, p.index == 0) {
				if got, err := d.eng.AddEndpoint(ep); err == nil {
					p.epIDs = append(p.epIDs, got.ID)
				}
			}
		}
		p.conf.Rate, p.conf.SubflowRate, p.conf.Backup = np.Rate, np.SubflowRate, np.Backup
	}
	for _, np := range nc.Paths {
		if _, add := byName[np.Name]; !add {
			continue
		}
		d.logf("reload: adding path %s", np.Name)
		if err := d.openPath(np, next); err != nil {
			d.logf("reload: path %s: %v", np.Name, err)
		}
		next++
	}
}

// runSignals waits for SIGINT/SIGTERM (then it returns; a second one
// kills at once) and handles SIGHUP meanwhile with onHUP.
func runSignals(ctx context.Context, onHUP func()) {
	term := make(chan os.Signal, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(term, os.Interrupt, syscall.SIGTERM)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-term:
			signal.Stop(term)
			return
		case <-ctx.Done():
			signal.Stop(term)
			return
		case <-hup:
			onHUP()
		}
	}
}

// reloadConfig re-reads the config file with the same flags.
func (d *daemon) reloadConfig() {
	nc, err := buildConfig(d.cfg.Role, d.flags)
	if err != nil {
		d.logf("reload: %v (keeping the running configuration)", err)
		return
	}
	d.reload(nc)
	d.logf("reloaded: paths %d, limits subflows %d add_addr_accepted %d", len(d.pathsNow()), nc.Subflows, nc.AddAddrAccepted)
}

func (d *daemon) pathsNow() []*runPath {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.paths)
}

// flow is one relayed connection.
type flow struct {
	id    uint64
	src   netip.AddrPort // the application (client) or the MPTCP peer (proxy)
	dst   netip.AddrPort // the destination
	start time.Time
	conn  *stack.Conn
	// bytes: [0] towards the destination, [1] back.
	bytes [2]atomic.Int64
}

// flowTable holds the flows being relayed.
type flowTable struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*flow
	// busy counts the connections being handled (opened or relayed);
	// once closing is set, enter refuses new ones and idle is closed when
	// busy drops to zero. Guarded by mu.
	busy    int
	closing bool
	idle    chan struct{}
	total   atomic.Uint64 // relayed, ended or not
	failed  atomic.Uint64 // could not be opened
	resets  atomic.Uint64 // ended by a reset
	bytes   [2]atomic.Uint64
}

func (t *flowTable) add(f *flow) {
	t.mu.Lock()
	t.next++
	f.id = t.next
	t.m[f.id] = f
	t.mu.Unlock()
	t.total.Add(1)
}

func (t *flowTable) remove(f *flow) {
	t.mu.Lock()
	delete(t.m, f.id)
	t.mu.Unlock()
	t.bytes[0].Add(uint64(f.bytes[0].Load()))
	t.bytes[1].Add(uint64(f.bytes[1].Load()))
}

func (t *flowTable) active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func (t *flowTable) snapshot() []*flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*flow, 0, len(t.m))
	for _, f := range t.m {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// enter registers a connection being handled; it returns false once the
// daemon is stopping (then the caller refuses the connection).
func (t *flowTable) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.busy++
	return true
}

// leave ends what enter began.
func (t *flowTable) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.busy--
	if t.busy == 0 && t.closing && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// drain stops new connections and waits until none is left or timeout
// passes; it reports whether all ended.
func (t *flowTable) drain(timeout time.Duration) bool {
	t.mu.Lock()
	t.closing = true
	if t.busy == 0 {
		t.mu.Unlock()
		return true
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Status is the live report served on the status socket and printed by
// "mptund status".
type Status struct {
	Role   string            `json:"role"`
	PID    int               `json:"pid"`
	Uptime float64           `json:"uptime_s"`
	Mode   string            `json:"mode,omitempty"`
	Target string            `json:"target,omitempty"` // proxy (client) or backend (proxy)
	Paths  []PathStatus      `json:"paths"`
	Flows  []FlowStatus      `json:"flows"`
	Totals Totals            `json:"totals"`
	Engine stack.Stats       `json:"engine"`
	MPTCP  map[string]uint64 `json:"mptcp"`
	App    map[string]uint64 `json:"app,omitempty"`
	Memory MemoryStatus      `json:"memory"`
}

// MemoryStatus is the process's memory use.
type MemoryStatus struct {
	// RSS is the resident set size (VmRSS), in bytes.
	RSS uint64 `json:"rss"`
	// HeapInuse and Sys are the Go runtime's (runtime.MemStats).
	HeapInuse  uint64 `json:"heap_inuse"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
}

// memoryStatus reads the process's memory use.
func memoryStatus() MemoryStatus {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := MemoryStatus{HeapInuse: ms.HeapInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.RSS = kb << 10
			}
		}
	}
	return m
}

// PathStatus describes one path.
type PathStatus struct {
	Name        string         `json:"name"`
	Addrs       []netip.Prefix `json:"addrs"`
	Uplink      string         `json:"uplink,omitempty"`
	Public      string         `json:"public,omitempty"`
	Rate        int64          `json:"rate_Bps,omitempty"`
	SubflowRate int64          `json:"subflow_rate_Bps,omitempty"`
	DelayMS     float64        `json:"delay_ms,omitempty"`
	Backup      bool           `json:"backup,omitempty"`
	Link        tun.Stats      `json:"link"`
	Shaper      *shaper.Stats  `json:"shaper,omitempty"`
}

// FlowStatus describes one relayed connection and its subflows.
type FlowStatus struct {
	ID       uint64          `json:"id"`
	Src      netip.AddrPort  `json:"src"`
	Dst      netip.AddrPort  `json:"dst"`
	Age      float64         `json:"age_s"`
	BytesOut int64           `json:"bytes_out"` // towards the destination
	BytesIn  int64           `json:"bytes_in"`  // back
	MPTCP    bool            `json:"mptcp"`
	Fallback string          `json:"fallback,omitempty"`
	Subflows []SubflowStatus `json:"subflows"`
	// Data is the MPTCP data level: buffered bytes and data-level
	// retransmissions and drops.
	Data *DataStatus `json:"data,omitempty"`
}

// DataStatus is a flow's MPTCP data level.
type DataStatus struct {
	SndBuffered        int    `json:"snd_buffered"`
	RcvReadable        int    `json:"rcv_readable"`
	RcvOutOfOrder      int    `json:"rcv_out_of_order"`
	Retransmits        uint64 `json:"retransmits"`
	Reinjected         uint64 `json:"reinjected"`
	DroppedOutOfWindow uint64 `json:"dropped_out_of_window"`
}

// SubflowStatus is one subflow of a flow's MPTCP connection.
type SubflowStatus struct {
	Path          string         `json:"path"`
	Local         netip.AddrPort `json:"local"`
	Remote        netip.AddrPort `json:"remote"`
	Established   bool           `json:"established"`
	Backup        bool           `json:"backup,omitempty"`
	Closed        bool           `json:"closed,omitempty"`
	BytesSent     uint64         `json:"bytes_sent"`
	BytesAcked    uint64         `json:"bytes_acked"`
	BytesReceived uint64         `json:"bytes_received"`
	BytesRetrans  uint64         `json:"bytes_retrans"`
	SRTTms        float64        `json:"srtt_ms"`
	Cwnd          int            `json:"cwnd"`
}

// Totals count flows since the start.
type Totals struct {
	Flows    uint64 `json:"flows"`
	Active   int    `json:"active"`
	Failed   uint64 `json:"failed"`
	Resets   uint64 `json:"resets"`
	BytesOut uint64 `json:"bytes_out"` // of ended flows
	BytesIn  uint64 `json:"bytes_in"`
}

// report builds the status.
func (d *daemon) report() Status {
	st := Status{Role: d.cfg.Role, PID: os.Getpid(), Uptime: time.Since(d.start).Seconds(),
		Engine: d.eng.Stats(), MPTCP: nonZero(d.eng.MPTCPStats())}
	pathOf := map[netip.Addr]string{}
	for _, p := range d.pathsNow() {
		ps := PathStatus{Name: p.conf.Name, Addrs: p.conf.Addrs, Uplink: p.conf.Uplink, Rate: p.conf.Rate, SubflowRate: p.conf.SubflowRate,
			DelayMS: float64(p.conf.Delay) / 1e6, Backup: p.conf.Backup, Link: p.ep.Stats()}
		if p.public.IsValid() {
			ps.Public = p.public.String()
		}
		if p.shaper != nil {
			s := p.shaper.Stats()
			ps.Shaper = &s
		}
		for _, a := range p.conf.Addrs {
			pathOf[a.Addr()] = p.conf.Name
		}
		st.Paths = append(st.Paths, ps)
	}
	for _, f := range d.flows.snapshot() {
		fs := FlowStatus{ID: f.id, Src: f.src, Dst: f.dst, Age: time.Since(f.start).Seconds(),
			BytesOut: f.bytes[0].Load(), BytesIn: f.bytes[1].Load()}
		if f.conn != nil {
			ci := f.conn.ConnInfo()
			fs.MPTCP, fs.Fallback = ci.MPTCP, ci.Fallback
			if di := ci.Data; di != nil {
				fs.Data = &DataStatus{SndBuffered: di.SndBuffered, RcvReadable: di.RcvReadable, RcvOutOfOrder: di.RcvOutOfOrder,
					Retransmits: di.Stats.Retransmits, Reinjected: di.Stats.Reinjected, DroppedOutOfWindow: di.Stats.DroppedOutOfWindow}
			}
			for _, s := range ci.Subflows {
				fs.Subflows = append(fs.Subflows, SubflowStatus{Path: pathOf[s.Local.Addr()], Local: s.Local, Remote: s.Remote,
					Established: s.Established, Backup: s.Backup, Closed: s.Closed, BytesSent: s.BytesSent, BytesAcked: s.BytesAcked,
					BytesReceived: s.TCP.BytesReceived, BytesRetrans: s.TCP.BytesRetrans, SRTTms: float64(s.TCP.SRTT) / 1e6, Cwnd: s.TCP.Cwnd})
			}
		}
		st.Flows = append(st.Flows, fs)
	}
	st.Totals = Totals{Flows: d.flows.total.Load(), Active: d.flows.active(), Failed: d.flows.failed.Load(), Resets: d.flows.resets.Load(),
		BytesOut: d.flows.bytes[0].Load(), BytesIn: d.flows.bytes[1].Load()}
	if d.status != nil {
		d.status(&st)
	}
	st.Memory = memoryStatus()
	return st
}

// serveStatus answers every connection on the status socket with the
// JSON status.
func (d *daemon) serveStatus() error {
	if d.cfg.Status == "" {
		return nil
	}
	if c, err := net.Dial("unix", d.cfg.Status); err == nil {
		c.Close()
		return fmt.Errorf("status socket %s is in use", d.cfg.Status)
	}
	os.Remove(d.cfg.Status)
	ln, err := net.Listen("unix", d.cfg.Status)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	d.sock = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				json.NewEncoder(c).Encode(d.report())
			}()
		}
	}()
	return nil
}

// readStatus fetches the status from a daemon's socket.
func readStatus(path string) (*Status, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var st Status
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

// abortConn resets an engine connection (RST, or MP_FASTCLOSE).
func abortConn(c *stack.Conn) {
	c.SetLinger(0)
	c.Close()
}
