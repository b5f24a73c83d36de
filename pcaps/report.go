package pcaps

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mptund/mptund/options"
)

// Names of the checks [Analyze] runs; they appear in [Problem.Check] and
// [CheckStat.Name].
const (
	// CheckOption: every MPTCP option has a length its subtype allows
	// (RFC 8684 §3).
	CheckOption = "option"
	// CheckKeys: the MP_CAPABLE keys are echoed consistently in the third
	// ACK and the first data segment (RFC 8684 §3.1).
	CheckKeys = "mp_capable_keys"
	// CheckIDSN: the first data sequence number each host uses (data or
	// DATA_FIN) is its IDSN+1 (RFC 8684 §3.1, §3.3.1).
	CheckIDSN = "idsn"
	// CheckJoinToken: an MP_JOIN SYN names the token of a connection in the
	// capture (RFC 8684 §3.2).
	CheckJoinToken = "join_token"
	// CheckJoinSYNACK: the listener's truncated HMAC in the MP_JOIN SYN/ACK
	// verifies (RFC 8684 §3.2).
	CheckJoinSYNACK = "join_synack_hmac"
	// CheckJoinACK: the initiator's HMAC in the MP_JOIN third ACK verifies
	// (RFC 8684 §3.2).
	CheckJoinACK = "join_ack_hmac"
	// CheckAddAddr: an ADD_ADDR's HMAC verifies with the sender's key first
	// (RFC 8684 §3.4.1).
	CheckAddAddr = "add_addr_hmac"
	// CheckChecksum: a complete mapping's DSS checksum verifies, and
	// mappings carry a checksum exactly when checksums were negotiated
	// (RFC 8684 §3.3.1).
	CheckChecksum = "dss_checksum"
	// CheckMapping: every payload byte lies in a mapping and no subflow
	// range maps to two different data sequence numbers (RFC 8684 §3.3.1).
	CheckMapping = "mapping"
	// CheckDataFIN: a DATA_FIN takes one data sequence number after the
	// last data byte: one DATA_FIN position per direction, no data mapped
	// beyond it, no DATA_ACK beyond it plus one (RFC 8684 §3.3.3).
	CheckDataFIN = "data_fin"
	// CheckFastclose: MP_FASTCLOSE carries the receiver's key (RFC 8684
	// §3.5).
	CheckFastclose = "fastclose_key"
)

// checkOrder is the order of [Stats.Checks].
var checkOrder = []string{
	CheckOption, CheckKeys, CheckIDSN, CheckJoinToken, CheckJoinSYNACK,
	CheckJoinACK, CheckAddAddr, CheckChecksum, CheckMapping, CheckDataFIN,
	CheckFastclose,
}

// Report is the result of [Analyze]. It marshals with encoding/json.
type Report struct {
	Connections []*Connection `json:"connections"`
	// Plain counts TCP flows that carried no MPTCP option.
	Plain int `json:"plain_tcp_flows"`
	// Unanalyzed counts flows that carried MPTCP options but whose
	// handshake is not in the capture (it started mid-connection), and
	// MP_JOIN subflows whose token names no connection in the capture.
	Unanalyzed int `json:"unanalyzed_flows"`
	// Problems lists every failed check, in frame order.
	Problems []Problem `json:"problems"`
	// NotChecked lists checks that could not be carried out (payload cut by
	// the snap length, mapping incomplete in the capture, key missing,
	// resource limit), in frame order. They are not failures.
	NotChecked []Problem `json:"not_checked"`
	Stats      Stats     `json:"stats"`
}

// Problem is one failed (or, in [Report.NotChecked], skipped) check.
type Problem struct {
	Frame  int    `json:"frame"` // frame number, as tshark numbers frames
	Check  string `json:"check"` // one of the Check* names
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	return fmt.Sprintf("frame %d [%s]: %s", p.Frame, p.Check, p.Detail)
}

// Stats counts what [Analyze] saw and checked.
type Stats struct {
	TCPPackets int `json:"tcp_packets"`
	TCPFlows   int `json:"tcp_flows"`
	// Passed, Failed and NotChecked sum Checks.
	Passed     int         `json:"passed"`
	Failed     int         `json:"failed"`
	NotChecked int         `json:"not_checked"`
	Checks     []CheckStat `json:"checks"`
}

// CheckStat counts the outcomes of one check.
type CheckStat struct {
	Name       string `json:"name"`
	Passed     int    `json:"passed"`
	Failed     int    `json:"failed"`
	NotChecked int    `json:"not_checked"`
}

