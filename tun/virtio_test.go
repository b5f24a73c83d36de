package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// partialTCP turns a packet built by tcp4/tcp6 into what the kernel hands a
// TUN for a locally generated segment (CHECKSUM_PARTIAL): the TCP checksum
// field holds only the pseudo-header sum, over the whole segment's length.
func partialTCP(pkt []byte) []byte {
	var addrs, seg []byte
	if pkt[0]>>4 == 4 {
		addrs, seg = pkt[12:20], pkt[20:]
	} else {
		addrs, seg = pkt[8:40], pkt[40:]
	}
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(header.TCPProtocolNumber))
	binary.BigEndian.PutUint16(tail[2:], uint16(len(seg)))
	x := checksum.Checksum(tail[:], checksum.Checksum(addrs, 0))
	binary.BigEndian.PutUint16(seg[header.TCPChecksumOffset:], x)
	return pkt
}

// gsoPacket is a TCP super-packet of n payload bytes to be cut at mss, with
// the virtio header the kernel gives it.
func gsoPacket(v6 bool, n, mss int) (virtioNetHdr, []byte) {
	h := virtioNetHdr{flags: virtioFlagNeedsCsum, gsoType: virtioGSOTCPv4, gsoSize: uint16(mss),
		csumStart: header.IPv4MinimumSize, csumOffset: header.TCPChecksumOffset}
	mk := tcp4
	if v6 {
		h.gsoType, h.csumStart, mk = virtioGSOTCPv6, header.IPv6MinimumSize, tcp6
	}
	p := partialTCP(mk(1, header.TCPFlagAck, payload(n, 42)))
	h.hdrLen = h.csumStart + header.TCPMinimumSize + 12
	return h, p
}

