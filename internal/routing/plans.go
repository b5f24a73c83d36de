package routing

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
)

// The three arrangements the daemons make. Priorities and tables are the
// caller's (configurable, so that they do not collide with the host's
// own rules); each arrangement uses the priority it is given.

// EngineRule makes the packets the engine sends into tun (its path TUNs)
// use table (a number, or "main"), ahead of the rules that send
// application traffic into the app TUN: the engine's own packets must
// never loop back into it.
func (s *Setup) EngineRule(tun string, table string, priority int) error {
	return s.IP("rule", "add", "iif", tun, "lookup", table, "priority", strconv.Itoa(priority))
}

// Uplink carries one of the engine's TUN paths over a real interface:
//
//   - a routing table with the interface's default route (via Gateway,
//     or on-link), and an unreachable route behind it so that a path whose
//     interface is gone never falls through to another interface;
//   - a rule sending what arrives from the TUN (the engine's packets) to
//     that table;
//   - forwarding on the TUN and the interface, and source NAT
//     (masquerade) of the engine's address to the interface's;
//   - an nftables forward filter that admits only the engine's traffic
//     and its replies through the interface, and, when forwarding was off
//     on the interface before, drops everything else forwarded from it;
//   - loose reverse-path filtering on the interface if it was strict
//     (replies of a secondary uplink arrive where the main table would not
//     send them).
type Uplink struct {
	TUN      string
	Engine   netip.Addr
	Dev      string
	Gateway  netip.Addr
	Table    int
	Priority int
	// NftTable names the nftables table (family inet) to create.
	NftTable string
}

// AddUplink installs an Uplink.
func (s *Setup) AddUplink(u Uplink) error {
	if !u.Engine.Is4() {
		return fmt.Errorf("routing: uplink %s: only IPv4 engine addresses are NATed (got %v)", u.Dev, u.Engine)
	}
	gw := u.Gateway
	if !gw.IsValid() {
		var err error
		if gw, err = DefaultGateway(u.Dev); err != nil {
			return err
		}
	}
	t := strconv.Itoa(u.Table)
	route := []string{"route", "replace", "default"}
	if gw.IsValid() {
		route = append(route, "via", gw.String())
	}
	route = append(route, "dev", u.Dev, "table", t)
	if err := s.IP(route...); err != nil {
		return err
	}
	if err := s.IP("route", "add", "unreachable", "default", "metric", "4294967295", "table", t); err != nil {
		return err
	}
	if err := s.EngineRule(u.TUN, t, u.Priority); err != nil {
		return err
	}
	enabled, err := s.forwarding(u.TUN, u.Dev)
	if err != nil {
		return err
	}
	if rp, err := ReadSysctl("net.ipv4.conf." + u.Dev + ".rp_filter"); err == nil && rp == "1" {
		if err := s.Sysctl("net.ipv4.conf."+u.Dev+".rp_filter", "2"); err != nil {
			return err
		}
	}
	body := fmt.Sprintf(`	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[3]s oifname %[2]q masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %[1]q oifname %[2]q accept
		iifname %[2]q oifname %[1]q ct state established,related accept
		iifname %[2]q oifname %[1]q drop
		iifname %[1]q drop
%[4]s	}`, u.TUN, u.Dev, u.Engine, dropRest(u.Dev, enabled))
	return s.Nft("inet", u.NftTable, body)
}

// dropRest is the filter rule for an interface on which forwarding was
// turned on only for our TUNs.
func dropRest(dev string, enabled bool) string {
	if !enabled {
		return ""
	}
	return fmt.Sprintf("\t\tiifname %q drop\n", dev)
}

// forwarding turns IPv4 forwarding on for tun and dev; it reports whether
// it had to turn it on for dev.
func (s *Setup) forwarding(tun, dev string) (bool, error) {
	if err := s.Sysctl("net.ipv4.conf."+tun+".forwarding", "1"); err != nil {
		return false, err
	}
	old, err := ReadSysctl("net.ipv4.conf." + dev + ".forwarding")
	if err != nil {
		return false, fmt.Errorf("routing: interface %s: %w", dev, err)
	}
	if old == "1" {
		return false, nil
	}
	return true, s.Sysctl("net.ipv4.conf."+dev+".forwarding", "1")
}

// Ingress exposes an engine listening on a TUN path at a real interface's
// address: TCP connections to Port on Dev are DNATed to the engine's
// address (same port), and the engine's replies leave by Dev (a table and
// a rule as for an Uplink).
type Ingress struct {
	TUN      string
	Engine   netip.Addr
	Dev      string
	Port     uint16
	Gateway  netip.Addr
	Table    int
	Priority int
	NftTable string
}

