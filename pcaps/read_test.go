package pcaps

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps/pcapstest"
)

var linkTypes = []layers.LinkType{
	layers.LinkTypeEthernet, layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6,
	layers.LinkTypeNull, layers.LinkTypeLoop, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
}

// readerSegments are the segments every reader test round-trips: a SYN
// with MSS and MP_CAPABLE, a pure ACK (short enough for Ethernet padding)
// and a data segment with a DSS mapping.
func readerSegments(src, dst netip.AddrPort) []pcapstest.Segment {
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 123456000, time.UTC)
	dss := options.DSS{HasDataAck: true, DataAck64: true, DataAck: 77, HasMapping: true, DSN64: true,
		DSN: 1 << 40, SubflowSeq: 1, DataLen: 5}
	return []pcapstest.Segment{
		{Time: t0, Src: src, Dst: dst, Seq: 1000, Flags: pcapstest.SYN, Window: 64240,
			Options: append([]byte{2, 4, 0x05, 0xb4}, pcapstest.Options(options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: 0x81})...)},
		{Time: t0.Add(time.Millisecond), Src: dst, Dst: src, Seq: 5000, Ack: 1001, Flags: pcapstest.ACK, Window: 501},
		{Time: t0.Add(2 * time.Millisecond), Src: src, Dst: dst, Seq: 1001, Ack: 5001, Flags: pcapstest.ACK | pcapstest.PSH,
			Window: 502, Options: pcapstest.Options(dss), Payload: []byte("hello")},
	}
}