func TestClassifyOffloaded(t *testing.T) {
	type tc struct {
		h        virtioNetHdr
		pkt      []byte
		err      error
		segs     int
		gso      bool
		hdrLen   int
		unverify bool
	}
	cases := map[string]tc{}
	add := func(name string, h virtioNetHdr, p []byte, err error, segs int, gso bool, hdrLen int) {
		cases[name] = tc{h: h, pkt: p, err: err, segs: segs, gso: gso, hdrLen: hdrLen}
	}
	h4, p4 := gsoPacket(false, 10000, 1448)
	h6, p6 := gsoPacket(true, 10000, 1448)
	add("gso4", h4, p4, nil, 7, true, 52)
	add("gso6", h6, p6, nil, 7, true, 72)
	{
		h := h4
		h.gsoType |= virtioGSOECN
		add("gso4-ecn", h, p4, nil, 7, true, 52)
	}
	{
		h, p := gsoPacket(false, 2*1448, 1448)
		add("gso4-exact", h, p, nil, 2, true, 52)
	}
	partial := virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 16}
	add("partial-tcp4", partial, partialTCP(tcp4(1, header.TCPFlagAck, payload(500, 1))), nil, 1, false, 52)
	{
		h := virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 40, csumOffset: udpChecksumOffset}
		p := udp6(payload(100, 2))
		p[46], p[47] = 0x12, 0x34 // the partial sum: never checked
		add("partial-udp6", h, p, nil, 1, false, 0)
	}
	{
		// An ICMP checksum left to complete: completed, then checked.
		p := ipv4Packet(uint8(header.ICMPv4ProtocolNumber), payload(40, 3))
		p[22], p[23] = 0, 0
		add("partial-icmp4", virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 2}, p, nil, 1, false, 0)
	}
	{
		// A partial checksum whose position makes no sense for TCP: it is
		// completed where asked, and the TCP checksum then fails.
		p := partialTCP(tcp4(1, header.TCPFlagAck, payload(500, 4)))
		add("partial-tcp4-wrong-offset", virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 4}, p, ErrBadChecksum, 1, false, 52)
	}
	badSum := tcp4(1, header.TCPFlagAck, payload(300, 5))
	badSum[len(badSum)-1] ^= 1
	add("data-valid-badsum", virtioNetHdr{flags: virtioFlagDataValid}, badSum, nil, 1, false, 52)
	add("plain-badsum", virtioNetHdr{}, badSum, ErrBadChecksum, 1, false, 52)
	add("plain-tcp6", virtioNetHdr{}, tcp6(1, header.TCPFlagAck, payload(300, 6)), nil, 1, false, 72)
	{
		frag := tcp4(1, header.TCPFlagAck, payload(100, 7))
		frag[6] = 0x20 // MF
		header.IPv4(frag).SetChecksum(0)
		header.IPv4(frag).SetChecksum(^header.IPv4(frag).CalculateChecksum())
		cases["plain-fragment"] = tc{h: virtioNetHdr{}, pkt: frag, segs: 1, unverify: true}
		h := h4
		add("gso-fragment", h, frag, ErrUnsupportedGSO, 1, false, 0)
	}
	{
		h := virtioNetHdr{flags: virtioFlagNeedsCsum, gsoType: virtioGSOUDPL4, gsoSize: 1000, csumStart: 20, csumOffset: 6}
		add("gso-udp-l4", h, udp4(payload(3000, 8)), ErrUnsupportedGSO, 1, false, 0)
		h.gsoType = virtioGSOUDP
		add("gso-ufo", h, udp4(payload(3000, 8)), ErrUnsupportedGSO, 1, false, 0)
	}
	for name, mut := range map[string]func(h *virtioNetHdr){
		"gso-no-needs-csum": func(h *virtioNetHdr) { h.flags = 0 },
		"gso4-type-on-v6":   func(h *virtioNetHdr) { h.gsoType = virtioGSOTCPv4 },
		"gso-csum-offset":   func(h *virtioNetHdr) { h.csumOffset = udpChecksumOffset },
		"gso-csum-start":    func(h *virtioNetHdr) { h.csumStart += 4 },
		"gso-zero-size":     func(h *virtioNetHdr) { h.gsoSize = 0 },
		"gso-unknown-type":  func(h *virtioNetHdr) { h.gsoType = 9 },
	} {
		h := h6
		mut(&h)
		add(name, h, p6, ErrUnsupportedGSO, 1, false, 72)
	}
	{
		h, p := gsoPacket(false, 0, 1448)
		add("gso-no-payload", h, p, ErrUnsupportedGSO, 1, false, 52)
	}
	{
		p := bytes.Clone(p4)
		p[8]-- // TTL: header checksum now wrong
		add("gso-bad-ip-checksum", h4, p, ErrBadChecksum, 1, false, 0)
	}
	add("gso-truncated", h4, p4[:len(p4)-1], ErrMalformed, 1, false, 0)

	for name, c := range cases {
		o, err := classifyOffloaded(&c.h, bytes.Clone(c.pkt))
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: error %v, want %v", name, err, c.err)
			continue
		}
		if err != nil {
			continue
		}
		wantProto := header.IPv4ProtocolNumber
		if c.pkt[0]>>4 == 6 {
			wantProto = header.IPv6ProtocolNumber
		}
		if o.proto != wantProto || o.segs != c.segs || o.gso != c.gso || o.hdrLen != c.hdrLen || o.unverified != c.unverify {
			t.Errorf("%s: %+v, want proto %d segs %d gso %v hdrLen %d unverified %v", name, o, wantProto, c.segs, c.gso, c.hdrLen, c.unverify)
		}
	}
}

// TestClassifyOffloadedCompletes: a partial checksum that is not the
// transport's own is completed in place, to the value a full computation
// gives.
func TestClassifyOffloadedCompletes(t *testing.T) {
	p := ipv4Packet(uint8(header.ICMPv4ProtocolNumber), payload(41, 9))
	p[22], p[23] = 0, 0
	h := virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 2}
	if _, err := classifyOffloaded(&h, p); err != nil {
		t.Fatal(err)
	}
	if got := checksum.Checksum(p[20:], 0); got != 0xffff {
		t.Fatalf("ICMP checksum after completion sums to %#x", got)
	}
}

