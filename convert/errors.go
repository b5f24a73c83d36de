package convert

import (
	"errors"
	"fmt"
)

// Sentinel errors of the decoder, wrapped in a *FormatError.
var (
	// ErrTruncated: fewer bytes than the header or a TLV needs.
	ErrTruncated = errors.New("convert: truncated message")
	// ErrBadLength: a length field that the layout does not allow (zero,
	// too short for the TLV type, or running past the message).
	ErrBadLength = errors.New("convert: bad length")
	// ErrBadMagic: the fixed header's Magic Number is not 0x2263.
	ErrBadMagic = errors.New("convert: bad magic number")
	// ErrVersion: a version other than 1.
	ErrVersion = errors.New("convert: unsupported version")
	// ErrMalformed: a value that breaks its TLV's rules (an IPv4-mapped
	// address expected, TCP options that do not parse, a TCP header whose
	// data offset disagrees with its length, a kind 0 amid extensions).
	ErrMalformed = errors.New("convert: malformed value")
	// ErrTooLong: a message that would not fit in MaxLen bytes (Append
	// side: Message.Validate).
	ErrTooLong = errors.New("convert: message longer than 1020 bytes")
)

// FormatError is a decoding failure: where, in which TLV, and why.
type FormatError struct {
	// Offset is the byte offset in the message of the faulty field.
	Offset int
	// Type is the TLV being decoded, 0 for the fixed header.
	Type Type
	// Err is one of the sentinel errors.
	Err error
	// Detail says more, or is empty.
	Detail string
}

func (e *FormatError) Error() string {
	where := "header"
	if e.Type != 0 {
		where = e.Type.String() + " TLV"
	}
	s := fmt.Sprintf("%v (%s at byte %d)", e.Err, where, e.Offset)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }
