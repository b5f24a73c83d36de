package mptcp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvchecksum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Subflow is one TCP subflow of a Conn: the tcp.Extension (and
// tcp.Receiver) of its endpoint, which puts MPTCP options on every segment
// and takes the in-order payload to the connection level.
type Subflow struct {
	c  *Conn
	ep *tcp.Endpoint
	id uint32 // unique within the connection, in order of creation

	// join: opened by MP_JOIN (RFC 8684 §3.2), not the initial subflow;
	// initiator: this host sent the join SYN; joined: the join handshake
	// completed (for the initiator: the listener acknowledged the third
	// ACK), so the subflow may carry data.
	join, initiator, joined bool
	localID, remoteID       uint8 // address IDs (§3.4)
	localNonce, remoteNonce uint32
	joinAckAt               tcpTime // initiator: when to repeat the third ACK
	joinAckRetries          int
	// backup: this host asked the peer to use the subflow only as a
	// backup (join B flag, MP_PRIO); peerBackup: the peer asked us.
	backup, peerBackup bool
	prioPending        bool // MP_PRIO to send

	// stale: no acknowledgement progress across a data-level
	// retransmission timeout with data outstanding (retrans.go).
	stale     bool
	rtxMark   uint32
	rtxMarked bool
	// dead: the endpoint is closed and the subflow retired; err is why.
	dead bool
	err  error
	// closeBy bounds a graceful close (closeGrace); closeAt is when a
	// subflow removed with its address starts closing (removeDelay).
	closeBy, closeAt tcpTime

	// Local and Remote are the subflow's addresses, for ConnInfo; set by
	// the driver.
	Local, Remote netip.AddrPort

	rxmap      *dsnmap.RxMap
	rcvRel     uint32 // relative sequence after the last delivered byte
	sawMapping bool
	// sawDSS: a DSS arrived from the peer on this subflow after the
	// handshake, so its options are not being stripped.
	sawDSS bool
	// ackSent: a DSS with our Data ACK went out on this subflow, so the
	// peer counts the subflow fully established (RFC 8684 §3.1); advEdge
	// is the data-level right edge (Data ACK plus window) it last carried.
	ackSent bool
	advEdge dsnmap.DSN

	// txq records the chunks mapped onto this subflow, oldest first, to
	// tell how far the subflow's acknowledgement reaches in data space.
	txq      []txRecord
	enqueued uint32 // payload bytes enqueued: the next chunk starts at 1+enqueued
	// lastAckedTop is the highest DSN the subflow's acknowledgement has
	// been seen to cover.
	lastAckedTop dsnmap.DSN

	// After a fallback: DSN = base + relative subflow sequence.
	fbRcvBase, fbSndBase dsnmap.DSN
	rxViaMap             bool // fallback by infinite mapping: the map still routes
	// sendInfinite: after a fallback the peer may not know of, the first
	// data segment carries the infinite mapping (RFC 8684 §3.7), and so
	// does every retransmission of it (infRel, once infSent).
	sendInfinite bool
	infSent      bool
	infRel       uint32

	finRcvd       bool
	closing       bool
	fastcloseRcvd bool
	rstReason     uint8
	ackNeeded     bool  // a DATA_FIN arrived: answer with a Data ACK
	pendingErr    error // subflow-level fault, set inside a hook; acted on in Update
	connErr       error // connection-level fault (MP_FASTCLOSE), likewise

	dss options.DSS
	mpc options.MPCapable
	fc  options.MPFastclose
	rst options.MPTCPRst
	jn  options.MPJoin
	aa  options.AddAddr
	ra  options.RemoveAddr
	pr  options.MPPrio
}

type tcpTime = tcpip.MonotonicTime

var zeroTime tcpTime

// usable reports whether the subflow can carry data now.
func (s *Subflow) usable() bool {
	if s.ep == nil || s.dead || s.closing || !canSend(s.ep.State()) {
		return false
	}
	return !s.join || s.joined
}

// queued is the payload enqueued on the subflow and not yet acknowledged
// by it.
func (s *Subflow) queued() int { return int(s.enqueued - (s.ep.SndUnaRel() - 1)) }

// ID returns the subflow's number within its connection.
func (s *Subflow) ID() uint32 { return s.id }

// Backup reports whether the subflow is a backup: either side asked for
// it (RFC 8684 §3.2, §3.3.8). Schedulers use backups only when no other
// subflow is usable.
func (s *Subflow) Backup() bool { return s.backup || s.peerBackup }

// minTake is the least room in a subflow's queue worth scheduling on.
const minTake = 16 << 10

// CanTake reports whether the scheduler may give the subflow more data:
// its queue holds less than twice its congestion window (at least 64
// KiB), so data does not pile up behind a slow path, and its send buffer
// has room.
func (s *Subflow) CanTake() bool {
	if s.ep == nil {
		return false
	}
	limit := max(2*s.ep.CongestionWindow(), 64<<10)
	return s.queued() < limit && s.ep.SendBufferFree() >= min(minTake, s.ep.ChunkSize())
}

// Linger estimates how long the subflow's queued bytes take to leave at
// its current rate, cwnd per smoothed RTT (the Linux scheduler's metric).
func (s *Subflow) Linger() time.Duration {
	cwnd := max(s.ep.CongestionWindow(), 1)
	rtt := max(s.ep.SRTT(), 100*time.Microsecond)
	return time.Duration(int64(s.queued()+1) * int64(rtt) / int64(cwnd))
}

// SubflowInfo is a snapshot of a subflow.
type SubflowInfo struct {
	ID                uint32
	Local, Remote     netip.AddrPort
	LocalID, RemoteID uint8
	Join              bool
	Established       bool
	Backup            bool // either side asked for it
	LocalBackup       bool
	PeerBackup        bool
	Stale             bool
	Closed            bool
	// BytesSent and BytesAcked are the subflow's payload counters.
	BytesSent, BytesAcked uint64
	TCP                   tcp.Info
}

// Info returns a snapshot of the subflow.
func (s *Subflow) Info() SubflowInfo {
	in := SubflowInfo{ID: s.id, Local: s.Local, Remote: s.Remote, LocalID: s.localID, RemoteID: s.remoteID, Join: s.join,
		Backup: s.Backup(), LocalBackup: s.backup, PeerBackup: s.peerBackup, Stale: s.stale, Closed: s.dead}
	if s.ep != nil {
		in.TCP = s.ep.Info()
		in.Established = in.TCP.State >= tcp.StateEstablished && (!s.join || s.joined)
		in.BytesSent, in.BytesAcked = in.TCP.BytesSent, in.TCP.BytesAcked
	}
	return in
}

type txRecord struct {
	rel uint32
	dsn dsnmap.DSN
	len uint32
}

// chunk is the metadata of a chunk enqueued on a subflow: its mapping.
type chunk struct {
	dsn  dsnmap.DSN
	len  uint16
	psum uint16 // ones' complement sum of the payload (with checksums)
}

func partialSum(b []byte) uint16 { return gvchecksum.Checksum(b, 0) }

var (
	_ tcp.Extension = (*Subflow)(nil)
	_ tcp.Receiver  = (*Subflow)(nil)
	_ tcp.Binder    = (*Subflow)(nil)
)

// Bind attaches the subflow's endpoint (created with this Subflow as its
// Extension). tcp.NewEndpoint calls it (tcp.Binder), so the subflow has
// its endpoint from the first segment on, also on a listener's.
func (s *Subflow) Bind(ep *tcp.Endpoint) {
	s.ep = ep
}

// Endpoint returns the subflow's TCP endpoint.
func (s *Subflow) Endpoint() *tcp.Endpoint { return s.ep }

// Conn returns the subflow's connection.
func (s *Subflow) Conn() *Conn { return s.c }

// ackedBeyond reports whether the subflow's acknowledgement covers data
// above dsn (data the data level has not acknowledged yet).
func (s *Subflow) ackedBeyond(dsn dsnmap.DSN) bool {
	una := s.ep.SndUnaRel()
	var top dsnmap.DSN
	found := false
	for len(s.txq) > 0 {
		r := s.txq[0]
		if int32(una-(r.rel+r.len)) < 0 {
			// Partly acknowledged at most.
			if d := int32(una - r.rel); d > 0 {
				top, found = r.dsn+dsnmap.DSN(d), true
			}
			break
		}
		top, found = r.dsn+dsnmap.DSN(r.len), true
		s.txq = s.txq[1:]
	}
	if len(s.txq) == 0 {
		s.txq = nil
	}
	if found {
		s.lastAckedTop = top
	}
	return int64(s.lastAckedTop-dsn) > 0
}

// SegmentOptions implements tcp.Extension: MP_CAPABLE during the handshake
// (RFC 8684 §3.1), then a DSS with the Data ACK and, on data, the chunk's
// mapping (§3.3); MP_FASTCLOSE and MP_TCPRST on resets (§3.5, §3.6).
func (s *Subflow) SegmentOptions(info *tcp.SegmentInfo, space int, dst []options.Option) []options.Option {
	c := s.c
	if c.fallback != FallbackNone {
		if s.sendInfinite && info.Len > 0 && info.Flags&header.TCPFlagRst == 0 &&
			(!s.infSent || info.RelSeq == s.infRel) {
			// Tell a peer that may still expect mappings that everything
			// from here on maps one to one (the infinite mapping, RFC 8684
			// §3.7): once, on the first data segment after the fallback,
			// and again only if that segment is retransmitted.
			if !s.infSent {
				s.infSent, s.infRel = true, info.RelSeq
				c.cfg.MIB.Inc(InfiniteMapTx)
			}
			s.dss = options.DSS{HasMapping: true, DSN64: true,
				DSN: uint64(s.fbSndBase + dsnmap.DSN(info.RelSeq)), SubflowSeq: info.RelSeq, HasChecksum: c.checksums}
			return append(dst, &s.dss)
		}
		return dst
	}
	flags := info.Flags
	switch {
	case flags&header.TCPFlagRst != 0:
		if c.fastclose && c.haveRemoteKey {
			s.fc = options.MPFastclose{Key: c.remoteKey}
			dst = append(dst, &s.fc)
		}
		if c.haveRemoteKey {
			s.rst = options.MPTCPRst{Reason: s.rstReason}
			dst = append(dst, &s.rst)
			c.cfg.MIB.Inc(MPRstTx)
		}
		if c.fastclose && c.haveRemoteKey && !s.ackSent && c.rx != nil {
			// A peer that has not yet seen a DSS from us is not fully
			// established (§3.1): Linux then takes a segment without one
			// for a fallback and ignores its MP_FASTCLOSE. Our Data ACK
			// (32 bits, to fit beside the timestamps) establishes it.
			s.dss = options.DSS{HasDataAck: true, DataAck: uint64(uint32(c.rx.Next()))}
			dst = append(dst, &s.dss)
			c.cfg.MIB.Inc(MPFastcloseDataAck)
		}
		return dst
	}
	if s.join {
		if d, ok := s.joinOptions(info, dst); ok {
			return d
		}
	}
	switch {
	case flags&header.TCPFlagSyn != 0 && flags&header.TCPFlagAck == 0:
		s.mpc = options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: c.capableFlags()}
		return append(dst, &s.mpc)
	case flags&header.TCPFlagSyn != 0:
		s.mpc = options.MPCapable{Form: options.CapableSYNACK, Version: 1, Flags: c.capableFlags(), SenderKey: c.localKey}
		return append(dst, &s.mpc)
	}
	if !c.haveRemoteKey {
		return dst
	}
	ch, _ := info.Meta.(*chunk)
	if info.Len == 0 && flags&header.TCPFlagSyn == 0 && (!s.join || s.joined) {
		// Path-manager signals ride on pure ACKs, before the DSS (which
		// the layout drops if they leave no room for it).
		if o := c.signalOption(s); o != nil {
			dst = append(dst, o)
		}
		if s.prioPending {
			s.prioPending = false
			s.pr = options.MPPrio{Backup: s.backup}
			dst = append(dst, &s.pr)
		}
	}
	if c.client && !c.fullyEstablished && !s.join && info.RelSeq == 1 {
		// Until the server shows it holds our key, repeat both keys on
		// the segments at the first sequence number: pure ACKs (the third
		// ACK and its successors) while no data went out, and the first
		// data, as MP_CAPABLE with data (§3.1). Once data went out (it
		// carried the keys), pure ACKs carry a DSS, which a DATA_FIN
		// needs; Linux does the same (snd_isn).
		s.mpc = options.MPCapable{Form: options.CapableACK, Version: 1, Flags: c.capableFlags(), SenderKey: c.localKey, ReceiverKey: c.remoteKey}
		if info.Len == 0 {
			return append(dst, &s.mpc)
		}
		if ch != nil && ch.dsn == dsnmap.DSN(c.localIDSN+1) && info.ChunkRelSeq == 1 {
			s.mpc.Form = options.CapableACKData
			s.mpc.DataLen = ch.len
			if c.checksums {
				s.mpc.HasChecksum = true
				s.mpc.Checksum = ^gvchecksum.Combine(checksum.PseudoHeaderSum(uint64(ch.dsn), 1, ch.len), ch.psum)
			}
			return append(dst, &s.mpc)
		}
	}
	s.dss = options.DSS{}
	if c.rx != nil {
		s.dss.HasDataAck, s.dss.DataAck64, s.dss.DataAck = true, true, uint64(c.rx.Next())
	}
	switch {
	case ch != nil && info.Len > 0:
		s.dss.HasMapping, s.dss.DSN64 = true, true
		s.dss.DSN, s.dss.SubflowSeq, s.dss.DataLen = uint64(ch.dsn), info.ChunkRelSeq, ch.len
		if c.checksums {
			s.dss.HasChecksum = true
			s.dss.Checksum = ^gvchecksum.Combine(checksum.PseudoHeaderSum(uint64(ch.dsn), info.ChunkRelSeq, ch.len), ch.psum)
		}
	case info.Len == 0 && c.finSent && !c.finAcked:
		// DATA_FIN on its own: a mapping of one data-sequence number and
		// no subflow byte (§3.3.3), repeated until acknowledged.
		fin := uint64(c.dataFIN())
		s.dss.HasMapping, s.dss.DSN64, s.dss.DataFIN = true, true, true
		s.dss.DSN, s.dss.SubflowSeq, s.dss.DataLen = fin, 0, 1
		if c.checksums {
			s.dss.HasChecksum = true
			s.dss.Checksum = ^checksum.PseudoHeaderSum(fin, 0, 1)
		}
	}
	if !s.dss.HasDataAck && !s.dss.HasMapping {
		return dst
	}
	if s.dss.HasDataAck {
		s.ackSent, s.advEdge = true, c.rx.Next()+dsnmap.DSN(c.rx.Window())
	}
	return append(dst, &s.dss)
}

