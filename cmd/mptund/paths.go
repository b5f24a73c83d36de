package main

// Multipath flags of connect and listen: path-manager endpoints, limits,
// the scheduler, and extra TUN devices (one per path).

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mptund/mptund/stack/mptcp"
)

// endpointList is the repeatable --endpoint flag:
// ADDR[,signal][,subflow][,backup][,fullmesh][,port=N][,id=N], the
// kernel's `ip mptcp endpoint add` in one word.
type endpointList []mptcp.Endpoint

func (l *endpointList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, e := range *l {
		s[i] = formatEndpoint(e)
	}
	return strings.Join(s, " ")
}

func formatEndpoint(e mptcp.Endpoint) string {
	parts := []string{e.Addr.String()}
	if f := e.Flags.String(); f != "" {
		parts = append(parts, f)
	}
	if e.Port != 0 {
		parts = append(parts, "port="+strconv.Itoa(int(e.Port)))
	}
	if e.ID != 0 {
		parts = append(parts, "id="+strconv.Itoa(int(e.ID)))
	}
	return strings.Join(parts, ",")
}

func (l *endpointList) Set(s string) error {
	e, err := parseEndpoint(s)
	if err != nil {
		return err
	}
	*l = append(*l, e)
	return nil
}

// parseEndpoint parses one --endpoint value.
func parseEndpoint(s string) (mptcp.Endpoint, error) {
	var e mptcp.Endpoint
	fields := strings.Split(s, ",")
	a, err := netip.ParseAddr(fields[0])
	if err != nil || a.Zone() != "" {
		return e, fmt.Errorf("%q: want ADDR[,signal][,subflow][,backup][,fullmesh][,port=N][,id=N] with a plain IP address first", s)
	}
	e.Addr = a.Unmap()
	for _, f := range fields[1:] {
		switch k, v, hasV := strings.Cut(f, "="); {
		case f == "signal":
			e.Flags |= mptcp.FlagSignal
		case f == "subflow":
			e.Flags |= mptcp.FlagSubflow
		case f == "backup":
			e.Flags |= mptcp.FlagBackup
		case f == "fullmesh":
			e.Flags |= mptcp.FlagFullmesh
		case hasV && k == "port":
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil || p == 0 {
				return e, fmt.Errorf("%q: port %q is not a port number", s, v)
			}
			e.Port = uint16(p)
		case hasV && k == "id":
			id, err := strconv.ParseUint(v, 10, 8)
			if err != nil || id == 0 {
				return e, fmt.Errorf("%q: id %q is not within 1..255", s, v)
			}
			e.ID = uint8(id)
		default:
			return e, fmt.Errorf("%q: unknown endpoint flag %q (want signal, subflow, backup, fullmesh, port=N, id=N)", s, f)
		}
	}
	if e.Port != 0 && e.Flags&mptcp.FlagSignal == 0 {
		return e, fmt.Errorf("%q: port= needs the signal flag (the port is announced with the address)", s)
	}
	if e.Flags&mptcp.FlagFullmesh != 0 && e.Flags&mptcp.FlagSubflow == 0 {
		return e, fmt.Errorf("%q: fullmesh needs the subflow flag", s)
	}
	if e.Flags&(mptcp.FlagSignal|mptcp.FlagSubflow) == 0 {
		return e, fmt.Errorf("%q: an endpoint needs signal or subflow (or both)", s)
	}
	return e, nil
}

// pathSpec is one extra TUN device: --path NAME,addr=CIDR[,addr=CIDR][,peer=CIDR]...
type pathSpec struct {
	tun   string
	addrs []netip.Prefix
	peers []netip.Prefix
}

type pathList []pathSpec

func (l *pathList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		parts := []string{p.tun}
		for _, a := range p.addrs {
			parts = append(parts, "addr="+a.String())
		}
		for _, a := range p.peers {
			parts = append(parts, "peer="+a.String())
		}
		s[i] = strings.Join(parts, ",")
	}
	return strings.Join(s, " ")
}

func (l *pathList) Set(s string) error {
	fields := strings.Split(s, ",")
	p := pathSpec{tun: fields[0]}
	if !validIfName(p.tun) {
		return fmt.Errorf("%q: want NAME,addr=CIDR[,peer=CIDR]... with a valid interface name first", s)
	}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok || (k != "addr" && k != "peer") {
			return fmt.Errorf("%q: %q: want addr=CIDR or peer=CIDR", s, f)
		}
		x, err := netip.ParsePrefix(v)
		if err != nil || x.Addr().Zone() != "" || x.Addr().Is4In6() {
			return fmt.Errorf("%q: %q is not a plain address with prefix length", s, v)
		}
		if k == "addr" {
			p.addrs = append(p.addrs, x)
		} else {
			p.peers = append(p.peers, x)
		}
	}
	if len(p.addrs) == 0 {
		return fmt.Errorf("%q: a path needs at least one addr=CIDR (the engine's address on it)", s)
	}
	*l = append(*l, p)
	return nil
}

func validIfName(n string) bool {
	return n != "" && len(n) < 16 && !strings.ContainsAny(n, "/: \t\n=,") && n != "." && n != ".."
}
