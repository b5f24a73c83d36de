package capture

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/mptund/mptund/pcaps"
	mstack "github.com/mptund/mptund/stack"
)

// dispatcher is a fake stack: it keeps a copy of every delivered packet.
type dispatcher struct {
	mu   sync.Mutex
	got  [][]byte
	prot []tcpip.NetworkProtocolNumber
}

func (d *dispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, pkt.ToView().AsSlice())
	d.prot = append(d.prot, p)
}

func (d *dispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// inboundPacket is what a link delivers: the whole packet as payload.
func inboundPacket(b []byte) *stack.PacketBuffer {
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(bytes.Clone(b))})
}

// outboundPacket is what the stack writes: network and transport headers
// pushed into reserved space in front of a separate payload view, so that
// the bytes are spread over several views after a header offset.
func outboundPacket(t *testing.T, b []byte) *stack.PacketBuffer {
	t.Helper()
	ipLen := header.IPv4MinimumSize
	if b[0]>>4 == 6 {
		ipLen = header.IPv6MinimumSize
	}
	hdrs := ipLen + header.TCPMinimumSize
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrs + 32,
		Payload:            buffer.MakeWithData(bytes.Clone(b[hdrs:])),
	})
	copy(pkt.TransportHeader().Push(header.TCPMinimumSize), b[ipLen:hdrs])
	copy(pkt.NetworkHeader().Push(ipLen), b[:ipLen])
	if pkt.Size() != len(b) {
		t.Fatalf("built a %d-byte packet from %d bytes", pkt.Size(), len(b))
	}
	return pkt
}

