package main

// Configuration of "mptund client" and "mptund proxy": a TOML file
// (--config) with [engine], [client], [proxy] and [[path]] sections, and
// flags that override it. Every value is checked; an error names the
// file, the line and the key.

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mptund/mptund/convert"
	"github.com/mptund/mptund/stack/mptcp"
)

// Defaults of the daemons' configuration.
const (
	defaultTable        = 7100 // app table; uplink tables follow
	defaultPriority     = 7100 // engine rules; the capture rule is 50 above
	defaultStateDir     = "/run/mptund"
	defaultAppTUN       = "mptapp0"
	defaultClientNet    = "10.213.0.0/16"
	defaultProxyNet     = "10.214.0.0/16"
	defaultDrainTimeout = 10 * time.Second
	defaultClientDial   = 30 * time.Second
	defaultProxyDial    = 10 * time.Second
	defaultMaxFlows     = 16384
	// captureOffset separates the engine rules' priorities from the
	// capture rule's.
	captureOffset = 50
)

// The TOML file, decoded as plain values and checked afterwards (so that
// errors can name the line of the key). Pointers tell "absent" from zero.
type rawConfig struct {
	Engine rawEngine `toml:"engine"`
	Client rawClient `toml:"client"`
	Proxy  rawProxy  `toml:"proxy"`
	Path   []rawPath `toml:"path"`
}

type rawEngine struct {
	MTU             *int    `toml:"mtu"`
	Scheduler       *string `toml:"scheduler"`
	Subflows        *int    `toml:"subflows"`
	AddAddrAccepted *int    `toml:"add_addr_accepted"`
	Checksum        *bool   `toml:"checksum"`
	Backlog         *int    `toml:"backlog"`
	MaxConnections  *int    `toml:"max_connections"`
	StateDir        *string `toml:"state_dir"`
	Table           *int    `toml:"table"`
	Priority        *int    `toml:"priority"`
	UplinkNet       *string `toml:"uplink_net"`
	Status          *string `toml:"status"`
	DrainTimeout    *string `toml:"drain_timeout"`
	DialTimeout     *string `toml:"dial_timeout"`
	Verbose         *bool   `toml:"verbose"`
	SendBuffer      *string `toml:"send_buffer"`
	ReceiveBuffer   *string `toml:"receive_buffer"`
}

type rawClient struct {
	Mode         *string  `toml:"mode"`
	Proxy        *string  `toml:"proxy"`
	Cookie       *string  `toml:"cookie"`
	Routes       []string `toml:"routes"`
	DefaultRoute *bool    `toml:"default_route"`
	FwMark       *int64   `toml:"fwmark"`
	AppTUN       *string  `toml:"app_tun"`
	AppMTU       *int     `toml:"app_mtu"`
	MaxFlows     *int     `toml:"max_flows"`
}

type rawProxy struct {
	Listen   *int     `toml:"listen"`
	Backend  *string  `toml:"backend"`
	Allow    []string `toml:"allow"`
	Cookie   *string  `toml:"cookie"`
	MaxFlows *int     `toml:"max_flows"`
}

type rawPath struct {
	TUN         *string  `toml:"tun"`
	Addr        []string `toml:"addr"`
	Peer        []string `toml:"peer"`
	Uplink      *string  `toml:"uplink"`
	Gateway     *string  `toml:"gateway"`
	Rate        *string  `toml:"rate"`
	SubflowRate *string  `toml:"subflow_rate"`
	Delay       *string  `toml:"delay"`
	Backup      *bool    `toml:"backup"`
	Signal      *bool    `toml:"signal"`
	Fullmesh    *bool    `toml:"fullmesh"`
}

// pathConf is one path of a daemon: a TUN device of the engine, reached
// directly (addresses given, the kernel side configured with peer) or
// carried over a real interface (uplink).
type pathConf struct {
	Name    string // TUN name
	Addrs   []netip.Prefix
	Peers   []netip.Prefix
	Uplink  string
	Gateway netip.Addr
	// Rate and SubflowRate limit the path and each of its subflows, in
	// bytes per second each way (0: none); Delay is added each way.
	Rate, SubflowRate int64
	Delay             time.Duration
	Backup            bool
	Signal            bool
	Fullmesh          bool
}

// allowRule admits destinations in Prefix on ports Lo..Hi.
type allowRule struct {
	Prefix netip.Prefix
	Lo, Hi uint16
}

func (a allowRule) String() string {
	p := a.Prefix.String()
	if a.Prefix.Addr().Is6() {
		p = "[" + p + "]"
	}
	switch {
	case a.Lo == 0 && a.Hi == math.MaxUint16:
		return p
	case a.Lo == a.Hi:
		return fmt.Sprintf("%s:%d", p, a.Lo)
	}
	return fmt.Sprintf("%s:%d-%d", p, a.Lo, a.Hi)
}

