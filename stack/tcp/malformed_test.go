package tcp_test

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// rawSegment encodes a TCP header with the option area opts (a multiple of
// four bytes) as a peer would put it on the wire.
func rawSegment(seq, ack seqnum.Value, flags header.TCPFlags, win uint16, opts []byte, sport, dport uint16) []byte {
	s := tcp.OutSegment{Seq: seq, Ack: ack, Flags: flags, Window: win, Options: opts}
	return s.AppendHeader(nil, sport, dport)
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// mpcFactory answers a SYN carrying a well-formed MP_CAPABLE with an
// extension that puts MP_CAPABLE on the SYN-ACK, anything else as plain
// TCP, the way the MPTCP layer's listener factory decides.
func mpcFactory(_ tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
	for _, raw := range seg.Options.MPTCPOptions() {
		if _, err := options.ParseMPCapable(raw); err == nil {
			return synAckCapable{}, tcp.VerdictAccept
		}
	}
	return nil, tcp.VerdictAccept
}

type synAckCapable struct{ tcp.NopExtension }

func (synAckCapable) SegmentOptions(info *tcp.SegmentInfo, _ int, dst []options.Option) []options.Option {
	if info.Flags&tcp.FlagSYN != 0 {
		return append(dst, capable)
	}
	return dst
}

// TestMalformedSYNOptions: a SYN whose options are partly malformed is
// processed like Linux's tcp_parse_options does it, not dropped: a known
// option with a wrong length (MSS of length 5, MPTCP of length 2) is
// ignored and the walk continues; a length below 2 or an option running
// past the header ends the walk, keeping what came before. The SYN-ACK
// honours every well-formed option, and a SYN whose MP_CAPABLE is
// malformed is answered as plain TCP.
func TestMalformedSYNOptions(t *testing.T) {
	// MSS 1200, NOP+WS 7, SACK-permitted+TS (TSval 42).
	const base = "02 04 04 b0 01 03 03 07 04 02 08 0a 00 00 00 2a 00 00 00 00"
	for _, tc := range []struct {
		name      string
		opts      string
		mss       bool // the peer's MSS (1200) honoured, else 536
		mptcp     bool // answered with MP_CAPABLE
		malformed int
	}{
		{"valid MP_CAPABLE (control)", base + "1e 04 01 81", true, true, 0},
		{"MPTCP length 2", base + "1e 02 01 01", true, false, 1},
		{"MPTCP length 1", base + "1e 01 00 00", true, false, 1},
		{"MPTCP length 0", base + "1e 00 00 00", true, false, 1},
		{"MP_CAPABLE past the header", base + "1e 0c 00 81", true, false, 1},
		{"MPTCP length 2 before the others", "02 04 04 b0 1e 02 01 03 03 07 04 02 08 0a 00 00 00 2a 00 00 00 00 01 01", true, false, 1},
		{"MSS length 5", "02 05 04 b0 00 01 01 01" + strings.TrimPrefix(base, "02 04 04 b0") + "1e 04 01 81", false, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := simnet.New(1)
			n.AddHost(addrA)
			hb := n.AddHost(addrB)
			n.Connect(addrA, addrB, simnet.LinkConfig{Delay: time.Millisecond}, simnet.LinkConfig{Delay: time.Millisecond})
			if _, err := hb.Listen(port, tcp.ListenerConfig{NewExtension: mpcFactory}); err != nil {
				t.Fatal(err)
			}
			var replies []tcp.Segment
			n.Tap = func(p *simnet.Packet) bool {
				var s tcp.Segment
				if _, _, err := tcp.ParseSegment(p.Bytes, &s); err != nil {
					t.Fatalf("endpoint sent an unparsable segment: %v", err)
				}
				replies = append(replies, s)
				return false // A has no endpoint: keep its RST out of the way
			}
			syn := rawSegment(7000, 0, tcp.FlagSYN, 65535, unhex(tc.opts), 1234, port)
			var parsed tcp.Segment
			if _, _, err := tcp.ParseSegment(syn, &parsed); err != nil {
				t.Fatalf("ParseSegment rejects the SYN: %v", err)
			}
			if parsed.Options.Malformed != tc.malformed {
				t.Errorf("Malformed = %d, want %d", parsed.Options.Malformed, tc.malformed)
			}
			n.Inject(0, addrA, 1234, addrB, port, syn)
			n.RunFor(10 * time.Millisecond)
			if len(replies) != 1 || replies[0].Flags != tcp.FlagSYN|tcp.FlagACK || replies[0].Ack != 7001 {
				t.Fatalf("replies %+v, want one SYN-ACK", replies)
			}
			o := replies[0].Options
			if !o.HasWindowScale || !o.SACKPermitted || !o.HasTimestamp || o.TSEcr != 42 {
				t.Errorf("SYN-ACK does not honour WS, SACK-permitted and TS: %+v", o)
			}
			if got := o.NumMPTCP > 0; got != tc.mptcp {
				t.Errorf("SYN-ACK with MPTCP option: %v, want %v", got, tc.mptcp)
			}
			eps := hb.Endpoints()
			if len(eps) != 1 {
				t.Fatalf("%d endpoints", len(eps))
			}
			i := eps[0].Info()
			wantMSS := 536 - 12
			if tc.mss {
				wantMSS = 1200 - 12
			}
			if i.SndMSS != wantMSS || !i.SACK || !i.Timestamps || i.SndWScale != 7 {
				t.Errorf("negotiated %+v, want MSS %d, SACK, TS, WS 7", i, wantMSS)
			}
		})
	}
}
