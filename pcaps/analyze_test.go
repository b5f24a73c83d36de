package pcaps

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps/pcapstest"
)

const (
	clientKey = 0x0123456789abcdef
	serverKey = 0xfedcba9876543210
)

var (
	clientAddr  = netip.MustParseAddrPort("10.0.1.1:40000")
	serverAddr  = netip.MustParseAddrPort("10.0.1.2:8080")
	client2Addr = netip.MustParseAddrPort("10.0.2.1:40001")
	server2Addr = netip.MustParseAddrPort("10.0.3.2:8080")
	announced   = netip.MustParseAddr("10.0.3.2")
)

// pattern returns n bytes of deterministic, position-dependent data.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed*13 + i>>8)
	}
	return b
}

// conversation is a synthetic MPTCP conversation with the positions of its
// interesting segments (indexes into conv.c.Segs).
type conversation struct {
	c                                 *pcapstest.Conn
	initial, join                     *pcapstest.Subflow
	joinSYN, joinSYNACK, joinACK      int
	addAddr                           int
	clientData, serverData, join2Data [2]int // first and last segment of each Send
}

// goodConversation builds an MPTCP connection with data both ways on the
// initial subflow (the client's first data mapped by MP_CAPABLE), an
// ADD_ADDR from the server, a join from a second client address with data
// both ways, DATA_FINs both ways and subflow FINs.
func goodConversation(checksums bool, edit func(*pcapstest.Conn)) *conversation {
	cv := &conversation{c: pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, checksums)}
	c := cv.c
	c.MSS = 500
	c.MappingSize = 1200
	if edit != nil {
		edit(c)
	}
	sf := c.Handshake()
	cv.initial = sf
	cv.clientData[0], cv.clientData[1] = sf.Send(pcapstest.Client, pattern(1500, 1))
	cv.serverData[0], cv.serverData[1] = sf.Send(pcapstest.Server, pattern(3000, 2))
	sf.Ack(pcapstest.Client)
	cv.addAddr = sf.AddAddr(pcapstest.Server, 1, announced, 0)
	cv.joinSYN = len(c.Segs)
	cv.joinSYNACK, cv.joinACK = cv.joinSYN+1, cv.joinSYN+2
	j := c.Join(pcapstest.JoinParams{Initiator: client2Addr, Listener: server2Addr, InitiatorID: 2, ListenerID: 1,
		InitiatorNonce: 0x11223344, ListenerNonce: 0x55667788})
	cv.join = j
	j.Send(pcapstest.Client, pattern(700, 3))
	cv.join2Data[0], cv.join2Data[1] = j.Send(pcapstest.Server, pattern(1300, 4))
	j.Ack(pcapstest.Client)
	sf.DataFIN(pcapstest.Client)
	j.DataFIN(pcapstest.Server)
	sf.Ack(pcapstest.Client)
	j.Ack(pcapstest.Server)
	sf.Fin(pcapstest.Client)
	sf.Fin(pcapstest.Server)
	j.Fin(pcapstest.Client)
	j.Fin(pcapstest.Server)
	return cv
}

// analyzeSegs writes segs as a capture, reads it back and analyzes it.
func analyzeSegs(t *testing.T, f pcapstest.Format, segs []pcapstest.Segment) *Report {
	t.Helper()
	pkts, err := Read(bytes.NewReader(writeCapture(t, f, segs)))
	if err != nil {
		t.Fatal(err)
	}
	return Analyze(pkts)
}

var rawFormat = pcapstest.Format{LinkType: layers.LinkTypeRaw}

func checkStat(r *Report, name string) CheckStat {
	for _, s := range r.Stats.Checks {
		if s.Name == name {
			return s
		}
	}
	return CheckStat{}
}

func dumpReport(t *testing.T, r *Report) {
	t.Helper()
	var b strings.Builder
	r.WriteText(&b)
	t.Log("\n" + b.String())
}