// capableFlags returns the MP_CAPABLE flags we send: H (HMAC-SHA256) and A
// when checksums are in use (or requested, before the peer answered).
func (c *Conn) capableFlags() uint8 {
	f := uint8(options.CapableFlagHMACSHA256)
	if c.checksums {
		f |= options.CapableFlagChecksum
	}
	if c.cfg.PM.DenyJoinInitial() {
		f |= options.CapableFlagNoNewSubflowsToSource
	}
	return f
}

// parsed is what Incoming extracts from a segment's MPTCP options.
type parsed struct {
	mpc          options.MPCapable
	dss          options.DSS
	fc           options.MPFastclose
	rst          options.MPTCPRst
	hasMPC       bool
	hasDSS       bool
	hasFastclose bool
	hasRst       bool
	hasJoin      bool
	aa           options.AddAddr
	hasAddAddr   bool
	rmIDs        [8]uint8
	nRm          int
	prio         options.MPPrio
	hasPrio      bool
	// ignored counts options that were malformed or repeated.
	ignored int
}

func parseOptions(seg *tcp.Segment, p *parsed) {
	for _, raw := range seg.Options.MPTCPOptions() {
		st, err := options.PeekSubtype(raw)
		if err != nil {
			p.ignored++ // malformed: ignored, as Linux does
			continue
		}
		switch st {
		case options.SubtypeMPCapable:
			// A version above 1 is parsed as version 1 (the SYN's version
			// is the highest the sender supports, RFC 8684 §3.1).
			if m, err := options.ParseMPCapable(raw); (err == nil || (err == options.ErrBadVersion && m.Version > 1)) && !p.hasMPC {
				p.mpc, p.hasMPC = m, true
			} else {
				p.ignored++
			}
		case options.SubtypeDSS:
			if d, err := options.ParseDSS(raw); err == nil && !p.hasDSS {
				p.dss, p.hasDSS = d, true
			} else {
				p.ignored++
			}
		case options.SubtypeMPJoin:
			p.hasJoin = true
		case options.SubtypeAddAddr:
			if a, err := options.ParseAddAddr(raw); err == nil && !p.hasAddAddr {
				p.aa, p.hasAddAddr = a, true
			} else {
				p.ignored++
			}
		case options.SubtypeRemoveAddr:
			if r, err := options.ParseRemoveAddr(raw); err == nil {
				for _, id := range r.IDs {
					if p.nRm < len(p.rmIDs) {
						p.rmIDs[p.nRm] = id
						p.nRm++
					}
				}
			} else {
				p.ignored++
			}
		case options.SubtypeMPPrio:
			if r, err := options.ParseMPPrio(raw); err == nil {
				p.prio, p.hasPrio = r, true
			} else {
				p.ignored++
			}
		case options.SubtypeMPFastclose:
			if f, err := options.ParseMPFastclose(raw); err == nil {
				p.fc, p.hasFastclose = f, true
			} else {
				p.ignored++
			}
		case options.SubtypeMPTCPRst:
			if r, err := options.ParseMPTCPRst(raw); err == nil {
				p.rst, p.hasRst = r, true
			} else {
				p.ignored++
			}
		}
	}
}