// TestClassifyOffloadedTruncated: no prefix of a valid super-packet or
// partial-checksum packet is accepted.
func TestClassifyOffloadedTruncated(t *testing.T) {
	h4, p4 := gsoPacket(false, 3000, 1448)
	h6, p6 := gsoPacket(true, 3000, 1448)
	partial := virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 16}
	pp := partialTCP(tcp4(1, header.TCPFlagAck, payload(100, 1)))
	for name, c := range map[string]struct {
		h virtioNetHdr
		p []byte
	}{"gso4": {h4, p4}, "gso6": {h6, p6}, "partial4": {partial, pp}} {
		for n := 0; n < len(c.p); n++ {
			if _, err := classifyOffloaded(&c.h, bytes.Clone(c.p[:n])); err == nil {
				t.Fatalf("%s: prefix of %d/%d bytes accepted", name, n, len(c.p))
			}
		}
	}
}

func TestClassifyOffloadedNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	h, p := gsoPacket(false, 10000, 1448)
	if n := testing.AllocsPerRun(100, func() { classifyOffloaded(&h, p) }); n != 0 {
		t.Errorf("classifyOffloaded allocates %v times", n)
	}
}

// FuzzClassifyOffloaded: the first ten bytes are the virtio header, the
// rest the packet. classifyOffloaded never panics, and what it accepts is
// consistent: a known IP version, at least one segment, headers within the
// packet, a super-packet's segment count matching its payload, and a
// packet without offload flags verified exactly as verifyPacket does.
func FuzzClassifyOffloaded(f *testing.F) {
	seed := func(h virtioNetHdr, p []byte) {
		b := make([]byte, virtioNetHdrLen, virtioNetHdrLen+len(p))
		h.encode(b)
		f.Add(append(b, p...))
	}
	for _, v6 := range []bool{false, true} {
		h, p := gsoPacket(v6, 5000, 1000)
		seed(h, p)
	}
	seed(virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 16}, partialTCP(tcp4(1, header.TCPFlagAck, payload(100, 1))))
	for _, p := range validPackets() {
		seed(virtioNetHdr{}, p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < virtioNetHdrLen {
			return
		}
		var h virtioNetHdr
		h.decode(b)
		p := b[virtioNetHdrLen:]
		orig := bytes.Clone(p)
		o, err := classifyOffloaded(&h, p)
		if err != nil {
			return
		}
		switch {
		case o.proto == header.IPv4ProtocolNumber && p[0]>>4 != 4,
			o.proto == header.IPv6ProtocolNumber && p[0]>>4 != 6,
			o.proto != header.IPv4ProtocolNumber && o.proto != header.IPv6ProtocolNumber:
			t.Fatalf("accepted as protocol %d, version %d", o.proto, p[0]>>4)
		case o.segs < 1 || o.hdrLen < 0 || o.hdrLen > len(p):
			t.Fatalf("accepted with %+v for %d bytes", o, len(p))
		case o.gso && o.hdrLen == 0:
			t.Fatalf("super-packet without TCP header: %+v", o)
		}
		if o.gso {
			ip, err := parseIP(p)
			if err != nil {
				t.Fatalf("super-packet accepted, parseIP says %v", err)
			}
			pl := ip.end - o.hdrLen
			if want := (pl + int(h.gsoSize) - 1) / int(h.gsoSize); o.segs != want || pl <= 0 {
				t.Fatalf("segs %d for %d payload bytes at %d", o.segs, pl, h.gsoSize)
			}
		}
		if h.flags == 0 && h.gsoType == 0 {
			if _, verr := verifyPacket(orig); verr != nil && !errors.Is(verr, ErrUnverifiable) {
				t.Fatalf("accepted without offload flags, verifyPacket says %v", verr)
			}
		}
	})
}

// outPacket builds an outbound PacketBuffer from a TCP packet built by
// tcp4/tcp6 as the stack hands it to a link: IP and TCP headers pushed,
// the payload in its own view, with GSO options g.
func outPacket(raw []byte, l3 int, g stack.GSO) *stack.PacketBuffer {
	l4 := int(header.TCP(raw[l3:]).DataOffset())
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: l3 + l4,
		Payload:            buffer.MakeWithData(raw[l3+l4:]),
	})
	copy(pkt.TransportHeader().Push(l4), raw[l3:l3+l4])
	copy(pkt.NetworkHeader().Push(l3), raw[:l3])
	pkt.GSOOptions = g
	return pkt
}

