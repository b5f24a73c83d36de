package capture

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/pcaps"
)

// record is one packet as read back from a capture.
type record struct {
	data []byte
	ci   gopacket.CaptureInfo
	dir  Direction
}

// readBack decodes a pcapng capture with gopacket's reader, independently
// of the Writer, and checks what every record of this package must carry:
// raw IP link type on every interface, the epb_flags option, nanosecond
// resolution.
func readBack(t *testing.T, b []byte) ([]record, []pcapgo.NgInterface) {
	t.Helper()
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatalf("pcapng reader: %v", err)
	}
	var recs []record
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", len(recs)+1, err)
		}
		if opts.Flags == nil {
			t.Fatalf("record %d has no epb_flags option", len(recs)+1)
		}
		if lt, _ := ci.AncillaryData[0].(layers.LinkType); lt != layers.LinkTypeRaw {
			t.Fatalf("record %d: link type %v, want raw IP", len(recs)+1, lt)
		}
		recs = append(recs, record{data: bytes.Clone(data), ci: ci, dir: Direction(opts.Flags.Direction)})
	}
	var ifaces []pcapgo.NgInterface
	for i := 0; i < r.NInterfaces(); i++ {
		ifc, err := r.Interface(i)
		if err != nil {
			t.Fatal(err)
		}
		if ifc.TimestampResolution != 9 {
			t.Errorf("interface %d: timestamp resolution %v, want 9 (ns)", i, ifc.TimestampResolution)
		}
		ifaces = append(ifaces, ifc)
	}
	return recs, ifaces
}

// tcpPacket builds an IPv4 or IPv6 TCP segment with valid checksums.
func tcpPacket(t testing.TB, v6 bool, srcPort, dstPort uint16, seq uint32, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(srcPort), DstPort: layers.TCPPort(dstPort), Seq: seq, ACK: true, PSH: len(payload) > 0, Window: 1000}
	var ip gopacket.SerializableLayer
	if v6 {
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64,
			SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
		_ = tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: net.IPv4(192, 0, 2, 1).To4(), DstIP: net.IPv4(192, 0, 2, 2).To4()}
		_ = tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

