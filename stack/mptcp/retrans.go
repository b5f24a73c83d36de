package mptcp

import (
	"time"

	"github.com/mptund/mptund/dsnmap"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Data-level retransmission (RFC 8684 §3.3.6).
//
// A subflow retransmits what its own acknowledgement does not cover, but
// bytes a subflow acknowledged can still be missing at the data level: the
// peer's connection-level receive buffer dropped them (out of window, a
// bound on out-of-order data), or the peer acknowledged them on the subflow
// before they reached its connection level and has no reason to send a
// fresh Data ACK (Linux acknowledges a subflow segment before it moves the
// data to the MPTCP socket, so the Data ACK those ACKs carry can be stale).
// Waiting forever on either would stall the connection with the window
// full; so, like Linux's MPTCP retransmission timer, the connection keeps
// one timer of its own:
//
//   - it runs while data or the DATA_FIN is unacknowledged at the data
//     level, restarting at every data-level acknowledgement;
//   - its period is the largest RTO of the subflows, at least rtxMin,
//     doubled at each expiry up to rtxMax;
//   - on expiry it re-sends the oldest unacknowledged data (one chunk,
//     with its original data sequence numbers, as a new mapping) on a
//     subflow whose own send queue is empty: a subflow with data in flight
//     is still recovering its losses itself; or it re-signals the DATA_FIN
//     alone when only that is outstanding.
//
// The peer discards what it already has (counted as duplicate data) and
// answers with a current Data ACK, which also reopens a window that looked
// closed; data it had dropped arrives again. The same machinery re-hands
// data to another subflow when one fails, once there are several.

// rtxTimer is the data-level retransmission timer.
type rtxTimer struct {
	at      tcpip.MonotonicTime
	armed   bool
	backoff int
	// last is the subflow the last retransmission went on.
	last    uint32
	lastSet bool
}

// period returns the timer's current period for c: the smallest RTO of
// the subflows that are not stale (a dead path's backed-off RTO must not
// delay the failover), at least rtxMin, doubled per expiry.
func (t *rtxTimer) period(c *Conn) time.Duration {
	var d time.Duration
	for _, s := range c.subflows {
		if s.usable() && !s.stale {
			if r := s.ep.RTO(); d == 0 || r < d {
				d = r
			}
		}
	}
	d = max(d, rtxMin)
	return min(d<<min(t.backoff, 16), rtxMax)
}

// arm starts the timer if it is not running (something was sent).
func (t *rtxTimer) arm(c *Conn) {
	if t.armed || !c.outstanding() {
		return
	}
	t.at, t.armed = c.cfg.Clock.NowMonotonic().Add(t.period(c)), true
	c.notify(tcp.EventTimer)
}

// progress restarts the timer after a data-level acknowledgement.
func (t *rtxTimer) progress(c *Conn) {
	t.backoff = 0
	t.armed = false
	if c.outstanding() {
		t.arm(c)
	} else {
		c.notify(tcp.EventTimer)
	}
}

func (t *rtxTimer) stop() { t.armed, t.backoff = false, 0 }

func (t *rtxTimer) due(now tcpip.MonotonicTime) bool { return t.armed && !now.Before(t.at) }

// onRetransmitTimer is the timer's expiry (see above).
func (c *Conn) onRetransmitTimer(now tcpip.MonotonicTime) {
	c.rtx.armed = false
	if !c.outstanding() || c.fallback != FallbackNone {
		c.rtx.backoff = 0
		return
	}
	c.markStale()
	s := c.retransmitSubflow()
	if s == nil {
		// Every subflow still has data of its own in flight: their
		// retransmission timers act first (and stale ones had their data
		// queued for the others). Look again a period later.
		c.push()
		c.rtx.backoff++
		c.rtx.arm(c)
		return
	}
	if c.sndNxt != c.sndUna {
		n := min(int(c.sndNxt-c.sndUna), s.ep.ChunkSize(), s.ep.SendBufferFree())
		if v := c.snd.At(0, n); v != nil {
			k := v.Size()
			if c.enqueue(s, v, c.sndUna) {
				c.stats.Retransmits++
				c.stats.RetransBytes += uint64(k)
				c.cfg.MIB.Inc(MPTCPRetrans)
			} else {
				v.Release()
			}
		}
	} else {
		// Only the DATA_FIN is outstanding: it rides on a pure ACK.
		c.stats.DataFINRetransmits++
		s.ep.SendAck()
	}
	c.rtx.last, c.rtx.lastSet = s.id, true
	c.rtx.backoff++
	c.rtx.arm(c)
}

// retransmitSubflow picks the subflow for a data-level retransmission: an
// idle one (idleSubflow), but not the one used the last time when another
// can take it: bytes re-sent there may sit behind data the peer's
// connection level has no room for on that subflow (Linux moves a
// subflow's bytes to the MPTCP socket in order), so the next attempt goes
// elsewhere.
func (c *Conn) retransmitSubflow() *Subflow {
	var idle, idleLast, busy *Subflow
	for _, s := range c.subflows {
		if !s.usable() || s.stale {
			continue
		}
		last := c.rtx.lastSet && s.id == c.rtx.last
		switch {
		case s.queued() == 0 && last:
			idleLast = s
		case s.queued() == 0:
			if idle == nil || (idle.Backup() && !s.Backup()) {
				idle = s
			}
		case !last && s.CanTake() && busy == nil:
			busy = s
		}
	}
	switch {
	case idle != nil:
		return idle
	case idleLast != nil && busy != nil:
		return busy
	}
	return idleLast
}

// markStale marks the subflows whose acknowledgement has not moved since
// the previous expiry of the retransmission timer while they had data
// outstanding: their path may be broken (a link down, a blackhole). Their
// unacknowledged data is queued for the other subflows, and the scheduler
// avoids them until they make progress again (Linux's stale subflows).
func (c *Conn) markStale() {
	live := 0
	for _, s := range c.subflows {
		if s.usable() {
			live++
		}
	}
	for _, s := range c.subflows {
		if !s.usable() {
			continue
		}
		una := s.ep.SndUnaRel()
		if s.queued() > 0 && s.rtxMarked && una == s.rtxMark && !s.stale && live > 1 {
			s.stale = true
			c.cfg.MIB.Inc(SubflowStale)
			c.reinjectFrom(s)
		}
		s.rtxMark, s.rtxMarked = una, true
	}
}

// dsnRange is a range of data sequence numbers [start, end) to re-send;
// from is the subflow it was first sent on.
type dsnRange struct {
	start, end dsnmap.DSN
	from       uint32
}

// reinjectFrom queues the data mapped on s and not yet acknowledged at
// the data level for the other subflows (RFC 8684 §3.3.6).
func (c *Conn) reinjectFrom(s *Subflow) {
	if c.fallback != FallbackNone || c.state == StateReset {
		return
	}
	for _, r := range s.txq {
		start, end := r.dsn, r.dsn+dsnmap.DSN(r.len)
		if int64(end-c.sndUna) <= 0 {
			continue
		}
		if int64(start-c.sndUna) < 0 {
			start = c.sndUna
		}
		c.addReinject(dsnRange{start: start, end: end, from: s.id})
	}
	c.notify(tcp.EventWritable)
}

// addReinject merges r into the reinjection queue, bounded by the send
// buffer (every range lies within [sndUna, sndNxt)).
func (c *Conn) addReinject(r dsnRange) {
	if int64(r.end-c.sndNxt) > 0 {
		r.end = c.sndNxt
	}
	if int64(r.end-r.start) <= 0 {
		return
	}
	q := c.reinj
	i := 0
	for i < len(q) && int64(q[i].end-r.start) < 0 {
		i++
	}
	// Merge with every range it overlaps or touches.
	j := i
	for j < len(q) && int64(q[j].start-r.end) <= 0 {
		if int64(q[j].start-r.start) < 0 {
			r.start = q[j].start
		}
		if int64(q[j].end-r.end) > 0 {
			r.end = q[j].end
		}
		j++
	}
	q = append(q[:i], append([]dsnRange{r}, q[j:]...)...)
	c.reinj = q
}

// pushReinjections re-sends queued ranges on subflows other than the
// one they were sent on, as far as the subflows take them.
func (c *Conn) pushReinjections(cands []*Subflow) {
	for len(c.reinj) > 0 {
		r := &c.reinj[0]
		if int64(r.end-c.sndUna) <= 0 {
			c.reinj = c.reinj[1:]
			continue
		}
		if int64(r.start-c.sndUna) < 0 {
			r.start = c.sndUna
		}
		var to *Subflow
		for _, s := range cands {
			if s.id != r.from && !s.stale && s.CanTake() && (to == nil || (to.Backup() && !s.Backup())) {
				to = s
			}
		}
		if to == nil {
			return
		}
		n := min(int(r.end-r.start), to.ep.ChunkSize(), to.ep.SendBufferFree())
		v := c.snd.At(int(r.start-c.sndUna), n)
		if v == nil {
			c.reinj = c.reinj[1:]
			continue
		}
		k := v.Size()
		if !c.enqueue(to, v, r.start) {
			v.Release()
			return
		}
		c.stats.Retransmits++
		c.stats.RetransBytes += uint64(k)
		c.stats.Reinjected += uint64(k)
		c.cfg.MIB.Inc(MPTCPRetrans)
		from := r.from
		c.trace(func(t *Tracer) {
			if t.Reinjected != nil {
				t.Reinjected(c, k, from, to.id)
			}
		})
		r.start += dsnmap.DSN(k)
		if int64(r.end-r.start) <= 0 {
			c.reinj = c.reinj[1:]
		}
	}
	if len(c.reinj) == 0 {
		c.reinj = nil
	}
}

// noteAcked follows the subflow's acknowledgement through the mapping
// records of what was enqueued on it: records wholly acknowledged are
// dropped (so the table stays bounded by what is in flight on the
// subflow), and lastAckedTop becomes the highest data sequence number
// the subflow's acknowledgement has been seen to cover.
func (s *Subflow) noteAcked() {
	una := s.ep.SndUnaRel()
	k := 0
	for k < len(s.txq) {
		r := s.txq[k]
		if int32(una-(r.rel+r.len)) < 0 {
			if d := int32(una - r.rel); d > 0 {
				s.raiseAckedTop(r.dsn + dsnmap.DSN(d))
			}
			break
		}
		s.raiseAckedTop(r.dsn + dsnmap.DSN(r.len))
		k++
	}
	if una != s.rtxMark && s.stale {
		s.stale = false
		s.c.cfg.MIB.Inc(SubflowRecover)
	}
	if k == 0 {
		return
	}
	if k == len(s.txq) {
		s.txq = s.txq[:0]
		return
	}
	n := copy(s.txq, s.txq[k:])
	s.txq = s.txq[:n]
}

func (s *Subflow) raiseAckedTop(d dsnmap.DSN) {
	if int64(d-s.lastAckedTop) > 0 {
		s.lastAckedTop = d
	}
}