func writeCapture(t testing.TB, f pcapstest.Format, segs []pcapstest.Segment) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pcapstest.Write(&buf, f, segs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkSegment compares a decoded packet with the segment it came from.
func checkSegment(t *testing.T, p *Packet, s *pcapstest.Segment, index int) {
	t.Helper()
	if p.Index != index || p.Src != s.Src || p.Dst != s.Dst || p.Seq != s.Seq || p.Ack != s.Ack ||
		p.Flags != s.Flags || p.Window != s.Window {
		t.Errorf("frame %d: got index %d %v -> %v seq %d ack %d flags %#x win %d, want index %d %v -> %v seq %d ack %d flags %#x win %d",
			index, p.Index, p.Src, p.Dst, p.Seq, p.Ack, p.Flags, p.Window,
			index, s.Src, s.Dst, s.Seq, s.Ack, s.Flags, s.Window)
	}
	if !p.Time.Equal(s.Time) {
		t.Errorf("frame %d: time %v, want %v", index, p.Time, s.Time)
	}
	// gopacket pads the option area with EOL to a multiple of 4.
	wantOpts := slices.Clone(s.Options)
	for len(wantOpts)%4 != 0 {
		wantOpts = append(wantOpts, 0)
	}
	if !bytes.Equal(p.Options, wantOpts) {
		t.Errorf("frame %d: options %x, want %x", index, p.Options, wantOpts)
	}
	if !bytes.Equal(p.Payload, s.Payload) || p.PayloadLen != len(s.Payload) {
		t.Errorf("frame %d: payload %q (len %d), want %q", index, p.Payload, p.PayloadLen, s.Payload)
	}
	if len(p.OptErrors) != 0 {
		t.Errorf("frame %d: option errors %v", index, p.OptErrors)
	}
}

func TestReadLinkTypes(t *testing.T) {
	addrs := map[string][2]netip.AddrPort{
		"v4": {netip.MustParseAddrPort("10.0.1.1:40000"), netip.MustParseAddrPort("10.0.1.2:80")},
		"v6": {netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::2]:80")},
	}
	for _, lt := range linkTypes {
		for _, ng := range []bool{false, true} {
			for fam, a := range addrs {
				if lt == layers.LinkTypeIPv4 && fam == "v6" || lt == layers.LinkTypeIPv6 && fam == "v4" {
					continue
				}
				t.Run(fmt.Sprintf("%v/ng=%v/%s", lt, ng, fam), func(t *testing.T) {
					segs := readerSegments(a[0], a[1])
					data := writeCapture(t, pcapstest.Format{LinkType: lt, NG: ng}, segs)
					pkts, err := Read(bytes.NewReader(data))
					if err != nil {
						t.Fatal(err)
					}
					if len(pkts) != len(segs) {
						t.Fatalf("got %d packets, want %d", len(pkts), len(segs))
					}
					for i := range segs {
						checkSegment(t, &pkts[i], &segs[i], i+1)
					}
					// Parsed options.
					if !pkts[0].Opts.HasMSS || pkts[0].Opts.MSS != 1460 {
						t.Errorf("SYN MSS: %+v", pkts[0].Opts)
					}
					if len(pkts[0].MPTCP) != 1 {
						t.Fatalf("SYN MPTCP options: %v", pkts[0].MPTCP)
					}
					if m, ok := pkts[0].MPTCP[0].(options.MPCapable); !ok || m.Form != options.CapableSYN || m.Flags != 0x81 {
						t.Errorf("SYN MP_CAPABLE: %#v", pkts[0].MPTCP[0])
					}
					if d, ok := pkts[2].MPTCP[0].(options.DSS); !ok || d.DSN != 1<<40 || d.DataLen != 5 || d.DataAck != 77 {
						t.Errorf("DSS: %#v", pkts[2].MPTCP[0])
					}
				})
			}
		}
	}
}

func TestReadSnaplen(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")
	payload := bytes.Repeat([]byte{0xab}, 300)
	segs := []pcapstest.Segment{{Src: a, Dst: b, Seq: 1, Flags: pcapstest.ACK, Payload: payload}}
	for _, ng := range []bool{false, true} {
		// Ethernet 14 + IPv4 20 + TCP 20 + 46 bytes of payload.
		data := writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, NG: ng, Snaplen: 100}, segs)
		pkts, err := Read(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		p := pkts[0]
		if p.PayloadLen != 300 || len(p.Payload) != 46 || !p.Truncated() || !bytes.Equal(p.Payload, payload[:46]) {
			t.Errorf("ng=%v: PayloadLen %d, captured %d, truncated %v", ng, p.PayloadLen, len(p.Payload), p.Truncated())
		}
	}
	// A snap length that cuts the TCP header skips the packet.
	data := writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, Snaplen: 40}, segs)
	if pkts, err := Read(bytes.NewReader(data)); err != nil || len(pkts) != 0 {
		t.Errorf("header cut: %d packets, %v", len(pkts), err)
	}
}

// rawTime is the timestamp of every rawCapture record (pcapgo replaces a
// zero timestamp with the current time).
var rawTime = time.Unix(1_700_000_000, 0).UTC()

