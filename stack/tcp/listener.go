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
	// NewExtension, if set, is called for each SYN (and for the ACK that
	// completes a SYN-cookie handshake, when the SYN left no state): it
	// inspects the segment's options and returns the connection's
	// Extension (nil for plain TCP, e.g. a SYN without MP_CAPABLE) and a
	// verdict. VerdictReset refuses with a RST, VerdictDrop ignores the
	// segment. An extension used for a cookie SYN-ACK is discarded after
	// SegmentOptions; it must be able to rebuild its state from the ACK
	// (MP_CAPABLE echoes both keys there for this reason, RFC 8684 §3.1).
	NewExtension func(flow FlowID, seg *Segment) (Extension, Verdict)
}

// ListenerStats counts a Listener's decisions.
type ListenerStats struct {
	SynsReceived   uint64
	HalfOpen       int
	QueueOverflows uint64 // SYNs answered with a cookie or dropped: queue full
	CookiesSent    uint64
	CookiesValid   uint64
	CookiesInvalid uint64
	Resets         uint64 // RSTs sent (bad ACKs, extension refusals)
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
	// halfOpen counts endpoints in SYN-RECEIVED. It is atomic because
	// endpoints leave that state under their own serialisation (segments,
	// timers, Abort), not the listener's.
	halfOpen atomic.Int64
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
	return &Listener{cfg: cfg}, nil
}

// Stats returns the listener's counters.
func (l *Listener) Stats() ListenerStats {
	st := l.stats
	st.HalfOpen = int(l.halfOpen.Load())
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
			if ep := l.cookieAck(flow, seg, out); ep != nil {
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
	var ext Extension
	if l.cfg.NewExtension != nil {
		var v Verdict
		ext, v = l.cfg.NewExtension(flow, seg)
		switch v {
		case VerdictDrop:
			return nil
		case VerdictReset:
			l.stats.Resets++
			l.resetSyn(seg, out)
			return nil
		}
	}
	full := l.halfOpen.Load() >= int64(l.cfg.Backlog)
	if full || l.cfg.Cookies == CookiesAlways {
		if full {
			l.stats.QueueOverflows++
		}
		if l.cfg.Cookies != CookiesNever {
			l.sendCookie(flow, seg, out, ext)
		}
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
	l.halfOpen.Add(1)
	e.leaveSynRcvd = func() { l.halfOpen.Add(-1) }
	e.irs = seg.Seq
	e.rb.nxt, e.rb.readOff, e.rcvAdvEdge = 1, 1, 1
	e.negotiate(&seg.Options)
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
func (l *Listener) cookieAck(flow FlowID, seg *Segment, out Output) *Endpoint {
	iss := seg.Ack - 1
	peerISN := seg.Seq - 1
	c := uint32(iss)
	tick, idx := c>>27, (c>>24)&7
	now := l.tick()
	if tick != now&0x1f && tick != (now-1)&0x1f {
		return nil
	}
	if l.cookie(flow, peerISN, tick, idx) != iss {
		l.stats.CookiesInvalid++
		return nil
	}
	l.stats.CookiesValid++
	var ext Extension
	if l.cfg.NewExtension != nil {
		var v Verdict
		if ext, v = l.cfg.NewExtension(flow, seg); v != VerdictAccept {
			return nil
		}
	}
	cfg := l.cfg.Config
	cfg.Output, cfg.Extension, cfg.ISS = out, ext, iss
	setNotify(&cfg, out)
	cfg.TSOffset = flowHash(&l.cfg.Secret, flow, 1, 0)
	e, err := NewEndpoint(cfg)
	if err != nil {
		return nil
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
		return nil
	}
	return e
}