func TestAnalyzeGood(t *testing.T) {
	for _, tc := range []struct {
		name      string
		checksums bool
		format    pcapstest.Format
		edit      func(*pcapstest.Conn)
	}{
		{"checksums", true, rawFormat, nil},
		{"no-checksums", false, rawFormat, nil},
		{"every-segment-mapped", true, pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL2, NG: true},
			func(c *pcapstest.Conn) { c.MapEverySegment = true }},
		{"big-mappings", true, pcapstest.Format{LinkType: layers.LinkTypeEthernet},
			func(c *pcapstest.Conn) { c.MappingSize = 65535; c.MSS = 1448 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cv := goodConversation(tc.checksums, tc.edit)
			r := analyzeSegs(t, tc.format, cv.c.Segs)
			if !r.OK() || r.Stats.Failed != 0 || r.Stats.NotChecked != 0 {
				dumpReport(t, r)
				t.Fatalf("problems %v, not checked %v", r.Problems, r.NotChecked)
			}
			if len(r.Connections) != 1 || r.Plain != 0 || r.Unanalyzed != 0 {
				t.Fatalf("%d connections, %d plain, %d unanalyzed", len(r.Connections), r.Plain, r.Unanalyzed)
			}
			c := r.Connections[0]
			ctok, cidsn := handshake.TokenAndIDSN(clientKey)
			stok, sidsn := handshake.TokenAndIDSN(serverKey)
			if c.Client != clientAddr || c.Server != serverAddr || c.Version != 1 ||
				!c.ClientKeyKnown || c.ClientKey != clientKey || c.ClientToken != Hex32(ctok) || c.ClientIDSN != Hex64(cidsn) ||
				!c.ServerKeyKnown || c.ServerKey != serverKey || c.ServerToken != Hex32(stok) || c.ServerIDSN != Hex64(sidsn) {
				t.Errorf("connection identity: %+v", c)
			}
			if c.Checksums != tc.checksums || c.Fallback != "" || c.InfiniteMapping || c.MPFail || c.Fastclose {
				t.Errorf("connection state: %+v", c)
			}
			if c.BytesToServer != 1500+700 || c.BytesToClient != 3000+1300 || !c.DataFINToServer || !c.DataFINToClient {
				t.Errorf("data: %d to server, %d to client, DATA_FIN %v/%v", c.BytesToServer, c.BytesToClient, c.DataFINToServer, c.DataFINToClient)
			}
			if len(c.Subflows) != 2 {
				t.Fatalf("%d subflows", len(c.Subflows))
			}
			s1, s2 := c.Subflows[0], c.Subflows[1]
			if !s1.Initial || !s1.Established || s1.BytesToServer != 1500 || s1.BytesToClient != 3000 || !s1.FINFromClient || !s1.FINFromServer || s1.Reset {
				t.Errorf("initial subflow: %+v", s1)
			}
			if s2.Initial || !s2.Established || s2.Client != client2Addr || s2.Server != server2Addr ||
				s2.ClientAddrID != 2 || s2.ServerAddrID != 1 || s2.Token != Hex32(stok) ||
				s2.ClientNonce != 0x11223344 || s2.ServerNonce != 0x55667788 || s2.ServerInitiated ||
				s2.BytesToServer != 700 || s2.BytesToClient != 1300 {
				t.Errorf("join subflow: %+v", s2)
			}
			// Every check ran.
			want := map[string]int{
				CheckKeys: 2, CheckIDSN: 2, CheckJoinToken: 1, CheckJoinSYNACK: 1, CheckJoinACK: 1,
				CheckAddAddr: 1, CheckDataFIN: 2,
			}
			if cv.c.MapEverySegment {
				// MP_CAPABLE ACK+data repeated on the segments of the
				// client's first mapping.
				want[CheckKeys] = 1 + (1200+cv.c.MSS-1)/cv.c.MSS
			}
			for name, n := range want {
				if s := checkStat(r, name); s.Passed != n {
					t.Errorf("%s: %d passed, want %d", name, s.Passed, n)
				}
			}
			if tc.checksums {
				// One checksum per mapping.
				mappings := 0
				for _, n := range []int{1500, 3000, 700, 1300} {
					mappings += (n + cv.c.MappingSize - 1) / cv.c.MappingSize
				}
				if s := checkStat(r, CheckChecksum); s.Passed != mappings {
					t.Errorf("checksums: %d passed, want %d", s.Passed, mappings)
				}
			}
			if s := checkStat(r, CheckMapping); s.Passed == 0 {
				t.Error("no mapping check ran")
			}
			if s := checkStat(r, CheckOption); s.Passed < len(cv.c.Segs) {
				t.Errorf("option checks: %d passed", s.Passed)
			}
			kinds := map[string]bool{}
			for _, e := range c.Events {
				kinds[e.Kind] = true
			}
			for _, k := range []string{"ADD_ADDR", "DATA_FIN"} {
				if !kinds[k] {
					t.Errorf("no %s event in %v", k, c.Events)
				}
			}
		})
	}
}

