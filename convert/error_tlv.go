package convert

import (
	"errors"
	"strconv"
)

var errNonZeroAfterEOL = errors.New("non-zero bytes after EOL")

// ErrorCode is the code of an Error TLV (RFC 8803 §4.2.6). The ranges
// say who is at fault: 0-31 the message, 32-63 the client, 64-95 the
// converter, 96-127 the destination.
type ErrorCode uint8

// Error codes.
const (
	// ErrorUnsupportedVersion: the message's version is not supported;
	// the Value is the version the converter speaks.
	ErrorUnsupportedVersion ErrorCode = 0
	// ErrorMalformedMessage: the message does not follow the protocol.
	ErrorMalformedMessage ErrorCode = 1
	// ErrorUnsupportedMessage: a TLV the converter does not support; the
	// Value is its type.
	ErrorUnsupportedMessage ErrorCode = 2
	// ErrorMissingCookie: the converter requires a Cookie TLV.
	ErrorMissingCookie ErrorCode = 3
	// ErrorNotAuthorized: the client may not use the converter (for that
	// destination).
	ErrorNotAuthorized ErrorCode = 32
	// ErrorUnsupportedTCPOption: the Connect TLV asks for TCP options the
	// converter cannot send; the Value lists their kinds.
	ErrorUnsupportedTCPOption ErrorCode = 33
	// ErrorResourceExceeded: the converter is out of resources.
	ErrorResourceExceeded ErrorCode = 64
	// ErrorNetworkFailure: the converter's network failed.
	ErrorNetworkFailure ErrorCode = 65
	// ErrorConnectionReset: the destination reset the connection.
	ErrorConnectionReset ErrorCode = 96
	// ErrorDestinationUnreachable: the destination did not answer, or an
	// ICMP error said it cannot be reached.
	ErrorDestinationUnreachable ErrorCode = 97
)

func (c ErrorCode) String() string {
	switch c {
	case ErrorUnsupportedVersion:
		return "unsupported version"
	case ErrorMalformedMessage:
		return "malformed message"
	case ErrorUnsupportedMessage:
		return "unsupported message"
	case ErrorMissingCookie:
		return "missing cookie"
	case ErrorNotAuthorized:
		return "not authorized"
	case ErrorUnsupportedTCPOption:
		return "unsupported TCP option"
	case ErrorResourceExceeded:
		return "resource exceeded"
	case ErrorNetworkFailure:
		return "network failure"
	case ErrorConnectionReset:
		return "connection reset"
	case ErrorDestinationUnreachable:
		return "destination unreachable"
	}
	return "error " + strconv.Itoa(int(c))
}

// Error is the Error TLV (RFC 8803 §4.2.6):
//
//	+---------------+---------------+---------------+---------------+
//	|  Type=30      |     Length    |  Error Code   |     Value     |
//	+---------------+---------------+---------------+---------------+
//	/                        Value (continued)                      /
//	+---------------------------------------------------------------+
//
// Zero bytes pad the Value to a word boundary; Parse drops trailing zeros,
// so a Value never ends in one.
type Error struct {
	Code  ErrorCode
	Value []byte
}

func (*Error) Type() Type { return TypeError }
func (e *Error) Len() int { return words(3 + len(e.Value)) }
func (e *Error) Append(b []byte) []byte {
	n := e.Len()
	b = append(appendTLVHeader(b, TypeError, n), byte(e.Code))
	return appendPadded(b, e.Value, n-3)
}

// Error implements the error interface, so that a refusal can travel as
// an error.
func (e *Error) Error() string {
	s := "convert: " + e.Code.String()
	switch {
	case e.Code == ErrorUnsupportedMessage && len(e.Value) > 0:
		s += " (" + Type(e.Value[0]).String() + ")"
	case e.Code == ErrorUnsupportedVersion && len(e.Value) > 0:
		s += " (speaks version " + strconv.Itoa(int(e.Value[0])) + ")"
	case e.Code == ErrorUnsupportedTCPOption && len(e.Value) > 0:
		s += " (kinds"
		for _, k := range e.Value {
			s += " " + strconv.Itoa(int(k))
		}
		s += ")"
	}
	return s
}

func parseError(b []byte, off int) (TLV, error) {
	v := b[3:]
	end := len(v)
	for end > 0 && v[end-1] == 0 {
		end--
	}
	e := &Error{Code: ErrorCode(b[2])}
	if end > 0 {
		e.Value = append([]byte(nil), v[:end]...)
	}
	return e, nil
}
