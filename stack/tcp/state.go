package tcp

import "errors"

// State is a connection state of RFC 9293 §3.3.2. LISTEN is not an endpoint
// state here: a Listener has no per-connection state until a SYN arrives.
type State uint8

// Connection states (RFC 9293 §3.3.2).
const (
	StateClosed State = iota
	StateSynSent
	StateSynRcvd
	StateEstablished
	StateFinWait1
	StateFinWait2
	StateCloseWait
	StateClosing
	StateLastAck
	StateTimeWait
)

var stateNames = [...]string{
	StateClosed:      "CLOSED",
	StateSynSent:     "SYN-SENT",
	StateSynRcvd:     "SYN-RECEIVED",
	StateEstablished: "ESTABLISHED",
	StateFinWait1:    "FIN-WAIT-1",
	StateFinWait2:    "FIN-WAIT-2",
	StateCloseWait:   "CLOSE-WAIT",
	StateClosing:     "CLOSING",
	StateLastAck:     "LAST-ACK",
	StateTimeWait:    "TIME-WAIT",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// synchronized reports whether the state is one of the synchronized states
// of RFC 9293 §3.5.2 (ESTABLISHED and later).
func (s State) synchronized() bool { return s >= StateEstablished }

// canSend reports whether the application may still queue data.
func (s State) canSend() bool {
	return s == StateSynSent || s == StateSynRcvd || s == StateEstablished || s == StateCloseWait
}

// Events is a readiness mask passed to Config.Notify.
type Events uint16

// Readiness events.
const (
	// EventReadable: Read would return data or EOF.
	EventReadable Events = 1 << iota
	// EventWritable: the send buffer has room again.
	EventWritable
	// EventEstablished: the handshake completed.
	EventEstablished
	// EventClosed: the endpoint reached CLOSED or TIME-WAIT; Err tells why
	// when it was not an orderly close.
	EventClosed
	// EventError: the connection failed (reset, timeout); see Err.
	EventError
	// EventTimer: the next deadline (NextDeadline) changed.
	EventTimer
	// EventAckDue: an acknowledgment was held back under SetAckDeferral;
	// call FlushAck once the batch of segments is handled.
	EventAckDue
)

// Errors returned by the application-facing methods and by Err.
var (
	// ErrWouldBlock: no data to read yet, or the send buffer is full.
	ErrWouldBlock = errors.New("tcp: operation would block")
	// ErrClosedForSend: Write after CloseWrite or Close.
	ErrClosedForSend = errors.New("tcp: endpoint closed for sending")
	// ErrNotConnected: the operation needs a connection that does not exist
	// (yet or any more).
	ErrNotConnected = errors.New("tcp: endpoint not connected")
	// ErrConnectionReset: the peer reset the connection (RFC 9293 §3.10.7.4).
	ErrConnectionReset = errors.New("tcp: connection reset by peer")
	// ErrConnectionRefused: RST in answer to our SYN.
	ErrConnectionRefused = errors.New("tcp: connection refused")
	// ErrTimeout: retransmissions or keepalive probes exhausted.
	ErrTimeout = errors.New("tcp: connection timed out")
	// ErrAborted: Abort was called, or the extension vetoed a segment with
	// VerdictReset.
	ErrAborted = errors.New("tcp: connection aborted")
	// ErrInvalidState: the method cannot be used in the current state
	// (Connect twice, EnqueueChunk on an endpoint without extension, ...).
	ErrInvalidState = errors.New("tcp: invalid state for operation")
	// ErrChunkTooLarge: EnqueueChunk with more than MaxChunk bytes.
	ErrChunkTooLarge = errors.New("tcp: chunk larger than MaxChunk")
)
