package mptcp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// MP_JOIN (RFC 8684 §3.2): adding a subflow to an established connection.
//
//	initiator A                            listener B
//	SYN      MP_JOIN token-B, R-A, ID-A, backup  ->
//	      <- SYN/ACK  MP_JOIN HMAC64(Key-B||Key-A, R-B||R-A), R-B, ID-B, backup
//	ACK      MP_JOIN HMAC160(Key-A||Key-B, R-A||R-B)  ->
//	      <- ACK (the listener acknowledges the third ACK)
//
// A join SYN reaches its connection by the token, never through a
// listener: the driver looks the token up (Tokens.Lookup) and asks the
// connection (AcceptJoin). A bad HMAC resets the subflow with MP_TCPRST;
// the initiator sends no data on the subflow until it has seen the
// listener's acknowledgement of its third ACK, which it repeats until then.

// Join errors, refusals of a join SYN; each carries the MP_TCPRST reason
// to send with the RST (RFC 8684 §3.6).
var (
	// ErrJoinRefused: the connection takes no (more) subflows: it fell
	// back to TCP, is closing, or the subflow limit is reached.
	ErrJoinRefused = &JoinError{Reason: options.RstReasonAdminProhibited, msg: "join refused"}
	// ErrJoinNoToken: no connection has the token.
	ErrJoinNoToken = &JoinError{Reason: options.RstReasonMPTCPError, msg: "join token unknown"}
	// ErrJoinMalformed: the SYN's MP_JOIN is not a usable SYN form.
	ErrJoinMalformed = &JoinError{Reason: options.RstReasonMPTCPError, msg: "malformed MP_JOIN"}
)

// JoinError refuses a join, with the MP_TCPRST reason to send.
type JoinError struct {
	Reason uint8
	msg    string
}

func (e *JoinError) Error() string { return "mptcp: " + e.msg }

// joinAckRetry bounds how often the initiator repeats its third ACK while
// it waits for the listener's acknowledgement (at least this, else the
// subflow's RTO).
const joinAckRetry = 200 * time.Millisecond

// joinSYN extracts the MP_JOIN of a SYN, if it has a usable one.
func joinSYN(seg *tcp.Segment) (options.MPJoin, bool) {
	for _, raw := range seg.Options.MPTCPOptions() {
		if st, err := options.PeekSubtype(raw); err != nil || st != options.SubtypeMPJoin {
			continue
		}
		if j, err := options.ParseMPJoin(raw); err == nil && j.Form == options.JoinSYN {
			return j, true
		}
		return options.MPJoin{}, false
	}
	return options.MPJoin{}, false
}

// JoinToken returns the token of a join SYN (ok false if seg carries no
// usable MP_JOIN SYN), for the driver to find the connection.
func JoinToken(seg *tcp.Segment) (token uint32, ok bool) {
	j, ok := joinSYN(seg)
	return j.Token, ok
}

// canJoin reports why the connection takes no new subflow, or nil.
func (c *Conn) canJoin() error {
	switch {
	case c.fallback != FallbackNone, !c.haveRemoteKey, !c.fullyEstablished:
		return ErrJoinRefused
	case c.state != StateEstablished && c.state != StateClosing:
		return ErrJoinRefused
	case c.liveSubflows() >= c.maxSubflows():
		return ErrJoinRefused
	}
	return nil
}

// AcceptJoin takes a join SYN that arrived on local (RFC 8684 §3.2): it
// returns the subflow's extension, to build a passive endpoint with (then
// Bind it), or a *JoinError when the connection refuses the join (the
// driver answers with a RST carrying its reason). localID is the address
// ID of local (0 for the connection's initial address).
func (c *Conn) AcceptJoin(syn *tcp.Segment, local, remote netip.AddrPort, localID uint8) (*Subflow, error) {
	defer c.flush()
	j, ok := joinSYN(syn)
	if !ok {
		return nil, ErrJoinMalformed
	}
	c.cfg.MIB.Inc(MPJoinSynRx)
	if j.Backup {
		c.cfg.MIB.Inc(MPJoinSynBackupRx)
	}
	if err := c.canJoin(); err != nil {
		c.cfg.MIB.Inc(MPJoinRejected)
		return nil, err
	}
	nonce, err := handshake.NewNonce(c.cfg.Rand)
	if err != nil {
		c.cfg.MIB.Inc(MPJoinRejected)
		return nil, &JoinError{Reason: options.RstReasonResources, msg: err.Error()}
	}
	s := c.addSubflow()
	s.join, s.initiator = true, false
	s.localID, s.remoteID = localID, j.AddrID
	s.localNonce, s.remoteNonce = nonce, j.Nonce
	s.peerBackup = j.Backup
	s.backup = c.cfg.PM.localBackup(local.Addr())
	s.Local, s.Remote = local, remote
	c.trace(func(t *Tracer) {
		if t.SubflowAdded != nil {
			t.SubflowAdded(c, s.Info())
		}
	})
	return s, nil
}