func TestGSOHeader(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{0, 1000, 1448, 1449, 40000} {
			mk, l3, typ, want := tcp4, header.IPv4MinimumSize, stack.GSOTCPv4, uint8(virtioGSOTCPv4)
			if v6 {
				mk, l3, typ, want = tcp6, header.IPv6MinimumSize, stack.GSOTCPv6, virtioGSOTCPv6
			}
			pkt := outPacket(mk(1, header.TCPFlagAck, payload(n, 1)), l3,
				stack.GSO{Type: typ, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1448, L3HdrLen: uint16(l3)})
			h := gsoHeader(pkt)
			segsWant, gsoWant, hdrWant := 1, uint8(virtioGSONone), uint16(0)
			if n > 1448 {
				gsoWant, hdrWant = want, uint16(l3+32)
				segsWant = (n + 1447) / 1448
			}
			if h.flags != virtioFlagNeedsCsum || h.csumStart != uint16(l3) || h.csumOffset != header.TCPChecksumOffset ||
				h.gsoType != gsoWant || h.hdrLen != hdrWant {
				t.Errorf("v6=%v n=%d: %+v", v6, n, h)
			}
			if gsoWant != virtioGSONone && h.gsoSize != 1448 {
				t.Errorf("v6=%v n=%d: gso size %d", v6, n, h.gsoSize)
			}
			if got := gsoSegments(&h, n); got != segsWant {
				t.Errorf("v6=%v n=%d: %d segments, want %d", v6, n, got, segsWant)
			}
			var b [virtioNetHdrLen]byte
			h.encode(b[:])
			var back virtioNetHdr
			back.decode(b[:])
			if back != h {
				t.Errorf("round trip %+v -> %+v", h, back)
			}
			pkt.DecRef()
		}
	}
	// Without NeedsCsum the checksum is the stack's: no flags.
	pkt := outPacket(tcp4(1, header.TCPFlagAck, payload(3000, 1)), header.IPv4MinimumSize, stack.GSO{Type: stack.GSOTCPv4, MSS: 1448})
	if h := gsoHeader(pkt); h.flags != 0 || h.gsoType != virtioGSOTCPv4 {
		t.Errorf("without NeedsCsum: %+v", h)
	}
	pkt.DecRef()
}

// fakeRaw is a rawDevice over channels, for the raw paths of Endpoint.
type fakeRaw struct {
	closed <-chan struct{}
	reads  chan []byte // virtio header then packet
	mu     sync.Mutex
	writes [][]byte // each writev, concatenated
	idles  atomic.Int32
}

func (f *fakeRaw) read(hdr, buf []byte, idle func()) (int, error) {
	var p []byte
	select {
	case p = <-f.reads:
	default:
		if idle != nil {
			f.idles.Add(1)
			idle()
		}
		select {
		case p = <-f.reads:
		case <-f.closed:
			return 0, os.ErrClosed
		}
	}
	copy(hdr, p[:virtioNetHdrLen])
	return copy(buf, p[virtioNetHdrLen:]), nil
}

func (f *fakeRaw) writev(bufs [][]byte) error {
	var b []byte
	for _, s := range bufs {
		b = append(b, s...)
	}
	f.mu.Lock()
	f.writes = append(f.writes, b)
	f.mu.Unlock()
	return nil
}

func newRawEndpoint(t *testing.T) (*Endpoint, *fakeDevice, *fakeRaw) {
	dev := newFakeDevice(8, 1500)
	ep := newTestEndpoint(t, dev)
	fr := &fakeRaw{closed: dev.closed, reads: make(chan []byte, 64)}
	ep.raw = fr // before Attach starts the reader
	return ep, dev, fr
}

func withHdr(h virtioNetHdr, p []byte) []byte {
	b := make([]byte, virtioNetHdrLen, virtioNetHdrLen+len(p))
	h.encode(b)
	return append(b, p...)
}