// IsJoin reports whether seg carries an MP_JOIN option (RFC 8684 §3.2).
func IsJoin(seg *tcp.Segment) bool {
	for _, raw := range seg.Options.MPTCPOptions() {
		if st, err := options.PeekSubtype(raw); err == nil && st == options.SubtypeMPJoin {
			return true
		}
	}
	return false
}

// usableCapable reports whether m is an MP_CAPABLE we accept: HMAC-SHA256
// and no extensibility flag (RFC 8684 §3.1; Linux ignores the option
// otherwise), version 1 (or, on a SYN, any higher version: we answer with
// version 1, the highest we support, as §3.1 has the listener do).
func usableCapable(m *options.MPCapable) bool {
	if m.Flags&options.CapableFlagHMACSHA256 == 0 || m.Flags&options.CapableFlagExtensibility != 0 {
		return false
	}
	return m.Version == 1 || (m.Form == options.CapableSYN && m.Version > 1)
}

// Incoming implements tcp.Extension. It decides what the segment's MPTCP
// options mean for the connection. Nothing a peer (or an attacker on the
// path) puts in the options of an acceptable segment resets the
// connection unless RFC 8684 leaves no other way: data-level information
// outside the data-level window is ignored and counted, as Linux does.
func (s *Subflow) Incoming(seg *tcp.Segment, state tcp.State) tcp.Verdict {
	c := s.c
	var p parsed
	parseOptions(seg, &p)
	if p.ignored > 0 {
		c.cfg.MIB.Add(OptionIgnored, uint64(p.ignored))
	}
	ack := seg.Flags&header.TCPFlagAck != 0
	syn := seg.Flags&header.TCPFlagSyn != 0
	rst := seg.Flags&header.TCPFlagRst != 0
	if p.hasRst && rst {
		c.stats.TCPRstsRcvd++
		c.stats.LastTCPRstReason = p.rst.Reason
		c.cfg.MIB.Inc(MPRstRx)
	}
	if c.fallback != FallbackNone && !s.rxViaMap {
		return tcp.VerdictAccept
	}
	if s.join {
		if v, done := s.joinIncoming(seg, state); done {
			return v
		}
		if !s.joined && !rst {
			return tcp.VerdictAccept // the handshake is not over: no data level yet
		}
	}
	switch {
	case s.join:
	case state == tcp.StateSynSent:
		if syn && ack {
			if p.hasMPC && p.mpc.Form == options.CapableSYNACK && p.mpc.Version == 1 && usableCapable(&p.mpc) {
				c.cfg.MIB.Inc(MPCapableSYNACKRX)
				c.setRemoteKey(p.mpc.SenderKey)
				c.peerNoNewToSource = p.mpc.Flags&options.CapableFlagNoNewSubflowsToSource != 0
				if p.mpc.Flags&options.CapableFlagChecksum != 0 {
					c.checksums = true
					s.rxmap = dsnmap.NewRxMap(c.rxMapLimit(), true)
				}
			} else {
				c.cfg.MIB.Inc(MPCapableFallbackSYNACK)
				c.doFallback(FallbackSynAckNoMPCapable, s)
			}
		}
		return tcp.VerdictAccept
	case state == tcp.StateSynRcvd:
		if ack && !syn && !rst {
			switch {
			case p.hasMPC && (p.mpc.Form == options.CapableACK || p.mpc.Form == options.CapableACKData) && usableCapable(&p.mpc):
				if p.mpc.ReceiverKey != c.localKey || (c.haveRemoteKey && p.mpc.SenderKey != c.remoteKey) {
					s.rstReason = options.RstReasonMPTCPError
					return tcp.VerdictReset
				}
				if !c.haveRemoteKey {
					c.setRemoteKey(p.mpc.SenderKey)
				}
				c.cfg.MIB.Inc(MPCapableACKRX)
				c.fullyEstablished = true
			case p.hasDSS && c.haveRemoteKey:
				// A cookie handshake rebuilt the keys from an earlier ACK.
				c.fullyEstablished = true
			default:
				// No MP_CAPABLE on the ACK completing the handshake: the
				// path strips it, or the peer's key never arrived (a DSS
				// without it cannot be used). Plain TCP, as Linux does.
				c.cfg.MIB.Inc(MPCapableFallbackACK)
				if p.hasDSS {
					c.cfg.MIB.Inc(FallbackNoKey)
				}
				c.doFallback(FallbackAckNoMPCapable, s)
				return tcp.VerdictAccept
			}
		}
	}
	if rst {
		if p.hasFastclose && c.haveRemoteKey {
			if p.fc.Key == c.localKey {
				s.fastcloseRcvd = true
				c.stats.FastclosesRcvd++
				c.cfg.MIB.Inc(MPFastcloseRx)
			} else {
				c.cfg.MIB.Inc(MPFastcloseBadKey)
			}
		}
		return tcp.VerdictAccept
	}
	if p.hasFastclose && c.haveRemoteKey {
		if p.fc.Key == c.localKey {
			// MP_FASTCLOSE on an ACK (§3.5): the whole connection is gone;
			// answer with a RST.
			s.fastcloseRcvd = true
			c.stats.FastclosesRcvd++
			c.cfg.MIB.Inc(MPFastcloseRx)
			s.connErr = ErrFastclose
			return tcp.VerdictReset
		}
		c.cfg.MIB.Inc(MPFastcloseBadKey)
	}
	if !c.haveRemoteKey || c.state == StateReset {
		return tcp.VerdictAccept
	}
	if p.hasAddAddr {
		c.onAddAddr(s, p.aa)
	}
	if p.nRm > 0 {
		c.onRemoveAddr(p.rmIDs[:p.nRm])
	}
	if p.hasPrio {
		c.onPrio(s, p.prio.Backup)
	}
	mpcData := p.hasMPC && p.mpc.Form == options.CapableACKData
	if mpcData && !c.client && len(seg.Payload) > 0 {
		// The client's first data, mapped by MP_CAPABLE (§3.1): DSN is
		// the client's IDSN+1, subflow sequence 1.
		c.fullyEstablished = true
		m := dsnmap.Mapping{DSN: dsnmap.DSN(c.remoteIDSN + 1), SubflowSeq: 1, Len: p.mpc.DataLen}
		if p.mpc.HasChecksum {
			m.Checksum = p.mpc.Checksum
		}
		if err := s.segmentMapping(seg, m); err != nil {
			return tcp.VerdictReset
		}
	}
	if !p.hasDSS && ack && !mpcData && s.fallbackEvidence(seg) {
		// Our data acknowledged without a Data ACK, by a peer that never
		// sent a DSS: the path strips MPTCP options, so the first subflow
		// falls back to plain TCP (RFC 8684 §3.7).
		c.cfg.MIB.Inc(DssFallback)
		c.doFallback(FallbackAckNoDSS, s)
		return tcp.VerdictAccept
	}
	if !p.hasDSS {
		if len(seg.Payload) > 0 && !s.sawMapping && state >= tcp.StateEstablished && c.canFallback(s) && !mpcData {
			// Data nobody mapped before any mapping: the path strips
			// MPTCP options (§3.7). Fall back to plain TCP.
			c.cfg.MIB.Inc(DssFallback)
			c.doFallback(FallbackDataNoDSS, s)
		}
		return tcp.VerdictAccept
	}
	s.sawDSS = true
	d := &p.dss
	if c.client {
		c.fullyEstablished = true
	}
	if d.HasDataAck {
		ackDSN := dsnmap.DSN(d.DataAck)
		if !d.DataAck64 {
			ackDSN = dsnmap.Expand(uint32(d.DataAck), c.sndUna)
		}
		wnd := uint64(seg.Window)
		if !syn && s.ep != nil {
			wnd <<= s.ep.SendWindowScale()
		}
		c.onDataAck(ackDSN, wnd)
	}
	if d.HasMapping {
		dsn := dsnmap.DSN(d.DSN)
		if !d.DSN64 {
			dsn = dsnmap.Expand(uint32(d.DSN), c.rx.Next())
		}
		m := dsnmap.Mapping{DSN: dsn, SubflowSeq: d.SubflowSeq, Len: d.DataLen, DataFIN: d.DataFIN, Checksum: d.Checksum}
		switch {
		case m.Infinite():
			if len(seg.Payload) == 0 {
				// An infinite mapping describes the segment's data; on a
				// segment without any it means nothing (Linux looks at
				// mappings only on data).
				c.ignoreMapping()
				break
			}
			c.cfg.MIB.Inc(InfiniteMapRx)
			if c.fallback == FallbackNone {
				s.rxViaMap = true
				c.doFallback(FallbackInfiniteMapping, s)
			}
			m.SubflowSeq = s.payloadRel(seg)
			if err := s.addMapping(m); err != nil {
				return tcp.VerdictReset
			}
		case len(seg.Payload) == 0:
			// A mapping on a segment without payload describes no byte of
			// it: only a DATA_FIN it carries counts (§3.3.3; a bare
			// DATA_FIN is {subflow seq 0, length 1}).
			if m.DataFIN {
				c.noteFIN(m.DSN+dsnmap.DSN(m.Len)-1, s)
			} else {
				c.ignoreMapping()
			}
		default:
			if err := s.segmentMapping(seg, m); err != nil {
				return tcp.VerdictReset
			}
		}
	}
	return tcp.VerdictAccept
}

