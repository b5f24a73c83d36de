package options

import "errors"

// Sentinel errors returned by the parsers. They are comparable with == and
// errors.Is; no parser wraps them.
var (
	// ErrTruncated means the input holds fewer bytes than the option's
	// length byte (or the minimum needed to read that length byte) says.
	ErrTruncated = errors.New("options: truncated option")

	// ErrBadLength means a known MPTCP subtype carries a length it does not
	// allow (RFC 8684 §3), a known TCP option kind carries a wrong length, or
	// a TCP option's length byte is below 2 (RFC 9293 §3.1).
	ErrBadLength = errors.New("options: bad option length")

	// ErrNotMPTCP means the kind byte is not KindMPTCP (30).
	ErrNotMPTCP = errors.New("options: not an MPTCP option")

	// ErrBadVersion means an MP_CAPABLE option carries a version other than 1
	// (RFC 8684 §3.1). ParseMPCapable still returns the decoded value with it,
	// so that a listener can tell a version 0 peer (RFC 6824) from a newer
	// one; callers that only check the error treat the option as "not MPTCP
	// v1".
	ErrBadVersion = errors.New("options: unsupported MP_CAPABLE version")

	// ErrWrongSubtype means a typed parser (ParseDSS, ...) was given an MPTCP
	// option of another subtype.
	ErrWrongSubtype = errors.New("options: unexpected MPTCP subtype")
)