// flip XORs one byte of a segment's options.
func flip(segs []pcapstest.Segment, i, off int) {
	segs[i].Options = slices.Clone(segs[i].Options)
	segs[i].Options[off] ^= 0x40
}

// dssOffset returns the offset of the first DSS option in opts.
func dssOffset(t *testing.T, opts []byte) int {
	t.Helper()
	for off := 0; off < len(opts); {
		if opts[off] <= 1 {
			off++
			continue
		}
		if opts[off] == 30 && opts[off+2]>>4 == 2 {
			return off
		}
		off += int(opts[off+1])
	}
	t.Fatalf("no DSS in %x", opts)
	return 0
}

// TestAnalyzeCorrupted corrupts one thing at a time in a good
// conversation and expects exactly one Problem, of the right check, at the
// right frame.
func TestAnalyzeCorrupted(t *testing.T) {
	type corruption struct {
		name      string
		checksums bool
		// corrupt edits the conversation and returns the index of the
		// segment the Problem must point at.
		corrupt func(t *testing.T, cv *conversation) int
		check   string
	}
	cases := []corruption{
		{"join SYN/ACK HMAC", true, func(t *testing.T, cv *conversation) int {
			flip(cv.c.Segs, cv.joinSYNACK, 6) // inside the truncated HMAC
			return cv.joinSYNACK
		}, CheckJoinSYNACK},
		{"join ACK HMAC", true, func(t *testing.T, cv *conversation) int {
			flip(cv.c.Segs, cv.joinACK, 23)
			return cv.joinACK
		}, CheckJoinACK},
		{"join token", true, func(t *testing.T, cv *conversation) int {
			flip(cv.c.Segs, cv.joinSYN, 5)
			return cv.joinSYN
		}, CheckJoinToken},
		{"ADD_ADDR HMAC", false, func(t *testing.T, cv *conversation) int {
			flip(cv.c.Segs, cv.addAddr, 9) // first HMAC byte of the IPv4 form
			return cv.addAddr
		}, CheckAddAddr},
		{"DSS checksum field", true, func(t *testing.T, cv *conversation) int {
			i := cv.serverData[0]
			off := dssOffset(t, cv.c.Segs[i].Options)
			flip(cv.c.Segs, i, off+int(cv.c.Segs[i].Options[off+1])-1)
			return i
		}, CheckChecksum},
		{"payload byte", true, func(t *testing.T, cv *conversation) int {
			// The second segment of the server's first mapping: the
			// failure is reported at the mapping's frame.
			i := cv.serverData[0] + 1
			cv.c.Segs[i].Payload = slices.Clone(cv.c.Segs[i].Payload)
			cv.c.Segs[i].Payload[17]++
			return cv.serverData[0]
		}, CheckChecksum},
		{"client key echo", true, func(t *testing.T, cv *conversation) int {
			flip(cv.c.Segs, 2, 15) // receiver key in the third ACK
			return 2
		}, CheckKeys},
		{"overlapping mapping", false, func(t *testing.T, cv *conversation) int {
			// Retransmit the first segment of the server's second mapping
			// with its mapping moved one DSN down.
			i := cv.serverData[0] + 3
			s := cv.c.Segs[i]
			s.Options = slices.Clone(s.Options)
			off := dssOffset(t, s.Options)
			d, err := options.ParseDSS(s.Options[off : off+int(s.Options[off+1])])
			if err != nil || !d.HasMapping || d.SubflowSeq != 1201 {
				t.Fatalf("segment %d: %+v %v", i, d, err)
			}
			d.DSN--
			copy(s.Options[off:], d.Append(nil))
			s.Time = cv.c.Time
			cv.c.Segs = append(cv.c.Segs, s)
			return len(cv.c.Segs) - 1
		}, CheckMapping},
		{"first DSN", false, func(t *testing.T, cv *conversation) int {
			i := cv.serverData[0]
			off := dssOffset(t, cv.c.Segs[i].Options)
			flip(cv.c.Segs, i, off+4+8+7) // low byte of the 64-bit DSN
			return i
		}, CheckIDSN},
		{"unmapped payload", false, func(t *testing.T, cv *conversation) int {
			cv.initial.Segment(pcapstest.Server, pcapstest.PSH, nil, []byte("stray"))
			return len(cv.c.Segs) - 1
		}, CheckMapping},
		{"mapping without checksum", true, func(t *testing.T, cv *conversation) int {
			i := cv.serverData[0]
			opts := cv.c.Segs[i].Options
			off := dssOffset(t, opts)
			d, err := options.ParseDSS(opts[off : off+int(opts[off+1])])
			if err != nil || !d.HasChecksum {
				t.Fatalf("segment %d: %+v %v", i, d, err)
			}
			d.HasChecksum = false
			cv.c.Segs[i].Options = pcapstest.Options(d)
			return i
		}, CheckChecksum},
		{"second DATA_FIN", false, func(t *testing.T, cv *conversation) int {
			return cv.initial.DataFIN(pcapstest.Client)
		}, CheckDataFIN},
		{"MP_FASTCLOSE key", false, func(t *testing.T, cv *conversation) int {
			cv.initial.Segment(pcapstest.Client, 0, pcapstest.Options(options.MPFastclose{Key: serverKey}), nil) // right
			cv.initial.Segment(pcapstest.Client, 0, pcapstest.Options(options.MPFastclose{Key: clientKey}), nil) // wrong
			return len(cv.c.Segs) - 1
		}, CheckFastclose},
		{"malformed option", false, func(t *testing.T, cv *conversation) int {
			cv.initial.Segment(pcapstest.Client, 0, []byte{30, 4, 0x51, 0}, nil) // MP_PRIO of length 4
			return len(cv.c.Segs) - 1
		}, CheckOption},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The unmodified conversation passes.
			cv := goodConversation(tc.checksums, nil)
			if r := analyzeSegs(t, rawFormat, cv.c.Segs); !r.OK() {
				t.Fatalf("unmodified: %v", r.Problems)
			}
			at := tc.corrupt(t, cv)
			r := analyzeSegs(t, rawFormat, cv.c.Segs)
			if len(r.Problems) != 1 {
				dumpReport(t, r)
				t.Fatalf("got %d problems, want 1", len(r.Problems))
			}
			p := r.Problems[0]
			if p.Check != tc.check || p.Frame != at+1 {
				t.Errorf("problem %v, want check %s at frame %d", p, tc.check, at+1)
			}
			if r.OK() || r.Stats.Failed != 1 || checkStat(r, tc.check).Failed != 1 {
				t.Errorf("OK %v, failed %d", r.OK(), r.Stats.Failed)
			}
			t.Log(p)
		})
	}
}