// rawCapture writes already-encoded frames.
func rawCapture(t *testing.T, lt layers.LinkType, frames [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: rawTime, Length: len(f), CaptureLength: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func mustFrame(t *testing.T, lt layers.LinkType, s pcapstest.Segment) []byte {
	t.Helper()
	f, err := pcapstest.Frame(lt, s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestReadSkips checks which frames are skipped and that skipped frames
// still count in frame numbers.
func TestReadSkips(t *testing.T) {
	a4, b4 := netip.MustParseAddrPort("10.0.0.1:1000"), netip.MustParseAddrPort("10.0.0.2:2000")
	a6, b6 := netip.MustParseAddrPort("[fd00::1]:1000"), netip.MustParseAddrPort("[fd00::2]:2000")
	seg := pcapstest.Segment{Time: rawTime, Src: a4, Dst: b4, Seq: 7, Flags: pcapstest.ACK, Payload: []byte("x")}
	seg6 := pcapstest.Segment{Time: rawTime, Src: a6, Dst: b6, Seq: 9, Flags: pcapstest.ACK, Payload: []byte("yz")}

	// UDP over IPv4.
	buf := gopacket.NewSerializeBuffer()
	ip := &layers.IPv4{Version: 4, TTL: 1, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{10, 0, 0, 1}, DstIP: net.IP{10, 0, 0, 2}}
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	_ = udp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload("u")); err != nil {
		t.Fatal(err)
	}
	udpPkt := buf.Bytes()

	// An IPv4 first fragment (MF set).
	frag := mustFrame(t, layers.LinkTypeRaw, seg)
	frag[6] |= 0x20
	// An IPv4 later fragment (offset 8).
	frag2 := mustFrame(t, layers.LinkTypeRaw, seg)
	frag2[7] = 1

	// IPv6 with a hop-by-hop header (PadN) before TCP.
	v6 := mustFrame(t, layers.LinkTypeRaw, seg6)
	hbh := []byte{6, 0, 1, 4, 0, 0, 0, 0}
	withHBH := slices.Concat(v6[:40], hbh, v6[40:])
	withHBH[6] = 0
	binary.BigEndian.PutUint16(withHBH[4:], binary.BigEndian.Uint16(v6[4:])+8)
	// IPv6 with a non-atomic fragment header.
	v6frag := slices.Concat(v6[:40], []byte{6, 0, 0, 1, 0, 0, 0, 1}, v6[40:])
	v6frag[6] = 44
	binary.BigEndian.PutUint16(v6frag[4:], binary.BigEndian.Uint16(v6[4:])+8)
	// IPv6 with an atomic fragment header: a whole packet.
	v6atomic := slices.Clone(v6frag)
	v6atomic[40+3] = 0

	frames := [][]byte{
		udpPkt,                                // 1 skipped
		mustFrame(t, layers.LinkTypeRaw, seg), // 2
		frag,                                  // 3 skipped
		frag2,                                 // 4 skipped
		withHBH,                               // 5
		v6frag,                                // 6 skipped
		v6atomic,                              // 7
		{0x45},                                // 8 skipped: truncated
		{},                                    // 9 skipped: empty
	}
	pkts, err := Read(bytes.NewReader(rawCapture(t, layers.LinkTypeRaw, frames)))
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range pkts {
		got = append(got, p.Index)
	}
	if want := []int{2, 5, 7}; !slices.Equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	checkSegment(t, &pkts[0], &seg, 2)
	checkSegment(t, &pkts[1], &seg6, 5)
	checkSegment(t, &pkts[2], &seg6, 7)
}

func TestReadVLAN(t *testing.T) {
	seg := pcapstest.Segment{Time: rawTime, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:2"),
		Seq: 3, Flags: pcapstest.ACK, Payload: []byte("vlan")}
	eth := mustFrame(t, layers.LinkTypeEthernet, seg)
	// Two tags: 802.1ad outer, 802.1Q inner.
	tagged := slices.Concat(eth[:12], []byte{0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20}, eth[12:])
	pkts, err := Read(bytes.NewReader(rawCapture(t, layers.LinkTypeEthernet, [][]byte{tagged})))
	if err != nil || len(pkts) != 1 {
		t.Fatalf("%d packets, %v", len(pkts), err)
	}
	checkSegment(t, &pkts[0], &seg, 1)
}

func TestReadMixedLinkTypesNG(t *testing.T) {
	seg := readerSegments(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"))
	var buf bytes.Buffer
	intf := pcapgo.DefaultNgInterface
	intf.LinkType = layers.LinkTypeEthernet
	w, err := pcapgo.NewNgWriterInterface(&buf, intf, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	intf.LinkType = layers.LinkTypeLinuxSLL2
	id, err := w.AddInterface(intf)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seg {
		lt, ifIndex := layers.LinkTypeEthernet, 0
		if i%2 == 1 {
			lt, ifIndex = layers.LinkTypeLinuxSLL2, id
		}
		f := mustFrame(t, lt, s)
		ci := gopacket.CaptureInfo{Timestamp: s.Time, Length: len(f), CaptureLength: len(f), InterfaceIndex: ifIndex}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	pkts, err := Read(&buf)
	if err != nil || len(pkts) != len(seg) {
		t.Fatalf("%d packets, %v", len(pkts), err)
	}
	for i := range seg {
		checkSegment(t, &pkts[i], &seg[i], i+1)
	}
}

func TestReadGzip(t *testing.T) {
	segs := readerSegments(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"))
	for _, ng := range []bool{false, true} {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeRaw, NG: ng}, segs))
		zw.Close()
		pkts, err := Read(&z)
		if err != nil || len(pkts) != len(segs) {
			t.Fatalf("ng=%v: %d packets, %v", ng, len(pkts), err)
		}
	}
}

func TestReadErrors(t *testing.T) {
	segs := readerSegments(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"))
	for _, ng := range []bool{false, true} {
		full := writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, NG: ng}, segs)
		// Cut inside the last record: the first two packets come back.
		pkts, err := Read(bytes.NewReader(full[:len(full)-10]))
		if !errors.Is(err, ErrCutShort) || len(pkts) != 2 {
			t.Errorf("ng=%v cut: %d packets, %v", ng, len(pkts), err)
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"short", []byte{0xd4, 0xc3}, ErrFormat},
		{"text", []byte("hello, world"), ErrFormat},
		{"pcap header cut", []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0}, ErrCutShort},
	} {
		if _, err := Read(bytes.NewReader(tc.data)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// An unsupported link type is an error naming it.
	data := rawCapture(t, layers.LinkTypeIEEE802_11, [][]byte{{1, 2, 3}})
	if _, err := Read(bytes.NewReader(data)); !errors.Is(err, ErrLinkType) {
		t.Errorf("802.11: %v", err)
	}
	if _, err := ReadFile("testdata/does-not-exist.pcap"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestReadMalformedOptions(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")
	badMPC := []byte{30, 13, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8, 9} // MP_CAPABLE of length 13
	v0 := []byte{30, 4, 0x00, 0x81}                                 // MP_CAPABLE version 0
	prio := pcapstest.Options(options.MPPrio{Backup: true})
	segs := []pcapstest.Segment{
		{Src: a, Dst: b, Flags: pcapstest.ACK, Options: slices.Concat(badMPC, prio)},
		{Src: a, Dst: b, Flags: pcapstest.ACK, Options: v0},
	}
	pkts, err := Read(bytes.NewReader(writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeRaw}, segs)))
	if err != nil {
		t.Fatal(err)
	}
	var oe *OptionError
	if len(pkts[0].OptErrors) != 1 || !errors.As(pkts[0].OptErrors[0], &oe) || !errors.Is(oe, options.ErrBadLength) || !bytes.Equal(oe.Raw, badMPC) {
		t.Errorf("bad length: %v", pkts[0].OptErrors)
	}
	// The option after the malformed one is still decoded.
	if len(pkts[0].MPTCP) != 1 || pkts[0].MPTCP[0].Subtype() != options.SubtypeMPPrio {
		t.Errorf("after malformed: %v", pkts[0].MPTCP)
	}
	if len(pkts[1].OptErrors) != 1 || !errors.Is(pkts[1].OptErrors[0], options.ErrBadVersion) {
		t.Errorf("version 0: %v", pkts[1].OptErrors)
	}
}

// TestExpand32 checks the 32-to-64-bit widening around wraparound.
func TestExpand32(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		ref  uint64
		want uint64
	}{
		{5, 0, 5},
		{0xffffffff, 0, 0xffffffffffffffff},
		{1, 0xffffffff, 0x100000001},
		{0xfffffff0, 0x100000010, 0xfffffff0},
		{0x10, 0x1_7fff_fff0, 0x1_0000_0010},
		{0x9000_0000, 0x1_1000_0000, 0x0_9000_0000},
		{0x8fff_ffff, 0x1_1000_0000, 0x1_8fff_ffff},
	} {
		if got := expand32(tc.v, tc.ref); got != tc.want {
			t.Errorf("expand32(%#x, %#x) = %#x, want %#x", tc.v, tc.ref, got, tc.want)
		}
	}
}