func TestWriterRoundTrip(t *testing.T) {
	type in struct {
		ifc  int
		dir  Direction
		data []byte
	}
	var ins []in
	for i := 0; i < 40; i++ {
		payload := bytes.Repeat([]byte{byte(i)}, i*37)
		dir := Inbound
		if i%3 == 0 {
			dir = Outbound
		}
		ins = append(ins, in{ifc: i % 2, dir: dir, data: tcpPacket(t, i%4 == 1, 1000, 2000, uint32(i*100), payload)})
	}
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{Interface: "tun-a"})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := w.AddInterface("tun-b"); err != nil || id != 1 {
		t.Fatalf("AddInterface = %d, %v; want 1, nil", id, err)
	}
	var wantBytes uint64
	for _, p := range ins {
		if err := w.WritePacket(p.ifc, p.dir, p.data); err != nil {
			t.Fatal(err)
		}
		wantBytes += uint64(len(p.data))
	}
	if out.Len() > 1024 {
		t.Errorf("%d bytes reached the underlying writer before Flush: not buffered", out.Len())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st != (Stats{Packets: uint64(len(ins)), Bytes: wantBytes}) {
		t.Errorf("Stats = %+v, want %d packets, %d bytes", st, len(ins), wantBytes)
	}

	recs, ifaces := readBack(t, out.Bytes())
	if len(ifaces) != 2 || ifaces[0].Name != "tun-a" || ifaces[1].Name != "tun-b" || ifaces[0].SnapLength != DefaultSnapLen {
		t.Errorf("interfaces: %+v", ifaces)
	}
	if len(recs) != len(ins) {
		t.Fatalf("%d records, want %d", len(recs), len(ins))
	}
	for i, r := range recs {
		p := ins[i]
		if !bytes.Equal(r.data, p.data) || r.dir != p.dir || r.ci.InterfaceIndex != p.ifc || r.ci.Length != len(p.data) {
			t.Errorf("record %d: ifc %d dir %v len %d/%d, want ifc %d dir %v len %d", i, r.ci.InterfaceIndex, r.dir,
				r.ci.CaptureLength, r.ci.Length, p.ifc, p.dir, len(p.data))
		}
		if i > 0 && r.ci.Timestamp.Before(recs[i-1].ci.Timestamp) {
			t.Errorf("record %d: timestamp %v before the previous %v", i, r.ci.Timestamp, recs[i-1].ci.Timestamp)
		}
		if d := time.Since(r.ci.Timestamp); d < 0 || d > time.Minute {
			t.Errorf("record %d: timestamp %v is not now", i, r.ci.Timestamp)
		}
	}

	// Our own reader decodes every record as a TCP segment.
	pkts, err := pcaps.Read(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != len(ins) {
		t.Fatalf("pcaps.Read: %d TCP packets, want %d", len(pkts), len(ins))
	}
	for i, p := range pkts {
		if want := i * 37; len(p.Payload) != want || p.PayloadLen != want || p.Seq != uint32(i*100) {
			t.Errorf("pcaps packet %d: payload %d/%d seq %d, want %d, seq %d", i, len(p.Payload), p.PayloadLen, p.Seq, want, i*100)
		}
	}
}

func TestWriterSnapLen(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{SnapLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	long := tcpPacket(t, false, 1, 2, 3, make([]byte, 500))
	short := tcpPacket(t, true, 1, 2, 3, make([]byte, 10))
	for _, p := range [][]byte{long, short} {
		if err := w.WritePacket(0, Outbound, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Truncated != 1 || st.Packets != 2 || st.Bytes != uint64(len(long)+len(short)) {
		t.Errorf("Stats = %+v", st)
	}
	recs, _ := readBack(t, out.Bytes())
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	if r := recs[0]; !bytes.Equal(r.data, long[:100]) || r.ci.Length != len(long) {
		t.Errorf("cut record: %d/%d bytes, want 100/%d", r.ci.CaptureLength, r.ci.Length, len(long))
	}
	if r := recs[1]; !bytes.Equal(r.data, short) || r.ci.Length != len(short) {
		t.Errorf("short record: %d/%d bytes, want %d", r.ci.CaptureLength, r.ci.Length, len(short))
	}
	// pcaps sees the cut payload and its length on the wire.
	pkts, err := pcaps.Read(bytes.NewReader(out.Bytes()))
	if err != nil || len(pkts) != 2 {
		t.Fatalf("pcaps.Read: %d packets, %v", len(pkts), err)
	}
	if !pkts[0].Truncated() || pkts[0].PayloadLen != 500 {
		t.Errorf("pcaps: truncated %v, payload length %d, want true, 500", pkts[0].Truncated(), pkts[0].PayloadLen)
	}
}

func TestWriterTimestamps(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	steps := []time.Duration{0, 1500, 1500, 700, 9_000_000_000, 5} // ns; 700 and 5 go backwards
	i := 0
	now := func() time.Time { d := steps[i]; i++; return base.Add(d) }
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for range steps {
		if err := w.WritePacket(0, Inbound, tcpPacket(t, false, 1, 2, 3, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readBack(t, out.Bytes())
	want := []time.Duration{0, 1500, 1500, 1500, 9_000_000_000, 9_000_000_000}
	for j, r := range recs {
		if got := r.ci.Timestamp.Sub(base); got != want[j] {
			t.Errorf("record %d at base+%v, want base+%v", j, got, want[j])
		}
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (f *failWriter) Write(b []byte) (int, error) {
	if len(b) > f.n {
		k := f.n
		f.n = 0
		return k, errDiskFull
	}
	f.n -= len(b)
	return len(b), nil
}

func TestWriterErrors(t *testing.T) {
	pkt := tcpPacket(t, false, 1, 2, 3, make([]byte, 1000))

	t.Run("sticky write error", func(t *testing.T) {
		w, err := NewWriter(&failWriter{n: 200}, Options{BufferSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		var first error
		for i := 0; i < 20; i++ {
			if err := w.WritePacket(0, Inbound, pkt); err != nil && first == nil {
				first = err
			}
		}
		if !errors.Is(first, errDiskFull) {
			t.Fatalf("write error %v, want %v", first, errDiskFull)
		}
		st := w.Stats()
		if st.Dropped == 0 || st.Packets+st.Dropped != 20 {
			t.Errorf("Stats = %+v: want drops, and 20 packets in all", st)
		}
		if !errors.Is(w.Err(), errDiskFull) || !errors.Is(w.Flush(), errDiskFull) || !errors.Is(w.Close(), errDiskFull) {
			t.Errorf("Err/Flush/Close do not report the first error %v", w.Err())
		}
	})

	t.Run("closed", func(t *testing.T) {
		w, err := NewWriter(io.Discard, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(0, Inbound, pkt); !errors.Is(err, ErrClosed) {
			t.Errorf("WritePacket after Close: %v", err)
		}
		if _, err := w.AddInterface("x"); !errors.Is(err, ErrClosed) {
			t.Errorf("AddInterface after Close: %v", err)
		}
		if err := w.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second Close: %v", err)
		}
		if err := w.Flush(); !errors.Is(err, ErrClosed) {
			t.Errorf("Flush after Close: %v", err)
		}
		if st := w.Stats(); st.Dropped != 1 || st.Packets != 0 {
			t.Errorf("Stats = %+v", st)
		}
	})

	t.Run("unknown interface", func(t *testing.T) {
		w, err := NewWriter(io.Discard, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ifc := range []int{-1, 1, 7} {
			if err := w.WritePacket(ifc, Inbound, pkt); !errors.Is(err, ErrNoInterface) {
				t.Errorf("interface %d: %v, want ErrNoInterface", ifc, err)
			}
		}
		if err := w.WritePacket(0, Inbound, pkt); err != nil {
			t.Errorf("interface 0: %v", err)
		}
	})

	t.Run("header write fails", func(t *testing.T) {
		if _, err := NewWriter(&failWriter{}, Options{BufferSize: 16}); !errors.Is(err, errDiskFull) {
			t.Errorf("NewWriter on a failing writer: %v", err)
		}
	})

	t.Run("create", func(t *testing.T) {
		if _, err := Create(filepath.Join(t.TempDir(), "no", "such", "dir.pcapng"), Options{}); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create in a missing directory: %v", err)
		}
		path := filepath.Join(t.TempDir(), "c.pcapng")
		w, err := Create(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(0, Outbound, pkt); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		pkts, err := pcaps.ReadFile(path)
		if err != nil || len(pkts) != 1 || len(pkts[0].Payload) != 1000 {
			t.Errorf("pcaps.ReadFile: %d packets, %v", len(pkts), err)
		}
	})
}

// TestWriterConcurrent records from several goroutines (run with -race):
// no record is lost or torn, and timestamps stay in file order.
func TestWriterConcurrent(t *testing.T) {
	const writers, each = 4, 300
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				p := tcpPacket(t, false, uint16(g), 80, uint32(i), []byte(fmt.Sprintf("g%d-%d", g, i)))
				if err := w.WritePacket(0, Direction(1+g%2), p); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readBack(t, out.Bytes())
	if len(recs) != writers*each {
		t.Fatalf("%d records, want %d", len(recs), writers*each)
	}
	pkts, err := pcaps.Read(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	next := make([]uint32, writers)
	for i, p := range pkts {
		g := p.Src.Port()
		if p.Seq != next[g] || string(p.Payload) != fmt.Sprintf("g%d-%d", g, p.Seq) {
			t.Fatalf("packet %d: goroutine %d seq %d payload %q, want seq %d", i, g, p.Seq, p.Payload, next[g])
		}
		next[g]++
		if i > 0 && p.Time.Before(pkts[i-1].Time) {
			t.Fatalf("packet %d: timestamp goes backwards", i)
		}
	}
}
