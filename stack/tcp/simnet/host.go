package simnet

import (
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Host is one simulated machine with one address: it demultiplexes
// arriving segments to its endpoints by four-tuple, then to listeners by
// port (the job the gVisor adapter does in the real engine), and answers
// segments for nothing with a RST (RFC 9293 §3.10.7.1).
type Host struct {
	n         *Network
	Addr      tcpip.Address
	conns     []*conn
	byFlow    map[tcp.FlowID]*conn
	listeners map[uint16]*listener
	nextPort  uint16
	// RSTsSent counts resets sent for segments matching nothing.
	RSTsSent int
	// Ingress, if set, sees every segment delivered to the host, decoded
	// (p.Seg), before it is demultiplexed; returning false drops it. Tests
	// use it for a firewall or for a peer's extra acceptance checks (a
	// peer that drops what lies beyond a window it shrank, as Linux does).
	Ingress func(p *Packet) bool
	// Egress, if set, sees every segment the host sends, encoded (p.Bytes,
	// not decoded), before it enters the link; it may rewrite p.Bytes in
	// place (the checksum is not simulated), and returning false drops it.
	Egress func(p *Packet) bool
}

type conn struct {
	flow tcp.FlowID
	ep   *tcp.Endpoint
}

type listener struct {
	l        *tcp.Listener
	accepted []*tcp.Endpoint
	pending  []*tcp.Endpoint
}

// AddHost creates a host with address addr.
func (n *Network) AddHost(addr tcpip.Address) *Host {
	h := &Host{n: n, Addr: addr, byFlow: make(map[tcp.FlowID]*conn), listeners: make(map[uint16]*listener), nextPort: 40000}
	n.hosts[addr] = h
	n.order = append(n.order, h)
	return h
}

// output returns the Output of a flow: it encodes segments onto the link.
func (h *Host) output(flow tcp.FlowID) tcp.Output {
	return tcp.OutputFunc(func(s *tcp.OutSegment) {
		p := h.n.packet()
		p.Src, p.Dst, p.SrcPort, p.DstPort = flow.LocalAddr, flow.RemoteAddr, flow.LocalPort, flow.RemotePort
		p.Bytes = s.AppendHeader(p.Bytes[:0], flow.LocalPort, flow.RemotePort)
		p.Bytes = s.AppendPayload(p.Bytes)
		if h.Egress != nil && !h.Egress(p) {
			h.n.free = append(h.n.free, p)
			return
		}
		h.n.send(p)
	})
}

// Dial creates an endpoint towards raddr:rport and connects it. cfg's
// Clock and Output are filled in; lport 0 picks an ephemeral port.
func (h *Host) Dial(lport uint16, raddr tcpip.Address, rport uint16, cfg tcp.Config) (*tcp.Endpoint, error) {
	return h.DialData(lport, raddr, rport, cfg, nil)
}

// DialData is Dial with data in the SYN (tcp.Endpoint.ConnectData).
func (h *Host) DialData(lport uint16, raddr tcpip.Address, rport uint16, cfg tcp.Config, synData []byte) (*tcp.Endpoint, error) {
	if lport == 0 {
		h.nextPort++
		lport = h.nextPort
	}
	flow := tcp.FlowID{LocalAddr: h.Addr, RemoteAddr: raddr, LocalPort: lport, RemotePort: rport}
	cfg.Clock = h.n.Clock
	cfg.Output = h.output(flow)
	ep, err := tcp.NewEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	h.add(flow, ep)
	return ep, ep.ConnectData(synData)
}

func (h *Host) add(flow tcp.FlowID, ep *tcp.Endpoint) {
	c := &conn{flow: flow, ep: ep}
	h.conns = append(h.conns, c)
	h.byFlow[flow] = c
}

// Listen starts a listener on port; cfg.Config.Clock is filled in.
func (h *Host) Listen(port uint16, cfg tcp.ListenerConfig) (*tcp.Listener, error) {
	cfg.Config.Clock = h.n.Clock
	l, err := tcp.NewListener(cfg)
	if err != nil {
		return nil, err
	}
	h.listeners[port] = &listener{l: l}
	return l, nil
}

// Accept returns the next connection on port that reached ESTABLISHED (or
// later), or nil.
func (h *Host) Accept(port uint16) *tcp.Endpoint {
	ls := h.listeners[port]
	if ls == nil {
		return nil
	}
	for i, ep := range ls.pending {
		if ep.State() != tcp.StateSynRcvd {
			ls.pending = append(ls.pending[:i], ls.pending[i+1:]...)
			if ep.State() != tcp.StateClosed || ep.Err() == nil {
				ls.accepted = append(ls.accepted, ep)
			}
			break
		}
	}
	if len(ls.accepted) == 0 {
		return nil
	}
	ep := ls.accepted[0]
	ls.accepted = ls.accepted[1:]
	return ep
}

// Endpoints returns the host's live endpoints in creation order.
func (h *Host) Endpoints() []*tcp.Endpoint {
	out := make([]*tcp.Endpoint, len(h.conns))
	for i, c := range h.conns {
		out[i] = c.ep
	}
	return out
}

func (h *Host) receive(p *Packet) {
	flow := tcp.FlowID{LocalAddr: h.Addr, RemoteAddr: p.Src, LocalPort: p.DstPort, RemotePort: p.SrcPort}
	if c := h.byFlow[flow]; c != nil && c.ep.State() != tcp.StateClosed {
		c.ep.HandleSegment(&p.Seg)
		return
	}
	if ls := h.listeners[p.DstPort]; ls != nil {
		if ep := ls.l.HandleSegment(flow, &p.Seg, h.output(flow)); ep != nil {
			h.add(flow, ep)
			ls.pending = append(ls.pending, ep)
		}
		return
	}
	if p.Seg.Flags&tcp.FlagRST != 0 {
		return
	}
	h.RSTsSent++
	out := h.output(flow)
	if p.Seg.Flags&tcp.FlagACK != 0 {
		out.WriteSegment(&tcp.OutSegment{Seq: p.Seg.Ack, Flags: tcp.FlagRST})
	} else {
		n := uint32(len(p.Seg.Payload))
		if p.Seg.Flags&tcp.FlagSYN != 0 {
			n++
		}
		if p.Seg.Flags&tcp.FlagFIN != 0 {
			n++
		}
		out.WriteSegment(&tcp.OutSegment{Ack: p.Seg.Seq.Add(seqnum.Size(n)), Flags: tcp.FlagRST | tcp.FlagACK})
	}
}

// prune forgets closed endpoints.
func (h *Host) prune() {
	j := 0
	for _, c := range h.conns {
		if c.ep.State() == tcp.StateClosed {
			if h.byFlow[c.flow] == c {
				delete(h.byFlow, c.flow)
			}
			continue
		}
		h.conns[j] = c
		j++
	}
	clear(h.conns[j:])
	h.conns = h.conns[:j]
}