// payloadRel returns the relative subflow sequence number of seg's first
// payload byte.
func (s *Subflow) payloadRel(seg *tcp.Segment) uint32 {
	rel := uint32(seg.Seq - s.ep.IRS())
	if seg.Flags&header.TCPFlagSyn != 0 {
		rel++
	}
	return rel
}

// segmentMapping records a mapping that arrived on a segment with
// payload. A mapping describes bytes of the segment that carries it
// (RFC 8684 §3.3.1; Linux's validate_mapping): one that covers none of
// them is ignored and counted, and so is any mapping on a segment whose
// payload was all delivered before (a retransmission, or a forgery on an
// old sequence number: nothing of it reaches the data level).
func (s *Subflow) segmentMapping(seg *tcp.Segment, m dsnmap.Mapping) error {
	c := s.c
	start := s.payloadRel(seg)
	end := start + uint32(len(seg.Payload))
	if s.ep != nil && !seqBefore(s.rcvRel, end) {
		return nil // every byte of it was delivered already
	}
	mEnd := m.SubflowSeq + m.PayloadLen()
	if m.PayloadLen() == 0 || !seqBefore(m.SubflowSeq, end) || !seqBefore(start, mEnd) {
		if m.DataFIN {
			c.noteFIN(m.DSN+dsnmap.DSN(m.Len)-1, s)
		}
		c.ignoreMapping()
		return nil
	}
	if err := s.addMapping(m); err != nil {
		return err
	}
	if m.DataFIN {
		c.noteFIN(m.DSN+dsnmap.DSN(m.PayloadLen()), s)
	}
	return nil
}