// AddIngress installs an Ingress.
func (s *Setup) AddIngress(in Ingress) error {
	if !in.Engine.Is4() {
		return fmt.Errorf("routing: ingress %s: only IPv4 engine addresses are NATed (got %v)", in.Dev, in.Engine)
	}
	gw := in.Gateway
	if !gw.IsValid() {
		var err error
		if gw, err = DefaultGateway(in.Dev); err != nil {
			return err
		}
	}
	t := strconv.Itoa(in.Table)
	route := []string{"route", "replace", "default"}
	if gw.IsValid() {
		route = append(route, "via", gw.String())
	}
	route = append(route, "dev", in.Dev, "table", t)
	if err := s.IP(route...); err != nil {
		return err
	}
	if err := s.IP("route", "add", "unreachable", "default", "metric", "4294967295", "table", t); err != nil {
		return err
	}
	if err := s.EngineRule(in.TUN, t, in.Priority); err != nil {
		return err
	}
	enabled, err := s.forwarding(in.TUN, in.Dev)
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %[2]q tcp dport %[4]d dnat ip to %[3]s
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %[2]q oifname %[1]q ip daddr %[3]s tcp dport %[4]d accept
		iifname %[1]q oifname %[2]q ct state established,related accept
		iifname %[2]q oifname %[1]q drop
%[5]s	}`, in.TUN, in.Dev, in.Engine, in.Port, dropRest(in.Dev, enabled))
	return s.Nft("inet", in.NftTable, body)
}

// Capture sends applications' TCP traffic into the app TUN through a
// table of its own: routes for the given prefixes, or a default route;
// and rules (IPv4 and, for IPv6 prefixes, IPv6) that look that table up
// for TCP only (other protocols keep their usual routes):
//
//   - Routes: "ipproto tcp lookup TABLE";
//   - Default: "lookup main suppress_prefixlength 0" first (the host's
//     own subnets stay direct), then "ipproto tcp lookup TABLE";
//   - FwMark: "fwmark MARK ipproto tcp lookup TABLE", for traffic the
//     user marks (nftables "meta cgroup", "meta skuid", SO_MARK, ...).
//
// Reverse-path filtering is relaxed on the TUN: answers come from any
// address.
type Capture struct {
	TUN      string
	Table    int
	Priority int
	Routes   []netip.Prefix
	Default  bool
	FwMark   uint32
}

// AddCapture installs a Capture.
func (s *Setup) AddCapture(c Capture) error {
	t := strconv.Itoa(c.Table)
	var has4, has6 bool
	if c.Default || c.FwMark != 0 {
		has4 = true
		if err := s.IP("route", "add", "default", "dev", c.TUN, "table", t); err != nil {
			return err
		}
	}
	for _, p := range c.Routes {
		fam := "-4"
		if p.Addr().Is6() {
			fam, has6 = "-6", true
		} else {
			has4 = true
		}
		if err := s.IP(fam, "route", "add", p.Masked().String(), "dev", c.TUN, "table", t); err != nil {
			return err
		}
	}
	prio := strconv.Itoa(c.Priority)
	for _, fam := range []struct {
		flag string
		on   bool
	}{{"-4", has4}, {"-6", has6}} {
		if !fam.on {
			continue
		}
		var sel []string
		switch {
		case c.FwMark != 0:
			sel = []string{"fwmark", "0x" + strconv.FormatUint(uint64(c.FwMark), 16)}
		case c.Default:
			if err := s.IP(fam.flag, "rule", "add", "lookup", "main", "suppress_prefixlength", "0", "priority", strconv.Itoa(c.Priority-1)); err != nil {
				return err
			}
		}
		args := append([]string{fam.flag, "rule", "add"}, sel...)
		args = append(args, "ipproto", "tcp", "lookup", t, "priority", prio)
		if err := s.IP(args...); err != nil {
			return err
		}
	}
	rp := "0"
	if all, _ := ReadSysctl("net.ipv4.conf.all.rp_filter"); all != "0" && all != "" {
		rp = "2"
	}
	return s.Sysctl("net.ipv4.conf."+c.TUN+".rp_filter", rp)
}

// DefaultGateway returns the gateway of dev's IPv4 default route in the
// main table, or the zero Addr when dev has none (then routes through dev
// are on-link).
func DefaultGateway(dev string) (netip.Addr, error) {
	out, err := exec.Command("ip", "-j", "-4", "route", "show", "default", "dev", dev).Output()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("routing: interface %s: %v", dev, err)
	}
	var routes []struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return netip.Addr{}, fmt.Errorf("routing: parsing ip route output: %v", err)
	}
	for _, r := range routes {
		if a, err := netip.ParseAddr(r.Gateway); err == nil {
			return a, nil
		}
	}
	return netip.Addr{}, nil
}

// InterfaceExists reports whether dev exists in this namespace.
func InterfaceExists(dev string) bool {
	err := exec.Command("ip", "link", "show", "dev", dev).Run()
	return err == nil
}

// LinkDown brings a device down (used when a path is removed at run
// time). Errors are ignored: the device may be gone already.
func LinkDown(dev string) {
	_ = exec.Command("ip", "link", "set", "dev", dev, "down").Run()
}

// InterfaceAddr returns the first IPv4 address of dev.
func InterfaceAddr(dev string) (netip.Addr, error) {
	out, err := exec.Command("ip", "-j", "-4", "addr", "show", "dev", dev).Output()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("routing: interface %s: %v", dev, err)
	}
	var ifs []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &ifs); err != nil {
		return netip.Addr{}, fmt.Errorf("routing: parsing ip addr output: %v", err)
	}
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if x, err := netip.ParseAddr(a.Local); err == nil {
				return x, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("routing: interface %s has no IPv4 address", dev)
}

// RefreshDefault puts the default route of an uplink's table back: the
// kernel deletes it when the interface goes down, and does not restore it
// when the interface comes back. gw is the configured gateway, or the zero
// Addr to follow the main table's (which DHCP keeps up to date). The
// change is not recorded: the route's removal is already. Errors (the
// interface still down) are returned for the caller to ignore.
func RefreshDefault(dev string, gw netip.Addr, table int) error {
	if !gw.IsValid() {
		var err error
		if gw, err = DefaultGateway(dev); err != nil {
			return err
		}
	}
	args := []string{"route", "replace", "default"}
	if gw.IsValid() {
		args = append(args, "via", gw.String())
	}
	args = append(args, "dev", dev, "table", strconv.Itoa(table))
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %v: %v: %s", args, err, out)
	}
	return nil
}
