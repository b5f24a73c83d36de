// Package convert is a codec for the 0-RTT TCP Convert Protocol (RFC 8803):
// the messages a client and a Transport Converter exchange at the start of
// a connection so that the converter opens a TCP connection to the
// destination the client names, on the client's behalf, and relays the
// bytes. mptund uses it between "mptund client" and "mptund proxy": the
// client speaks Multipath TCP to the proxy, the proxy speaks plain TCP to
// the destination.
//
// A Convert message is a 32-bit fixed header (version, total length in
// 32-bit words, magic number; RFC 8803 §4.1) followed by TLVs (§4.2), each
// a type byte, a length byte counting 32-bit words of the whole TLV, and a
// value padded to a word boundary:
//
//	Info (1)                      the client asks which TCP extensions the converter supports
//	Connect (10)                  the destination (port, IPv6 or IPv4-mapped address) and TCP options for its SYN
//	Extended TCP Header (20)      the converter returns the TCP header of the destination's SYN+ACK
//	Supported TCP Extensions (21) the converter lists TCP option kinds it supports
//	Cookie (22)                   opaque validation data
//	Error (30)                    why the converter refused or lost the connection
//
// Decoding is strict: every length is checked against the type's layout
// and against the bytes present, a TLV never runs past the message, and
// unknown TLV types are kept raw (Unknown) for the caller to refuse with
// ErrorUnsupportedMessage. Parse never panics and returns a *FormatError
// wrapping one of the sentinel errors; what to answer is the caller's
// decision (Request maps a client's message to the converter's answer).
//
// Encoding follows one signature family: Append(b []byte) []byte and Len()
// that always equals what Append writes. Parse(Append(m)) == m for every
// message Parse returns.
//
// RFC 8803 carries the client's message in the payload of its SYN and the
// converter's answer in the SYN+ACK's payload (TCP Fast Open, RFC 7413).
// The framing helper ReadMessage reads one message from a byte stream, so
// it works the same whether the message came in a SYN or as the first
// bytes after the handshake.
package convert
