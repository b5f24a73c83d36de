// Package options encodes and decodes the TCP options mptund sends and
// receives: the Multipath TCP option (kind 30) and its suboptions from
// RFC 8684 §3, and the plain TCP options a subflow needs — MSS and the option
// framing of RFC 9293 §3.1, window scale and timestamps of RFC 7323, and
// SACK-permitted and SACK blocks of RFC 2018.
//
// The package is a pure codec: no I/O, no state, and no protocol decisions.
// A parser fills a plain struct from bytes and reports malformed input with
// a sentinel error (ErrTruncated, ErrBadLength, ...); whether a field value
// is acceptable (an MP_CAPABLE without the H flag, an MP_TCPRST on a segment
// without RST, a checksum that was not negotiated) is for the subflow and
// connection code to decide, as Linux splits net/mptcp/options.c from
// subflow.c and protocol.c.
//
// # Conventions
//
// Every MPTCP suboption type has a parser ParseXxx(opt []byte) (Xxx, error),
// where opt is the whole option starting at the kind byte, and value-receiver
// methods Subtype, Len and Append. Len always equals the number of bytes
// Append writes; Append appends kind, length and body and never allocates
// when cap(b) suffices. The typed parsers never allocate and never panic on
// any input. Only the bytes covered by the option's length byte are read:
// opt may extend past the option (trailing bytes are ignored) but not stop
// short of it (ErrTruncated).
//
// Reserved bits are ignored on input and written as zero, so a parsed option
// re-encodes to the same bytes exactly when its reserved bits were zero. The
// accepted lengths follow the Linux kernel's mptcp_parse_option; where we
// accept more or less than Linux, the type's documentation says so.
//
// For the receive hot path use ParseTCPOptionsLenient (raw views of the
// MPTCP options, no allocation; malformed options are passed over and
// counted, as Linux's tcp_parse_options does, so that the segment is still
// processed) and then the typed parser for the subtype found with
// PeekSubtype. ParseTCPOptions is the strict variant for tools that want
// the first error (pcaps). Parse returns an Option interface and therefore
// allocates; it suits tools and tests.
//
// For the send path, Layout builds a complete, aligned TCP option block with
// the priorities a subflow needs when the 40 bytes of option space run out.
package options