// TestAnalyzeTruncated: payload cut by the snap length makes checksums
// "not checked", never failures.
func TestAnalyzeTruncated(t *testing.T) {
	cv := goodConversation(true, nil)
	r := analyzeSegs(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, Snaplen: 120}, cv.c.Segs)
	if !r.OK() {
		dumpReport(t, r)
		t.Fatalf("problems: %v", r.Problems)
	}
	s := checkStat(r, CheckChecksum)
	if s.Passed != 0 || s.Failed != 0 || s.NotChecked == 0 {
		t.Errorf("checksums: %+v", s)
	}
	for _, p := range r.NotChecked {
		if p.Check != CheckChecksum || !strings.Contains(p.Detail, "snap length") {
			t.Errorf("unexpected not-checked entry %v", p)
		}
	}
	// A corrupted payload byte beyond the snap length cannot be seen.
	cv = goodConversation(true, nil)
	i := cv.serverData[0] + 1
	cv.c.Segs[i].Payload = slices.Clone(cv.c.Segs[i].Payload)
	cv.c.Segs[i].Payload[400]++
	if r := analyzeSegs(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, Snaplen: 120}, cv.c.Segs); !r.OK() {
		t.Errorf("problems: %v", r.Problems)
	}
}

// TestAnalyzeMissingSegment: a data segment missing from the capture
// leaves its mapping unchecked, not failed.
func TestAnalyzeMissingSegment(t *testing.T) {
	cv := goodConversation(true, nil)
	segs := slices.Delete(slices.Clone(cv.c.Segs), cv.serverData[0]+1, cv.serverData[0]+2)
	r := analyzeSegs(t, rawFormat, segs)
	if !r.OK() {
		t.Fatalf("problems: %v", r.Problems)
	}
	if s := checkStat(r, CheckChecksum); s.NotChecked != 1 || s.Failed != 0 {
		t.Errorf("checksums: %+v, not checked %v", s, r.NotChecked)
	}
}