// NewJoinSubflow creates a subflow this host initiates from local to
// remote (RFC 8684 §3.2): build its endpoint with the returned extension,
// Bind it and Connect. localID is local's address ID, remoteID the peer's
// for remote (0 for its initial address); backup asks the peer to use the
// subflow only when no other is available.
func (c *Conn) NewJoinSubflow(local, remote netip.AddrPort, localID, remoteID uint8, backup bool) (*Subflow, error) {
	defer c.flush()
	if err := c.canJoin(); err != nil {
		return nil, err
	}
	nonce, err := handshake.NewNonce(c.cfg.Rand)
	if err != nil {
		return nil, err
	}
	s := c.addSubflow()
	s.join, s.initiator = true, true
	s.localID, s.remoteID = localID, remoteID
	s.localNonce = nonce
	s.backup = backup
	s.Local, s.Remote = local, remote
	c.cfg.MIB.Inc(MPJoinSynTx)
	c.trace(func(t *Tracer) {
		if t.SubflowAdded != nil {
			t.SubflowAdded(c, s.Info())
		}
	})
	return s, nil
}

// joinOptions appends the MP_JOIN option a join subflow's segment carries
// during the handshake; ok false when the segment is past it.
func (s *Subflow) joinOptions(info *tcp.SegmentInfo, dst []options.Option) ([]options.Option, bool) {
	c := s.c
	flags := info.Flags
	switch {
	case flags&header.TCPFlagRst != 0:
		return dst, false
	case flags&header.TCPFlagSyn != 0 && flags&header.TCPFlagAck == 0:
		s.jn = options.MPJoin{Form: options.JoinSYN, Backup: s.backup, AddrID: s.localID, Token: c.remoteToken, Nonce: s.localNonce}
		return append(dst, &s.jn), true
	case flags&header.TCPFlagSyn != 0:
		s.jn = options.MPJoin{Form: options.JoinSYNACK, Backup: s.backup, AddrID: s.localID, Nonce: s.localNonce,
			TruncatedHMAC: handshake.JoinSYNACKHMAC(c.localKey, c.remoteKey, s.localNonce, s.remoteNonce)}
		return append(dst, &s.jn), true
	case s.initiator && !s.joined:
		// The third ACK, and every ACK until the listener acknowledged
		// it (it may be lost; the subflow carries no data before).
		s.jn = options.MPJoin{Form: options.JoinACK, HMAC: handshake.JoinACKHMAC(c.localKey, c.remoteKey, s.localNonce, s.remoteNonce)}
		s.joinAckAt = c.cfg.Clock.NowMonotonic().Add(max(joinAckRetry, s.ep.RTO()))
		c.notify(tcp.EventTimer)
		return append(dst, &s.jn), true
	}
	return dst, false
}

// joinIncoming processes a join subflow's segment during its handshake.
// handled true means Incoming is done with the segment (verdict given).
func (s *Subflow) joinIncoming(seg *tcp.Segment, state tcp.State) (tcp.Verdict, bool) {
	c := s.c
	ack := seg.Flags&header.TCPFlagAck != 0
	syn := seg.Flags&header.TCPFlagSyn != 0
	rst := seg.Flags&header.TCPFlagRst != 0
	if rst {
		return tcp.VerdictAccept, false
	}
	switch {
	case state == tcp.StateSynSent && syn && ack:
		j, ok := findJoin(seg, options.JoinSYNACK)
		if !ok || !handshake.VerifyJoinSYNACK(c.remoteKey, c.localKey, j.Nonce, s.localNonce, j.TruncatedHMAC) {
			c.cfg.MIB.Inc(MPJoinSynAckHMacFailure)
			s.rstReason = options.RstReasonMPTCPError
			s.err = errors.New("mptcp: MP_JOIN SYN/ACK without a valid HMAC")
			return tcp.VerdictReset, true
		}
		c.cfg.MIB.Inc(MPJoinSynAckRx)
		if j.Backup {
			c.cfg.MIB.Inc(MPJoinSynAckBackupRx)
		}
		s.remoteNonce, s.remoteID, s.peerBackup = j.Nonce, j.AddrID, j.Backup
		return tcp.VerdictAccept, true
	case state == tcp.StateSynRcvd && ack && !syn:
		j, ok := findJoin(seg, options.JoinACK)
		if !ok || !handshake.VerifyJoinACK(c.remoteKey, c.localKey, s.remoteNonce, s.localNonce, j.HMAC) {
			c.cfg.MIB.Inc(MPJoinAckHMacFailure)
			s.rstReason = options.RstReasonMPTCPError
			s.err = errors.New("mptcp: MP_JOIN third ACK without a valid HMAC")
			return tcp.VerdictReset, true
		}
		c.cfg.MIB.Inc(MPJoinAckRx)
		s.setJoined()
		s.ackNeeded = true // the fourth packet: the initiator waits for it
		return tcp.VerdictAccept, true
	case s.initiator && !s.joined && state >= tcp.StateEstablished && ack:
		// The listener answered after our third ACK: it has it.
		s.setJoined()
		return tcp.VerdictAccept, false
	}
	return tcp.VerdictAccept, false
}