func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// canFallback reports whether a path that strips MPTCP options on s may
// turn the connection into plain TCP (RFC 8684 §3.7): only on the initial
// subflow of a connection that never had another (a join subflow is reset
// instead, as Linux's subflow_can_fallback has it).
func (c *Conn) canFallback(s *Subflow) bool {
	return !s.join && c.subflowsOpened == 1
}

// ignoreMapping counts a mapping that describes nothing usable.
func (c *Conn) ignoreMapping() {
	c.stats.IgnoredMappings++
	c.cfg.MIB.Inc(DSSNoPayload)
}

// fallbackEvidence reports whether seg, an ACK without any DSS, shows
// that the path strips MPTCP options from the peer's segments: it
// acknowledges data bytes of ours not acknowledged before, and the peer
// never sent a DSS on this, the connection's only subflow. An ACK that
// covers nothing new, or only our FIN (a peer's subflow in TIME-WAIT
// answers without options), is no evidence.
func (s *Subflow) fallbackEvidence(seg *tcp.Segment) bool {
	c := s.c
	if s.ep == nil || s.sawDSS || !c.canFallback(s) || s.enqueued == 0 || c.state >= StateClosed {
		return false
	}
	if seg.Options.NumMPTCP > 0 || seg.Options.DroppedMPTCP > 0 {
		// Any MPTCP option shows the path carries them (Linux sends a
		// pure ACK with an ADD_ADDR echo and nothing else).
		return false
	}
	ackRel := uint32(seg.Ack - s.ep.ISS())
	dataEnd := 1 + s.enqueued // relative sequence after our last data byte
	if seqBefore(dataEnd, ackRel) {
		ackRel = dataEnd // the part acknowledging our FIN does not count
	}
	return seqBefore(s.ep.SndUnaRel(), ackRel)
}