// Connection is one MPTCP connection: an MP_CAPABLE subflow and the
// MP_JOIN subflows that named its tokens. "Client" is the host that sent
// the MP_CAPABLE SYN.
type Connection struct {
	ID     int            `json:"id"` // 1-based, in order of the first frame
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	// Version is the MP_CAPABLE version (1).
	Version uint8 `json:"version"`
	// Keys, tokens and IDSNs (RFC 8684 §3.1); valid when *KeyKnown.
	ClientKeyKnown bool   `json:"client_key_known"`
	ClientKey      Hex64  `json:"client_key"`
	ClientToken    Hex32  `json:"client_token"`
	ClientIDSN     Hex64  `json:"client_idsn"`
	ServerKeyKnown bool   `json:"server_key_known"`
	ServerKey      Hex64  `json:"server_key"`
	ServerToken    Hex32  `json:"server_token"`
	ServerIDSN     Hex64  `json:"server_idsn"`
	ClientFlags    uint8  `json:"client_flags"` // MP_CAPABLE flags of the SYN
	ServerFlags    uint8  `json:"server_flags"` // MP_CAPABLE flags of the SYN/ACK
	Checksums      bool   `json:"checksums"`    // either side set A
	NoNewSubflows  bool   `json:"c_flag"`       // the server set C
	Fallback       string `json:"fallback,omitempty"`
	FallbackFrame  int    `json:"fallback_frame,omitempty"`
	// Data-level bytes each way (highest mapped DSN minus IDSN+1, DATA_FIN
	// excluded; 0 when the IDSN is unknown).
	BytesToServer   uint64 `json:"bytes_to_server"`
	BytesToClient   uint64 `json:"bytes_to_client"`
	DataFINToServer bool   `json:"data_fin_to_server"`
	DataFINToClient bool   `json:"data_fin_to_client"`
	InfiniteMapping bool   `json:"infinite_mapping"`
	MPFail          bool   `json:"mp_fail"`
	Fastclose       bool   `json:"fastclose"`
	FirstFrame      int    `json:"first_frame"`
	LastFrame       int    `json:"last_frame"`

	Subflows []*Subflow `json:"subflows"`
	Events   []Event    `json:"events"`
	// EventsDropped counts events beyond MaxEvents.
	EventsDropped int `json:"events_dropped,omitempty"`
}

// Subflow is one TCP flow of a connection. "Client" is the host that sent
// the SYN, which for a join is not necessarily the connection's client.
type Subflow struct {
	ID     int            `json:"id"` // 1-based within the connection
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	// Initial is true for the MP_CAPABLE subflow.
	Initial bool `json:"initial"`
	// ServerInitiated is true for a join sent by the connection's server.
	ServerInitiated bool `json:"server_initiated,omitempty"`
	// Address IDs of both ends (RFC 8684 §3.2; 0 for the initial subflow).
	ClientAddrID uint8 `json:"client_addr_id"`
	ServerAddrID uint8 `json:"server_addr_id"`
	// Backup reflects the B flags of MP_JOIN and the last MP_PRIO.
	Backup bool `json:"backup"`
	// Join fields (zero for the initial subflow).
	Token       Hex32 `json:"token,omitempty"`
	ClientNonce Hex32 `json:"client_nonce,omitempty"`
	ServerNonce Hex32 `json:"server_nonce,omitempty"`
	Established bool  `json:"established"` // the SYN/ACK was acknowledged
	// Subflow-level payload bytes each way (highest sequence reached).
	BytesToServer uint64 `json:"bytes_to_server"`
	BytesToClient uint64 `json:"bytes_to_client"`
	FINFromClient bool   `json:"fin_from_client"`
	FINFromServer bool   `json:"fin_from_server"`
	Reset         bool   `json:"reset"`
	ResetBy       string `json:"reset_by,omitempty"` // "client" or "server" (of the subflow)
	// RstReason is the MP_TCPRST reason of the first RST, when it had one.
	HasRstReason bool  `json:"has_rst_reason"`
	RstReason    uint8 `json:"rst_reason"`
	FirstFrame   int   `json:"first_frame"`
}

// Event is something noteworthy that happened on a connection.
type Event struct {
	Frame   int       `json:"frame"`
	Time    time.Time `json:"time"`
	Subflow int       `json:"subflow"` // Subflow.ID
	From    string    `json:"from"`    // "client" or "server" (of the connection)
	Kind    string    `json:"kind"`    // option name or "fallback", "RST", ...
	Detail  string    `json:"detail,omitempty"`
}

// Hex64 is a 64-bit value (key, IDSN) shown in hexadecimal, also in JSON.
type Hex64 uint64

func (h Hex64) String() string { return fmt.Sprintf("%016x", uint64(h)) }

// MarshalText implements encoding.TextMarshaler.
func (h Hex64) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hex64) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 16, 64)
	*h = Hex64(v)
	return err
}

// Hex32 is a 32-bit value (token, nonce) shown in hexadecimal, also in JSON.
type Hex32 uint32

func (h Hex32) String() string { return fmt.Sprintf("%08x", uint32(h)) }

// MarshalText implements encoding.TextMarshaler.
func (h Hex32) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hex32) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 16, 32)
	*h = Hex32(v)
	return err
}

