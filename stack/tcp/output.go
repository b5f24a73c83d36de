package tcp

import (
	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// tsNow is the timestamp clock (RFC 7323 §5.4): milliseconds plus the
// connection's offset.
func (e *Endpoint) tsNow() uint32 {
	return uint32(e.now().Milliseconds()) + e.cfg.TSOffset
}

// windowBytes is the receive window to offer, in bytes, before scaling.
func (e *Endpoint) windowBytes() int {
	if e.rb.size == 0 {
		return e.cfg.ReceiveBuffer // stateless SYN-ACK (cookie)
	}
	if e.rx != nil {
		if w, ok := e.rx.ReceiveWindow(); ok {
			return max(w, 0)
		}
	}
	return int(e.rb.limit() - e.rb.nxt)
}

// scaledWindow is the window that would be advertised now, in bytes.
func (e *Endpoint) scaledWindow() int {
	w := e.windowBytes()
	if e.wsOK {
		w = min(w, 0xffff<<e.rcvWS)
		return w >> e.rcvWS << e.rcvWS
	}
	return min(w, 0xffff)
}

// windowField computes the header window value and records the right edge
// advertised. The window never shrinks (RFC 9293 §3.8.6.2.2): a smaller
// offer is rounded up to the edge already advertised.
func (e *Endpoint) windowField(syn bool) uint16 {
	w := uint64(e.windowBytes())
	if syn {
		f := min(w, 0xffff)
		e.rcvAdvEdge = max(e.rcvAdvEdge, e.rb.nxt+f)
		return uint16(f)
	}
	var shift uint8
	if e.wsOK {
		shift = e.rcvWS
	}
	nxt := e.rcvNxtOff()
	if e.rx != nil && e.rb.size != 0 {
		if rw, ok := e.rx.ReceiveWindow(); ok {
			// The extension's window (MPTCP's connection-level window,
			// RFC 8684 §3.3.4) is relative to its own acknowledgement
			// (the Data ACK) and keeps its own never-shrink rule there:
			// advertise it as it is, rounded up to the scale. Keeping the
			// right edge in this subflow's sequence space instead would
			// overstate it whenever the other subflows' data filled the
			// shared buffer. What this subflow accepts still never
			// shrinks (rcvAdvEdge): bytes already sent within an edge it
			// offered are not refused.
			f := (uint64(max(rw, 0)) + 1<<shift - 1) >> shift
			f = min(f, 0xffff)
			e.rcvAdvEdge = max(e.rcvAdvEdge, nxt+f<<shift)
			return uint16(f)
		}
	}
	edge := max(e.rb.nxt+w, e.rcvAdvEdge)
	if edge < nxt {
		edge = nxt
	}
	f := (edge - nxt) >> shift
	if f > 0xffff {
		f = 0xffff
	} else if nxt+f<<shift < e.rcvAdvEdge && f < 0xffff {
		f++
	}
	e.rcvAdvEdge = max(e.rcvAdvEdge, nxt+f<<shift)
	return uint16(f)
}

// buildOptions lays out TCP's options and the extension's for info.
func (e *Endpoint) buildOptions(info *SegmentInfo) []byte {
	var l options.Layout
	space := 40
	syn := info.Flags&FlagSYN != 0
	if syn {
		synack := info.Flags&FlagACK != 0
		l.MSS = uint16(e.cfg.MSS)
		used := 4
		if !e.cfg.DisableWScale && (!synack || e.wsOK) {
			l.HasWindowScale, l.WindowScale = true, e.rcvWS
			used += 3
		}
		if !e.cfg.DisableSACK && (!synack || e.sackOK) {
			l.SACKPermitted = true
			used += 2
		}
		if !e.cfg.DisableTimestamps && (!synack || e.tsOK) {
			l.HasTimestamp, l.TSVal = true, e.tsNow()
			if synack {
				l.TSEcr = e.tsRecent
			}
			used += 10
		}
		if !synack && info.Len > 0 {
			l.FastOpen = true // a cookie request (RFC 7413 §4.1.1)
			used += 4
		}
		space -= (used + 3) &^ 3
	} else if e.tsOK {
		l.HasTimestamp, l.TSVal, l.TSEcr = true, e.tsNow(), e.tsRecent
		space -= 12
	}
	if e.ext != nil {
		e.extOpts = e.ext.SegmentOptions(info, space, e.extOpts[:0])
		l.MPTCP = e.extOpts
	}
	if !syn && e.sackOK && info.Flags&FlagRST == 0 && (!e.rb.ooo.empty() || e.dsackOn) {
		l.SACKBlocks = e.sackBlocks()
	}
	b, _ := l.Append(e.optBuf[:0])
	return b
}

// sackBlocks returns the SACK blocks to send (RFC 2018 §4): a D-SACK
// block first if a duplicate arrived (RFC 2883 §4, sent once), then the
// block holding the most recently received out-of-order segment (the one
// that holds the D-SACK block, if any), then the blocks reported most
// recently before, then the highest others.
func (e *Endpoint) sackBlocks() []options.SACKBlock {
	out := e.sackBuf[:0]
	ooo := &e.rb.ooo
	spans := ooo.spans()
	var used [len(e.sackBuf)]int
	nUsed := 0
	add := func(i int) {
		if i < 0 || len(out) == cap(out) {
			return
		}
		for _, u := range used[:nUsed] {
			if u == i {
				return
			}
		}
		used[nUsed] = i
		nUsed++
		s := spans[i]
		out = append(out, options.SACKBlock{Start: uint32(e.rseqOf(s.start)), End: uint32(e.rseqOf(s.end))})
	}
	if e.dsackOn {
		out = append(out, options.SACKBlock{Start: uint32(e.rseqOf(e.dsack.start)), End: uint32(e.rseqOf(e.dsack.end))})
		add(ooo.holding(e.dsack.start))
		e.dsackOn = false
	}
	for _, h := range e.sackHist[:e.sackHistN] {
		add(ooo.holding(h))
	}
	for i := len(spans) - 1; i >= 0 && len(out) < cap(out); i-- {
		add(i)
	}
	return out
}

// transmit sends one segment starting at send offset off with up to n
// payload bytes from chunk c (nil for none). The payload is clipped when
// the options leave less room than expected; FIN is then dropped. It
// returns the payload length actually sent and the flags used.
func (e *Endpoint) transmit(flags header.TCPFlags, off uint64, c *chunk, n int, retx bool) (int, header.TCPFlags) {
	return e.transmitSpan(flags, off, c, nil, n, retx)
}

// transmitSpan is transmit for a TSO super-segment that may continue into
// the next chunk, c2 (nil for none): plain chunks only, without extension
// (sendNewOne decides).
func (e *Endpoint) transmitSpan(flags header.TCPFlags, off uint64, c, c2 *chunk, n int, retx bool) (int, header.TCPFlags) {
	info := &e.segInfo
	*info = SegmentInfo{Flags: flags, Seq: e.seqOf(off), RelSeq: uint32(off), Len: n, Retransmit: retx}
	if c != nil {
		info.Meta, info.ChunkRelSeq, info.ChunkLen = c.meta, uint32(c.off), len(c.data)
	}
	opts := e.buildOptions(info)
	s := &e.seg
	s.SegmentSize = 0
	if n > 0 {
		room := max(e.effMSS()-len(opts), 1)
		if e.gsoMax > 0 && n > e.sndMSS {
			// A TSO super-segment (only sendNewOne asks for one): the
			// output cuts it into segments that leave room for the
			// options.
			s.SegmentSize = min(room, e.sndMSS)
		} else if n > room {
			n = room
			flags &^= FlagFIN
		}
	}
	s.Seq, s.Flags, s.Options, s.Retransmit = info.Seq, flags, opts, retx
	s.Payload, s.src, s.srcOff = nil, nil, 0
	s.PayloadTail, s.srcTail = nil, nil
	if n > 0 {
		i := off - c.off
		first := min(uint64(n), uint64(len(c.data))-i)
		s.Payload = c.data[i : i+first]
		if e.sb.share(c) {
			s.src, s.srcOff = c.v, int(i)
		}
		if rest := uint64(n) - first; rest > 0 {
			s.PayloadTail = c2.data[:rest]
			if e.sb.share(c2) {
				s.srcTail = c2.v
			}
		}
	}
	if flags&FlagACK != 0 {
		s.Ack = e.rcvNxtSeq()
		s.Window = e.windowField(flags&FlagSYN != 0)
		if ack := e.rcvNxtOff(); ack > e.lastAckOff && e.quickAcks > 0 {
			e.quickAcks--
		}
		e.lastAckOff = e.rcvNxtOff()
		e.ackNow, e.ackDue, e.ackQuick = false, false, false
		e.unackedBytes = 0
		e.dack.stop()
	} else {
		s.Ack = 0
		s.Window = 0
		if flags&FlagSYN != 0 {
			s.Window = e.windowField(true)
		}
	}
	e.info.SegsOut += uint64(s.Segments())
	if n > 0 {
		e.info.BytesSent += uint64(n)
		if retx {
			e.info.BytesRetrans += uint64(n)
		}
	}
	if retx {
		e.info.Retransmits++
	}
	e.out.WriteSegment(s)
	return n, flags
}

// effMSS is the largest segment (payload plus options) the path takes.
func (e *Endpoint) effMSS() int {
	m := min(e.peerMSS, e.cfg.MSS)
	if e.pathMSS > 0 {
		m = min(m, e.pathMSS)
	}
	return m
}

// sendSYN sends (or retransmits) our SYN or SYN-ACK.
func (e *Endpoint) sendSYN(synack bool) {
	flags := FlagSYN
	if synack {
		flags |= FlagACK
	}
	retx := e.sndNxt > 0
	if !retx {
		e.rttStart = e.now()
	}
	if !synack && !retx && len(e.synData) > 0 {
		// The first SYN carries the Fast Open data (ConnectData);
		// retransmissions do not, in case a middlebox drops SYNs with
		// data (RFC 7413 §7.1). The payload comes from a chunk of its
		// own that lies before the send buffer's offset 1.
		c := chunk{data: e.synData, sealed: true}
		e.synDataLen, _ = e.transmit(flags, 0, &c, len(e.synData), false)
	} else {
		e.transmit(flags, 0, nil, 0, retx)
	}
	e.sndNxt = max(e.sndNxt, 1)
	if !e.rtoTimer.armed {
		e.rtoTimer.set(e.now().Add(e.rto))
	}
}

// sendAck sends a pure ACK (a SYN-ACK retransmission in SYN-RECEIVED), at
// the acceptable sequence number (ackSeqOff).
func (e *Endpoint) sendAck() {
	switch e.state {
	case StateClosed, StateSynSent:
		return
	case StateSynRcvd:
		e.sendSYN(true)
		return
	}
	e.transmit(FlagACK, e.ackSeqOff(), nil, 0, false)
}

// ackSeqOff is the send offset for segments that occupy no sequence space
// (pure ACKs, RSTs): SND.NXT, unless the peer's right edge retreated below
// it (by more than rounding, see edgeRounded), in which case the edge
// itself. A receiver drops a segment whose SEQ lies beyond its window, ACK
// field unread (Linux counts TcpExtBeyondWindow): with SEQ = SND.NXT it
// would never learn what we acknowledge, and a peer that also sends us data
// would retransmit it until it gave up. This is Linux's
// tcp_acceptable_seq; it applies from ESTABLISHED on, once the peer's
// window is known.
func (e *Endpoint) ackSeqOff() uint64 {
	if end := e.sndUna + e.sndWnd; end < e.sndNxt && e.state.synchronized() && !e.edgeRounded(end) {
		e.info.SeqClamped++
		return end
	}
	return e.sndNxt
}

// sendProbe sends an ACK with an old sequence number (SND.UNA-1) that the
// peer must answer with an ACK: a zero-window probe or keepalive (Linux's
// tcp_xmit_probe_skb).
func (e *Endpoint) sendProbe() {
	e.transmit(FlagACK, e.sndUna-1, nil, 0, false)
}

// sendRST sends a reset with the given sequence number; with withAck it
// also acknowledges ack (RFC 9293 §3.10.7).
func (e *Endpoint) sendRST(seq, ack seqnum.Value, withAck bool) {
	flags := FlagRST
	if withAck {
		flags |= FlagACK
	}
	info := &e.segInfo
	*info = SegmentInfo{Flags: flags, Seq: seq, RelSeq: uint32(seq - e.iss)}
	s := &e.seg
	*s = OutSegment{Seq: seq, Flags: flags, Options: e.buildOptions(info)}
	if withAck {
		s.Ack = ack
	}
	e.info.SegsOut++
	e.out.WriteSegment(s)
}

// challengeAck sends a rate-limited challenge ACK (RFC 5961 §3.2, §4.2,
// §5.2, §7).
func (e *Endpoint) challengeAck() {
	sec := e.now().Milliseconds() / 1000
	if sec != e.chalSecond {
		e.chalSecond, e.chalCount = sec, 0
	}
	if e.chalCount >= e.cfg.ChallengeAckLimit {
		return
	}
	e.chalCount++
	e.info.ChallengeAcks++
	e.sendAck()
}

// output sends what the congestion window, the peer's window and Nagle
// allow: lost segments first (RFC 6675 §5 NextSeg rule 1), then new data
// and our FIN. It also arms the retransmission and persist timers.
func (e *Endpoint) output() {
	switch e.state {
	case StateEstablished, StateCloseWait, StateFinWait1, StateClosing, StateLastAck:
	default:
		e.sendOwedAck()
		return
	}
	e.swsBlocked = false
	for i := 0; i < 1<<16; i++ {
		if e.retransmitOne() {
			continue
		}
		if e.sendNewOne() {
			continue
		}
		break
	}
	e.sendOwedAck()
	e.checkAppLimited()
	now := e.now()
	if e.windowStalled() || (e.swsBlocked && e.sndNxt == e.sndUna) {
		// The persist timer watches a closed window (or one too small
		// for sender-side SWS avoidance), not the retransmission timer:
		// nothing is in flight to time out, and a peer that answers
		// probes stays alive however long its window stays shut
		// (RFC 9293 §3.8.6.1).
		e.rtoTimer.stop()
		e.tlpTimer.stop()
		if !e.persist.armed {
			e.persistShift = 0
			e.persist.set(now.Add(e.persistInterval()))
		}
		return
	}
	e.persist.stop()
	if e.sndNxt > e.sndUna && !e.rtoTimer.armed {
		e.rtoTimer.set(now.Add(e.rto))
	}
	if e.sndNxt <= e.sndUna {
		e.tlpTimer.stop()
		e.reoTimer.stop()
		e.tlpActive = false
	} else if e.tlpRearm {
		e.scheduleTLP()
	}
	e.tlpRearm = false
}

// windowStalled reports whether the peer's window is closed while we have
// something to send and nothing in flight that it could accept: bytes sent
// beyond a retreated right edge count as waiting to be sent (see retreat),
// not as in flight. That is the persist timer's case.
func (e *Endpoint) windowStalled() bool {
	if e.sndWnd != 0 {
		return false
	}
	pending := e.sndNxt > e.sndUna || e.sndNxt < e.sb.end || (e.finQueued && e.sndNxt <= e.finOff)
	return pending && e.pipe() == 0
}

// sendOwedAck sends the pure ACK owed, unless it may be deferred (see
// SetAckDeferral), in which case it reports EventAckDue.
func (e *Endpoint) sendOwedAck() {
	if e.ackQuick && !e.pingpong {
		// Quick ACKs wait for the end of a receive batch like the
		// every-second-segment ones (SetAckDeferral).
		e.ackDue = true
	}
	if e.ackDue && !e.deferAck {
		e.ackNow = true
	}
	if e.ackNow {
		e.sendAck()
	} else if e.ackDue {
		e.notify(EventAckDue)
	}
}

// retransmitOne sends again the first segment waiting for it (deemed
// lost, or sent beyond a right edge that retreated), if the peer's window
// and the congestion window allow. Nothing is sent beyond the peer's right
// edge, where it would be dropped, except the head of the queue when the
// retransmission is forced (timeout): it then probes a window that closed,
// as Linux's tcp_retransmit_skb does.
func (e *Endpoint) retransmitOne() bool {
	i := e.nextLost()
	if i < 0 {
		return false
	}
	off := e.rtx.at(i).start
	if off >= e.sndUna+e.sndWnd && (off != e.sndUna || !e.forceRetx) {
		return false
	}
	if !e.forceRetx && e.pipe()+e.sndMSS > e.sendCwnd() {
		e.cwndBlocked = true
		return false
	}
	if e.paceBlocked() {
		return false
	}
	return e.resend(i, e.forceRetx)
}

// resend transmits record i again, as one segment: cut to the MSS, the
// chunk it lies in and, unless probe, the peer's window (the rest of the
// record stays as a record of its own). It reports whether it sent.
func (e *Endpoint) resend(i int, probe bool) bool {
	q := &e.rtx
	r := q.at(i)
	off := r.start
	wndEnd := e.sndUna + e.sndWnd
	if off >= wndEnd && !probe {
		return false
	}
	e.forceRetx = false
	finRec := e.finQueued && r.end == e.finOff+1
	dataEnd := r.end
	if finRec {
		dataEnd = e.finOff
	}
	var c *chunk
	limit := off + uint64(e.sndMSS)
	if dataEnd > off {
		if c = e.sb.find(off); c == nil {
			return false
		}
		limit = min(limit, c.end())
	}
	if !probe {
		limit = min(limit, wndEnd)
	}
	if dataEnd > limit {
		q.split(i, limit)
		dataEnd, finRec = limit, false
	} else if finRec && !probe && e.finOff >= wndEnd && dataEnd > off {
		q.split(i, e.finOff) // the FIN lies beyond the window
		finRec = false
	}
	flags := FlagACK
	if finRec {
		flags |= FlagFIN
	}
	n, fl := e.transmit(flags, off, c, int(dataEnd-off), true)
	to := off + uint64(n)
	if fl&FlagFIN != 0 {
		to++
	}
	if to == off {
		return false
	}
	if to < q.at(i).end {
		q.split(i, to)
	}
	e.sentAgain(i)
	return true
}

// sentAgain updates record i after it was transmitted again: in flight
// once more, with a new transmission time for RACK; counted for undo and
// PRR during recovery.
func (e *Endpoint) sentAgain(i int) {
	q := &e.rtx
	r := q.at(i)
	f := r.flags
	beyond := f&segBeyond != 0
	if beyond {
		f &^= segLost | segBeyond
	}
	if f&segLost != 0 {
		f |= segRetrans
	}
	r.xmit = e.now()
	if e.rateCC != nil {
		e.rateSent(r, r.xmit, true)
	}
	q.setFlags(i, f|segEverRetrans)
	e.rackScanFrom = min(e.rackScanFrom, r.start)
	n := int(r.size())
	e.paced(n)
	switch e.ca {
	case caRecovery:
		e.prrOut += n
		e.info.TCPFastRetrans++
	case caLoss:
		e.info.TCPSlowStartRetrans++
	}
	if beyond {
		return
	}
	if e.undoValid {
		e.undoRetrans = max(e.undoRetrans, 0) + 1
	}
	if !e.retransStampOK {
		e.retransStamp, e.retransStampOK = e.tsOf(r.xmit), true
	}
}

// sendNewOne sends one segment of new data (or the FIN).
func (e *Endpoint) sendNewOne() bool {
	off := e.sndNxt
	wndEnd := e.sndUna + e.sndWnd
	pipe := e.pipe()
	cwnd := e.sendCwnd()
	if e.tlpProbe {
		// A loss probe goes out whatever the congestion window
		// (RFC 8985 §7.3).
		cwnd = max(cwnd, pipe+e.sndMSS)
	}
	if off < e.sb.end {
		if off >= wndEnd {
			e.cwndBlocked = false
			return false
		}
		c := e.sb.find(off)
		if c == nil {
			return false
		}
		avail := min(e.sb.end, wndEnd) - off
		n := int(min(avail, c.end()-off, uint64(e.sndMSS)))
		var c2 *chunk
		if e.gsoMax > e.sndMSS && n == e.sndMSS && !e.tlpProbe {
			reach, next := e.tsoReach(off, avail, c)
			if pipe > 0 && cwnd-pipe < reach && cwnd >= tsoDeferFrames*e.gsoMax {
				// TSO deferral, as Linux's tcp_tso_should_defer: with a
				// large window, wait for the ACKs in flight to allow a
				// full super-segment rather than send a fragment now
				// and its rest later, doubling the packets.
				e.cwndBlocked = true
				return false
			}
			n = e.tsoLength(reach, pipe, cwnd)
			if off+uint64(n) > c.end() {
				c2 = next
			}
		}
		if pipe > 0 && pipe+n > cwnd {
			e.cwndBlocked = true
			return false
		}
		if e.paceBlocked() {
			return false
		}
		// Sender-side SWS avoidance (RFC 9293 §3.8.6.2.1): a segment cut
		// short by the end of the peer's window, with more data waiting,
		// is sent only if it is at least half the largest window the
		// peer offered; otherwise wait for the window to open (the
		// persist timer probes it when nothing is in flight). Linux sends
		// no segment that does not fit the window whole.
		if n < e.sndMSS && off+uint64(n) == wndEnd && wndEnd < e.sb.end &&
			uint64(n) < e.maxSndWnd/2 && !e.swsOverride {
			e.cwndBlocked = false
			e.swsBlocked = true
			return false
		}
		// Nagle (RFC 9293 §3.7.4): hold a small segment while data is
		// unacknowledged, unless more cannot come (FIN queued) or NoDelay.
		if n < e.sndMSS && off+uint64(n) == e.sb.end && e.sndNxt > e.sndUna &&
			!e.cfg.NoDelay && !e.finQueued {
			e.cwndBlocked = false
			return false
		}
		flags := FlagACK
		end := off + uint64(n)
		if end == e.sb.end {
			flags |= FlagPSH
			if e.finQueued && end+1 <= wndEnd {
				flags |= FlagFIN
			}
		}
		if !e.pingpong && e.dataSeen && e.now().Sub(e.lastRcvAt) < e.cfg.DelayedAck {
			// Answering the peer's data: an interactive exchange, our
			// ACKs may wait for our data (Linux's pingpong mode).
			e.pingpong = true
		}
		sent, fl := e.transmitSpan(flags, off, c, c2, n, false)
		end = off + uint64(sent)
		if fl&FlagFIN != 0 {
			end++
		}
		e.sentNew(off, end, e.seg.SegmentSize)
		e.sndNxt = off + uint64(sent)
		if fl&FlagFIN != 0 {
			e.finSent()
		}
		return true
	}
	if e.finQueued && off == e.finOff && off < wndEnd {
		if pipe > 0 && pipe+1 > cwnd {
			return false
		}
		e.transmit(FlagACK|FlagFIN, off, nil, 0, false)
		e.sentNew(off, off+1, 0)
		e.finSent()
		return true
	}
	e.cwndBlocked = false
	return false
}

// sentNew records new bytes [off, end) just sent (our FIN included) in the
// retransmission queue: one record per segment, segSize apart for a TSO
// super-segment.
func (e *Endpoint) sentNew(off, end uint64, segSize int) {
	now := e.now()
	outstanding := e.sndNxt > e.sndUna
	if e.ca == caRecovery {
		e.prrOut += int(end - off)
	}
	e.paced(int(end - off))
	for off < end {
		to := end
		if segSize > 0 && off+uint64(segSize) < end {
			to = off + uint64(segSize)
		}
		e.rtx.push(off, to, now)
		if e.rateCC != nil {
			e.rateSent(e.rtx.last(), now, outstanding)
			outstanding = true
		}
		off = to
	}
	if !e.tlpProbe {
		e.tlpRearm = true
	}
}

// tsoReach is how far a TSO super-segment starting at off may reach,
// window and data permitting (avail), up to gsoMax: to the end of chunk c,
// or on into the next one when both are plain and no extension needs each
// segment within one chunk; next is that chunk when it may be used.
func (e *Endpoint) tsoReach(off, avail uint64, c *chunk) (reach int, next *chunk) {
	lim := min(avail, uint64(e.gsoMax))
	r := min(lim, c.end()-off)
	if r == lim || e.ext != nil || !c.plain {
		return int(r), nil
	}
	if nc := e.sb.find(c.end()); nc != nil && nc.plain {
		return int(min(lim, nc.end()-off)), nc
	}
	return int(r), nil
}

// tsoLength sizes a TSO super-segment that may reach reach bytes: as much
// as the congestion window allows, in whole segments (RFC 9293 §3.8.6.2.1
// sender-side SWS avoidance still holds: only whole segments are grouped)
// unless it takes all of reach short of gsoMax, and so ends where the
// data, the chunks or the peer's window end. It never returns less than
// one segment; the caller's congestion check decides whether that one may
// go.
func (e *Endpoint) tsoLength(reach, pipe, cwnd int) int {
	mss := e.sndMSS
	n := reach
	if room := cwnd - pipe; n > room {
		n = room
	}
	if n < reach || n == e.gsoMax {
		n -= n % mss
	}
	return max(n, mss)
}

// tsoDeferFrames is how many full super-segments the congestion window
// must hold before the sender waits for a full one (see sendNewOne).
const tsoDeferFrames = 4

// SetGSOMaxSize lets the endpoint hand its Output TSO super-segments (see
// OutSegment.SegmentSize) of up to n payload bytes, when its output can
// segment them (a link with segmentation offload); zero turns it off.
// Retransmissions are always single segments.
func (e *Endpoint) SetGSOMaxSize(n int) { e.gsoMax = max(n, 0) }

// finSent advances past our FIN and changes state (RFC 9293 §3.10.4).
func (e *Endpoint) finSent() {
	e.sndNxt = e.finOff + 1
	switch e.state {
	case StateEstablished:
		e.setState(StateFinWait1)
	case StateCloseWait:
		e.setState(StateLastAck)
	}
}
