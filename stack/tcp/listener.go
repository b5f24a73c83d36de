package tcp

import (
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"

	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// CookieMode selects when a Listener answers SYNs with SYN cookies.
type CookieMode uint8

const (
	// CookiesAuto uses cookies only while the SYN queue is full.
	CookiesAuto CookieMode = iota
	// CookiesAlways never keeps per-SYN state.
	CookiesAlways
	// CookiesNever drops SYNs while the SYN queue is full.
	CookiesNever
)

// DefaultBacklog bounds the SYN queue when ListenerConfig.Backlog is zero.
const DefaultBacklog = 128

// ListenerConfig parameterises a Listener.
type ListenerConfig struct {
	// Config is the template for accepted endpoints. Clock is required;
	// Output, ISS and Extension are set per connection.
	Config Config
	// Backlog bounds the half-open (SYN-RECEIVED) endpoints.
	Backlog int
	// Cookies selects SYN-cookie use (RFC 4987 §3.6).
	Cookies CookieMode
	// Secret keys ISNs (RFC 6528) and SYN cookies. Fill it from
	// crypto/rand; tests may leave it zero.
	Secret [32]byte
	// NewExtension, if set, is the factory of each connection's Extension
	// (nil for plain TCP, e.g. a SYN without MP_CAPABLE) with a verdict on
	// the segment: VerdictReset refuses it with a RST, VerdictDrop ignores
	// it. It inspects the segment's options and is called:
	//
	//   - for each SYN, before the SYN-ACK. When the SYN is queued, the
	//     extension is attached to the new SYN-RECEIVED endpoint and sees
	//     StateChanged(CLOSED, SYN-RECEIVED), SegmentOptions for the
	//     SYN-ACK (and its retransmissions), then Incoming for the ACK
	//     completing the handshake, in SYN-RECEIVED state. When the SYN is
	//     answered with a SYN cookie (queue full, or CookiesAlways), the
	//     extension only supplies the SYN-ACK's options and is dropped
	//     (see NewCookieExtension to use another factory for those);
	//   - for the ACK completing a SYN-cookie handshake (no SYN, a valid
	//     cookie): the endpoint is built from that ACK with the returned
	//     extension attached, which then sees exactly what it sees after a
	//     queued SYN from the third ACK on: StateChanged(CLOSED,
	//     SYN-RECEIVED), Incoming(ack, SYN-RECEIVED) for that same ACK
	//     (same options, payload included), StateChanged(SYN-RECEIVED,
	//     ESTABLISHED), then every later segment. The extension must
	//     rebuild its state from the ACK alone: MP_CAPABLE echoes both keys
	//     there for this reason (RFC 8684 §3.1). VerdictDrop ignores the ACK
	//     (the peer retransmits it or its first data), VerdictReset answers
	//     it with a RST.
	//
	// Both calls are made from HandleSegment, under the listener's
	// serialisation; a factory can tell them apart by seg.Flags (FlagSYN).
	NewExtension func(flow FlowID, seg *Segment) (Extension, Verdict)
	// NewCookieExtension, if set, replaces NewExtension for SYNs answered
	// with a SYN cookie. Its extension supplies the SYN-ACK's options
	// (SegmentOptions is its only call) and is dropped at once, so it
	// should keep no per-connection state: under a SYN flood it runs for
	// every SYN. NewExtension still builds the extension of the cookie
	// ACK's endpoint.
	NewCookieExtension func(flow FlowID, seg *Segment) (Extension, Verdict)
	// AcceptSynData accepts the data of a queued SYN (TCP Fast Open
	// without a cookie, RFC 7413 §4.2's "server cookie not required"
	// mode, which an RFC 8803 Transport Converter uses): the SYN-ACK
	// acknowledges it and the endpoint holds it as a prefix that comes
	// before its byte stream (see Endpoint.SynData). Data in a SYN
	// answered with a cookie is never accepted (the client sends it again
	// after the handshake), so a SYN flood cannot make the listener keep
	// any.
	AcceptSynData bool
}

// SetAcceptSynData sets ListenerConfig.AcceptSynData for the SYNs that
// follow.
func (l *Listener) SetAcceptSynData(on bool) { l.cfg.AcceptSynData = on }

// ListenerStats counts a Listener's decisions.
type ListenerStats struct {
	SynsReceived   uint64
	HalfOpen       int
	QueueOverflows uint64 // SYNs answered with a cookie or dropped: queue full
	CookiesSent    uint64
	CookiesValid   uint64
	CookiesInvalid uint64
	Resets         uint64 // RSTs sent (bad ACKs, extension refusals)
	// HalfOpenPruned counts SYN-RECEIVED endpoints that timed out before
	// SynRetries because the SYN queue was more than half full of old
	// ones (see synQueue.retries).
	HalfOpenPruned uint64
	// SynData counts SYNs whose data was accepted (AcceptSynData).
	SynData uint64
}

// Listener is the passive-open side (RFC 9293 §3.10.7.2, LISTEN state):
// it turns SYNs into SYN-RECEIVED endpoints, bounded by Backlog, and falls
// back to stateless SYN cookies when the queue is full.
//
// The adapter routes to HandleSegment every segment for the listening
// address and port that matches no existing endpoint. Like Endpoint, a
// Listener is not safe for concurrent use.
type Listener struct {
	cfg   ListenerConfig
	stats ListenerStats
	q     *synQueue
}

// synQueue is a Listener's SYN queue as its SYN-RECEIVED endpoints share
// it. Its counters are atomic because endpoints enter the queue under the
// listener's serialisation but leave it, and time out, under their own
// (segments, timers, Abort).
type synQueue struct {
	backlog int
	// halfOpen counts endpoints in SYN-RECEIVED; young those of them whose
	// SYN-ACK has not timed out yet (Linux's qlen and young).
	halfOpen, young atomic.Int64
	pruned          atomic.Uint64
}

// synPruneMinRetries is the fewest SYN-ACK retransmissions a half-open
// endpoint gets while the queue is clogged with old ones. Linux keeps two;
// with the SYN-ACK timer at 1 s doubling, that holds a flood's endpoints
// 7 s, and one (3 s) lets a listener leave cookie mode within a few
// seconds after a flood stops. A genuine peer that lost two SYN-ACKs then
// retransmits its SYN and gets a cookie or a fresh endpoint.
const synPruneMinRetries = 1

// enter counts e into the queue as a young half-open endpoint.
func (q *synQueue) enter(e *Endpoint) {
	q.halfOpen.Add(1)
	q.young.Add(1)
	e.synq, e.synYoung = q, true
}

// leave counts an endpoint out of the queue when it leaves SYN-RECEIVED.
func (q *synQueue) leave(young bool) {
	q.halfOpen.Add(-1)
	if young {
		q.young.Add(-1)
	}
}

// retries is the number of SYN-ACK retransmissions a half-open endpoint
// gets: limit normally. When more than half the queue (at least 8) is
// taken, old endpoints (those whose SYN-ACK timed out already) are pruned
// without pity, as Linux's reqsk_timer_handler does: one retry less for
// each halving of the share of young endpoints below half, down to
// synPruneMinRetries. Half the room stays reserved for young endpoints,
// so a queue filled by a flood that nobody answers empties within a few
// SYN-ACK timeouts once the flood stops, while connections that complete
// before their first timeout are unaffected.
func (q *synQueue) retries(limit int) int {
	n := q.halfOpen.Load()
	if 2*n <= int64(max(8, q.backlog)) {
		return limit
	}
	young := 2 * q.young.Load()
	r := limit
	for r > synPruneMinRetries && n >= young {
		r--
		young *= 2
	}
	return r
}

// NewListener returns a listener.
func NewListener(cfg ListenerConfig) (*Listener, error) {
	if cfg.Config.Clock == nil {
		return nil, ErrInvalidState
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog
	}
	cfg.Config.setDefaults()
	return &Listener{cfg: cfg, q: &synQueue{backlog: cfg.Backlog}}, nil
}

// Stats returns the listener's counters.
func (l *Listener) Stats() ListenerStats {
	st := l.stats
	st.HalfOpen = int(l.q.halfOpen.Load())
	st.HalfOpenPruned = l.q.pruned.Load()
	return st
}

// ISN computes an initial sequence number per RFC 6528: a keyed hash of
// the four-tuple plus a 4-microsecond clock.
func ISN(secret *[32]byte, flow FlowID, now tcpip.MonotonicTime) seqnum.Value {
	h := flowHash(secret, flow, 0, 0)
	return seqnum.Value(h + uint32(now.Sub(tcpip.MonotonicTime{}).Microseconds()/4))
}

func flowHash(secret *[32]byte, flow FlowID, a, b uint32) uint32 {
	var buf [32 + 16 + 16 + 4 + 4 + 4]byte
	n := copy(buf[:], secret[:])
	n += copy(buf[n:], flow.LocalAddr.AsSlice())
	n += copy(buf[n:], flow.RemoteAddr.AsSlice())
	binary.BigEndian.PutUint16(buf[n:], flow.LocalPort)
	binary.BigEndian.PutUint16(buf[n+2:], flow.RemotePort)
	binary.BigEndian.PutUint32(buf[n+4:], a)
	binary.BigEndian.PutUint32(buf[n+8:], b)
	sum := sha256.Sum256(buf[:n+12])
	return binary.BigEndian.Uint32(sum[:])
}

// cookieMSS are the MSS values a cookie can encode (3 bits).
var cookieMSS = [8]uint16{536, 1200, 1220, 1360, 1400, 1440, 1452, 1460}

// cookiePeriod is the cookie clock tick (Linux uses 60 s; a cookie is
// valid for the current and the previous tick).
const cookiePeriodSec = 64

// HandleSegment processes a segment for the listening port. It returns a
// new endpoint that the caller must register under flow (in SYN-RECEIVED
// after a queued SYN, ESTABLISHED after a valid cookie ACK), or nil. out
// is the new endpoint's Output, also used for stateless replies; if it
// implements Notifier it also receives the new endpoint's events.
func (l *Listener) HandleSegment(flow FlowID, seg *Segment, out Output) *Endpoint {
	switch {
	case seg.Flags&FlagRST != 0:
		return nil
	case seg.Flags&FlagACK != 0:
		if seg.Flags&FlagSYN == 0 && l.cfg.Cookies != CookiesNever {
			if ep, valid := l.cookieAck(flow, seg, out); valid {
				// The endpoint, or the extension's verdict, dealt
				// with the ACK; nil when it was refused.
				return ep
			}
		}
		l.stats.Resets++
		l.reset(seg, out)
		return nil
	case seg.Flags&FlagSYN == 0:
		return nil
	}
	l.stats.SynsReceived++
	full := l.q.halfOpen.Load() >= int64(l.cfg.Backlog)
	if full && l.cfg.Cookies == CookiesNever {
		l.stats.QueueOverflows++
		return nil
	}
	stateless := full || l.cfg.Cookies == CookiesAlways
	factory := l.cfg.NewExtension
	if stateless && l.cfg.NewCookieExtension != nil {
		factory = l.cfg.NewCookieExtension
	}
	var ext Extension
	if factory != nil {
		var v Verdict
		ext, v = factory(flow, seg)
		switch v {
		case VerdictDrop:
			return nil
		case VerdictReset:
			l.stats.Resets++
			l.resetSyn(seg, out)
			return nil
		}
	}
	if stateless {
		if full {
			l.stats.QueueOverflows++
		}
		l.sendCookie(flow, seg, out, ext)
		return nil
	}
	cfg := l.cfg.Config
	cfg.Output, cfg.Extension = out, ext
	setNotify(&cfg, out)
	cfg.ISS = ISN(&l.cfg.Secret, flow, cfg.Clock.NowMonotonic())
	cfg.TSOffset = flowHash(&l.cfg.Secret, flow, 1, 0)
	e, err := NewEndpoint(cfg)
	if err != nil {
		return nil
	}
	l.q.enter(e)
	e.irs = seg.Seq
	e.rb.nxt, e.rb.readOff, e.rcvAdvEdge = 1, 1, 1
	e.negotiate(&seg.Options)
	if n := min(len(seg.Payload), MaxSynData); l.cfg.AcceptSynData && n > 0 && seg.Flags&FlagFIN == 0 {
		// The data is a prefix of the stream: the relative sequence
		// numbers (and MPTCP's subflow sequence numbers, as Linux's
		// mptcp_fastopen_subflow_synack_set_params counts them) start
		// after it, so the SYN-ACK acknowledges it.
		e.synRcvd = append([]byte(nil), seg.Payload[:n]...)
		e.synRcvdLen = n
		e.irs = seg.Seq.Add(seqnum.Size(n))
		e.info.SynData = n
		l.stats.SynData++
	}
	e.setState(StateSynRcvd)
	e.sendSYN(true)
	e.flushNotify()
	return e
}

// Notifier is implemented by an Output that also wants the readiness
// events of the endpoint it serves. A Listener creates endpoints from a
// shared template, so the per-connection Output passed to HandleSegment is
// the only per-connection hook: if it implements Notifier, its Notify
// replaces Config.Notify for the new endpoint.
type Notifier interface {
	Notify(Events)
}

func setNotify(cfg *Config, out Output) {
	if n, ok := out.(Notifier); ok {
		cfg.Notify = n.Notify
	}
}

// reset answers a stray ACK: <SEQ=SEG.ACK><CTL=RST> (RFC 9293 §3.10.7.2).
func (l *Listener) reset(seg *Segment, out Output) {
	out.WriteSegment(&OutSegment{Seq: seg.Ack, Flags: FlagRST})
}

// resetSyn refuses a SYN: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
func (l *Listener) resetSyn(seg *Segment, out Output) {
	out.WriteSegment(&OutSegment{Ack: seg.Seq.Add(seqnum.Size(seg.logicalLen())), Flags: FlagRST | FlagACK})
}

// cookie computes the SYN cookie ISS for a SYN (RFC 4987 §3.6): 5 bits of
// time, 3 bits of MSS index, 24 bits of keyed hash.
func (l *Listener) cookie(flow FlowID, peerISN seqnum.Value, tick uint32, mssIdx uint32) seqnum.Value {
	h := flowHash(&l.cfg.Secret, flow, uint32(peerISN), tick<<8|mssIdx)
	return seqnum.Value((tick&0x1f)<<27 | (mssIdx&7)<<24 | h&0xffffff)
}

func (l *Listener) tick() uint32 {
	return uint32(l.cfg.Config.Clock.NowMonotonic().Sub(tcpip.MonotonicTime{}).Seconds() / cookiePeriodSec)
}

// Timestamp bits carrying the peer's window scale and SACK-permitted
// through a cookie (as Linux does in the low bits of TSval).
const (
	tsBitsMask = 0x1f
	tsNoWScale = 0xf
	tsSACKBit  = 0x10
)

func (l *Listener) sendCookie(flow FlowID, seg *Segment, out Output, ext Extension) {
	o := &seg.Options
	idx := uint32(0)
	peerMSS := uint16(536)
	if o.HasMSS {
		peerMSS = o.MSS
	}
	for i := len(cookieMSS) - 1; i >= 0; i-- {
		if cookieMSS[i] <= peerMSS {
			idx = uint32(i)
			break
		}
	}
	iss := l.cookie(flow, seg.Seq, l.tick(), idx)
	cfg := l.cfg.Config
	tmp := &Endpoint{cfg: cfg, clock: cfg.Clock, out: out, ext: ext, iss: iss, irs: seg.Seq}
	tmp.cfg.TSOffset = flowHash(&l.cfg.Secret, flow, 1, 0)
	tmp.rb.readOff, tmp.rb.nxt = 1, 1
	tmp.tsOK = o.HasTimestamp && !cfg.DisableTimestamps
	if tmp.tsOK {
		tmp.tsRecent = o.TSVal
		bits := uint32(tsNoWScale)
		if o.HasWindowScale && !cfg.DisableWScale {
			tmp.wsOK = true
			tmp.rcvWS = windowScaleFor(cfg.MaxReceiveBuffer)
			bits = uint32(min(o.WindowScale, 14))
		}
		if o.SACKPermitted && !cfg.DisableSACK {
			tmp.sackOK = true
			bits |= tsSACKBit
		}
		// Our TSval must not run backwards later: round it down.
		tmp.cfg.TSOffset -= 64
		tmp.cfg.TSOffset -= (tmp.tsNow() & tsBitsMask) - bits
	}
	l.stats.CookiesSent++
	tmp.transmit(FlagSYN|FlagACK, 0, nil, 0, false)
}

// cookieAck validates the ACK of a cookie SYN-ACK and builds the endpoint.
// valid reports a valid cookie: the ACK was then dealt with here (the
// endpoint is nil when the extension factory or the endpoint refused it);
// otherwise the caller answers it as a stray ACK.
func (l *Listener) cookieAck(flow FlowID, seg *Segment, out Output) (e *Endpoint, valid bool) {
	iss := seg.Ack - 1
	peerISN := seg.Seq - 1
	c := uint32(iss)
	tick, idx := c>>27, (c>>24)&7
	now := l.tick()
	if tick != now&0x1f && tick != (now-1)&0x1f {
		return nil, false
	}
	if l.cookie(flow, peerISN, tick, idx) != iss {
		l.stats.CookiesInvalid++
		return nil, false
	}
	l.stats.CookiesValid++
	var ext Extension
	if l.cfg.NewExtension != nil {
		var v Verdict
		ext, v = l.cfg.NewExtension(flow, seg)
		switch v {
		case VerdictDrop:
			return nil, true
		case VerdictReset:
			l.stats.Resets++
			l.reset(seg, out)
			return nil, true
		}
	}
	cfg := l.cfg.Config
	cfg.Output, cfg.Extension, cfg.ISS = out, ext, iss
	setNotify(&cfg, out)
	cfg.TSOffset = flowHash(&l.cfg.Secret, flow, 1, 0)
	e, err := NewEndpoint(cfg)
	if err != nil {
		return nil, true
	}
	opts := options.TCPOptions{HasMSS: true, MSS: cookieMSS[idx]}
	if seg.Options.HasTimestamp && !cfg.DisableTimestamps {
		opts.HasTimestamp, opts.TSVal = true, seg.Options.TSVal
		bits := seg.Options.TSEcr & tsBitsMask
		if ws := bits & tsNoWScale; ws != tsNoWScale {
			opts.HasWindowScale, opts.WindowScale = true, uint8(ws)
		}
		opts.SACKPermitted = bits&tsSACKBit != 0
	}
	e.irs = peerISN
	e.rb.nxt, e.rb.readOff = 1, 1
	e.negotiate(&opts)
	e.rcvAdvEdge = 1 + uint64(min(cfg.ReceiveBuffer, 0xffff))
	e.sndNxt = 1
	e.backoff = 1 // no RTT sample from a SYN-ACK we did not time
	e.setState(StateSynRcvd)
	e.HandleSegment(seg)
	if e.state == StateSynRcvd || e.state == StateClosed {
		// The extension dropped the ACK or reset the connection (the
		// endpoint sent the RST).
		return nil, true
	}
	return e, true
}