// OK reports whether every check passed (checks that could not be carried
// out do not count as failures).
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes a human-readable report: one block per MPTCP
// connection (keys and tokens in hex, subflows as a table, events), then
// the check totals and every failure and skipped check with its frame.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	for _, c := range r.Connections {
		writeConnection(ew, c)
	}
	ew.printf("TCP packets: %d, flows: %d (MPTCP connections: %d, plain TCP: %d, unanalyzed: %d)\n",
		r.Stats.TCPPackets, r.Stats.TCPFlows, len(r.Connections), r.Plain, r.Unanalyzed)
	ew.printf("checks: %d passed, %d failed, %d not checked\n",
		r.Stats.Passed, r.Stats.Failed, r.Stats.NotChecked)
	for _, s := range r.Stats.Checks {
		if s.Passed+s.Failed+s.NotChecked == 0 {
			continue
		}
		ew.printf("  %-17s %6d passed %4d failed %4d not checked\n", s.Name, s.Passed, s.Failed, s.NotChecked)
	}
	for _, p := range r.Problems {
		ew.printf("FAIL %s\n", p)
	}
	for _, p := range r.NotChecked {
		ew.printf("not checked: %s\n", p)
	}
	return ew.err
}

func writeConnection(ew *errWriter, c *Connection) {
	ew.printf("MPTCP connection %d: %s -> %s (frames %d-%d)\n", c.ID, c.Client, c.Server, c.FirstFrame, c.LastFrame)
	ew.printf("  version %d, checksums %s, C flag %s, flags client %#02x server %#02x\n",
		c.Version, onOff(c.Checksums), onOff(c.NoNewSubflows), c.ClientFlags, c.ServerFlags)
	writeKey(ew, "client", c.ClientKeyKnown, c.ClientKey, c.ClientToken, c.ClientIDSN)
	writeKey(ew, "server", c.ServerKeyKnown, c.ServerKey, c.ServerToken, c.ServerIDSN)
	ew.printf("  data: %d bytes to server%s, %d bytes to client%s\n",
		c.BytesToServer, finText(c.DataFINToServer), c.BytesToClient, finText(c.DataFINToClient))
	if c.Fallback != "" {
		ew.printf("  fallback to TCP at frame %d: %s\n", c.FallbackFrame, c.Fallback)
	}
	var flags []string
	if c.InfiniteMapping {
		flags = append(flags, "infinite mapping")
	}
	if c.MPFail {
		flags = append(flags, "MP_FAIL")
	}
	if c.Fastclose {
		flags = append(flags, "MP_FASTCLOSE")
	}
	if len(flags) > 0 {
		ew.printf("  seen: %s\n", strings.Join(flags, ", "))
	}
	ew.printf("  subflows:\n")
	tw := tabwriter.NewWriter(ew, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "    #\tclient\tserver\tids\tbackup\tto server\tto client\tstate\n")
	for _, s := range c.Subflows {
		fmt.Fprintf(tw, "    %d\t%s\t%s\t%d/%d\t%s\t%d\t%d\t%s\n", s.ID, s.Client, s.Server,
			s.ClientAddrID, s.ServerAddrID, yesNo(s.Backup), s.BytesToServer, s.BytesToClient, subflowState(s))
	}
	tw.Flush()
	if len(c.Events) > 0 {
		ew.printf("  events:\n")
		tw = tabwriter.NewWriter(ew, 2, 8, 2, ' ', 0)
		for _, e := range c.Events {
			fmt.Fprintf(tw, "    frame %d\tsubflow %d\t%s\t%s\t%s\n", e.Frame, e.Subflow, e.From, e.Kind, e.Detail)
		}
		tw.Flush()
		if c.EventsDropped > 0 {
			ew.printf("    (%d more events not recorded)\n", c.EventsDropped)
		}
	}
	ew.printf("\n")
}

func writeKey(ew *errWriter, who string, known bool, key Hex64, token Hex32, idsn Hex64) {
	if !known {
		ew.printf("  %s key: not seen\n", who)
		return
	}
	ew.printf("  %s key %s token %s idsn %s\n", who, key, token, idsn)
}

func subflowState(s *Subflow) string {
	var parts []string
	if s.Initial {
		parts = append(parts, "initial")
	} else {
		parts = append(parts, "join token "+s.Token.String())
		if s.ServerInitiated {
			parts = append(parts, "server-initiated")
		}
	}
	if !s.Established {
		parts = append(parts, "not established")
	}
	if s.FINFromClient || s.FINFromServer {
		parts = append(parts, "FIN")
	}
	if s.Reset {
		rst := "reset by " + s.ResetBy
		if s.HasRstReason {
			rst += fmt.Sprintf(" (reason %d: %s)", s.RstReason, options.RstReason(s.RstReason))
		}
		parts = append(parts, rst)
	}
	return strings.Join(parts, ", ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func finText(b bool) string {
	if b {
		return " + DATA_FIN"
	}
	return ""
}

// errWriter keeps the first write error so the report code stays linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) {
	fmt.Fprintf(e, format, args...)
}
