package mptcp

import (
	"time"

	"github.com/mptund/mptund/dsnmap"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Connection-level receive-buffer auto-tuning (dynamic right-sizing, as
// Linux's mptcp_rcv_space_adjust). The window every subflow advertises is
// the free space of the one connection-level buffer (RFC 8684 §3.3.4), so
// the buffer must hold what all paths together deliver during the round
// trip of the slowest: data from a fast path waits there for the bytes
// still in flight on the slow one. Each round trip of the slowest
// subflow, the bytes that arrived in order are measured; when they exceed
// half the buffer, it grows to twice its size (or four times what
// arrived), up to Config.MaxReceiveBuffer. It never shrinks.

// rcvTune is the measurement epoch.
type rcvTune struct {
	at   tcpip.MonotonicTime
	from dsnmap.DSN
	// Grows counts enlargements.
	grows uint64
}

// autoTune runs after bytes arrived in order.
func (c *Conn) autoTune() {
	if c.rx == nil || c.rcvLimit >= c.cfg.MaxReceiveBuffer {
		return
	}
	var rtt time.Duration
	for _, s := range c.subflows {
		if s.usable() {
			rtt = max(rtt, s.ep.SRTT())
		}
	}
	rtt = max(rtt, time.Millisecond)
	now := c.cfg.Clock.NowMonotonic()
	if c.tune.at == (tcpip.MonotonicTime{}) {
		c.tune.at, c.tune.from = now, c.rx.Next()
		return
	}
	if now.Sub(c.tune.at) < rtt {
		return
	}
	got := uint64(c.rx.Next() - c.tune.from)
	c.tune.at, c.tune.from = now, c.rx.Next()
	if 2*got <= uint64(c.rcvLimit) {
		return
	}
	c.rcvLimit = min(c.cfg.MaxReceiveBuffer, max(2*c.rcvLimit, int(min(4*got, 1<<40))))
	c.rx.SetLimit(c.rcvLimit)
	c.tune.grows++
}
