package stack

import (
	"net/netip"

	"github.com/mptund/mptund/stack/mptcp"
	"github.com/mptund/mptund/stack/tcp"
)

// MPTCPConfig selects the engine's Multipath TCP behaviour (RFC 8684).
type MPTCPConfig struct {
	// Disabled makes Dial and Listen speak plain TCP: no MP_CAPABLE is sent
	// and MP_CAPABLE SYNs are answered as plain TCP (the peer falls back).
	Disabled bool
	// Checksums requests DSS checksums (the A flag of MP_CAPABLE, RFC 8684
	// §3.1); they are used when either side requests them.
	Checksums bool
}

// ConnInfo describes a connection at the data level: whether MPTCP is in
// use, why it fell back if it did, and each subflow's TCP state.
type ConnInfo struct {
	// MPTCP is true while the connection runs MPTCP; false for plain TCP,
	// whether requested (MPTCPConfig.Disabled) or after a fallback.
	MPTCP bool
	// Fallback is the reason the connection fell back to plain TCP
	// (RFC 8684 §3.7), or empty.
	Fallback string
	// State is the connection's state ("established", "fin-wait", ...).
	State string
	// LocalToken and RemoteToken identify the connection (RFC 8684 §3.2);
	// zero without MPTCP.
	LocalToken, RemoteToken uint32
	// Checksums is true when DSS checksums are in use.
	Checksums bool
	// Subflows lists the connection's subflows; a plain TCP connection has
	// exactly one.
	Subflows []SubflowInfo
	// Data is the MPTCP layer's own view (keys, data sequence numbers,
	// counters); nil when MPTCP was disabled for the connection.
	Data *mptcp.Info `json:",omitempty"`
}

// SubflowInfo is one subflow of a connection.
type SubflowInfo struct {
	Local, Remote netip.AddrPort
	TCP           tcp.Info
}

// ConnInfo returns a snapshot of the connection's data-level state.
func (c *Conn) ConnInfo() ConnInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := ConnInfo{
		State:    c.ep.State().String(),
		Subflows: []SubflowInfo{{Local: addrPort(c.laddr.IP, c.laddr.Port), Remote: addrPort(c.raddr.IP, c.raddr.Port), TCP: c.ep.Info()}},
	}
	if c.mc == nil && c.listener != nil && c.peerNoMPTCP {
		ci.Fallback = mptcp.FallbackSynNoMPCapable.String()
	}
	if c.mc != nil {
		mi := c.mc.Info()
		ci.MPTCP = mi.Fallback == mptcp.FallbackNone
		ci.Fallback = mi.Fallback.String()
		ci.State = mi.State.String()
		ci.LocalToken, ci.RemoteToken = mi.LocalToken, mi.RemoteToken
		ci.Checksums = mi.Checksums
		ci.Data = &mi
	}
	return ci
}

func addrPort(ip []byte, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
