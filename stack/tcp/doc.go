// Package tcp is mptund's own TCP: a sans-I/O implementation of RFC 9293
// used for every MPTCP subflow (RFC 8684) and for plain-TCP fallback. It
// does no I/O and reads time only from an injected tcpip.Clock; the gVisor
// adapter in stack/ (transport protocol 6) and the simulator in
// stack/tcp/simnet drive it.
//
// # Shape
//
//   - Input: Endpoint.HandleSegment(*Segment) with header fields, options
//     already parsed by options.ParseTCPOptionsLenient (ParseSegment does
//     both from raw bytes; malformed options are passed over as Linux
//     does, never a reason to drop the segment) and a payload view valid
//     during the call; with
//     Segment.PayloadView in-order data is kept by reference, not copied.
//   - Output: Config.Output.WriteSegment(*OutSegment): header fields, the
//     complete option block and the payload as a view of the send buffer,
//     all valid only during the call (copy or build a packet buffer, or
//     take a reference with OutSegment.ClonePayload). After SetGSOMaxSize
//     a segment may be a TSO super-segment (OutSegment.SegmentSize) for
//     the output to cut at the MSS. OutSegment.AppendHeader encodes the
//     TCP header (checksum zero).
//   - Time: NextDeadline reports the earliest timer; call HandleTimers when
//     it has passed (one clock.AfterFunc per endpoint suffices; EventTimer
//     says the deadline changed). Nothing uses AfterFunc internally, so
//     runs on faketime.ManualClock are deterministic.
//   - Readiness: Config.Notify receives Events (readable, writable,
//     established, closed, error, timer) synchronously.
//   - Application side: Connect, Write (copies, ErrWouldBlock when full),
//     EnqueueChunk (MPTCP), Read (ErrWouldBlock, (0, nil) at EOF),
//     CloseWrite (FIN after queued data), Close, Abort (RST), State, Err,
//     Info, SendAck, Kick.
//   - Passive open: Listener.HandleSegment for segments matching no
//     endpoint returns new endpoints to register (SYN queue bounded by
//     Backlog, SYN cookies when full, RFC 4987; old half-open endpoints
//     pruned while the queue is more than half full, as Linux does, so
//     that the listener leaves cookie mode soon after a SYN flood).
//   - Path MTU: HandlePacketTooBig lowers the MSS and retransmits.
//
// Concurrency: an Endpoint or Listener is not safe for concurrent use; the
// caller serialises all calls (the adapter holds a per-endpoint mutex).
// Callbacks (Output, Notify, Extension) run inside those calls and must not
// re-enter the endpoint.
//
// # MPTCP hooks
//
// Config.Extension (see Extension for the exact contract) is asked for the
// options of every outgoing segment, SYNs included, with the metadata of
// the chunk the payload comes from (EnqueueChunk(data, meta): a segment
// never spans two chunks and every retransmission carries the same meta);
// it sees every incoming segment that passed TCP validation before TCP
// acts on it and may drop it or reset the subflow; if it implements
// Receiver it takes in-order payload with its relative subflow sequence
// number (first byte 1, RFC 8684 §3.3.1) and supplies the receive window
// to advertise (the connection-level window, §3.3.4).
//
// # What is implemented
//
//   - RFC 9293 state machine, including simultaneous open and close,
//     half-close, TIME-WAIT (Config.TimeWait), RST validation.
//   - Options: MSS, window scale and timestamps (RFC 7323) with PAWS,
//     SACK (RFC 2018).
//   - RTT estimation and RTO (RFC 6298) with Linux's RTO = SRTT +
//     max(4*RTTVAR, 200 ms), exponential backoff, Karn's rule, retry limits;
//     RTT samples from each segment's transmission time (timestamps as a
//     fallback), a windowed minimum RTT.
//   - Loss recovery (recovery.go, rack.go): a per-segment scoreboard
//     (rtxq.go: transmission time, SACKed, lost, retransmitted);
//     RACK-TLP (RFC 8985) detects losses, lost retransmissions included,
//     with a reordering window that D-SACKs widen, and tail loss probes;
//     RFC 6582 NewReno when the peer does not SACK. Fast recovery sends at
//     the rate of PRR (RFC 6937); an RTO deems everything outstanding lost
//     and resends it in slow start. D-SACKs (RFC 2883) are sent for
//     duplicates received and used for what was sent; reductions that
//     prove spurious (Eifel, RFC 3522, with timestamps; D-SACKs for every
//     retransmission) are undone (RFC 4015), as Linux's tcp_try_undo_*.
//     Counters named after Linux's (Info.TCPLossProbes, TCPDSACKUndo, ...).
//   - Congestion control interface (CongestionControl, registered by name;
//     CongestionUndoer for undo; RateController for controllers that work
//     from delivery rate samples and pace): "newreno" (RFC 5681 + RFC 3465
//     ABC), "cubic" (RFC 9438 with HyStart++, RFC 9406; default) and "bbr"
//     (BBR v1, with delivery rate estimation, rate.go, and pacing,
//     pacing.go).
//     SubflowStats lets a coupled controller read other subflows.
//   - Delayed ACKs (every second full segment or Config.DelayedAck, 40 ms;
//     immediate ACKs for out-of-order data and hole fills; a coalesced
//     segment counts as the full segments it holds); quick ACKs at the start
//     of the connection, after idle and after disorder, pingpong mode when
//     data answers data, and the peer's FIN acknowledged with our FIN when
//     the application closes soon after EOF (all as Linux), optionally deferred
//     to the end of a receive batch (SetAckDeferral, FlushAck), Nagle with
//     NoDelay, receiver window never shrinks, window updates after reads
//     once the open window fell to half the buffer (as Linux).
//   - Receive buffer auto-tuning up to MaxReceiveBuffer (dynamic
//     right-sizing from received bytes per receive-side RTT); send buffer
//     growth to twice cwnd up to MaxSendBuffer (as Linux's
//     tcp_sndbuf_expand).
//   - TCP segmentation offload (SetGSOMaxSize): new data leaves in
//     super-segments of whole segments within cwnd and the peer's window;
//     plain chunks hold whole segments (ChunkSize) so none ends short.
//   - Zero-window probes (persist timer with backoff, never giving up on a
//     peer that answers), keepalive.
//   - A shrinking window (RFC 9293 §3.8.6.2.2), which kernel MPTCP
//     subflows advertise: pure ACKs and RSTs carry SEQ at the peer's
//     right edge when it retreated below SND.NXT (Linux's
//     tcp_acceptable_seq), nothing is retransmitted beyond it but the
//     head as a probe, and the bytes sent beyond it leave the flight, to
//     be sent again when the window reaches them, without a congestion
//     response; a shut window is probed by the persist timer, not timed
//     out by the retransmission timer. Retreats of less than one window
//     scale unit are taken for rounding.
//   - RFC 5961: RST and SYN challenge ACKs, ACK validation, rate limit.
//   - Bounded resources: send buffer, receive buffer (out-of-order data is
//     stored in place in the receive ring, at most maxOOORanges holes;
//     in-order data held by reference stays within the window, maxHeld
//     views and twice the buffer size of pinned memory), the scoreboard
//     (a record per segment of the send buffer), SYN queue.
package tcp