// setJoined makes a join subflow usable for data.
func (s *Subflow) setJoined() {
	if s.joined {
		return
	}
	s.joined = true
	s.joinAckAt = zeroTime
	s.rxmap = dsnmap.NewRxMap(s.c.rxMapLimit(), s.c.checksums)
	s.c.notify(tcp.EventWritable) // the scheduler has one more subflow
	s.c.trace(func(t *Tracer) {
		if t.SubflowEstablished != nil {
			t.SubflowEstablished(s.c, s.Info())
		}
	})
}

// findJoin returns the segment's MP_JOIN of the given form.
func findJoin(seg *tcp.Segment, form options.JoinForm) (options.MPJoin, bool) {
	for _, raw := range seg.Options.MPTCPOptions() {
		if st, err := options.PeekSubtype(raw); err != nil || st != options.SubtypeMPJoin {
			continue
		}
		if j, err := options.ParseMPJoin(raw); err == nil && j.Form == form {
			return j, true
		}
	}
	return options.MPJoin{}, false
}

// joinTimers repeats an initiator's third ACK that the listener has not
// acknowledged (RFC 8684 §3.2: the subflow is not usable before).
func (s *Subflow) joinTimers(now tcpTime) {
	if !s.initiator || s.joined || s.joinAckAt == zeroTime || now.Before(s.joinAckAt) {
		return
	}
	if s.ep.State() != tcp.StateEstablished {
		return
	}
	s.joinAckRetries++
	if s.joinAckRetries > maxJoinAckRetries {
		s.rstReason = options.RstReasonMPTCPError
		s.err = fmt.Errorf("mptcp: MP_JOIN third ACK never acknowledged (%d tries)", s.joinAckRetries)
		s.ep.Abort()
		return
	}
	s.ep.SendAck()
}

// maxJoinAckRetries bounds the repetitions of the third ACK.
const maxJoinAckRetries = 6

// AbandonSubflow forgets a subflow whose endpoint the driver could not
// create or register (NewJoinSubflow or AcceptJoin succeeded first).
func (c *Conn) AbandonSubflow(s *Subflow) {
	defer c.flush()
	for i, x := range c.subflows {
		if x == s {
			c.subflows = append(c.subflows[:i], c.subflows[i+1:]...)
			c.subflowsClosed++
			return
		}
	}
}

// subflowByID returns the live subflow with ID id.
func (c *Conn) subflowByID(id uint32) *Subflow {
	for _, s := range c.subflows {
		if s.id == id && !s.dead {
			return s
		}
	}
	return nil
}

// ErrNoSubflow: no live subflow has the given ID.
var ErrNoSubflow = errors.New("mptcp: no such subflow")

// CloseSubflowID resets the subflow with ID id (MP_TCPRST, reason
// unspecified); its unacknowledged data goes to the other subflows.
func (c *Conn) CloseSubflowID(id uint32) error {
	defer c.flush()
	s := c.subflowByID(id)
	if s == nil {
		return ErrNoSubflow
	}
	s.rstReason = options.RstReasonUnspecified
	c.closeSubflow(s, errors.New("mptcp: subflow closed locally"))
	return nil
}

// SetSubflowBackupID is SetSubflowBackup for the subflow with ID id.
func (c *Conn) SetSubflowBackupID(id uint32, backup bool) error {
	s := c.subflowByID(id)
	if s == nil {
		return ErrNoSubflow
	}
	c.SetSubflowBackup(s, backup)
	return nil
}