func TestEndpoint(t *testing.T) {
	child := channel.New(64, 1500, "")
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{Interface: "fake0"})
	if err != nil {
		t.Fatal(err)
	}
	ep := NewEndpoint(child, w, 0)
	var d dispatcher
	ep.Attach(&d)
	if !child.IsAttached() || !ep.IsAttached() || ep.MTU() != 1500 {
		t.Fatalf("child attached %v, endpoint attached %v, MTU %d", child.IsAttached(), ep.IsAttached(), ep.MTU())
	}

	type sent struct {
		dir  Direction
		data []byte
	}
	var want []sent
	for i := 0; i < 30; i++ {
		p := tcpPacket(t, i%2 == 1, 5000, 443, uint32(i), bytes.Repeat([]byte{byte(i)}, 13*i))
		proto := header.IPv4ProtocolNumber
		if i%2 == 1 {
			proto = header.IPv6ProtocolNumber
		}
		if i%3 == 0 {
			pkt := inboundPacket(p)
			child.InjectInbound(proto, pkt)
			pkt.DecRef()
			want = append(want, sent{Inbound, p})
			continue
		}
		// A batch of two outbound packets.
		q := tcpPacket(t, false, 5001, 443, uint32(i), []byte("second of the batch"))
		var list stack.PacketBufferList
		list.PushBack(outboundPacket(t, p))
		list.PushBack(outboundPacket(t, q))
		if n, err := ep.WritePackets(list); n != 2 || err != nil {
			t.Fatalf("WritePackets = %d, %v", n, err)
		}
		list.DecRef()
		want = append(want, sent{Outbound, p}, sent{Outbound, q})
	}

	// The child and the fake stack got exactly what passed.
	var toChild, toStack [][]byte
	for _, s := range want {
		if s.dir == Outbound {
			toChild = append(toChild, s.data)
		} else {
			toStack = append(toStack, s.data)
		}
	}
	for i, p := range toChild {
		pkt := child.Read()
		if pkt == nil {
			t.Fatalf("child received %d packets, want %d", i, len(toChild))
		}
		if got := pkt.ToView().AsSlice(); !bytes.Equal(got, p) {
			t.Errorf("child packet %d differs", i)
		}
		pkt.DecRef()
	}
	if len(d.got) != len(toStack) {
		t.Fatalf("stack received %d packets, want %d", len(d.got), len(toStack))
	}
	for i, p := range toStack {
		if !bytes.Equal(d.got[i], p) {
			t.Errorf("delivered packet %d differs", i)
		}
	}

	ep.Close()
	if out.Len() == 0 {
		t.Fatal("Close did not flush")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, ifaces := readBack(t, out.Bytes())
	if len(ifaces) != 1 || ifaces[0].Name != "fake0" {
		t.Errorf("interfaces %+v", ifaces)
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	var wantBytes uint64
	for i, r := range recs {
		if r.dir != want[i].dir || !bytes.Equal(r.data, want[i].data) || r.ci.Length != len(want[i].data) {
			t.Errorf("record %d: %v %d bytes, want %v %d bytes", i, r.dir, len(r.data), want[i].dir, len(want[i].data))
		}
		if i > 0 && r.ci.Timestamp.Before(recs[i-1].ci.Timestamp) {
			t.Errorf("record %d: timestamp goes backwards", i)
		}
		wantBytes += uint64(len(want[i].data))
		// gopacket decodes the raw IP record down to TCP.
		first := layers.LayerTypeIPv4
		if r.data[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
		pkt := gopacket.NewPacket(r.data, first, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Errorf("record %d: gopacket: %v", i, el.Error())
		} else if tl, ok := pkt.TransportLayer().(*layers.TCP); !ok || tl.DstPort != 443 {
			t.Errorf("record %d: gopacket finds no TCP segment to port 443", i)
		}
	}
	if st := w.Stats(); st.Packets != uint64(len(want)) || st.Bytes != wantBytes || st.Dropped != 0 {
		t.Errorf("Stats = %+v, want %d packets, %d bytes", st, len(want), wantBytes)
	}
	pkts, err := pcaps.Read(bytes.NewReader(out.Bytes()))
	if err != nil || len(pkts) != len(want) {
		t.Errorf("pcaps.Read: %d packets, %v; want %d", len(pkts), err, len(want))
	}
}

// TestEndpointSnapLen checks that a packet longer than the snap length is
// cut while copying out of its views.
func TestEndpointSnapLen(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{SnapLen: 50})
	if err != nil {
		t.Fatal(err)
	}
	ep := NewEndpoint(channel.New(4, 1500, ""), w, 0)
	p := tcpPacket(t, true, 1, 2, 3, make([]byte, 300))
	var list stack.PacketBufferList
	list.PushBack(outboundPacket(t, p))
	ep.WritePackets(list)
	list.DecRef()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readBack(t, out.Bytes())
	if len(recs) != 1 || !bytes.Equal(recs[0].data, p[:50]) || recs[0].ci.Length != len(p) {
		t.Fatalf("records %+v", recs)
	}
}

// TestEndpointAllocs bounds the cost of recording: the packet bytes are
// copied into the Writer's scratch buffer without allocating; the two
// small allocations left are pcapgo's, encoding the epb_flags option (its
// option slice, and its padding scratch escaping).
func TestEndpointAllocs(t *testing.T) {
	w, err := NewWriter(io.Discard, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep := NewEndpoint(discardLink{channel.New(1, 1500, "")}, w, 0)
	pkt := outboundPacket(t, tcpPacket(t, false, 1, 2, 3, make([]byte, 1400)))
	defer pkt.DecRef()
	var list stack.PacketBufferList
	list.PushBack(pkt)
	allocs := testing.AllocsPerRun(1000, func() { ep.WritePackets(list) })
	if allocs > 2 {
		t.Errorf("%.1f allocations per recorded packet, want at most 2", allocs)
	}
}

// discardLink is a child whose WritePackets does nothing, so that only the
// recording is measured.
type discardLink struct{ *channel.Endpoint }

func (discardLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return pkts.Len(), nil
}

// TestEndpointEngines runs connections between two engines over a gVisor
// pipe link, one end captured, and checks the capture with the inspector:
// two flows (IPv4 and IPv6) that pass its checks, whose payload in each
// direction adds up to what the connections transmitted, handshakes and
// FINs included.
func TestEndpointEngines(t *testing.T) {
	path := t.TempDir() + "/engines.pcapng"
	w, err := Create(path, Options{Interface: "pipe-a"})
	if err != nil {
		t.Fatal(err)
	}
	la, lb := pipe.New("", "", 1500)
	a, err := mstack.NewEngine(mstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := mstack.NewEngine(mstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aAddrs := []netip.Prefix{netip.MustParsePrefix("10.98.0.1/24"), netip.MustParsePrefix("fd00:98::1/64")}
	bAddrs := []netip.Prefix{netip.MustParsePrefix("10.98.0.2/24"), netip.MustParsePrefix("fd00:98::2/64")}
	if _, err := a.AddNIC(NewEndpoint(la, w, 0), aAddrs...); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddNIC(lb, bAddrs...); err != nil {
		t.Fatal(err)
	}

	const size = 256 << 10
	up, down := make([]byte, size), make([]byte, size/2)
	rand.Read(up)
	rand.Read(down)
	var conns, accepted []*mstack.Conn
	for _, dst := range bAddrs {
		ln, err := b.ListenTCP("tcp", &net.TCPAddr{IP: dst.Addr().AsSlice(), Port: 7000})
		if err != nil {
			t.Fatal(err)
		}
		srv := make(chan error, 1)
		acc := make(chan *mstack.Conn, 1)
		go func() {
			c, err := ln.AcceptTCP()
			acc <- c
			if err != nil {
				srv <- err
				return
			}
			defer c.Close()
			got, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(got, up) {
				t.Errorf("server received %d bytes, not what was sent", len(got))
			}
			if _, err := c.Write(down); err != nil {
				srv <- err
				return
			}
			srv <- c.CloseWrite()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := a.DialTCP(ctx, "tcp", nil, &net.TCPAddr{IP: dst.Addr().AsSlice(), Port: 7000})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(up); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, down) {
			t.Fatalf("client read %d bytes, %v", len(got), err)
		}
		if err := <-srv; err != nil {
			t.Fatal(err)
		}
		c.Close()
		ln.Close()
		conns = append(conns, c)
		accepted = append(accepted, <-acc)
	}
	// Let the last ACKs pass before the engines reset what is left.
	deadline := time.Now().Add(5 * time.Second)
	var sentUp, sentDown uint64 // payload bytes transmitted, retransmissions included
	for i, c := range conns {
		for c.State().String() != "TIME-WAIT" && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		sentUp += c.Info().BytesSent
		sentDown += accepted[i].Info().BytesSent
	}
	a.Close()
	b.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	pkts, err := pcaps.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := pcaps.Analyze(pkts)
	// Two flows, plain TCP or MPTCP depending on the engine's default,
	// that pass every check.
	if r.Plain+len(r.Connections) != 2 || r.Unanalyzed != 0 || len(r.Problems) != 0 || r.Stats.TCPPackets != len(pkts) {
		t.Errorf("inspector: %d plain flows, %d MPTCP connections, %d unanalyzed, problems %v",
			r.Plain, len(r.Connections), r.Unanalyzed, r.Problems)
	}
	var upBytes, downBytes int
	var syn, fin int
	for _, p := range pkts {
		if p.Src.Addr().Is6() != p.Dst.Addr().Is6() {
			t.Fatalf("packet %d mixes families", p.Index)
		}
		if p.Flags&0x02 != 0 {
			syn++
		}
		if p.Flags&0x01 != 0 {
			fin++
		}
		if p.Dst.Port() == 7000 {
			upBytes += p.PayloadLen
		} else {
			downBytes += p.PayloadLen
		}
	}
	// Every transmission is in the capture, retransmissions included.
	if upBytes != int(sentUp) || downBytes != int(sentDown) || upBytes < 2*size || downBytes < size || syn != 4 || fin != 4 {
		t.Errorf("capture: %d bytes up, %d down, %d SYNs, %d FINs; want %d (>= %d), %d (>= %d), 4, 4",
			upBytes, downBytes, syn, fin, sentUp, 2*size, sentDown, size)
	}
}
