package stack

import (
	"net/netip"
	"time"

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
	// Endpoints are the local addresses the path manager uses: signal
	// (announced with ADD_ADDR), subflow (subflows opened from them),
	// backup, fullmesh (RFC 8684 §3.4; the kernel's `ip mptcp endpoint`).
	// Change them at run time with Engine.AddEndpoint and friends.
	Endpoints []mptcp.Endpoint
	// Limits bound additional subflows and accepted ADD_ADDRs per
	// connection (nil: the kernel's defaults, 2 and 0).
	Limits *mptcp.Limits
	// AddAddrTimeout and AddAddrRetries govern ADD_ADDR retransmission
	// (zero: 120 s and 3, the kernel's).
	AddAddrTimeout time.Duration
	AddAddrRetries int
	// DenyJoinInitial sets MP_CAPABLE's C flag: peers must not open
	// subflows to the connection's initial address, and such joins are
	// refused.
	DenyJoinInitial bool
	// Scheduler names the packet scheduler (mptcp.Schedulers); empty
	// selects the default.
	Scheduler string
	// Tracer receives every connection's events (see also EventLog).
	Tracer *mptcp.Tracer
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

// SubflowInfo is one subflow of a connection: addresses, address IDs,
// role and priority, and its TCP state and counters.
type SubflowInfo = mptcp.SubflowInfo

// ConnInfo returns a snapshot of the connection's data-level state.
func (c *Conn) ConnInfo() ConnInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := ConnInfo{State: c.first.ep.State().String()}
	if c.mc == nil && c.listener != nil && c.peerNoMPTCP {
		ci.Fallback = mptcp.FallbackSynNoMPCapable.String()
	}
	if c.mc == nil {
		in := c.first.ep.Info()
		ci.Subflows = []SubflowInfo{{Local: c.first.local(), Remote: c.first.remote(), TCP: in,
			Established: in.State >= tcp.StateEstablished, BytesSent: in.BytesSent, BytesAcked: in.BytesAcked, Closed: c.first.gone}}
		return ci
	}
	mi := c.mc.Info()
	ci.MPTCP = mi.Fallback == mptcp.FallbackNone
	ci.Fallback = mi.Fallback.String()
	ci.State = mi.State.String()
	ci.LocalToken, ci.RemoteToken = mi.LocalToken, mi.RemoteToken
	ci.Checksums = mi.Checksums
	ci.Subflows = mi.Subflows
	mi.Subflows = nil // once is enough in the report
	ci.Data = &mi
	return ci
}

func addrPort(ip []byte, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