// addMapping records a received mapping; a conflict resets the subflow
// with MP_TCPRST "MPTCP-specific error" (as Linux does on DSSNotMatching).
func (s *Subflow) addMapping(m dsnmap.Mapping) error {
	s.sawMapping = true
	s.c.stats.MappingsReceived++
	if err := s.rxmap.Add(m); err != nil {
		if errors.Is(err, dsnmap.ErrMappingConflict) || errors.Is(err, dsnmap.ErrStaleMapping) {
			s.c.cfg.MIB.Inc(DSSNotMatching)
		}
		s.rstReason = options.RstReasonMPTCPError
		s.pendingErr = fmt.Errorf("%w: mapping %v: %v", ErrProtocol, m, err)
		return err
	}
	return nil
}

// Deliver implements tcp.Receiver: in-order subflow payload goes through
// the mapping table (checksums verified there) into the connection's
// reassembler.
func (s *Subflow) Deliver(relSeq uint32, data []byte) {
	c := s.c
	s.rcvRel = relSeq + uint32(len(data))
	if c.rx == nil {
		return // cannot happen: data before the handshake completed
	}
	if c.fallback != FallbackNone && !s.rxViaMap {
		s.insert(dsnmap.Piece{DSN: s.fbRcvBase + dsnmap.DSN(relSeq), Data: data})
		return
	}
	err := s.rxmap.Deliver(relSeq, data, s.insert)
	switch {
	case err == nil:
	case errors.Is(err, dsnmap.ErrNoMapping) && !s.sawMapping && c.canFallback(s):
		// Unmapped data before any mapping: options stripped (§3.7).
		c.cfg.MIB.Inc(DssFallback)
		c.doFallback(FallbackDataNoDSS, s)
		s.fbRcvBase = c.rx.Next() - dsnmap.DSN(relSeq)
		s.insert(dsnmap.Piece{DSN: c.rx.Next(), Data: data})
	case errors.Is(err, dsnmap.ErrChecksum):
		c.stats.ChecksumErrors++
		c.cfg.MIB.Inc(DataCsumErr)
		s.rstReason = options.RstReasonMiddlebox
		s.pendingErr = ErrProtocol
	default:
		s.rstReason = options.RstReasonMPTCPError
		s.pendingErr = fmt.Errorf("%w: subflow bytes at %d: %v", ErrProtocol, relSeq, err)
	}
}

