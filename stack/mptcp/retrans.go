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
}

// period returns the timer's current period for c.
func (t *rtxTimer) period(c *Conn) time.Duration {
	d := rtxMin
	for _, s := range c.subflows {
		if s.ep != nil && s.ep.State() >= tcp.StateEstablished {
			d = max(d, s.ep.RTO())
		}
	}
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
	s := c.idleSubflow()
	if s == nil {
		// Every subflow still has data of its own in flight: their
		// retransmission timers act first. Look again a period later.
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
	c.rtx.backoff++
	c.rtx.arm(c)
}

// idleSubflow returns a subflow that may send and has nothing of its own
// unacknowledged (every byte enqueued on it acknowledged), or nil.
func (c *Conn) idleSubflow() *Subflow {
	for _, s := range c.subflows {
		if s.ep != nil && canSend(s.ep.State()) && !s.closing && s.ep.SndUnaRel()-1 == s.enqueued {
			return s
		}
	}
	return nil
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
