package capture

import (
	"bytes"
	"errors"
	"os"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// fakeDevice is a wgtun.Device whose reads return scripted batches and
// whose writes are kept.
type fakeDevice struct {
	reads   [][][]byte // batches to return, in order
	readErr error      // returned with the last batch
	written [][]byte
	closed  bool
	events  chan wgtun.Event
}

func (d *fakeDevice) File() *os.File             { return nil }
func (d *fakeDevice) MTU() (int, error)          { return 1500, nil }
func (d *fakeDevice) Name() (string, error)      { return "fake0", nil }
func (d *fakeDevice) Events() <-chan wgtun.Event { return d.events }
func (d *fakeDevice) BatchSize() int             { return 4 }
func (d *fakeDevice) Close() error               { d.closed = true; return nil }

func (d *fakeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(d.reads) == 0 {
		return 0, os.ErrClosed
	}
	batch := d.reads[0]
	d.reads = d.reads[1:]
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	if len(d.reads) == 0 {
		return len(batch), d.readErr
	}
	return len(batch), nil
}

func (d *fakeDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.written = append(d.written, bytes.Clone(b[offset:]))
		// Like wireguard/tun, scribble on the headroom (virtio header).
		clear(b[:offset])
	}
	return len(bufs), nil
}

func TestDevice(t *testing.T) {
	const offset = 16
	var in [][]byte
	for i := 0; i < 6; i++ {
		in = append(in, tcpPacket(t, i%2 == 0, 443, 5000, uint32(i), bytes.Repeat([]byte{'r'}, 100*i)))
	}
	errBroken := errors.New("device broke")
	fake := &fakeDevice{reads: [][][]byte{in[:4], in[4:]}, readErr: errBroken, events: make(chan wgtun.Event)}
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{Interface: "tun9"})
	if err != nil {
		t.Fatal(err)
	}
	dev := NewDevice(fake, w, 0)
	if name, _ := dev.Name(); name != "fake0" || dev.BatchSize() != 4 {
		t.Fatalf("wrapped methods: name %q, batch %d", name, dev.BatchSize())
	}

	bufs := make([][]byte, 4)
	sizes := make([]int, 4)
	for i := range bufs {
		bufs[i] = make([]byte, offset+2000)
	}
	var want []record
	// Read, write, read: the second read also returns an error, its
	// packets are recorded all the same.
	n, err := dev.Read(bufs, sizes, offset)
	if n != 4 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	for _, p := range in[:4] {
		want = append(want, record{dir: Inbound, data: p})
	}
	var wbufs [][]byte
	for i := 0; i < 3; i++ {
		p := tcpPacket(t, false, 5000, 443, uint32(i), bytes.Repeat([]byte{'w'}, 500+i))
		wbufs = append(wbufs, append(make([]byte, offset), p...))
		want = append(want, record{dir: Outbound, data: p})
	}
	if n, err := dev.Write(wbufs, offset); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	n, err = dev.Read(bufs, sizes, offset)
	if n != 2 || !errors.Is(err, errBroken) {
		t.Fatalf("Read = %d, %v; want 2, %v", n, err, errBroken)
	}
	for _, p := range in[4:] {
		want = append(want, record{dir: Inbound, data: p})
	}
	for i, p := range in[4:] {
		if !bytes.Equal(bufs[i][offset:offset+sizes[i]], p) {
			t.Errorf("Read did not hand packet %d through", i)
		}
	}
	if len(fake.written) != 3 {
		t.Fatalf("device got %d packets, want 3", len(fake.written))
	}
	for i, b := range fake.written {
		if !bytes.Equal(b, want[4+i].data) {
			t.Errorf("device packet %d differs", i)
		}
	}

	if err := dev.Close(); err != nil || !fake.closed {
		t.Fatalf("Close = %v, device closed %v", err, fake.closed)
	}
	if out.Len() == 0 {
		t.Fatal("Close did not flush")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, ifaces := readBack(t, out.Bytes())
	if len(ifaces) != 1 || ifaces[0].Name != "tun9" {
		t.Errorf("interfaces %+v", ifaces)
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.dir != want[i].dir || !bytes.Equal(r.data, want[i].data) {
			t.Errorf("record %d: %v, %d bytes; want %v, %d bytes", i, r.dir, len(r.data), want[i].dir, len(want[i].data))
		}
		if i > 0 && r.ci.Timestamp.Before(recs[i-1].ci.Timestamp) {
			t.Errorf("record %d: timestamp goes backwards", i)
		}
	}
}

// TestDeviceBadSizes checks that sizes a device should never report (zero,
// negative, beyond the buffer) are skipped rather than recorded or
// panicking.
func TestDeviceBadSizes(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := tcpPacket(t, false, 1, 2, 3, nil)
	dev := NewDevice(&sizesDevice{sizes: []int{0, -5, 1 << 20, len(good)}, pkt: good}, w, 0)
	bufs := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100), make([]byte, 100)}
	if n, _ := dev.Read(bufs, make([]int, 4), 0); n != 4 {
		t.Fatalf("Read = %d", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readBack(t, out.Bytes())
	if len(recs) != 1 || !bytes.Equal(recs[0].data, good) {
		t.Fatalf("recorded %d packets, want only the well-sized one", len(recs))
	}
}

type sizesDevice struct {
	fakeDevice
	sizes []int
	pkt   []byte
}

func (d *sizesDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	copy(sizes, d.sizes)
	copy(bufs[len(d.sizes)-1][offset:], d.pkt)
	return len(d.sizes), nil
}