func (a allowRule) allows(d netip.AddrPort) bool {
	return a.Prefix.Contains(d.Addr().Unmap()) && d.Port() >= a.Lo && d.Port() <= a.Hi
}

// daemonConfig is the checked configuration of a client or a proxy.
type daemonConfig struct {
	Role string // "client" or "proxy"
	File string // the config file, for SIGHUP

	MTU             int
	Scheduler       string
	Subflows        int
	AddAddrAccepted int
	Checksum        bool
	Backlog         int
	MaxConnections  int
	StateDir        string
	Table, Priority int
	UplinkNet       netip.Prefix
	Status          string
	DrainTimeout    time.Duration
	DialTimeout     time.Duration
	Verbose         bool
	// SendBuffer and ReceiveBuffer cap each engine connection's TCP
	// buffers (0: the engine's defaults).
	SendBuffer, ReceiveBuffer int
	Paths                     []pathConf

	// Client.
	Mode         string // "proxy" or "direct"
	Proxy        netip.AddrPort
	Routes       []netip.Prefix
	DefaultRoute bool
	FwMark       uint32
	AppTUN       string
	AppMTU       int
	// Cookie: sent by the client, required by the proxy.
	Cookie   []byte
	MaxFlows int

	// Proxy.
	Listen  uint16
	Backend string // HOST:PORT; empty: Convert mode
	Allow   []allowRule
}

// configError is a configuration error with its place.
type configError struct {
	file string
	line int
	key  string
	msg  string
}