// viewDispatcher records the view sizes of each packet delivered.
type viewDispatcher struct {
	c chan []int
	recordingDispatcher
}

func (v *viewDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	views, off := pkt.AsViewList()
	var sizes []int
	for w := views.Front(); w != nil; w = w.Next() {
		sizes = append(sizes, w.Size())
	}
	sizes[0] -= off
	v.c <- sizes
	v.recordingDispatcher.DeliverNetworkPacket(p, pkt)
}

// TestRawReceive: with raw device access a super-packet reaches the stack
// whole, marked validated, its headers in a view of their own; a small
// packet is copied; a packet without offload flags is verified; the
// batch-end hook runs when the device runs dry and after maxRxBatch
// packets.
func TestRawReceive(t *testing.T) {
	ep, _, fr := newRawEndpoint(t)
	if ep.SupportedGSO() != stack.HostGSOSupported || ep.GSOMaxSize() != maxPacket {
		t.Fatalf("SupportedGSO %v GSOMaxSize %d", ep.SupportedGSO(), ep.GSOMaxSize())
	}
	var batches atomic.Int32
	ep.OnReceiveBatchEnd(func() { batches.Add(1) })
	d := &viewDispatcher{c: make(chan []int, 64), recordingDispatcher: *newRecordingDispatcher()}
	ep.Attach(d)

	h, p := gsoPacket(false, 20000, 1448)
	small := partialTCP(tcp4(5, header.TCPFlagAck, payload(100, 2)))
	bad := tcp6(9, header.TCPFlagAck, payload(3000, 3))
	bad[len(bad)-1] ^= 1
	fr.reads <- withHdr(h, p)
	fr.reads <- withHdr(virtioNetHdr{flags: virtioFlagNeedsCsum, csumStart: 20, csumOffset: 16}, small)
	fr.reads <- withHdr(virtioNetHdr{}, bad)
	got := receive(t, &d.recordingDispatcher, 2)
	if !bytes.Equal(got[0].data, p) || !got[0].validated || !bytes.Equal(got[1].data, small) || !got[1].validated {
		t.Fatalf("delivered %d and %d bytes (validated %v %v)", len(got[0].data), len(got[1].data), got[0].validated, got[1].validated)
	}
	if v := <-d.c; len(v) != 2 || v[0] != 52 || v[1] != 20000 {
		t.Errorf("super-packet views %v, want headers and payload apart [52 20000]", v)
	}
	if v := <-d.c; len(v) != 1 {
		t.Errorf("small packet in views %v", v)
	}
	waitFor(t, "stats", func() bool { return ep.Stats().RXBadChecksum == 1 })
	st := ep.Stats()
	if st.RXPackets != 14+1 || st.RXGSO != 1 || st.RXDelivered != 2 || st.RXBytes != uint64(len(p)+len(small)) || st.RXDrops != 1 {
		t.Errorf("stats %+v", st)
	}
	waitFor(t, "batch end", func() bool { return batches.Load() >= 1 })
}

// TestRawReceiveBatch: packets read back to back end a batch every
// maxRxBatch packets, and when the device runs dry.
func TestRawReceiveBatch(t *testing.T) {
	ep, _, fr := newRawEndpoint(t)
	var batches atomic.Int32
	ep.OnReceiveBatchEnd(func() { batches.Add(1) })
	d := newRecordingDispatcher()
	for range maxRxBatch + 1 { // queued before the reader starts
		fr.reads <- withHdr(virtioNetHdr{}, udp4(payload(10, 4)))
	}
	ep.Attach(d)
	receive(t, d, maxRxBatch+1)
	waitFor(t, "idle", func() bool { return fr.idles.Load() == 1 })
	if b := batches.Load(); b != 2 {
		t.Errorf("%d batch ends for %d packets read back to back and one wait, want 2", b, maxRxBatch+1)
	}
	ep.OnReceiveBatchEnd(nil)
	fr.reads <- withHdr(virtioNetHdr{}, udp4(payload(10, 5)))
	receive(t, d, 1)
	waitFor(t, "idle", func() bool { return fr.idles.Load() == 2 })
	if b := batches.Load(); b != 2 {
		t.Errorf("hook ran after removal: %d", b)
	}
}

