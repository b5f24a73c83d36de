package main

import (
	"encoding/json"
	"io"
	"net/netip"
	"time"

	"github.com/mptund/mptund/internal/capture"
	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/tun"
)

// Report is what --stats prints at exit: one JSON object, on one line of
// stderr. Durations are in seconds; tcp.Info's durations are in
// nanoseconds (its fields carry no JSON tags). The run's goroutine fills
// it in; it is not safe for concurrent use.
type Report struct {
	Command   string         `json:"command"` // "connect" or "listen"
	TUN       string         `json:"tun"`
	MTU       int            `json:"mtu"`
	Addrs     []netip.Prefix `json:"addrs"` // the engine's
	PeerAddrs []netip.Prefix `json:"peer_addrs,omitempty"`
	// Target is the address dialed (connect) or listened on (listen).
	Target   string    `json:"target"`
	Start    time.Time `json:"start"`
	Duration float64   `json:"duration_s"`
	// BytesSent and BytesReceived add up the connections: bytes taken from
	// stdin by the connection, and bytes written to stdout.
	BytesSent     uint64       `json:"bytes_sent"`
	BytesReceived uint64       `json:"bytes_received"`
	Connections   []ConnReport `json:"connections"`
	Engine        stack.Stats  `json:"engine"`
	// MPTCP is the engine's MPTCP counters, named like the kernel's
	// MPTcpExt counters.
	MPTCP map[string]uint64 `json:"mptcp,omitempty"`
	// Link counts the first TUN's packets ("RX": device to engine);
	// Paths every TUN's, by name, when there are several.
	Link    tun.Stats            `json:"link"`
	Paths   map[string]tun.Stats `json:"paths,omitempty"`
	Capture *capture.Stats       `json:"capture,omitempty"`
	// Error is how the run failed, empty after a clean end.
	Error string `json:"error,omitempty"`
}

// ConnReport describes one connection, at the end of its closing
// handshake (or when the wait for it gave up).
//
// The MPTCP issue adds the connection's data-level view here (a
// stack.ConnInfo with its subflows), next to the TCP view of the
// connection's first subflow.
type ConnReport struct {
	Local    netip.AddrPort `json:"local"`
	Remote   netip.AddrPort `json:"remote"`
	Start    time.Time      `json:"start"`
	Duration float64        `json:"duration_s"`
	// BytesSent: from stdin, accepted by the connection; BytesReceived:
	// from the connection, written to stdout.
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	// BytesUndelivered: sent bytes the peer never acknowledged (at the
	// data level with MPTCP); non-zero only for a run that failed.
	BytesUndelivered uint64 `json:"bytes_undelivered,omitempty"`
	// State is the TCP state at the end ("TIME-WAIT" after a clean close).
	State string   `json:"state"`
	TCP   tcp.Info `json:"tcp"`
	// MPTCP is the data-level view: MPTCP in use or why it fell back,
	// tokens, checksums, data-level counters, per-subflow state.
	MPTCP *stack.ConnInfo `json:"mptcp,omitempty"`
	Error string          `json:"error,omitempty"`
}

func (r *Report) addConn(c ConnReport) {
	r.Connections = append(r.Connections, c)
	r.BytesSent += c.BytesSent
	r.BytesReceived += c.BytesReceived
}

// finish records the duration and how the run ended.
func (r *Report) finish(err error) {
	r.Duration = time.Since(r.Start).Seconds()
	if err != nil {
		r.Error = err.Error()
	}
	if r.Connections == nil {
		r.Connections = []ConnReport{}
	}
}

// write prints the report as one line of JSON.
func (r *Report) write(w io.Writer) error {
	return json.NewEncoder(w).Encode(r)
}
