package conformance

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
)

// expectation is a tshark field name and the value our decoding implies.
type expectation struct {
	field string
	want  string
	// optional fields may be missing from tshark's output: tshark 4.0
	// does not dissect the DSS checksum field (it only checks the length
	// covers it), so it is compared when present.
	optional bool
}

// tsharkIgnored are fields tshark shows that carry no decoded value of
// ours: option framing we check elsewhere, reserved bits, and the MPTCP
// analysis values that depend on the whole conversation (relative
// sequence numbers, stream indexes).
var tsharkIgnored = map[string]bool{
	"tcp.option_kind":                      true,
	"tcp.options.mptcp.reserved":           true,
	"tcp.options.mptcp.reserved.flag":      true,
	"mptcp.ack":                            true,
	"mptcp.dsn":                            true,
	"mptcp.dss.dsn":                        true,
	"mptcp.rawdsn64":                       true,
	"mptcp.analysis":                       true,
	"mptcp.related_mapping":                true,
	"mptcp.reinjection_of":                 true,
	"mptcp.reinjected_in":                  true,
	"mptcp.master":                         true,
	"mptcp.stream":                         true,
	"mptcp.analysis.subflows":              true,
	"_ws.expert":                           true,
	"_ws.expert.message":                   true,
	"_ws.expert.severity":                  true,
	"_ws.expert.group":                     true,
	"tcp.options.mptcp.flags":              false, // compared where meaningful
	"mptcp.connection.echoed_key_mismatch": false,
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// expectTshark lists the tshark fields (tshark 4.0 names) for an option.
func expectTshark(o options.Option) []expectation {
	e := []expectation{
		{field: "tcp.options.mptcp.subtype", want: u(uint64(o.Subtype()))},
		{field: "tcp.option_len", want: strconv.Itoa(o.Len())},
	}
	add := func(field, want string) { e = append(e, expectation{field: field, want: want}) }
	switch o := o.(type) {
	case options.MPCapable:
		add("tcp.options.mptcp.version", u(uint64(o.Version)))
		add("tcp.options.mptcp.flags", u(uint64(o.Flags)))
		add("tcp.options.mptcp.checksumreq.flags", b2s(o.Flags&options.CapableFlagChecksum != 0))
		add("tcp.options.mptcp.extensibility.flag", b2s(o.Flags&options.CapableFlagExtensibility != 0))
		add("tcp.options.mptcp.nomoresubflows.flag", b2s(o.Flags&options.CapableFlagNoNewSubflowsToSource != 0))
		add("tcp.options.mptcp.sha256.flag", b2s(o.Flags&options.CapableFlagHMACSHA256 != 0))
		if o.Form != options.CapableSYN {
			add("tcp.options.mptcp.sendkey", u(o.SenderKey))
			// tshark derives the token and IDSN from the sender's
			// key: a second opinion on handshake.TokenAndIDSN.
			tok, idsn := handshake.TokenAndIDSN(o.SenderKey)
			add("mptcp.expected_token", u(uint64(tok)))
			add("mptcp.expected_idsn", u(idsn))
		}
		if o.Form == options.CapableACK || o.Form == options.CapableACKData {
			add("tcp.options.mptcp.recvkey", u(o.ReceiverKey))
		}
		if o.Form == options.CapableACKData {
			add("tcp.options.mptcp.datalvllen", u(uint64(o.DataLen)))
			if o.HasChecksum {
				add("tcp.options.mptcp.checksum", u(uint64(o.Checksum)))
			}
		}
	case options.MPJoin:
		switch o.Form {
		case options.JoinSYN:
			// For MP_JOIN, like MP_TCPRST, tshark 4.0's "flags" is
			// the whole third byte: subtype and B.
			add("tcp.options.mptcp.flags", u(uint64(options.SubtypeMPJoin)<<4|uint64(b2u(o.Backup))))
			add("tcp.options.mptcp.backup.flag", b2s(o.Backup))
			add("tcp.options.mptcp.addrid", u(uint64(o.AddrID)))
			add("tcp.options.mptcp.recvtok", u(uint64(o.Token)))
			add("tcp.options.mptcp.sendrand", u(uint64(o.Nonce)))
		case options.JoinSYNACK:
			add("tcp.options.mptcp.flags", u(uint64(options.SubtypeMPJoin)<<4|uint64(b2u(o.Backup))))
			add("tcp.options.mptcp.backup.flag", b2s(o.Backup))
			add("tcp.options.mptcp.addrid", u(uint64(o.AddrID)))
			add("tcp.options.mptcp.sendtrunchmac", u(o.TruncatedHMAC))
			add("tcp.options.mptcp.sendrand", u(uint64(o.Nonce)))
		case options.JoinACK:
			add("tcp.options.mptcp.sendhmac", "hex:"+hex.EncodeToString(o.HMAC[:]))
		}
	case options.DSS:
		add("tcp.options.mptcp.flags", u(uint64(o.Flags())))
		add("tcp.options.mptcp.datafin.flag", b2s(o.DataFIN))
		add("tcp.options.mptcp.dseqn8.flag", b2s(o.DSN64))
		add("tcp.options.mptcp.dseqnpresent.flag", b2s(o.HasMapping))
		add("tcp.options.mptcp.dataack8.flag", b2s(o.DataAck64))
		add("tcp.options.mptcp.dataackpresent.flag", b2s(o.HasDataAck))
		if o.HasDataAck {
			add("tcp.options.mptcp.rawdataack", u(o.DataAck))
		}
		if o.HasMapping {
			add("tcp.options.mptcp.rawdataseqno", u(o.DSN))
			add("tcp.options.mptcp.subflowseqno", u(uint64(o.SubflowSeq)))
			add("tcp.options.mptcp.datalvllen", u(uint64(o.DataLen)))
			if o.HasChecksum {
				e = append(e, expectation{field: "tcp.options.mptcp.checksum", want: u(uint64(o.Checksum)), optional: true})
			}
		}
	case options.AddAddr:
		add("tcp.options.mptcp.echo", b2s(o.Echo))
		add("tcp.options.mptcp.addrid", u(uint64(o.AddrID)))
		if o.Addr.Is4() {
			add("tcp.options.mptcp.ipv4", "ip:"+o.Addr.String())
		} else {
			add("tcp.options.mptcp.ipv6", "ip:"+o.Addr.String())
		}
		if o.HasPort {
			add("tcp.options.mptcp.port", u(uint64(o.Port)))
		}
		if !o.Echo {
			add("tcp.options.mptcp.addaddrtrunchmac", u(o.HMAC))
		}
	case options.RemoveAddr:
		var ids []string
		for _, id := range o.IDs {
			ids = append(ids, u(uint64(id)))
		}
		add("tcp.options.mptcp.addrid", strings.Join(ids, ","))
		add("mptcp.rm_addr.count", u(uint64(len(o.IDs))))
	case options.MPPrio:
		add("tcp.options.mptcp.flags", u(uint64(options.SubtypeMPPrio)<<4|uint64(b2u(o.Backup))))
		add("tcp.options.mptcp.backup.flag", b2s(o.Backup))
	case options.MPFail:
		add("tcp.options.mptcp.rawdataseqno", u(o.DSN))
	case options.MPFastclose:
		add("tcp.options.mptcp.recvkey", u(o.Key))
	case options.MPTCPRst:
		// tshark 4.0 shows the whole third byte (subtype and flags) as
		// the MP_TCPRST "flags".
		add("tcp.options.mptcp.flags", u(uint64(options.SubtypeMPTCPRst)<<4|uint64(o.Flags&0xf)))
		add("tcp.options.mptcp.flag_U.flag", b2s(o.Flags&0x8 != 0))
		add("tcp.options.mptcp.flag_V.flag", b2s(o.Flags&0x4 != 0))
		add("tcp.options.mptcp.flag_W.flag", b2s(o.Flags&0x2 != 0))
		add("tcp.options.mptcp.flag_T.flag", b2s(o.Flags&0x1 != 0))
		add("tcp.options.mptcp.rst_reason", u(uint64(o.Reason)))
	}
	return e
}

// sameValue compares our expected value with tshark's rendering: numbers
// in decimal or 0x-hex, booleans as 0/1 or True/False, "ip:" addresses,
// "hex:" byte strings (compared with the field's raw value).
func sameValue(want string, got tsField) bool {
	switch {
	case strings.HasPrefix(want, "ip:"):
		a, err := netip.ParseAddr(got.show)
		return err == nil && a.String() == want[3:]
	case strings.HasPrefix(want, "hex:"):
		raw := strings.ToLower(strings.ReplaceAll(got.value, ":", ""))
		if raw == "" {
			raw = strings.ToLower(strings.ReplaceAll(got.show, ":", ""))
		}
		return raw == want[4:]
	}
	switch got.show {
	case "True":
		return want == "1"
	case "False":
		return want == "0"
	}
	w, err1 := strconv.ParseUint(want, 10, 64)
	g, err2 := strconv.ParseUint(got.show, 0, 64)
	if err1 != nil || err2 != nil {
		return want == got.show
	}
	return w == g
}

// diffTshark compares one decoded option with tshark's dissection of it,
// field by field, and reports tshark fields it did not compare.
func diffTshark(o options.Option, ts tsOption) []string {
	var diffs []string
	used := make(map[string]bool)
	for _, e := range expectTshark(o) {
		used[e.field] = true
		got := ts.fields[e.field]
		if len(got) == 0 {
			if !e.optional {
				diffs = append(diffs, fmt.Sprintf("tshark has no %s (ours %s)", e.field, e.want))
			}
			continue
		}
		if strings.Contains(e.want, ",") && !strings.HasPrefix(e.want, "hex:") {
			// A repeated field (REMOVE_ADDR IDs).
			var shows []string
			for _, g := range got {
				shows = append(shows, g.show)
			}
			if strings.Join(shows, ",") != e.want {
				diffs = append(diffs, fmt.Sprintf("%s: tshark %s, ours %s", e.field, strings.Join(shows, ","), e.want))
			}
			continue
		}
		if e.field == "tcp.option_len" {
			got = got[:1] // the option's own length comes first
		}
		if len(got) != 1 && e.field != "tcp.options.mptcp.addrid" {
			diffs = append(diffs, fmt.Sprintf("%s appears %d times in tshark's dissection", e.field, len(got)))
			continue
		}
		if !sameValue(e.want, got[0]) {
			diffs = append(diffs, fmt.Sprintf("%s: tshark %q, ours %s", e.field, got[0].show, e.want))
		}
	}
	var extra []string
	for f := range ts.fields {
		if !used[f] && !tsharkIgnored[f] {
			extra = append(extra, f)
		}
	}
	sort.Strings(extra)
	for _, f := range extra {
		diffs = append(diffs, fmt.Sprintf("tshark shows %s=%q that we do not compare", f, ts.fields[f][0].show))
	}
	return diffs
}
