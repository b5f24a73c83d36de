package mptcp

import "sync/atomic"

// Counter names one engine-wide MPTCP counter. The names are the Linux
// kernel's MPTcpExt counters (net/mptcp/mib.c, `nstat -az | grep MPTcpExt`)
// where the kernel counts the same event, so that conformance tests can
// compare the engine's counters with the kernel's; events the kernel does
// not count have names in the same style, marked "(engine)".
type Counter uint8

// The counters.
const (
	// MPCapableSYNRX: SYNs with MP_CAPABLE received (passive opens).
	MPCapableSYNRX Counter = iota
	// MPCapableSYNTX: SYNs with MP_CAPABLE sent (active opens).
	MPCapableSYNTX
	// MPCapableSYNACKRX: SYN/ACKs with MP_CAPABLE received.
	MPCapableSYNACKRX
	// MPCapableACKRX: third ACKs with MP_CAPABLE received.
	MPCapableACKRX
	// MPCapableFallbackACK: server-side fallback during the handshake (the
	// third ACK carried no MP_CAPABLE, or no usable one).
	MPCapableFallbackACK
	// MPCapableFallbackSYNACK: client-side fallback during the handshake
	// (the SYN/ACK carried no usable MP_CAPABLE).
	MPCapableFallbackSYNACK
	// MPCapableSYNCookie (engine): MPTCP connections rebuilt from the
	// third ACK of a SYN-cookie handshake (RFC 8684 §3.1: the ACK echoes
	// both keys so that a server can be stateless).
	MPCapableSYNCookie
	// MPCapableACKRepeat (engine): third ACKs sent again by a client just
	// before its first data, so that losing the first two does not make
	// the server fall back.
	MPCapableACKRepeat
	// MPTCPRetrans: data-level retransmissions (bytes re-sent on a subflow
	// with their original data sequence numbers).
	MPTCPRetrans
	// MPJoinNoTokenFound: MP_JOIN SYNs whose token matches no connection.
	MPJoinNoTokenFound
	// MPJoinSynRx: MP_JOIN SYNs received.
	MPJoinSynRx
	// MPJoinRejected: MP_JOIN SYNs refused (no multipath support yet, a
	// limit, or a connection that fell back).
	MPJoinRejected
	// DSSNotMatching: a mapping conflicting with an earlier one (the
	// subflow is reset).
	DSSNotMatching
	// DSSNoPayload (engine): mappings on segments without payload,
	// ignored (they describe no byte of the segment, RFC 8684 §3.3.1).
	DSSNoPayload
	// InfiniteMapTx: infinite mappings sent (fallback after the handshake).
	InfiniteMapTx
	// InfiniteMapRx: infinite mappings received.
	InfiniteMapRx
	// DataCsumErr: DSS checksum failures.
	DataCsumErr
	// NoDSSInWindow: data whose data sequence numbers lie outside the
	// connection-level receive window, dropped (the peer retransmits at
	// the data level).
	NoDSSInWindow
	// DuplicateData: data received again at the data level, dropped.
	DuplicateData
	// OFODrop (engine): data dropped because the connection-level
	// out-of-order queue reached its bound of ranges.
	OFODrop
	// DataAckInvalid (engine): Data ACKs ignored because they acknowledge
	// data never sent or lie behind the current one by more than the
	// window.
	DataAckInvalid
	// DataFinInvalid (engine): DATA_FINs ignored because their data
	// sequence number lies behind the stream or contradicts an earlier
	// DATA_FIN.
	DataFinInvalid
	// DataFinAhead (engine): DATA_FINs not taken (yet) because their data
	// sequence number lies beyond the receive window. Not an error: Linux
	// sends its DATA_FIN on every subflow as soon as its application
	// closes, with data still waiting behind our window, and sends it
	// again with the last data and until acknowledged; one taken that far
	// ahead would only let a forged one end the stream.
	DataFinAhead
	// MPFastcloseTx: MP_FASTCLOSE sent.
	MPFastcloseTx
	// MPFastcloseRx: MP_FASTCLOSE received with our key.
	MPFastcloseRx
	// MPFastcloseBadKey (engine): MP_FASTCLOSE received with a key that is
	// not ours, ignored.
	MPFastcloseBadKey
	// MPFastcloseDataAck (engine): MP_FASTCLOSE resets that also carry a
	// Data ACK, sent on a subflow before any DSS went out on it, so that
	// the peer, not yet fully established, does not take the reset for a
	// fallback and ignore the MP_FASTCLOSE (Linux does).
	MPFastcloseDataAck
	// MPRstTx: MP_TCPRST sent.
	MPRstTx
	// MPRstRx: MP_TCPRST received on a RST.
	MPRstRx
	// DssFallback: fallback to TCP after the handshake because the path
	// stripped DSS options.
	DssFallback
	// FallbackNoKey (engine): connections fallen back because DSS arrived
	// before the peer's key was known (the third ACK without MP_CAPABLE).
	FallbackNoKey
	// OptionIgnored (engine): MPTCP options ignored as malformed, out of
	// place (wrong segment or state) or unsupported.
	OptionIgnored
	// DataAckStallReset (engine): connections reset because the peer left
	// data acknowledged by its subflows unacknowledged at the data level
	// for longer than Config.DataAckTimeout.
	DataAckStallReset
	// WinProbe: data-level zero-window probes sent.
	WinProbe

	// MPJoinSynTx: MP_JOIN SYNs sent.
	MPJoinSynTx
	// MPJoinSynBackupRx: MP_JOIN SYNs received with the backup flag.
	MPJoinSynBackupRx
	// MPJoinSynAckRx: MP_JOIN SYN/ACKs received with a valid HMAC.
	MPJoinSynAckRx
	// MPJoinSynAckBackupRx: such SYN/ACKs with the backup flag.
	MPJoinSynAckBackupRx
	// MPJoinSynAckHMacFailure: MP_JOIN SYN/ACKs with a wrong (or no)
	// HMAC; the subflow is reset.
	MPJoinSynAckHMacFailure
	// MPJoinAckRx: MP_JOIN third ACKs received with a valid HMAC.
	MPJoinAckRx
	// MPJoinAckHMacFailure: MP_JOIN third ACKs with a wrong (or no) HMAC;
	// the subflow is reset.
	MPJoinAckHMacFailure
	// AddAddr: ADD_ADDRs received (echo flag clear) with a valid HMAC.
	AddAddr
	// AddAddrTx: ADD_ADDRs sent (retransmissions included).
	AddAddrTx
	// AddAddrDrop: ADD_ADDRs dropped (wrong HMAC).
	AddAddrDrop
	// EchoAdd: ADD_ADDR echoes received for an address we announced.
	EchoAdd
	// EchoAddTx: ADD_ADDR echoes sent.
	EchoAddTx
	// PortAdd: ADD_ADDRs received with a port.
	PortAdd
	// RmAddr: address IDs received in REMOVE_ADDR.
	RmAddr
	// RmAddrTx: REMOVE_ADDRs sent.
	RmAddrTx
	// RmSubflow: subflows closed because of a REMOVE_ADDR.
	RmSubflow
	// MPPrioTx: MP_PRIO sent.
	MPPrioTx
	// MPPrioRx: MP_PRIO received.
	MPPrioRx
	// SubflowStale: subflows found stalled with data outstanding (their
	// data is re-sent on the others).
	SubflowStale
	// SubflowRecover: stale subflows that made progress again.
	SubflowRecover
	// MPJoinPortSynRx: MP_JOIN SYNs received on a port announced with
	// ADD_ADDR.
	MPJoinPortSynRx

	numCounters
)