func (e *configError) Error() string {
	var b strings.Builder
	if e.file != "" {
		b.WriteString(e.file)
		if e.line > 0 {
			fmt.Fprintf(&b, ":%d", e.line)
		}
		b.WriteString(": ")
	}
	if e.key != "" {
		b.WriteString(e.key + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// locator finds the line of a key in a TOML file: it follows [table] and
// [[array]] headers and "key =" lines (enough for the files this command
// reads; a key it cannot place gets line 0).
type locator struct {
	lines map[string]int // "table#index.key" and "table.key" (first)
}

var (
	reArrayHdr  = regexp.MustCompile(`^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]`)
	reTableHdr  = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]`)
	reKey       = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)
	reDecodeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)
)

func newLocator(text string) *locator {
	l := &locator{lines: map[string]int{}}
	table, idx := "", -1
	count := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		if m := reArrayHdr.FindStringSubmatch(line); m != nil {
			table, idx = m[1], count[m[1]]
			count[m[1]]++
			l.set(fmt.Sprintf("%s#%d", table, idx), n)
			l.set(table, n)
			continue
		}
		if m := reTableHdr.FindStringSubmatch(line); m != nil {
			table, idx = m[1], -1
			l.set(table, n)
			continue
		}
		if m := reKey.FindStringSubmatch(line); m != nil {
			k := m[1]
			if table != "" {
				if idx >= 0 {
					l.set(fmt.Sprintf("%s#%d.%s", table, idx, k), n)
				}
				k = table + "." + k
			}
			l.set(k, n)
		}
	}
	return l
}

func (l *locator) set(k string, n int) {
	if _, ok := l.lines[k]; !ok {
		l.lines[k] = n
	}
}

// line returns the line of key in table (idx >= 0 for the idx-th
// [[table]]), or 0.
func (l *locator) line(table string, idx int, key string) int {
	if l == nil {
		return 0
	}
	if idx >= 0 {
		if n, ok := l.lines[fmt.Sprintf("%s#%d.%s", table, idx, key)]; ok {
			return n
		}
		if key == "" {
			return l.lines[fmt.Sprintf("%s#%d", table, idx)]
		}
	}
	k := key
	if table != "" {
		k = table + "." + key
	}
	return l.lines[k]
}

// loadConfigFile reads and decodes a TOML file, refusing unknown keys.
func loadConfigFile(path string) (*rawConfig, *locator, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var rc rawConfig
	md, err := toml.Decode(string(b), &rc)
	loc := newLocator(string(b))
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &configError{file: path, line: pe.Position.Line, key: pe.LastKey, msg: pe.Message}
		}
		// Type errors read "toml: line N (last key "K"): message".
		if m := reDecodeErr.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return nil, nil, &configError{file: path, line: n, key: m[2], msg: m[3]}
		}
		return nil, nil, &configError{file: path, msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		table, key := "", k.String()
		if len(k) > 1 {
			table, key = strings.Join(k[:len(k)-1], "."), k[len(k)-1]
		}
		return nil, nil, &configError{file: path, line: loc.line(table, -1, key), key: k.String(), msg: "unknown key"}
	}
	return &rc, loc, nil
}

// checker collects the first error of a configuration with its place.
type checker struct {
	file string
	loc  *locator
	err  error
}

// fail records an error for key (in table, idx-th array entry when >= 0)
// unless one is recorded already.
func (c *checker) fail(table string, idx int, key, format string, args ...any) {
	if c.err != nil {
		return
	}
	name := key
	if table != "" {
		name = table + "." + key
		if idx >= 0 {
			name = fmt.Sprintf("%s[%d].%s", table, idx, key)
		}
	}
	c.err = &configError{file: c.file, line: c.loc.line(table, idx, key), key: name, msg: fmt.Sprintf(format, args...)}
}

// parseRate parses a rate with its unit: bit, kbit, mbit, gbit (bits per
// second, as tc writes them) or bps, kbps, mbps, gbps (bytes per second),
// and returns bytes per second.
func parseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8},
		{"gbps", 1e9}, {"mbps", 1e6}, {"kbps", 1e3}, {"bps", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
				break
			}
			r := v * u.mult
			if r > 1e12 {
				return 0, fmt.Errorf("%q: more than 8 Tbit/s", s)
			}
			if r > 0 && r < 1000 {
				return 0, fmt.Errorf("%q: less than 8 kbit/s", s)
			}
			return int64(r), nil
		}
	}
	return 0, fmt.Errorf("%q: want a number with a unit: bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s)", s)
}

// formatRate writes bytes per second in the units of parseRate.
func formatRate(r int64) string {
	b := float64(r) * 8
	switch {
	case b >= 1e9:
		return strconv.FormatFloat(b/1e9, 'f', -1, 64) + "gbit"
	case b >= 1e6:
		return strconv.FormatFloat(b/1e6, 'f', -1, 64) + "mbit"
	}
	return strconv.FormatFloat(b/1e3, 'f', -1, 64) + "kbit"
}

// parseSize parses a byte count with an optional unit: 65536, 64k, 4M
// (KiB and MiB), within 4 KiB..1 GiB.
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, strings.TrimSuffix(t, "m")
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > (1<<30)/mult || n*mult < 4<<10 {
		return 0, fmt.Errorf("%q: want a size within 4k..1024m, like 4m", s)
	}
	return n * mult, nil
}

// parseAllow parses an allow-list entry: PREFIX, PREFIX:PORT or
// PREFIX:LO-HI, with IPv6 prefixes in brackets ([2001:db8::/32]:443).
// A bare address is a /32 or /128.
func parseAllow(s string) (allowRule, error) {
	bad := func() (allowRule, error) {
		return allowRule{}, fmt.Errorf("%q: want PREFIX[:PORT[-PORT]] (IPv6 in brackets), like 10.0.0.0/8:443 or [2001:db8::/32]:8000-8099", s)
	}
	pfx, ports := s, ""
	hasPorts := false
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return bad()
		}
		pfx, ports = s[1:end], s[end+1:]
		if ports != "" {
			if !strings.HasPrefix(ports, ":") {
				return bad()
			}
			ports, hasPorts = ports[1:], true
		}
	} else if i := strings.LastIndex(s, ":"); i >= 0 {
		if strings.Count(s, ":") > 1 {
			return bad() // an IPv6 prefix without brackets
		}
		pfx, ports, hasPorts = s[:i], s[i+1:], true
	}
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		a, aerr := netip.ParseAddr(pfx)
		if aerr != nil {
			return bad()
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	r := allowRule{Prefix: p.Masked(), Lo: 0, Hi: math.MaxUint16}
	if hasPorts {
		lo, hi, isRange := strings.Cut(ports, "-")
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || l == 0 || h < l {
			return bad()
		}
		r.Lo, r.Hi = uint16(l), uint16(h)
	}
	return r, nil
}

// parseHostPort checks HOST:PORT (a name or an IP literal, port non-zero).
func parseHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q is not a port number", port)
	}
	return nil
}

// parsePathFlag parses --path NAME[,key=value|flag]... (and --uplink DEV
// as NAME="",uplink=DEV).
func parsePathFlag(s string, uplink bool) (pathConf, error) {
	var p pathConf
	fields := strings.Split(s, ",")
	if uplink {
		p.Uplink = fields[0]
		if !validIfName(p.Uplink) {
			return p, fmt.Errorf("--uplink %q: want DEV[,gw=IP][,rate=R]... with an interface name first", s)
		}
	} else {
		p.Name = fields[0]
		if !validIfName(p.Name) {
			return p, fmt.Errorf("--path %q: want NAME[,addr=CIDR]...[,peer=CIDR]... with a valid interface name first", s)
		}
	}
	for _, f := range fields[1:] {
		k, v, hasV := strings.Cut(f, "=")
		var err error
		switch {
		case !hasV && k == "backup":
			p.Backup = true
		case !hasV && k == "signal":
			p.Signal = true
		case !hasV && k == "fullmesh":
			p.Fullmesh = true
		case hasV && (k == "addr" || k == "peer"):
			var x netip.Prefix
			if x, err = parseIfPrefix(v); err == nil {
				if k == "addr" {
					p.Addrs = append(p.Addrs, x)
				} else {
					p.Peers = append(p.Peers, x)
				}
			}
		case hasV && k == "uplink" && !uplink:
			p.Uplink = v
			if !validIfName(v) {
				err = fmt.Errorf("%q is not an interface name", v)
			}
		case hasV && k == "tun" && uplink:
			p.Name = v
			if !validIfName(v) {
				err = fmt.Errorf("%q is not an interface name", v)
			}
		case hasV && (k == "gw" || k == "gateway"):
			p.Gateway, err = netip.ParseAddr(v)
		case hasV && k == "rate":
			p.Rate, err = parseRate(v)
		case hasV && (k == "subflow-rate" || k == "subflow_rate"):
			p.SubflowRate, err = parseRate(v)
		case hasV && k == "delay":
			p.Delay, err = parseDelay(v)
		default:
			err = errors.New("unknown key (want addr=, peer=, uplink=, tun=, gw=, rate=, subflow-rate=, delay=, backup, signal, fullmesh)")
		}
		if err != nil {
			return p, fmt.Errorf("%q: %s: %v", s, f, err)
		}
	}
	return p, nil
}

func parseIfPrefix(v string) (netip.Prefix, error) {
	x, err := netip.ParsePrefix(v)
	if err != nil || x.Addr().Zone() != "" || x.Addr().Is4In6() {
		return x, fmt.Errorf("%q is not a plain address with prefix length", v)
	}
	return x, nil
}

func parseDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > 10*time.Second {
		return 0, fmt.Errorf("%q: want a duration within 0..10s, like 20ms", v)
	}
	return d, nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// daemonFlags are the flags of client and proxy; the ones given override
// the config file.
type daemonFlags struct {
	fs        *flag.FlagSet
	config    string
	paths     listFlag
	uplinks   listFlag
	scheduler string
	subflows  int
	addAddr   int
	mtu       int
	status    string
	stateDir  string
	verbose   bool
	dialTO    time.Duration
	cookie    string
	// client
	mode         string
	proxy        string
	routes       listFlag
	defaultRoute bool
	fwmark       uint
	appTUN       string
	// proxy
	listen  int
	backend string
	allow   listFlag
}

func (f *daemonFlags) register(fs *flag.FlagSet, role string) {
	f.fs = fs
	fs.StringVar(&f.config, "config", "", "read the configuration from this TOML `file` (flags override it)")
	fs.Var(&f.paths, "path", "a TUN path: `NAME[,addr=CIDR][,peer=CIDR][,uplink=DEV][,gw=IP][,rate=R][,subflow-rate=R][,delay=D][,backup][,signal][,fullmesh]`; repeatable, replaces the file's")
	fs.Var(&f.uplinks, "uplink", "a path over a real interface: `DEV[,gw=IP][,tun=NAME][,rate=R][,subflow-rate=R][,delay=D][,backup][,signal][,fullmesh]`; repeatable")
	fs.StringVar(&f.scheduler, "scheduler", "", "packet scheduler: "+strings.Join(mptcp.Schedulers(), ", "))
	fs.IntVar(&f.subflows, "subflows", -1, "limit: subflows per connection beyond the first (0..8)")
	fs.IntVar(&f.addAddr, "add-addr-accepted", -1, "limit: ADD_ADDRs a connection acts on (0..8)")
	fs.IntVar(&f.mtu, "mtu", 0, "MTU of the path TUNs (default 1500)")
	fs.StringVar(&f.status, "status", "", "serve the live status (JSON) on this unix `socket`")
	fs.StringVar(&f.stateDir, "state-dir", "", "`dir` for the record of host changes (default "+defaultStateDir+")")
	fs.BoolVar(&f.verbose, "v", false, "log every connection and every host change")
	fs.DurationVar(&f.dialTO, "dial-timeout", 0, "give up opening a connection after this `duration`")
	fs.StringVar(&f.cookie, "cookie", "", "Convert cookie: sent (client), required (proxy)")
	if role == "client" {
		fs.StringVar(&f.mode, "mode", "", "proxy (through an mptund proxy, Convert protocol) or direct (MPTCP to the destination)")
		fs.StringVar(&f.proxy, "proxy", "", "the proxy's `ADDR:PORT` (mode proxy)")
		fs.Var(&f.routes, "route", "send TCP to this `CIDR` through mptund; repeatable")
		fs.BoolVar(&f.defaultRoute, "default-route", false, "send all TCP through mptund (except the host's own subnets)")
		fs.UintVar(&f.fwmark, "fwmark", 0, "send TCP packets carrying this routing `mark` through mptund")
		fs.StringVar(&f.appTUN, "app-tun", "", "name of the app-facing TUN (default "+defaultAppTUN+")")
	} else {
		fs.IntVar(&f.listen, "listen", 0, fmt.Sprintf("`port` to accept connections on (default %d)", convert.DefaultPort))
		fs.StringVar(&f.backend, "backend", "", "forward every connection to this `HOST:PORT` (reverse proxy) instead of the Convert header's destination")
		fs.Var(&f.allow, "allow", "destinations the Convert header may name: `PREFIX[:PORT[-PORT]]`; repeatable, replaces the file's")
	}
}

// set reports whether the flag name was given on the command line.
func (f *daemonFlags) set(name string) bool {
	found := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			found = true
		}
	})
	return found
}

// buildConfig merges the file (if any) and the flags into a checked
// configuration.
func buildConfig(role string, f *daemonFlags) (*daemonConfig, error) {
	rc := &rawConfig{}
	var loc *locator
	if f.config != "" {
		var err error
		if rc, loc, err = loadConfigFile(f.config); err != nil {
			return nil, err
		}
	}
	c := &checker{file: f.config, loc: loc}
	dc := configFromRaw(role, rc, c)
	if c.err != nil {
		return nil, c.err
	}
	dc.File = f.config
	if err := dc.applyFlags(f); err != nil {
		return nil, err
	}
	if err := dc.finish(); err != nil {
		return nil, err
	}
	return dc, nil
}

// configFromRaw checks the file's values and fills in defaults; errors go
// to c.
func configFromRaw(role string, rc *rawConfig, c *checker) *daemonConfig {
	dc := &daemonConfig{Role: role, MTU: 1500, Scheduler: mptcp.DefaultScheduler, Subflows: -1, AddAddrAccepted: -1,
		StateDir: defaultStateDir, Table: defaultTable, Priority: defaultPriority, DrainTimeout: defaultDrainTimeout,
		AppTUN: defaultAppTUN, AppMTU: 1500, Listen: convert.DefaultPort, MaxFlows: defaultMaxFlows, Mode: "proxy"}
	dc.DialTimeout = defaultClientDial
	dc.UplinkNet = netip.MustParsePrefix(defaultClientNet)
	if role == "proxy" {
		dc.DialTimeout = defaultProxyDial
		dc.UplinkNet = netip.MustParsePrefix(defaultProxyNet)
	}
	e := &rc.Engine
	intIn := func(table string, idx int, key string, v *int, lo, hi int, dst *int) {
		if v == nil {
			return
		}
		if *v < lo || *v > hi {
			c.fail(table, idx, key, "%d is out of range %d..%d", *v, lo, hi)
			return
		}
		*dst = *v
	}
	dur := func(table, key string, v *string, lo, hi time.Duration, dst *time.Duration) {
		if v == nil {
			return
		}
		d, err := time.ParseDuration(*v)
		if err != nil || d < lo || d > hi {
			c.fail(table, -1, key, "%q: want a duration within %v..%v", *v, lo, hi)
			return
		}
		*dst = d
	}
	intIn("engine", -1, "mtu", e.MTU, 576, 65535, &dc.MTU)
	if e.Scheduler != nil {
		if _, err := mptcp.NewScheduler(*e.Scheduler); err != nil {
			c.fail("engine", -1, "scheduler", "%v", err)
		}
		dc.Scheduler = *e.Scheduler
	}
	intIn("engine", -1, "subflows", e.Subflows, 0, mptcp.MaxLimit, &dc.Subflows)
	intIn("engine", -1, "add_addr_accepted", e.AddAddrAccepted, 0, mptcp.MaxLimit, &dc.AddAddrAccepted)
	if e.Checksum != nil {
		dc.Checksum = *e.Checksum
	}
	intIn("engine", -1, "backlog", e.Backlog, 1, 1<<16, &dc.Backlog)
	intIn("engine", -1, "max_connections", e.MaxConnections, 1, 1<<20, &dc.MaxConnections)
	if e.StateDir != nil {
		if *e.StateDir == "" {
			c.fail("engine", -1, "state_dir", "empty")
		}
		dc.StateDir = *e.StateDir
	}
	intIn("engine", -1, "table", e.Table, 1, 0x7fffffff-64, &dc.Table)
	intIn("engine", -1, "priority", e.Priority, 1, 32000-captureOffset, &dc.Priority)
	if e.UplinkNet != nil {
		p, err := netip.ParsePrefix(*e.UplinkNet)
		if err != nil || !p.Addr().Is4() || p.Bits() > 28 {
			c.fail("engine", -1, "uplink_net", "%q: want an IPv4 prefix of /28 or larger", *e.UplinkNet)
		}
		dc.UplinkNet = p.Masked()
	}
	if e.Status != nil {
		dc.Status = *e.Status
	}
	dur("engine", "drain_timeout", e.DrainTimeout, 0, time.Hour, &dc.DrainTimeout)
	dur("engine", "dial_timeout", e.DialTimeout, time.Second, 10*time.Minute, &dc.DialTimeout)
	if e.Verbose != nil {
		dc.Verbose = *e.Verbose
	}
	size := func(key string, v *string, dst *int) {
		if v == nil {
			return
		}
		n, err := parseSize(*v)
		if err != nil {
			c.fail("engine", -1, key, "%v", err)
		}
		*dst = n
	}
	size("send_buffer", e.SendBuffer, &dc.SendBuffer)
	size("receive_buffer", e.ReceiveBuffer, &dc.ReceiveBuffer)

	cl := &rc.Client
	if cl.Mode != nil {
		if *cl.Mode != "proxy" && *cl.Mode != "direct" {
			c.fail("client", -1, "mode", "%q: want proxy or direct", *cl.Mode)
		}
		dc.Mode = *cl.Mode
	}
	if cl.Proxy != nil {
		ap, err := netip.ParseAddrPort(*cl.Proxy)
		if err != nil || ap.Port() == 0 {
			c.fail("client", -1, "proxy", "%q: want IP:PORT (IPv6 in brackets)", *cl.Proxy)
		}
		dc.Proxy = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	for _, r := range cl.Routes {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			c.fail("client", -1, "routes", "%q: want a CIDR prefix", r)
		}
		dc.Routes = append(dc.Routes, p.Masked())
	}
	if cl.DefaultRoute != nil {
		dc.DefaultRoute = *cl.DefaultRoute
	}
	if cl.FwMark != nil {
		if *cl.FwMark <= 0 || *cl.FwMark > math.MaxUint32 {
			c.fail("client", -1, "fwmark", "%d: want a mark within 1..0xffffffff", *cl.FwMark)
		}
		dc.FwMark = uint32(*cl.FwMark)
	}
	if cl.AppTUN != nil {
		if !validIfName(*cl.AppTUN) {
			c.fail("client", -1, "app_tun", "%q is not a valid interface name", *cl.AppTUN)
		}
		dc.AppTUN = *cl.AppTUN
	}
	intIn("client", -1, "app_mtu", cl.AppMTU, 576, 65535, &dc.AppMTU)
	if role == "client" {
		intIn("client", -1, "max_flows", cl.MaxFlows, 1, 1<<20, &dc.MaxFlows)
		if cl.Cookie != nil {
			dc.Cookie = []byte(*cl.Cookie)
		}
	}

	px := &rc.Proxy
	if px.Listen != nil {
		intIn("proxy", -1, "listen", px.Listen, 1, 65535, new(int))
		dc.Listen = uint16(*px.Listen)
	}
	if px.Backend != nil {
		if err := parseHostPort(*px.Backend); err != nil {
			c.fail("proxy", -1, "backend", "%q: %v", *px.Backend, err)
		}
		dc.Backend = *px.Backend
	}
	for _, a := range px.Allow {
		r, err := parseAllow(a)
		if err != nil {
			c.fail("proxy", -1, "allow", "%v", err)
		}
		dc.Allow = append(dc.Allow, r)
	}
	if role == "proxy" {
		intIn("proxy", -1, "max_flows", px.MaxFlows, 1, 1<<20, &dc.MaxFlows)
		if px.Cookie != nil {
			dc.Cookie = []byte(*px.Cookie)
		}
	}

	for i, rp := range rc.Path {
		p := pathConf{}
		if rp.TUN != nil {
			if !validIfName(*rp.TUN) {
				c.fail("path", i, "tun", "%q is not a valid interface name", *rp.TUN)
			}
			p.Name = *rp.TUN
		}
		for _, a := range rp.Addr {
			x, err := parseIfPrefix(a)
			if err != nil {
				c.fail("path", i, "addr", "%v", err)
			}
			p.Addrs = append(p.Addrs, x)
		}
		for _, a := range rp.Peer {
			x, err := parseIfPrefix(a)
			if err != nil {
				c.fail("path", i, "peer", "%v", err)
			}
			p.Peers = append(p.Peers, x)
		}
		if rp.Uplink != nil {
			if !validIfName(*rp.Uplink) {
				c.fail("path", i, "uplink", "%q is not a valid interface name", *rp.Uplink)
			}
			p.Uplink = *rp.Uplink
		}
		if rp.Gateway != nil {
			a, err := netip.ParseAddr(*rp.Gateway)
			if err != nil || !a.Is4() {
				c.fail("path", i, "gateway", "%q: want an IPv4 address", *rp.Gateway)
			}
			p.Gateway = a
		}
		var err error
		if rp.Rate != nil {
			if p.Rate, err = parseRate(*rp.Rate); err != nil {
				c.fail("path", i, "rate", "%v", err)
			}
		}
		if rp.SubflowRate != nil {
			if p.SubflowRate, err = parseRate(*rp.SubflowRate); err != nil {
				c.fail("path", i, "subflow_rate", "%v", err)
			}
		}
		if rp.Delay != nil {
			if p.Delay, err = parseDelay(*rp.Delay); err != nil {
				c.fail("path", i, "delay", "%v", err)
			}
		}
		p.Backup = rp.Backup != nil && *rp.Backup
		p.Signal = rp.Signal != nil && *rp.Signal
		p.Fullmesh = rp.Fullmesh != nil && *rp.Fullmesh
		if p.Uplink == "" && len(p.Addrs) == 0 {
			c.fail("path", i, "", "a path needs addr (a TUN path) or uplink (a path over a real interface)")
		}
		if p.Uplink == "" && p.Name == "" {
			c.fail("path", i, "tun", "a TUN path needs its name")
		}
		if p.Uplink != "" && len(p.Peers) > 0 {
			c.fail("path", i, "peer", "an uplink path's kernel side is configured by mptund")
		}
		dc.Paths = append(dc.Paths, p)
	}
	return dc
}

// applyFlags overrides the file's values with the flags given.
func (dc *daemonConfig) applyFlags(f *daemonFlags) error {
	if f.set("path") || f.set("uplink") {
		dc.Paths = nil
		for _, s := range f.paths {
			p, err := parsePathFlag(s, false)
			if err != nil {
				return fmt.Errorf("--path %v", err)
			}
			if p.Uplink == "" && len(p.Addrs) == 0 {
				return fmt.Errorf("--path %q: needs addr=CIDR or uplink=DEV", s)
			}
			dc.Paths = append(dc.Paths, p)
		}
		for _, s := range f.uplinks {
			p, err := parsePathFlag(s, true)
			if err != nil {
				return err
			}
			dc.Paths = append(dc.Paths, p)
		}
	}
	if f.scheduler != "" {
		if _, err := mptcp.NewScheduler(f.scheduler); err != nil {
			return fmt.Errorf("--scheduler: %v", err)
		}
		dc.Scheduler = f.scheduler
	}
	if f.subflows >= 0 {
		dc.Subflows = f.subflows
	}
	if f.addAddr >= 0 {
		dc.AddAddrAccepted = f.addAddr
	}
	if dc.Subflows > mptcp.MaxLimit || dc.AddAddrAccepted > mptcp.MaxLimit {
		return fmt.Errorf("--subflows and --add-addr-accepted must be within 0..%d", mptcp.MaxLimit)
	}
	if f.mtu != 0 {
		if f.mtu < 576 || f.mtu > 65535 {
			return fmt.Errorf("--mtu %d out of range [576, 65535]", f.mtu)
		}
		dc.MTU = f.mtu
	}
	if f.status != "" {
		dc.Status = f.status
	}
	if f.stateDir != "" {
		dc.StateDir = f.stateDir
	}
	if f.verbose {
		dc.Verbose = true
	}
	if f.dialTO != 0 {
		if f.dialTO < time.Second {
			return fmt.Errorf("--dial-timeout %v: at least 1s", f.dialTO)
		}
		dc.DialTimeout = f.dialTO
	}
	if f.set("cookie") {
		dc.Cookie = []byte(f.cookie)
	}
	if dc.Role == "client" {
		if f.mode != "" {
			if f.mode != "proxy" && f.mode != "direct" {
				return fmt.Errorf("--mode %q: want proxy or direct", f.mode)
			}
			dc.Mode = f.mode
		}
		if f.proxy != "" {
			ap, err := netip.ParseAddrPort(f.proxy)
			if err != nil || ap.Port() == 0 {
				return fmt.Errorf("--proxy %q: want IP:PORT (IPv6 in brackets)", f.proxy)
			}
			dc.Proxy = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if f.set("route") {
			dc.Routes = nil
			for _, r := range f.routes {
				p, err := netip.ParsePrefix(r)
				if err != nil {
					return fmt.Errorf("--route %q: want a CIDR prefix", r)
				}
				dc.Routes = append(dc.Routes, p.Masked())
			}
		}
		if f.defaultRoute {
			dc.DefaultRoute = true
		}
		if f.fwmark != 0 {
			if f.fwmark > math.MaxUint32 {
				return fmt.Errorf("--fwmark %d: want a mark within 1..0xffffffff", f.fwmark)
			}
			dc.FwMark = uint32(f.fwmark)
		}
		if f.appTUN != "" {
			if !validIfName(f.appTUN) {
				return fmt.Errorf("--app-tun %q: not a valid interface name", f.appTUN)
			}
			dc.AppTUN = f.appTUN
		}
	} else {
		if f.listen != 0 {
			if f.listen < 1 || f.listen > 65535 {
				return fmt.Errorf("--listen %d: want a port", f.listen)
			}
			dc.Listen = uint16(f.listen)
		}
		if f.backend != "" {
			if err := parseHostPort(f.backend); err != nil {
				return fmt.Errorf("--backend %q: %v", f.backend, err)
			}
			dc.Backend = f.backend
		}
		if f.set("allow") {
			dc.Allow = nil
			for _, a := range f.allow {
				r, err := parseAllow(a)
				if err != nil {
					return fmt.Errorf("--allow %v", err)
				}
				dc.Allow = append(dc.Allow, r)
			}
		}
	}
	return nil
}

// finish checks what spans several settings and fills in derived values:
// names and addresses of uplink paths, default limits.
func (dc *daemonConfig) finish() error {
	if len(dc.Paths) == 0 {
		return errors.New("no path: give --path or --uplink (or [[path]] in the config file)")
	}
	if len(dc.Paths) > 32 {
		return errors.New("more than 32 paths")
	}
	seen := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	uplinks := 0
	for i := range dc.Paths {
		p := &dc.Paths[i]
		if p.Uplink != "" {
			// The engine's side of the TUN gets the i-th /30 of uplink_net.
			base := dc.UplinkNet.Addr().As4()
			off := uint32(uplinks) * 4
			uplinks++
			v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
			v += off
			if !dc.UplinkNet.Contains(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 3)})) {
				return fmt.Errorf("uplink_net %v has no room for %d uplinks", dc.UplinkNet, uplinks)
			}
			kernel := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 1)})
			eng := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 2)})
			if len(p.Addrs) == 0 {
				p.Addrs = []netip.Prefix{netip.PrefixFrom(eng, 30)}
				p.Peers = []netip.Prefix{netip.PrefixFrom(kernel, 30)}
			}
			if p.Name == "" {
				p.Name = fmt.Sprintf("mpt%c%d", dc.Role[0], i)
			}
		}
		if seen[p.Name] {
			return fmt.Errorf("path %s: TUN name used twice", p.Name)
		}
		if p.Name == dc.AppTUN && dc.Role == "client" {
			return fmt.Errorf("path %s: same name as the app TUN", p.Name)
		}
		seen[p.Name] = true
		for _, a := range p.Addrs {
			if addrs[a.Addr()] {
				return fmt.Errorf("path %s: address %v used twice", p.Name, a.Addr())
			}
			addrs[a.Addr()] = true
			if a.Addr().Is6() && dc.MTU < 1280 {
				return fmt.Errorf("path %s: IPv6 needs an MTU of at least 1280", p.Name)
			}
		}
	}
	extra := len(dc.Paths) - 1
	if dc.Subflows < 0 {
		dc.Subflows = min(max(mptcp.DefaultSubflowsLimit, extra), mptcp.MaxLimit)
	}
	if dc.AddAddrAccepted < 0 {
		dc.AddAddrAccepted = 0
		if dc.Role == "client" {
			dc.AddAddrAccepted = 2
		}
	}
	switch dc.Role {
	case "client":
		if dc.Mode == "proxy" && !dc.Proxy.IsValid() {
			return errors.New("mode proxy needs --proxy ADDR:PORT (or client.proxy), or use --mode direct")
		}
		n := 0
		if len(dc.Routes) > 0 {
			n++
		}
		if dc.DefaultRoute {
			n++
		}
		if dc.FwMark != 0 {
			n++
		}
		if n == 0 {
			return errors.New("nothing to capture: give --route CIDR, --default-route or --fwmark MARK")
		}
		if n > 1 {
			return errors.New("--route, --default-route and --fwmark exclude each other")
		}
		for _, p := range dc.Paths {
			if p.Signal {
				return fmt.Errorf("path %s: signal is for the proxy's paths (the client announces nothing)", p.Name)
			}
		}
	case "proxy":
		if dc.Backend == "" && len(dc.Allow) == 0 {
			return errors.New("a Convert proxy needs an allow-list (--allow PREFIX[:PORTS], proxy.allow; 0.0.0.0/0 and [::]/0 allow everything) or a fixed --backend")
		}
		if dc.Backend != "" && len(dc.Allow) > 0 {
			return errors.New("--allow is for Convert mode; with --backend every connection goes to the backend")
		}
		for _, p := range dc.Paths {
			if p.Fullmesh {
				return fmt.Errorf("path %s: fullmesh is for the client's paths", p.Name)
			}
		}
	}
	return nil
}
