package stack

import (
	"sync/atomic"
	"time"

	"github.com/mptund/mptund/stack/mptcp"
)

// EventKind names what happened to an MPTCP connection.
type EventKind string

// The event kinds of an EventLog.
const (
	EventConnEstablished    EventKind = "established"
	EventConnClosed         EventKind = "closed"
	EventFallback           EventKind = "fallback"
	EventSubflowAdded       EventKind = "subflow-added"
	EventSubflowEstablished EventKind = "subflow-established"
	EventSubflowClosed      EventKind = "subflow-closed"
	EventSubflowPriority    EventKind = "subflow-priority"
	EventAddressAnnounced   EventKind = "address-announced"
	EventAddressRemoved     EventKind = "address-removed"
	EventReinjected         EventKind = "reinjected"
)

// Event is one event of an engine's MPTCP connections (the path manager's
// and the subflows' life), as an EventLog delivers it.
type Event struct {
	Time time.Time
	Kind EventKind
	// Token is the connection's local token (RFC 8684 §3.2).
	Token uint32
	// Subflow is set for subflow events.
	Subflow *mptcp.SubflowInfo `json:",omitempty"`
	// Address and AddrID are set for address events; Local says whether
	// the address is ours (announced, removed) or the peer's.
	Address *mptcp.Address `json:",omitempty"`
	AddrID  uint8          `json:",omitempty"`
	Local   bool           `json:",omitempty"`
	// Fallback is the reason of a fallback; Err why a connection or
	// subflow ended (empty when clean).
	Fallback string `json:",omitempty"`
	Err      string `json:",omitempty"`
	// Bytes re-sent by a reinjection, from and to the given subflow IDs.
	Bytes    int    `json:",omitempty"`
	From, To uint32 `json:",omitempty"`
}

// EventLog turns an engine's MPTCP tracer hooks into a stream of Events
// on a bounded channel, for the daemon, monitoring and tests: set
// MPTCPConfig.Tracer to its Tracer. Events are never waited for: when the
// channel is full they are dropped and counted (the hooks run with a
// connection's lock held). Safe for concurrent use.
type EventLog struct {
	ch      chan Event
	dropped atomic.Uint64
	tracer  *mptcp.Tracer
}

// NewEventLog returns a log holding up to n undelivered events.
func NewEventLog(n int) *EventLog {
	l := &EventLog{ch: make(chan Event, max(n, 1))}
	put := func(e Event) {
		e.Time = time.Now()
		select {
		case l.ch <- e:
		default:
			l.dropped.Add(1)
		}
	}
	tok := func(c *mptcp.Conn) uint32 { return c.Info().LocalToken }
	errStr := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	l.tracer = &mptcp.Tracer{
		Established: func(c *mptcp.Conn) { put(Event{Kind: EventConnEstablished, Token: tok(c)}) },
		Closed:      func(c *mptcp.Conn, err error) { put(Event{Kind: EventConnClosed, Token: tok(c), Err: errStr(err)}) },
		Fallback: func(c *mptcp.Conn, r mptcp.FallbackReason) {
			put(Event{Kind: EventFallback, Token: tok(c), Fallback: r.String()})
		},
		SubflowAdded: func(c *mptcp.Conn, s mptcp.SubflowInfo) {
			put(Event{Kind: EventSubflowAdded, Token: tok(c), Subflow: &s})
		},
		SubflowEstablished: func(c *mptcp.Conn, s mptcp.SubflowInfo) {
			put(Event{Kind: EventSubflowEstablished, Token: tok(c), Subflow: &s})
		},
		SubflowClosed: func(c *mptcp.Conn, s mptcp.SubflowInfo, err error) {
			put(Event{Kind: EventSubflowClosed, Token: tok(c), Subflow: &s, Err: errStr(err)})
		},
		SubflowPriority: func(c *mptcp.Conn, s mptcp.SubflowInfo, local bool) {
			put(Event{Kind: EventSubflowPriority, Token: tok(c), Subflow: &s, Local: local})
		},
		AddressAnnounced: func(c *mptcp.Conn, a mptcp.Address, local bool) {
			put(Event{Kind: EventAddressAnnounced, Token: tok(c), Address: &a, AddrID: a.ID, Local: local})
		},
		AddressRemoved: func(c *mptcp.Conn, id uint8, local bool) {
			put(Event{Kind: EventAddressRemoved, Token: tok(c), AddrID: id, Local: local})
		},
		Reinjected: func(c *mptcp.Conn, n int, from, to uint32) {
			put(Event{Kind: EventReinjected, Token: tok(c), Bytes: n, From: from, To: to})
		},
	}
	return l
}

// Tracer returns the hooks to install (MPTCPConfig.Tracer, or combined
// with others through mptcp.MultiTracer).
func (l *EventLog) Tracer() *mptcp.Tracer { return l.tracer }

// Events returns the channel the events arrive on.
func (l *EventLog) Events() <-chan Event { return l.ch }

// Dropped returns how many events were dropped because the channel was
// full.
func (l *EventLog) Dropped() uint64 { return l.dropped.Load() }
