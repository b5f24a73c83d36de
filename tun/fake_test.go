package tun

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fakeDevice is an in-memory wgtun.Device: each value sent on reads is
// returned by one Read as a batch; writes are recorded (or only counted).
type fakeDevice struct {
	batch   int
	mtu     atomic.Int32
	reads   chan [][]byte
	events  chan wgtun.Event
	closed  chan struct{}
	once    sync.Once
	discard bool // count writes without recording them

	mu       sync.Mutex
	writes   [][][]byte // one entry per Write call
	writeErr error
	nWrites  atomic.Int64
}

var _ wgtun.Device = (*fakeDevice)(nil)

func newFakeDevice(batch, mtu int) *fakeDevice {
	d := &fakeDevice{
		batch:  batch,
		reads:  make(chan [][]byte),
		events: make(chan wgtun.Event, 16),
		closed: make(chan struct{}),
	}
	d.mtu.Store(int32(mtu))
	return d
}

func (d *fakeDevice) File() *os.File { return nil }

func (d *fakeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case batch := <-d.reads:
		for i, p := range batch {
			if i == len(bufs) {
				return i, wgtun.ErrTooManySegments
			}
			if len(p) > len(bufs[i])-offset {
				return i, errors.New("fake: packet larger than buffer")
			}
			sizes[i] = copy(bufs[i][offset:], p)
		}
		return len(batch), nil
	}
}

func (d *fakeDevice) Write(bufs [][]byte, offset int) (int, error) {
	if offset < 10 {
		return 0, errors.New("fake: offset below virtio header length")
	}
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	default:
	}
	d.nWrites.Add(1)
	if d.discard {
		return len(bufs), nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writeErr != nil {
		return 0, d.writeErr
	}
	var call [][]byte
	for _, b := range bufs {
		call = append(call, append([]byte(nil), b[offset:]...))
	}
	d.writes = append(d.writes, call)
	return len(bufs), nil
}

func (d *fakeDevice) setWriteErr(err error) {
	d.mu.Lock()
	d.writeErr = err
	d.mu.Unlock()
}

func (d *fakeDevice) recorded() [][][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][][]byte(nil), d.writes...)
}

func (d *fakeDevice) MTU() (int, error)          { return int(d.mtu.Load()), nil }
func (d *fakeDevice) Name() (string, error)      { return "fake0", nil }
func (d *fakeDevice) Events() <-chan wgtun.Event { return d.events }
func (d *fakeDevice) BatchSize() int             { return d.batch }
func (d *fakeDevice) Close() error {
	d.once.Do(func() {
		close(d.closed)
		close(d.events)
	})
	return nil
}

// delivered is one packet a recordingDispatcher received.
type delivered struct {
	proto     tcpip.NetworkProtocolNumber
	data      []byte
	validated bool
}

// recordingDispatcher records every packet delivered to it.
type recordingDispatcher struct {
	c chan delivered
}

func newRecordingDispatcher() *recordingDispatcher {
	return &recordingDispatcher{c: make(chan delivered, 1024)}
}

func (r *recordingDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.ToBuffer()
	r.c <- delivered{proto: p, data: b.Flatten(), validated: pkt.RXChecksumValidated}
	b.Release()
}

func (r *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// discardDispatcher drops what it is given.
type discardDispatcher struct{ n int }

func (d *discardDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}
func (d *discardDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// Packet builders. Every packet has correct checksums unless changed after.

var (
	src4 = [4]byte{10, 0, 0, 1}
	dst4 = [4]byte{10, 0, 0, 2}
	src6 = [16]byte{0xfd, 0, 15: 1}
	dst6 = [16]byte{0xfd, 0, 15: 2}
)

func ipv4Packet(proto uint8, l4 []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    proto,
		SrcAddr:     tcpip.AddrFrom4(src4),
		DstAddr:     tcpip.AddrFrom4(dst4),
		Flags:       header.IPv4FlagDontFragment,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	return b
}

func ipv6Packet(nextHdr uint8, ext, l4 []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+len(ext)+len(l4))
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(ext) + len(l4)),
		TransportProtocol: tcpip.TransportProtocolNumber(nextHdr),
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(src6),
		DstAddr:           tcpip.AddrFrom16(dst6),
	})
	copy(b[header.IPv6MinimumSize:], ext)
	copy(b[header.IPv6MinimumSize+len(ext):], l4)
	return b
}

// tcpSegment returns a TCP header (with 12 option bytes: NOP NOP TS) and
// payload; its checksum is filled in by finishL4.
func tcpSegment(seq uint32, flags header.TCPFlags, payload []byte) []byte {
	const hl = header.TCPMinimumSize + 12
	b := make([]byte, hl+len(payload))
	header.TCP(b).Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    5001,
		SeqNum:     seq,
		AckNum:     1,
		DataOffset: hl,
		Flags:      flags,
		WindowSize: 65535,
	})
	copy(b[header.TCPMinimumSize:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(b[hl:], payload)
	return b
}

func udpDatagram(payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: 53, DstPort: 5353, Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	return b
}

// finishL4 computes the TCP or UDP checksum of a packet built above (no
// IPv6 extension headers).
func finishL4(pkt []byte) []byte {
	var addrs []byte
	var l4 []byte
	var proto uint8
	if pkt[0]>>4 == 4 {
		addrs, l4, proto = pkt[12:20], pkt[20:], pkt[9]
	} else {
		addrs, l4, proto = pkt[8:40], pkt[40:], pkt[6]
	}
	off := 16
	if proto == uint8(header.UDPProtocolNumber) {
		off = 6
	}
	l4[off], l4[off+1] = 0, 0
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(proto))
	binary.BigEndian.PutUint16(tail[2:], uint16(len(l4)))
	x := checksum.Checksum(addrs, 0)
	x = checksum.Checksum(tail[:], x)
	x = ^checksum.Checksum(l4, x)
	if x == 0 && proto == uint8(header.UDPProtocolNumber) {
		x = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], x)
	return pkt
}

func tcp4(seq uint32, flags header.TCPFlags, payload []byte) []byte {
	return finishL4(ipv4Packet(uint8(header.TCPProtocolNumber), tcpSegment(seq, flags, payload)))
}

func tcp6(seq uint32, flags header.TCPFlags, payload []byte) []byte {
	return finishL4(ipv6Packet(uint8(header.TCPProtocolNumber), nil, tcpSegment(seq, flags, payload)))
}

func udp4(payload []byte) []byte {
	return finishL4(ipv4Packet(uint8(header.UDPProtocolNumber), udpDatagram(payload)))
}

func udp6(payload []byte) []byte {
	return finishL4(ipv6Packet(uint8(header.UDPProtocolNumber), nil, udpDatagram(payload)))
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*31)
	}
	return b
}

// packetBuffer builds an outbound-style PacketBuffer: the IP header pushed
// as network header into reserved space, the rest as payload in two views.
func packetBuffer(raw []byte, hdrLen int) *stack.PacketBuffer {
	rest := raw[hdrLen:]
	var data buffer.Buffer
	half := len(rest) / 2
	data.Append(buffer.NewViewWithData(rest[:half]))
	data.Append(buffer.NewViewWithData(rest[half:]))
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrLen + 32,
		Payload:            data,
	})
	copy(pkt.NetworkHeader().Push(hdrLen), raw[:hdrLen])
	return pkt
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