// TestAnalyzeReordered: capture order differing from sequence order,
// retransmissions and a mapping seen after its data all still verify.
func TestAnalyzeReordered(t *testing.T) {
	cv := goodConversation(true, nil)
	segs := slices.Clone(cv.c.Segs)
	first := cv.serverData[0]
	// The segment carrying the mapping comes after the next one.
	segs[first], segs[first+1] = segs[first+1], segs[first]
	// A retransmission of a data segment at the end.
	segs = append(segs, segs[cv.join2Data[0]+1])
	r := analyzeSegs(t, rawFormat, segs)
	if !r.OK() || r.Stats.NotChecked != 0 {
		dumpReport(t, r)
		t.Fatalf("problems %v, not checked %v", r.Problems, r.NotChecked)
	}
}

func TestAnalyzeServerInitiatedJoinIPv6(t *testing.T) {
	c6, s6 := netip.MustParseAddrPort("[fd00:1::1]:40000"), netip.MustParseAddrPort("[fd00:1::2]:443")
	c := pcapstest.NewConn(c6, s6, 0x1111, 0x2222, true)
	sf := c.Handshake()
	sf.Send(pcapstest.Client, pattern(100, 5))
	sf.Send(pcapstest.Server, pattern(2000, 6))
	sf.AddAddr(pcapstest.Client, 5, netip.MustParseAddr("fd00:2::1"), 4444)
	j := c.Join(pcapstest.JoinParams{Initiator: netip.MustParseAddrPort("[fd00:3::2]:5000"),
		Listener: netip.MustParseAddrPort("[fd00:2::1]:4444"), FromServer: true,
		InitiatorID: 3, ListenerID: 5, InitiatorNonce: 1, ListenerNonce: 2, Backup: true})
	j.Send(pcapstest.Server, pattern(500, 7))
	j.Send(pcapstest.Client, pattern(300, 8))
	r := analyzeSegs(t, pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL, NG: true}, c.Segs)
	if !r.OK() || r.Stats.NotChecked != 0 {
		dumpReport(t, r)
		t.Fatalf("problems %v, not checked %v", r.Problems, r.NotChecked)
	}
	conn := r.Connections[0]
	if len(conn.Subflows) != 2 || !conn.Subflows[1].ServerInitiated || !conn.Subflows[1].Backup ||
		conn.Subflows[1].Token != Hex32(handshake.Token(0x1111)) {
		t.Errorf("subflows: %+v", conn.Subflows[1])
	}
	if conn.BytesToServer != 400 || conn.BytesToClient != 2500 {
		t.Errorf("bytes: %d / %d", conn.BytesToServer, conn.BytesToClient)
	}
	if s := checkStat(r, CheckAddAddr); s.Passed != 1 {
		t.Errorf("ADD_ADDR from the client with port: %+v", s)
	}
}

func TestAnalyzeFallback(t *testing.T) {
	mpcSYN := pcapstest.Options(options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: 0x01})
	syn := func(segs []pcapstest.Segment) []pcapstest.Segment {
		return append(segs,
			pcapstest.Segment{Src: clientAddr, Dst: serverAddr, Seq: 100, Flags: pcapstest.SYN, Options: mpcSYN},
			pcapstest.Segment{Src: serverAddr, Dst: clientAddr, Seq: 900, Ack: 101, Flags: pcapstest.SYN | pcapstest.ACK},
			pcapstest.Segment{Src: clientAddr, Dst: serverAddr, Seq: 101, Ack: 901, Flags: pcapstest.ACK},
			pcapstest.Segment{Src: clientAddr, Dst: serverAddr, Seq: 101, Ack: 901, Flags: pcapstest.ACK, Payload: []byte("plain")})
	}
	t.Run("SYN/ACK without MP_CAPABLE", func(t *testing.T) {
		r := analyzeSegs(t, rawFormat, syn(nil))
		if !r.OK() || len(r.Connections) != 1 || r.Connections[0].Fallback != "SYN/ACK without MP_CAPABLE" || r.Connections[0].FallbackFrame != 2 {
			t.Fatalf("%+v %v", r.Connections, r.Problems)
		}
	})
	t.Run("data without DSS", func(t *testing.T) {
		c := pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, false)
		sf := c.Handshake()
		i := sf.Segment(pcapstest.Client, pcapstest.PSH, nil, []byte("stripped"))
		sf.Segment(pcapstest.Server, pcapstest.PSH, nil, []byte("reply"))
		r := analyzeSegs(t, rawFormat, c.Segs)
		if !r.OK() || r.Connections[0].Fallback == "" || r.Connections[0].FallbackFrame != i+1 {
			t.Fatalf("%+v %v", r.Connections[0], r.Problems)
		}
	})
	t.Run("infinite mapping", func(t *testing.T) {
		c := pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, true)
		sf := c.Handshake()
		sf.Send(pcapstest.Client, pattern(10, 1))
		inf := options.DSS{HasMapping: true, DSN64: true, DSN: handshake.IDSN(serverKey) + 1, HasChecksum: true}
		i := sf.Segment(pcapstest.Server, pcapstest.PSH, pcapstest.Options(options.MPFail{DSN: 5}, inf), []byte("abc"))
		sf.Segment(pcapstest.Server, pcapstest.PSH, nil, []byte("more plain data"))
		r := analyzeSegs(t, rawFormat, c.Segs)
		conn := r.Connections[0]
		if !r.OK() || !conn.InfiniteMapping || !conn.MPFail || conn.Fallback != "infinite mapping" || conn.FallbackFrame != i+1 {
			dumpReport(t, r)
			t.Fatalf("%+v %v", conn, r.Problems)
		}
	})
	t.Run("plain TCP", func(t *testing.T) {
		segs := syn(nil)
		segs[0].Options = nil
		r := analyzeSegs(t, rawFormat, segs)
		if !r.OK() || len(r.Connections) != 0 || r.Plain != 1 || r.Stats.TCPFlows != 1 {
			t.Fatalf("%+v", r)
		}
	})
}

