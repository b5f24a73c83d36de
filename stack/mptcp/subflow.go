package mptcp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	gvchecksum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Subflow is one TCP subflow of a Conn: the tcp.Extension (and
// tcp.Receiver) of its endpoint, which puts MPTCP options on every segment
// and takes the in-order payload to the connection level.
type Subflow struct {
	c  *Conn
	ep *tcp.Endpoint
	id uint8

	// Local and Remote are the subflow's addresses, for ConnInfo; set by
	// the driver.
	Local, Remote netip.AddrPort

	rxmap      *dsnmap.RxMap
	rcvRel     uint32 // relative sequence after the last delivered byte
	sawMapping bool

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
	// sendInfinite: after a fallback the peer may not know of, data
	// segments carry the infinite mapping.
	sendInfinite bool

	finRcvd       bool
	closing       bool
	fastcloseRcvd bool
	rstReason     uint8
	ackNeeded     bool  // a DATA_FIN arrived: answer with a Data ACK
	pendingErr    error // set inside a hook; acted on in Update

	dss options.DSS
	mpc options.MPCapable
	fc  options.MPFastclose
	rst options.MPTCPRst
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
)

// Bind attaches the subflow's endpoint (created with this Subflow as its
// Extension).
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
		if s.sendInfinite && info.Len > 0 && info.Flags&header.TCPFlagRst == 0 {
			// Tell a peer that may still expect mappings that everything
			// from here on maps one to one (the infinite mapping, RFC 8684
			// §3.7), on every data segment: any of them may be lost.
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
		}
		return dst
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
	if c.client && !c.fullyEstablished {
		// Until the server shows it holds our key, repeat both keys: on
		// pure ACKs (the third ACK and its successors) and, with the first
		// mapping's data, as MP_CAPABLE with data (§3.1).
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
	if c.rx != nil {
		c.lastAdvWnd = c.rx.Window()
	}
	if !s.dss.HasDataAck && !s.dss.HasMapping {
		return dst
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
}

func parseOptions(seg *tcp.Segment, p *parsed) {
	for _, raw := range seg.Options.MPTCPOptions() {
		st, err := options.PeekSubtype(raw)
		if err != nil {
			continue // malformed: ignored, as Linux does
		}
		switch st {
		case options.SubtypeMPCapable:
			if m, err := options.ParseMPCapable(raw); err == nil && !p.hasMPC {
				p.mpc, p.hasMPC = m, true
			}
		case options.SubtypeDSS:
			if d, err := options.ParseDSS(raw); err == nil && !p.hasDSS {
				p.dss, p.hasDSS = d, true
			}
		case options.SubtypeMPFastclose:
			if f, err := options.ParseMPFastclose(raw); err == nil {
				p.fc, p.hasFastclose = f, true
			}
		case options.SubtypeMPTCPRst:
			if r, err := options.ParseMPTCPRst(raw); err == nil {
				p.rst, p.hasRst = r, true
			}
		}
	}
}

// usableCapable reports whether m is an MP_CAPABLE we accept: version 1,
// HMAC-SHA256 (RFC 8684 §3.1; Linux ignores the option otherwise).
func usableCapable(m *options.MPCapable) bool {
	return m.Version == 1 && m.Flags&options.CapableFlagHMACSHA256 != 0 && m.Flags&options.CapableFlagExtensibility == 0
}

// Incoming implements tcp.Extension.
func (s *Subflow) Incoming(seg *tcp.Segment, state tcp.State) tcp.Verdict {
	c := s.c
	var p parsed
	parseOptions(seg, &p)
	if p.hasRst && seg.Flags&header.TCPFlagRst != 0 {
		c.stats.TCPRstsRcvd++
		c.stats.LastTCPRstReason = p.rst.Reason
	}
	if c.fallback != FallbackNone && !s.rxViaMap {
		return tcp.VerdictAccept
	}
	ack := seg.Flags&header.TCPFlagAck != 0
	syn := seg.Flags&header.TCPFlagSyn != 0
	rst := seg.Flags&header.TCPFlagRst != 0
	switch state {
	case tcp.StateSynSent:
		if syn && ack {
			if p.hasMPC && p.mpc.Form == options.CapableSYNACK && usableCapable(&p.mpc) {
				c.setRemoteKey(p.mpc.SenderKey)
				c.peerNoNewToSource = p.mpc.Flags&options.CapableFlagNoNewSubflowsToSource != 0
				if p.mpc.Flags&options.CapableFlagChecksum != 0 {
					c.checksums = true
					s.rxmap = dsnmap.NewRxMap(c.rxMapLimit(), true)
				}
			} else {
				c.doFallback(FallbackSynAckNoMPCapable, s)
			}
		}
		return tcp.VerdictAccept
	case tcp.StateSynRcvd:
		if ack && !syn && !rst {
			switch {
			case p.hasMPC && (p.mpc.Form == options.CapableACK || p.mpc.Form == options.CapableACKData):
				if p.mpc.ReceiverKey != c.localKey || (c.haveRemoteKey && p.mpc.SenderKey != c.remoteKey) {
					s.rstReason = options.RstReasonMPTCPError
					return tcp.VerdictReset
				}
				if !c.haveRemoteKey {
					c.setRemoteKey(p.mpc.SenderKey)
				}
				c.fullyEstablished = true
			case p.hasDSS:
				c.fullyEstablished = true
			default:
				c.doFallback(FallbackAckNoMPCapable, s)
				return tcp.VerdictAccept
			}
		}
	}
	if rst {
		if p.hasFastclose && c.haveRemoteKey && p.fc.Key == c.localKey {
			s.fastcloseRcvd = true
			c.stats.FastclosesRcvd++
		}
		return tcp.VerdictAccept
	}
	if p.hasFastclose {
		if c.haveRemoteKey && p.fc.Key == c.localKey {
			// MP_FASTCLOSE on an ACK (§3.5): the whole connection is gone;
			// answer with a RST.
			s.fastcloseRcvd = true
			c.stats.FastclosesRcvd++
			s.pendingErr = ErrFastclose
			return tcp.VerdictReset
		}
	}
	if !c.haveRemoteKey {
		return tcp.VerdictAccept
	}
	if p.hasMPC && p.mpc.Form == options.CapableACKData && !c.client && len(seg.Payload) > 0 {
		// The client's first data, mapped by MP_CAPABLE (§3.1): DSN is
		// the client's IDSN+1, subflow sequence 1.
		c.fullyEstablished = true
		m := dsnmap.Mapping{DSN: dsnmap.DSN(c.remoteIDSN + 1), SubflowSeq: 1, Len: p.mpc.DataLen}
		if p.mpc.HasChecksum {
			m.Checksum = p.mpc.Checksum
		}
		if err := s.addMapping(m); err != nil {
			return tcp.VerdictReset
		}
	}
	if !p.hasDSS && ack && s.ep != nil && s.enqueued > 0 && len(c.subflows) == 1 &&
		int32(uint32(seg.Ack-s.ep.ISS())-1) > 0 && !(p.hasMPC && p.mpc.Form == options.CapableACKData) {
		// An acknowledgement of our data without a Data ACK: the path
		// strips MPTCP options, so the first subflow falls back to plain
		// TCP (RFC 8684 §3.7).
		c.doFallback(FallbackAckNoDSS, s)
		return tcp.VerdictAccept
	}
	if !p.hasDSS {
		if len(seg.Payload) > 0 && !s.sawMapping && state >= tcp.StateEstablished && len(c.subflows) == 1 &&
			!(p.hasMPC && p.mpc.Form == options.CapableACKData) {
			// Data nobody mapped before any mapping: the path strips
			// MPTCP options (§3.7). Fall back to plain TCP.
			c.doFallback(FallbackDataNoDSS, s)
		}
		return tcp.VerdictAccept
	}
	d := &p.dss
	if c.client {
		c.fullyEstablished = true
	}
	if d.HasDataAck {
		ackDSN := dsnmap.DSN(d.DataAck)
		if !d.DataAck64 {
			ackDSN = dsnmap.Expand(uint32(d.DataAck), c.sndNxt)
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
			if c.fallback == FallbackNone {
				s.rxViaMap = true
				c.doFallback(FallbackInfiniteMapping, s)
			}
			if err := s.addMapping(m); err != nil {
				return tcp.VerdictReset
			}
		case m.FINOnly():
			if err := c.rx.SetFIN(m.DSN); err != nil {
				s.rstReason = options.RstReasonMPTCPError
				s.pendingErr = ErrProtocol
				return tcp.VerdictReset
			}
			s.ackNeeded = true
			c.notify(tcp.EventReadable)
		default:
			if err := s.addMapping(m); err != nil {
				return tcp.VerdictReset
			}
		}
	}
	return tcp.VerdictAccept
}

// addMapping records a received mapping; a conflict resets the subflow
// with MP_TCPRST "MPTCP-specific error" (as Linux does on DSSNotMatching).
func (s *Subflow) addMapping(m dsnmap.Mapping) error {
	s.sawMapping = true
	s.c.stats.MappingsReceived++
	if err := s.rxmap.Add(m); err != nil {
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
	case errors.Is(err, dsnmap.ErrNoMapping) && !s.sawMapping && len(c.subflows) == 1:
		// Unmapped data before any mapping: options stripped (§3.7).
		c.doFallback(FallbackDataNoDSS, s)
		s.fbRcvBase = c.rx.Next() - dsnmap.DSN(relSeq)
		s.insert(dsnmap.Piece{DSN: c.rx.Next(), Data: data})
	case errors.Is(err, dsnmap.ErrChecksum):
		c.stats.ChecksumErrors++
		s.rstReason = options.RstReasonMiddlebox
		s.pendingErr = ErrProtocol
	default:
		s.rstReason = options.RstReasonMPTCPError
		s.pendingErr = fmt.Errorf("%w: subflow bytes at %d: %v", ErrProtocol, relSeq, err)
	}
}

func (s *Subflow) insert(p dsnmap.Piece) {
	c := s.c
	n, err := c.rx.Insert(p)
	if err != nil {
		s.rstReason = options.RstReasonMPTCPError
		s.pendingErr = fmt.Errorf("%w: reassembly at DSN %d (+%d, next %d, window %d): %v", ErrProtocol, p.DSN, len(p.Data), c.rx.Next(), c.rx.Window(), err)
		return
	}
	if n > 0 || p.DataFIN {
		c.stats.BytesReceived += uint64(n)
		c.notify(tcp.EventReadable)
	}
	if p.DataFIN {
		s.ackNeeded = true
	}
}

// ReceiveWindow implements tcp.Receiver: the connection-level window.
func (s *Subflow) ReceiveWindow() (int, bool) {
	if s.c.rx == nil {
		return 0, false
	}
	return s.c.rx.Window(), true
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
	return max(dsnmap.DefaultRxMapLimit, c.cfg.ReceiveBuffer/1024)
}