var counterNames = [numCounters]string{
	MPCapableSYNRX:          "MPCapableSYNRX",
	MPCapableSYNTX:          "MPCapableSYNTX",
	MPCapableSYNACKRX:       "MPCapableSYNACKRX",
	MPCapableACKRX:          "MPCapableACKRX",
	MPCapableFallbackACK:    "MPCapableFallbackACK",
	MPCapableFallbackSYNACK: "MPCapableFallbackSYNACK",
	MPCapableSYNCookie:      "MPCapableSYNCookie",
	MPCapableACKRepeat:      "MPCapableACKRepeat",
	MPTCPRetrans:            "MPTCPRetrans",
	MPJoinNoTokenFound:      "MPJoinNoTokenFound",
	MPJoinSynRx:             "MPJoinSynRx",
	MPJoinRejected:          "MPJoinRejected",
	DSSNotMatching:          "DSSNotMatching",
	DSSNoPayload:            "DSSNoPayload",
	InfiniteMapTx:           "InfiniteMapTx",
	InfiniteMapRx:           "InfiniteMapRx",
	DataCsumErr:             "DataCsumErr",
	NoDSSInWindow:           "NoDSSInWindow",
	DuplicateData:           "DuplicateData",
	OFODrop:                 "OFODrop",
	DataAckInvalid:          "DataAckInvalid",
	DataFinInvalid:          "DataFinInvalid",
	DataFinAhead:            "DataFinAhead",
	MPFastcloseTx:           "MPFastcloseTx",
	MPFastcloseRx:           "MPFastcloseRx",
	MPFastcloseBadKey:       "MPFastcloseBadKey",
	MPFastcloseDataAck:      "MPFastcloseDataAck",
	MPRstTx:                 "MPRstTx",
	MPRstRx:                 "MPRstRx",
	DssFallback:             "DssFallback",
	FallbackNoKey:           "FallbackNoKey",
	OptionIgnored:           "OptionIgnored",
	DataAckStallReset:       "DataAckStallReset",
	WinProbe:                "WinProbe",
	MPJoinSynTx:             "MPJoinSynTx",
	MPJoinSynBackupRx:       "MPJoinSynBackupRx",
	MPJoinSynAckRx:          "MPJoinSynAckRx",
	MPJoinSynAckBackupRx:    "MPJoinSynAckBackupRx",
	MPJoinSynAckHMacFailure: "MPJoinSynAckHMacFailure",
	MPJoinAckRx:             "MPJoinAckRx",
	MPJoinAckHMacFailure:    "MPJoinAckHMacFailure",
	AddAddr:                 "AddAddr",
	AddAddrTx:               "AddAddrTx",
	AddAddrDrop:             "AddAddrDrop",
	EchoAdd:                 "EchoAdd",
	EchoAddTx:               "EchoAddTx",
	PortAdd:                 "PortAdd",
	RmAddr:                  "RmAddr",
	RmAddrTx:                "RmAddrTx",
	RmSubflow:               "RmSubflow",
	MPPrioTx:                "MPPrioTx",
	MPPrioRx:                "MPPrioRx",
	SubflowStale:            "SubflowStale",
	SubflowRecover:          "SubflowRecover",
	MPJoinPortSynRx:         "MPJoinPortSynRx",
}

func (c Counter) String() string {
	if c < numCounters {
		return counterNames[c]
	}
	return "Counter(?)"
}

// MIB is an engine's set of MPTCP counters. Safe for concurrent use; the
// zero value is ready. A nil *MIB counts nothing.
type MIB struct {
	c [numCounters]atomic.Uint64
}

// Inc adds one to counter c.
func (m *MIB) Inc(c Counter) { m.Add(c, 1) }

// Add adds n to counter c.
func (m *MIB) Add(c Counter, n uint64) {
	if m != nil && c < numCounters && n > 0 {
		m.c[c].Add(n)
	}
}

// Get returns counter c.
func (m *MIB) Get(c Counter) uint64 {
	if m == nil || c >= numCounters {
		return 0
	}
	return m.c[c].Load()
}

// Snapshot returns every counter by name (zeros included, like
// `nstat -az`).
func (m *MIB) Snapshot() map[string]uint64 {
	out := make(map[string]uint64, numCounters)
	for c := Counter(0); c < numCounters; c++ {
		out[counterNames[c]] = m.Get(c)
	}
	return out
}
