// Package stack is mptund's engine: a gVisor network stack
// (gvisor.dev/gvisor/pkg/tcpip/stack) whose TCP, transport protocol 6, is
// our own sans-I/O TCP (package stack/tcp), exposed to Go programs through
// an API modelled on the net package (Dial, Listen, net.Conn,
// net.Listener).
//
// # Shape
//
// gVisor does IPv4 and IPv6, routing between NICs, demultiplexing by
// four-tuple and ICMP. This package supplies:
//
//   - a stack.TransportProtocol (protocol.go) that parses TCP headers and
//     answers segments for unknown four-tuples with a RST (RFC 9293
//     §3.10.7.1, never in reply to a RST);
//   - connections (Conn) and listeners (Listener) registered with the
//     stack's demultiplexer as stack.TransportEndpoints, so that segments
//     and ICMP errors (packet too big, RFC 1191 / RFC 8201) reach them;
//   - the glue that drives a tcp.Endpoint: HandlePacket runs on the link's
//     dispatch goroutine, parses the segment (tcp.ParseSegment), verifies
//     its checksum unless the link already did (pkt.RXChecksumValidated),
//     and calls HandleSegment under the connection's mutex; outgoing
//     segments are written through a route cached per connection; one
//     clock.AfterFunc timer per connection serves tcp.Endpoint's deadlines.
//
// # Fast path
//
// The data path avoids per-byte and per-packet work where the link allows
// (packet.go, ackbatch.go); each piece falls back to the plain path on
// links without the capability, such as simulated or impaired ones:
//
//   - Payload is never copied on the way out: a packet's payload is a
//     reference to the send buffer's bytes (tcp.OutSegment.ClonePayload).
//   - On a link with segmentation offload (stack.HostGSOSupported, as
//     tun.Endpoint on a Linux TUN) connections send TSO super-segments of
//     up to 64 KiB (tcp.Endpoint.SetGSOMaxSize) as packets with stack.GSO
//     options: the link cuts them into MSS-sized segments with the same
//     header and options and completes their checksums; the engine leaves
//     the pseudo-header sum in the checksum field (CHECKSUM_PARTIAL).
//   - On the way in, in-order payload is kept by reference to the packet's
//     own view (tcp.Segment.PayloadView), so that Read copies each byte
//     once.
//   - On a link that reports the end of each receive batch
//     (OnReceiveBatchEnd, as tun.Endpoint does), the every-second-segment
//     ACK is deferred to the end of the batch (tcp.Endpoint.SetAckDeferral):
//     a receiver that falls behind acknowledges once per batch.
//
// Time comes from the injected tcpip.Clock (Options.Clock), so an Engine
// on gVisor's faketime.ManualClock and simulated links is deterministic.
//
// # Concurrency
//
// Engine, Conn and Listener methods are safe for concurrent use. Each Conn
// has one mutex serialising the application's calls, segment arrival and
// timers, as tcp.Endpoint requires; there is no lock shared between
// connections on the per-packet path. Lock order: Listener before Conn is
// never taken; a Conn's mutex may be held while taking its Listener's, the
// Engine's, or the stack's demultiplexer locks.
//
// MPTCP (RFC 8684) will ride on the same endpoints through tcp.Extension;
// this version carries plain TCP.
package stack