func TestAnalyzeReset(t *testing.T) {
	c := pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, false)
	sf := c.Handshake()
	sf.Send(pcapstest.Server, pattern(10, 1))
	sf.Segment(pcapstest.Client, 0, pcapstest.Options(options.MPPrio{Backup: true}), nil)
	sf.Segment(pcapstest.Client, 0, pcapstest.Options(options.RemoveAddr{IDs: []uint8{3, 4}}), nil)
	sf.Segment(pcapstest.Server, pcapstest.RST, pcapstest.Options(options.MPTCPRst{Reason: options.RstReasonMiddlebox}), nil)
	r := analyzeSegs(t, rawFormat, c.Segs)
	s := r.Connections[0].Subflows[0]
	if !r.OK() || !s.Reset || s.ResetBy != "server" || !s.HasRstReason || s.RstReason != 6 || !s.Backup {
		t.Fatalf("%+v %v", s, r.Problems)
	}
	var kinds []string
	for _, e := range r.Connections[0].Events {
		kinds = append(kinds, e.Kind)
	}
	if want := []string{"MP_PRIO", "REMOVE_ADDR", "RST"}; !slices.Equal(kinds, want) {
		t.Errorf("events %v, want %v", kinds, want)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "reset by server (reason 6: middlebox interference)") {
		t.Errorf("text: %v\n%s", err, b.String())
	}
}

// TestAnalyzeMidstream: a capture that starts after the handshake is not
// analyzed (no ISN, no keys) and says so.
func TestAnalyzeMidstream(t *testing.T) {
	cv := goodConversation(true, nil)
	r := analyzeSegs(t, rawFormat, cv.c.Segs[cv.clientData[0]:cv.joinSYN])
	if !r.OK() || len(r.Connections) != 0 || r.Unanalyzed != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestReportOutput(t *testing.T) {
	cv := goodConversation(true, nil)
	cv.c.Segs[cv.addAddr].Options = slices.Clone(cv.c.Segs[cv.addAddr].Options)
	cv.c.Segs[cv.addAddr].Options[9] ^= 1
	r := analyzeSegs(t, rawFormat, cv.c.Segs)
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	ctok := Hex32(handshake.Token(clientKey)).String()
	for _, want := range []string{
		"MPTCP connection 1: 10.0.1.1:40000 -> 10.0.1.2:8080",
		"client key 0123456789abcdef token " + ctok,
		"checksums on",
		"10.0.2.1:40001",
		"ADD_ADDR",
		"checks: ",
		" 1 failed",
		"FAIL frame " + strconv.Itoa(cv.addAddr+1) + " [add_addr_hmac]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"client_key": "0123456789abcdef"`) {
		t.Errorf("JSON key format:\n%.600s", js.String())
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Connections) != 1 || back.Connections[0].ClientKey != clientKey || back.Connections[0].ServerToken != r.Connections[0].ServerToken ||
		len(back.Problems) != 1 || back.Problems[0] != r.Problems[0] || back.Stats.Passed != r.Stats.Passed ||
		back.Connections[0].Subflows[1].Client != client2Addr {
		t.Errorf("JSON round trip: %+v", back)
	}
}