// insert places a piece in the connection's reassembler. What the
// reassembler refuses (outside the window, beyond its bound on
// out-of-order ranges, after the DATA_FIN) is dropped and counted, never a
// reset: the peer still holds it unacknowledged at the data level and
// retransmits it (Linux counts NoDSSInWindow and carries on).
func (s *Subflow) insert(p dsnmap.Piece) {
	c := s.c
	n, err := c.rx.Insert(dsnmap.Piece{DSN: p.DSN, Data: p.Data})
	if err != nil {
		lost := uint64(max(len(p.Data)-n, 0))
		switch {
		case errors.Is(err, dsnmap.ErrBeyondWindow):
			c.stats.DroppedOutOfWindow += lost
			c.cfg.MIB.Inc(NoDSSInWindow)
		case errors.Is(err, dsnmap.ErrDataAfterFIN):
			c.stats.DroppedAfterFIN += lost
			c.cfg.MIB.Inc(NoDSSInWindow)
		case errors.Is(err, dsnmap.ErrTooManyRanges):
			c.stats.DroppedOFOBytes += lost
			c.cfg.MIB.Inc(OFODrop)
		default:
			c.stats.DroppedOFOBytes += lost
			c.cfg.MIB.Inc(OFODrop)
		}
	} else if n == 0 && len(p.Data) > 0 {
		c.cfg.MIB.Inc(DuplicateData)
	}
	if n > 0 {
		c.stats.BytesReceived += uint64(n)
		c.notify(tcp.EventReadable)
		c.autoTune()
	}
	if p.DataFIN {
		c.noteFIN(p.DSN+dsnmap.DSN(len(p.Data)), s)
	}
	c.tryFIN(s)
}

