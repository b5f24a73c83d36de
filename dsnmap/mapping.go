package dsnmap

import (
	"errors"
	"fmt"
)

// Mapping is one DSS mapping (RFC 8684 §3.3.1): Len bytes of data-sequence
// space starting at DSN correspond to the subflow bytes starting at the
// relative subflow sequence number SubflowSeq (the first payload byte of a
// subflow is 1). A DATA_FIN takes the last data-sequence number of its
// mapping and no subflow byte; a DATA_FIN on its own is sent as
// {SubflowSeq 0, Len 1, DataFIN}. Len 0 is the infinite mapping (§3.7):
// everything from SubflowSeq on maps one to one.
type Mapping struct {
	DSN        DSN
	SubflowSeq uint32
	Len        uint16
	DataFIN    bool
	// Checksum is the DSS checksum carried with the mapping, meaningful
	// when the connection negotiated checksums.
	Checksum uint16
}

// Infinite reports whether m is the infinite mapping.
func (m Mapping) Infinite() bool { return m.Len == 0 }

// PayloadLen is the number of subflow bytes the mapping covers: the
// data-level length less the DATA_FIN's DSN (0 for the infinite mapping).
func (m Mapping) PayloadLen() uint32 {
	if m.DataFIN && m.Len > 0 {
		return uint32(m.Len) - 1
	}
	return uint32(m.Len)
}

// FINOnly reports whether m carries nothing but a DATA_FIN: a data-level
// length of 1 taken by the DATA_FIN. RFC 8684 §3.3.3 asks for subflow
// sequence number 0 on such a mapping; like Linux (subflow.c looks only at
// the length), any subflow sequence number is accepted, since the mapping
// covers no subflow byte either way.
func (m Mapping) FINOnly() bool { return m.DataFIN && m.Len == 1 }

func (m Mapping) String() string {
	fin := ""
	if m.DataFIN {
		fin = " +FIN"
	}
	if m.Infinite() {
		return fmt.Sprintf("dsn %d <- ssn %d.. (infinite)", uint64(m.DSN), m.SubflowSeq)
	}
	return fmt.Sprintf("dsn %d..%d <- ssn %d..%d%s", uint64(m.DSN), uint64(m.DSN)+uint64(m.Len), m.SubflowSeq, m.SubflowSeq+m.PayloadLen(), fin)
}

// same reports whether two mappings describe the same thing. The checksum
// is not compared: it is checked over the payload.
func (m Mapping) same(o Mapping) bool {
	return m.DSN == o.DSN && m.SubflowSeq == o.SubflowSeq && m.Len == o.Len && m.DataFIN == o.DataFIN
}

// Errors from the receive mapping table. Each is a protocol violation by
// the peer (or a middlebox) that the connection must react to, typically by
// resetting the subflow with MP_TCPRST or falling back.
var (
	// ErrMappingConflict: a mapping maps a pending subflow byte to
	// another DSN than an earlier mapping did, or puts the DATA_FIN
	// elsewhere than an earlier one, or maps data at or beyond a known
	// DATA_FIN (RFC 8684 §3.3.1: a mapping is fixed once declared; kernel
	// counter MPTcpExtDSSNotMatching). Copies with other boundaries or
	// with the DATA_FIN added are not conflicts (see RxMap.Add).
	ErrMappingConflict = errors.New("dsnmap: mapping conflicts with an earlier mapping")
	// ErrNoMapping: subflow payload arrived that no mapping covers.
	ErrNoMapping = errors.New("dsnmap: subflow data without a mapping")
	// ErrTooManyMappings: more pending mappings than the table holds.
	ErrTooManyMappings = errors.New("dsnmap: too many pending mappings")
	// ErrChecksum: a completed mapping's DSS checksum did not verify.
	ErrChecksum = errors.New("dsnmap: DSS checksum mismatch")
	// ErrStaleMapping: a mapping for subflow bytes already delivered that
	// does not match what they were mapped to.
	ErrStaleMapping = errors.New("dsnmap: mapping for already delivered data differs")
)

// seqLT compares 32-bit subflow sequence numbers modulo 2^32.
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
