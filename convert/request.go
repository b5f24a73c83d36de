package convert

import (
	"net/netip"
	"slices"
)

// What a client sends and how a converter reads it (RFC 8803 §5), and the
// converter's answers. Like the decoder, these functions decide nothing
// about policy (which destinations are allowed, which cookie is valid):
// they map a well-formed message to a Request, or to the Error TLV that
// the protocol prescribes for a message a converter cannot serve.

// NewRequest returns the client's message asking for a connection to
// dest: a Connect TLV, and a Cookie TLV when cookie is not empty.
func NewRequest(dest netip.AddrPort, cookie []byte) Message {
	m := Message{TLVs: []TLV{&Connect{Port: dest.Port(), Addr: dest.Addr().Unmap()}}}
	if len(cookie) > 0 {
		m.TLVs = append(m.TLVs, &Cookie{Data: cookie})
	}
	return m
}

// Request is a client's message as a converter understands it.
type Request struct {
	// Dest is the destination of the Connect TLV; the zero AddrPort when
	// the client only sent an Info TLV.
	Dest netip.AddrPort
	// Options are the Connect TLV's TCP options (raw).
	Options []byte
	// Info is set when the client asked for the supported extensions.
	Info bool
	// Cookie is the Cookie TLV's data, nil without one.
	Cookie []byte
}

// ParseRequest interprets a client's message. supported lists the TCP
// option kinds the converter can put in its SYN to the destination (NOP
// and EOL are always fine). When the message is not a request the
// converter can serve, it returns the Error TLV to answer with:
//
//   - a TLV of unknown type, or one only a converter sends (Error,
//     Extended TCP Header, Supported TCP Extensions):
//     ErrorUnsupportedMessage with the type as Value;
//   - a TLV given twice, neither Connect nor Info, a Connect TLV with port
//     0 or an address that is unspecified, multicast or broadcast:
//     ErrorMalformedMessage;
//   - TCP options of a kind not in supported: ErrorUnsupportedTCPOption
//     listing those kinds.
func ParseRequest(m Message, supported []uint8) (Request, *Error) {
	var r Request
	var seenConnect, seenCookie bool
	for _, t := range m.TLVs {
		switch x := t.(type) {
		case *Info:
			if r.Info {
				return r, &Error{Code: ErrorMalformedMessage}
			}
			r.Info = true
		case *Connect:
			if seenConnect {
				return r, &Error{Code: ErrorMalformedMessage}
			}
			seenConnect = true
			a := x.Addr.Unmap()
			if x.Port == 0 || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return r, &Error{Code: ErrorMalformedMessage}
			}
			r.Dest = netip.AddrPortFrom(a, x.Port)
			r.Options = x.Options
		case *Cookie:
			if seenCookie {
				return r, &Error{Code: ErrorMalformedMessage}
			}
			seenCookie = true
			r.Cookie = x.Data
		default:
			return r, &Error{Code: ErrorUnsupportedMessage, Value: []byte{byte(t.Type())}}
		}
	}
	if !seenConnect && !r.Info {
		return r, &Error{Code: ErrorMalformedMessage}
	}
	var bad []uint8
	for _, k := range TCPOptionKinds(r.Options) {
		if !slices.Contains(supported, k) && !slices.Contains(bad, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		return r, &Error{Code: ErrorUnsupportedTCPOption, Value: bad}
	}
	return r, nil
}

// ErrorFor returns the Error TLV a converter answers a message with that
// failed to decode (err from Parse, ParseHeader or ReadMessage):
// ErrorUnsupportedVersion, with the version this package speaks, for
// ErrVersion, ErrorMalformedMessage otherwise.
func ErrorFor(err error) *Error {
	if fe, ok := err.(*FormatError); ok && fe.Err == ErrVersion {
		return &Error{Code: ErrorUnsupportedVersion, Value: []byte{Version}}
	}
	return &Error{Code: ErrorMalformedMessage}
}

// Accept returns the converter's answer when the connection to the
// destination is established: the fixed header, with an Extended TCP
// Header TLV when ext is not nil.
func Accept(ext *ExtendedTCPHeader) Message {
	if ext == nil {
		return Message{}
	}
	return Message{TLVs: []TLV{ext}}
}

// Refuse returns the converter's answer carrying e.
func Refuse(e *Error) Message { return Message{TLVs: []TLV{e}} }

// Supported returns the converter's answer to an Info TLV.
func Supported(kinds []uint8) Message {
	return Message{TLVs: []TLV{&SupportedExtensions{Kinds: kinds}}}
}

// Reply is a converter's answer as a client understands it.
type Reply struct {
	// Extended is the destination's SYN+ACK header, when returned.
	Extended *ExtendedTCPHeader
	// Supported is the answer to an Info TLV, when present.
	Supported *SupportedExtensions
}

// ParseReply interprets a converter's answer. An Error TLV is returned as
// the error (a *Error); so is a TLV a converter does not send, as
// ErrorUnsupportedMessage.
func ParseReply(m Message) (Reply, error) {
	var r Reply
	if e := m.Err(); e != nil {
		return r, e
	}
	for _, t := range m.TLVs {
		switch x := t.(type) {
		case *ExtendedTCPHeader:
			r.Extended = x
		case *SupportedExtensions:
			r.Supported = x
		default:
			return r, &Error{Code: ErrorUnsupportedMessage, Value: []byte{byte(t.Type())}}
		}
	}
	return r, nil
}