// noteFIN records that the peer's DATA_FIN occupies fin (RFC 8684
// §3.3.3). It takes effect when the in-order stream reaches it (tryFIN),
// as in Linux: a DATA_FIN outside the receive window, or contradicting
// one already announced, is ignored and counted, never a reset. A
// repeated DATA_FIN already processed is acknowledged again.
func (c *Conn) noteFIN(fin dsnmap.DSN, s *Subflow) {
	if c.rx == nil {
		return
	}
	next := c.rx.Next()
	if c.rx.FINReceived() {
		if fin+1 == next {
			s.ackNeeded = true // our Data ACK of it was lost
		} else {
			c.ignoreFIN()
		}
		return
	}
	if int64(fin-next) < 0 {
		c.ignoreFIN()
		return
	}
	if uint64(fin-next) > uint64(c.rx.Window()+c.rxSlack()) {
		// Beyond what we let the peer send: a DATA_FIN sent early (see
		// DataFinAhead), taken when it comes again, or a forged one.
		c.stats.IgnoredDataFINs++
		c.cfg.MIB.Inc(DataFinAhead)
		return
	}
	if c.rcvFINSet && c.rcvFIN != fin {
		c.ignoreFIN()
		return
	}
	c.rcvFIN, c.rcvFINSet = fin, true
	c.tryFIN(s)
}

func (c *Conn) ignoreFIN() {
	c.stats.IgnoredDataFINs++
	c.cfg.MIB.Inc(DataFinInvalid)
}

// tryFIN ends the peer's stream once the in-order data reaches the
// announced DATA_FIN. Data received beyond it wins over it (the DATA_FIN
// was wrong, or forged): it is forgotten and counted.
func (c *Conn) tryFIN(s *Subflow) {
	if !c.rcvFINSet || c.rx.FINReceived() {
		return
	}
	next := c.rx.Next()
	if int64(c.rcvFIN-next) < 0 {
		c.rcvFINSet = false // in-order data went past it
		c.ignoreFIN()
		return
	}
	if next != c.rcvFIN {
		return
	}
	if err := c.rx.SetFIN(c.rcvFIN); err != nil {
		c.rcvFINSet = false // bytes beyond it are queued out of order
		c.ignoreFIN()
		return
	}
	s.ackNeeded = true
	c.notify(tcp.EventReadable)
}

// rxSlack is how far beyond the advertised window data-level information
// is still taken as plausible (the reassembler's own slack).
func (c *Conn) rxSlack() int { return max(c.rcvLimit/4, 64<<10) }

// ReceiveWindow implements tcp.Receiver: the connection-level window,
// relative to the Data ACK (RFC 8684 §3.3.4). Its right edge never moves
// back in data sequence space (RFC 9293 §3.8.6.2.2 applied at the data
// level, as Linux's mptcp_set_rwin does): every subflow advertises the
// same edge, however the other subflows' data filled the buffer.
func (s *Subflow) ReceiveWindow() (int, bool) {
	c := s.c
	if c.rx == nil {
		return 0, false
	}
	next := c.rx.Next()
	if edge := next + dsnmap.DSN(c.rx.Window()); !c.rcvEdgeSet || int64(edge-c.rcvEdge) > 0 {
		c.rcvEdge, c.rcvEdgeSet = edge, true
	}
	return int(max(int64(c.rcvEdge-next), 0)), true
}

// StateChanged implements tcp.Extension.
func (s *Subflow) StateChanged(from, to tcp.State) {
	switch to {
	case tcp.StateCloseWait, tcp.StateClosing, tcp.StateTimeWait:
		s.finRcvd = true
	case tcp.StateClosed:
		if from == tcp.StateLastAck {
			s.finRcvd = true
		}
	}
	s.c.notify(tcp.EventWritable)
}

// rxMapLimit bounds the mappings a subflow keeps pending: enough for a
// full receive window of segments that each carry their own mapping of at
// least 1 KiB (a peer mapping every small write), and no more, so that a
// peer cannot make the table grow without bound (RFC 8684 §3.3.1 leaves
// mapping sizes to the sender).
func (c *Conn) rxMapLimit() int {
	return max(dsnmap.DefaultRxMapLimit, c.cfg.MaxReceiveBuffer/1024)
}
