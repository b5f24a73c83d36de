package tcp

import (
	"github.com/mptund/mptund/options"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// Verdict is an Extension's decision about an incoming segment.
type Verdict uint8

const (
	// VerdictAccept lets TCP process the segment normally.
	VerdictAccept Verdict = iota
	// VerdictDrop discards the segment silently, as if never received (no
	// ACK, no state change, no RTT sample).
	VerdictDrop
	// VerdictReset aborts the connection: the core sends a RST (asking the
	// extension for the RST's options, e.g. MP_TCPRST with its reason,
	// RFC 8684 §3.6) and moves to CLOSED with ErrAborted. From a Listener
	// factory, it refuses the SYN with a RST.
	VerdictReset
)

// SegmentInfo describes an outgoing segment to Extension.SegmentOptions.
type SegmentInfo struct {
	Flags header.TCPFlags
	Seq   seqnum.Value
	// RelSeq is Seq relative to the ISS: the first payload byte is 1
	// (the relative subflow sequence number of RFC 8684 §3.3.1).
	RelSeq uint32
	// Len is the payload length.
	Len int
	// Meta is the metadata of the chunk the payload comes from (nil for a
	// segment without payload or from plain Write data).
	Meta any
	// ChunkRelSeq and ChunkLen locate the whole chunk (relative subflow
	// sequence of its first byte, length), so that a DSS mapping covering
	// the chunk can be repeated on each of its segments.
	ChunkRelSeq uint32
	ChunkLen    int
	// Retransmit is set when the bytes (or SYN/FIN) were sent before.
	Retransmit bool
}

// Extension is how the MPTCP layer rides on a subflow (RFC 8684 §3: MPTCP
// options on every segment, mappings, a connection-level window). Plain
// TCP runs with a nil Extension. All methods are called synchronously from
// within the endpoint's methods, under the caller's serialisation; they
// must not call back into the endpoint except where stated.
//
// Hook contract, in the order the core calls them for an incoming segment:
//
//  1. TCP validation first: sequence acceptability (RFC 9293 §3.10.7.4),
//     PAWS (RFC 7323 §5), RST and SYN checks with challenge ACKs
//     (RFC 5961). Segments failing it never reach the extension (they may
//     be answered with an ACK or challenge ACK carrying extension options).
//  2. Incoming(seg, state): every segment that passed, including the
//     SYN-ACK in SYN-SENT (so a missing MP_CAPABLE can select fallback or a
//     bad MP_JOIN HMAC can be vetoed before the connection is established)
//     and the ACK completing the handshake in SYN-RECEIVED. state is the
//     state before the segment is processed. A SYN arriving at a Listener
//     is shown to the ListenerConfig.NewExtension factory instead.
//     VerdictDrop and VerdictReset take effect immediately. A RST that
//     passed validation is shown too, just before the connection resets;
//     its verdict is ignored.
//  3. TCP processes the ACK, window and SACK information, then the
//     payload: in-order bytes are handed to Deliver (when the extension
//     implements Receiver) or to the receive buffer.
//
// For every outgoing segment (SYN, SYN-ACK, data, pure ACK, FIN, RST,
// window probe, keepalive) the core calls SegmentOptions last, after TCP's
// own options (MSS/WS/SACK-permitted/timestamps) are reserved, and fills
// SACK blocks into whatever space remains.
type Extension interface {
	// SegmentOptions appends the options for an outgoing segment to dst and
	// returns it. space is the number of option bytes still free (after TCP's
	// options, before SACK blocks; options need not be padded). Options whose
	// total Len exceeds space are dropped by the layout.
	SegmentOptions(info *SegmentInfo, space int, dst []options.Option) []options.Option
	// Incoming inspects an incoming segment (see the contract above).
	Incoming(seg *Segment, state State) Verdict
	// StateChanged reports each state transition, after it happened.
	StateChanged(from, to State)
}

// Binder is implemented by extensions that keep their endpoint: the
// endpoint is handed over as soon as it exists, before it handles its
// first segment (a listener's endpoint handles the ACK that completes a
// SYN-cookie handshake, and any data on it, before anyone accepts it).
type Binder interface {
	Bind(e *Endpoint)
}

// Receiver is implemented by extensions that take the in-order payload
// themselves (MPTCP reassembles at the connection level, RFC 8684 §3.3).
// The receive buffer is then used only for out-of-order data, and Read
// returns nothing.
type Receiver interface {
	// Deliver hands over in-order payload. relSeq is the relative subflow
	// sequence number of data[0] (first payload byte is 1). data is valid
	// only during the call.
	Deliver(relSeq uint32, data []byte)
	// ReceiveWindow returns the window to advertise, in bytes (the MPTCP
	// connection-level window, RFC 8684 §3.3.4), and true; or false to use
	// the subflow's own receive buffer.
	ReceiveWindow() (bytes int, ok bool)
}

// NopExtension implements Extension doing nothing; embed it to implement
// only some hooks.
type NopExtension struct{}

// SegmentOptions implements Extension.
func (NopExtension) SegmentOptions(_ *SegmentInfo, _ int, dst []options.Option) []options.Option {
	return dst
}

// Incoming implements Extension.
func (NopExtension) Incoming(*Segment, State) Verdict { return VerdictAccept }

// StateChanged implements Extension.
func (NopExtension) StateChanged(State, State) {}
