package mptcp

// Tracer receives a connection's events, quic-go style: a struct of
// optional hooks, each called synchronously (with the connection's driver
// lock held: a hook must not call back into the connection, and should
// hand slow work to another goroutine) and only on a real state change.
// Several consumers combine with MultiTracer.
type Tracer struct {
	// Established: the connection runs MPTCP at the data level (or fell
	// back) after its handshake.
	Established func(c *Conn)
	// Closed: the connection ended; err is nil after a clean close.
	Closed func(c *Conn, err error)
	// Fallback: the connection fell back to plain TCP (RFC 8684 §3.7).
	Fallback func(c *Conn, reason FallbackReason)
	// SubflowAdded: a subflow is being opened (join SYN sent or received).
	SubflowAdded func(c *Conn, s SubflowInfo)
	// SubflowEstablished: a subflow can carry data.
	SubflowEstablished func(c *Conn, s SubflowInfo)
	// SubflowClosed: a subflow ended; err is why (nil for a clean close).
	SubflowClosed func(c *Conn, s SubflowInfo, err error)
	// SubflowPriority: a subflow's backup flag changed (MP_PRIO, RFC 8684
	// §3.3.8); local says which side asked.
	SubflowPriority func(c *Conn, s SubflowInfo, local bool)
	// AddressAnnounced: an ADD_ADDR was received (remote) or echoed back
	// for one we sent (local).
	AddressAnnounced func(c *Conn, a Address, local bool)
	// AddressRemoved: a REMOVE_ADDR was received (remote) or sent (local).
	AddressRemoved func(c *Conn, id uint8, local bool)
	// Reinjected: data of a failed or stalled subflow was re-sent on
	// another (bytes, from subflow id to subflow id).
	Reinjected func(c *Conn, bytes int, from, to uint32)
}

// MultiTracer returns a Tracer calling each of ts in turn.
func MultiTracer(ts ...*Tracer) *Tracer {
	var live []*Tracer
	for _, t := range ts {
		if t != nil {
			live = append(live, t)
		}
	}
	if len(live) <= 1 {
		if len(live) == 1 {
			return live[0]
		}
		return nil
	}
	m := &Tracer{}
	m.Established = func(c *Conn) {
		for _, t := range live {
			if t.Established != nil {
				t.Established(c)
			}
		}
	}
	m.Closed = func(c *Conn, err error) {
		for _, t := range live {
			if t.Closed != nil {
				t.Closed(c, err)
			}
		}
	}
	m.Fallback = func(c *Conn, r FallbackReason) {
		for _, t := range live {
			if t.Fallback != nil {
				t.Fallback(c, r)
			}
		}
	}
	m.SubflowAdded = func(c *Conn, s SubflowInfo) {
		for _, t := range live {
			if t.SubflowAdded != nil {
				t.SubflowAdded(c, s)
			}
		}
	}
	m.SubflowEstablished = func(c *Conn, s SubflowInfo) {
		for _, t := range live {
			if t.SubflowEstablished != nil {
				t.SubflowEstablished(c, s)
			}
		}
	}
	m.SubflowClosed = func(c *Conn, s SubflowInfo, err error) {
		for _, t := range live {
			if t.SubflowClosed != nil {
				t.SubflowClosed(c, s, err)
			}
		}
	}
	m.SubflowPriority = func(c *Conn, s SubflowInfo, local bool) {
		for _, t := range live {
			if t.SubflowPriority != nil {
				t.SubflowPriority(c, s, local)
			}
		}
	}
	m.AddressAnnounced = func(c *Conn, a Address, local bool) {
		for _, t := range live {
			if t.AddressAnnounced != nil {
				t.AddressAnnounced(c, a, local)
			}
		}
	}
	m.AddressRemoved = func(c *Conn, id uint8, local bool) {
		for _, t := range live {
			if t.AddressRemoved != nil {
				t.AddressRemoved(c, id, local)
			}
		}
	}
	m.Reinjected = func(c *Conn, n int, from, to uint32) {
		for _, t := range live {
			if t.Reinjected != nil {
				t.Reinjected(c, n, from, to)
			}
		}
	}
	return m
}

// trace calls f with the connection's tracer, if any.
func (c *Conn) trace(f func(t *Tracer)) {
	if c.cfg.Tracer != nil {
		f(c.cfg.Tracer)
	}
}