// TestRawWriteGSO: a packet with GSO options is written alone through the
// raw device with its virtio header, in order with the packets around it,
// which still go through the Device (and its coalescing).
func TestRawWriteGSO(t *testing.T) {
	ep, dev, fr := newRawEndpoint(t)
	plain := tcp4(1, header.TCPFlagAck, payload(100, 1))
	super := tcp4(101, header.TCPFlagAck, payload(5000, 2))
	var pkts stack.PacketBufferList
	pkts.PushBack(packetBuffer(plain, header.IPv4MinimumSize))
	pkts.PushBack(outPacket(super, header.IPv4MinimumSize, stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true,
		CsumOffset: header.TCPChecksumOffset, MSS: 1448, L3HdrLen: header.IPv4MinimumSize}))
	pkts.PushBack(packetBuffer(plain, header.IPv4MinimumSize))
	defer pkts.Reset()
	if n, err := ep.WritePackets(pkts); n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	calls := dev.recorded()
	if len(calls) != 2 || len(calls[0]) != 1 || len(calls[1]) != 1 {
		t.Fatalf("device writes %v, want the plain packets in two calls around the GSO one", lens(calls))
	}
	fr.mu.Lock()
	writes := fr.writes
	fr.mu.Unlock()
	if len(writes) != 1 {
		t.Fatalf("%d raw writes", len(writes))
	}
	var h virtioNetHdr
	h.decode(writes[0])
	if h.gsoType != virtioGSOTCPv4 || h.gsoSize != 1448 || h.flags != virtioFlagNeedsCsum || h.csumStart != 20 ||
		!bytes.Equal(writes[0][virtioNetHdrLen:], super) {
		t.Errorf("raw write: header %+v, %d packet bytes", h, len(writes[0])-virtioNetHdrLen)
	}
	st := ep.Stats()
	if st.TXGSO != 1 || st.TXPackets != 2+4 || st.TXBatches != 3 || st.TXBytes != uint64(2*len(plain)+len(super)) {
		t.Errorf("stats %+v", st)
	}
}

// TestRawWriteNoAllocs: writing a GSO packet reuses the Endpoint's buffers.
func TestRawWriteNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	dev := newFakeDevice(8, 1500)
	ep := newTestEndpoint(t, dev)
	ep.raw = discardRaw{}
	super := tcp4(101, header.TCPFlagAck, payload(5000, 2))
	var pkts stack.PacketBufferList
	pkts.PushBack(outPacket(super, header.IPv4MinimumSize, stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true,
		CsumOffset: header.TCPChecksumOffset, MSS: 1448}))
	defer pkts.Reset()
	ep.WritePackets(pkts)
	if n := testing.AllocsPerRun(100, func() { ep.WritePackets(pkts) }); n != 0 {
		t.Errorf("WritePackets of a GSO packet allocates %v times", n)
	}
}

type discardRaw struct{}

func (discardRaw) read([]byte, []byte, func()) (int, error) { return 0, os.ErrClosed }
func (discardRaw) writev([][]byte) error                    { return nil }

// TestRawReceiveNoAllocs: delivering a super-packet draws only on gVisor's
// pools, not the Go heap.
func TestRawReceiveNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	dev := newFakeDevice(8, 1500)
	ep := newTestEndpoint(t, dev)
	ep.raw = discardRaw{}
	d := &discardDispatcher{}
	ep.dispatcher = d // the reader goroutine is not started
	r := &ep.rx
	h, p := gsoPacket(false, 30000, 1448)
	round := func() {
		if r.rawView == nil {
			r.rawView = buffer.NewViewSize(rawReadSize)
		}
		h.encode(r.rawHdr[:])
		r.deliverRaw(copy(r.rawView.AsSlice(), p))
	}
	round()
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("delivering a super-packet allocates %v times", n)
	}
	if d.n == 0 {
		t.Error("nothing delivered")
	}
	r.release()
}
