package dsnmap

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mptund/mptund/checksum"
)

type collected struct {
	pieces []Piece
}

func (c *collected) emit(p Piece) {
	p.Data = append([]byte(nil), p.Data...)
	c.pieces = append(c.pieces, p)
}

func (c *collected) bytes() []byte {
	var b []byte
	for _, p := range c.pieces {
		b = append(b, p.Data...)
	}
	return b
}

func TestRxMapSplitSegments(t *testing.T) {
	// One mapping of 10 bytes delivered in three segments, each carrying
	// the mapping (as Linux and segment-splitting middleboxes do).
	r := NewRxMap(0, false)
	m := Mapping{DSN: 1000, SubflowSeq: 1, Len: 10}
	payload := []byte("0123456789")
	var c collected
	for _, seg := range [][2]int{{0, 4}, {4, 7}, {7, 10}} {
		if err := r.Add(m); err != nil {
			t.Fatal(err)
		}
		if err := r.Deliver(uint32(1+seg[0]), payload[seg[0]:seg[1]], c.emit); err != nil {
			t.Fatal(err)
		}
	}
	want := []Piece{{DSN: 1000, Data: []byte("0123")}, {DSN: 1004, Data: []byte("456")}, {DSN: 1007, Data: []byte("789")}}
	if len(c.pieces) != len(want) {
		t.Fatalf("got %d pieces, want %d", len(c.pieces), len(want))
	}
	for i := range want {
		if c.pieces[i].DSN != want[i].DSN || !bytes.Equal(c.pieces[i].Data, want[i].Data) || c.pieces[i].DataFIN {
			t.Errorf("piece %d = %+v, want %+v", i, c.pieces[i], want[i])
		}
	}
	if r.Pending() != 0 {
		t.Errorf("Pending = %d after the mapping completed, want 0", r.Pending())
	}
}

func TestRxMapMappingsAheadAndSpanning(t *testing.T) {
	// Two mappings announced before any byte, then one segment spanning
	// both: the piece boundary falls at the mapping boundary, and the
	// second mapping sits at a non-contiguous DSN (data of another subflow
	// lies between).
	r := NewRxMap(0, false)
	if err := r.Add(Mapping{DSN: 5000, SubflowSeq: 7, Len: 3}); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(Mapping{DSN: 100, SubflowSeq: 1, Len: 6}); err != nil {
		t.Fatal(err)
	}
	var c collected
	if err := r.Deliver(1, []byte("abcdefXYZ"), c.emit); err != nil {
		t.Fatal(err)
	}
	if len(c.pieces) != 2 || c.pieces[0].DSN != 100 || string(c.pieces[0].Data) != "abcdef" ||
		c.pieces[1].DSN != 5000 || string(c.pieces[1].Data) != "XYZ" {
		t.Fatalf("pieces = %+v", c.pieces)
	}
}

func TestRxMapErrors(t *testing.T) {
	r := NewRxMap(2, false)
	if err := r.Add(Mapping{DSN: 100, SubflowSeq: 1, Len: 10}); err != nil {
		t.Fatal(err)
	}
	// Same subflow range, different DSN.
	if err := r.Add(Mapping{DSN: 200, SubflowSeq: 1, Len: 10}); !errors.Is(err, ErrMappingConflict) {
		t.Errorf("conflicting DSN: err = %v, want ErrMappingConflict", err)
	}
	// Overlapping tail.
	if err := r.Add(Mapping{DSN: 300, SubflowSeq: 5, Len: 10}); !errors.Is(err, ErrMappingConflict) {
		t.Errorf("overlap: err = %v, want ErrMappingConflict", err)
	}
	// Not contiguous in DSN space with the first: without checksums,
	// consistent adjacent mappings would merge into one entry.
	if err := r.Add(Mapping{DSN: 300, SubflowSeq: 11, Len: 10}); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(Mapping{DSN: 500, SubflowSeq: 21, Len: 10}); !errors.Is(err, ErrTooManyMappings) {
		t.Errorf("third mapping with limit 2: err = %v, want ErrTooManyMappings", err)
	}
	var c collected
	// 20 mapped bytes then 1 unmapped.
	err := r.Deliver(1, make([]byte, 21), c.emit)
	if !errors.Is(err, ErrNoMapping) {
		t.Errorf("unmapped byte: err = %v, want ErrNoMapping", err)
	}
	if got := len(c.bytes()); got != 20 {
		t.Errorf("emitted %d bytes before the error, want 20", got)
	}
}

func TestRxMapRetransmittedMappingIgnored(t *testing.T) {
	r := NewRxMap(0, false)
	m := Mapping{DSN: 100, SubflowSeq: 1, Len: 4}
	r.Add(m)
	var c collected
	if err := r.Deliver(1, []byte("abcd"), c.emit); err != nil {
		t.Fatal(err)
	}
	// A retransmission of the delivered segment brings its mapping again.
	if err := r.Add(m); err != nil {
		t.Fatalf("re-adding a delivered mapping: %v", err)
	}
	if r.Pending() != 0 {
		t.Fatalf("Pending = %d, want 0", r.Pending())
	}
}

func TestRxMapDataFIN(t *testing.T) {
	r := NewRxMap(0, false)
	// 3 bytes of data plus the DATA_FIN: data-level length 4.
	r.Add(Mapping{DSN: 50, SubflowSeq: 1, Len: 4, DataFIN: true})
	var c collected
	if err := r.Deliver(1, []byte("ab"), c.emit); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(3, []byte("c"), c.emit); err != nil {
		t.Fatal(err)
	}
	if len(c.pieces) != 2 || c.pieces[0].DataFIN || !c.pieces[1].DataFIN || c.pieces[1].DSN != 52 {
		t.Fatalf("pieces = %+v; want the FIN on the last piece at DSN 52 (FIN at 53)", c.pieces)
	}
	// A DATA_FIN-only mapping is connection-level; the table ignores it.
	fin := Mapping{DSN: 53, SubflowSeq: 0, Len: 1, DataFIN: true}
	if !fin.FINOnly() || r.Add(fin) != nil || r.Pending() != 0 {
		t.Fatal("DATA_FIN-only mapping not ignored")
	}
}

func TestRxMapInfinite(t *testing.T) {
	r := NewRxMap(0, false)
	r.Add(Mapping{DSN: 10, SubflowSeq: 1, Len: 4})
	var c collected
	r.Deliver(1, []byte("abcd"), c.emit)
	// Fallback: an infinite mapping from subflow byte 5 at DSN 14.
	if err := r.Add(Mapping{DSN: 14, SubflowSeq: 5, Len: 0}); err != nil {
		t.Fatal(err)
	}
	// Later finite mappings are ignored.
	if err := r.Add(Mapping{DSN: 999, SubflowSeq: 9, Len: 4}); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(5, []byte("efghijkl"), c.emit); err != nil {
		t.Fatal(err)
	}
	last := c.pieces[len(c.pieces)-1]
	if !r.Infinite() || last.DSN != 14 || string(last.Data) != "efghijkl" {
		t.Fatalf("infinite mapping: pieces = %+v", c.pieces)
	}
}

func TestRxMapChecksum(t *testing.T) {
	payload := []byte("checksummed mapping payload, odd length.")
	m := Mapping{DSN: 0x1_0000_0000, SubflowSeq: 1, Len: uint16(len(payload))}
	m.Checksum = checksum.DSSChecksum(uint64(m.DSN), m.SubflowSeq, m.Len, payload)

	r := NewRxMap(0, true)
	r.Add(m)
	var c collected
	// Odd split: nothing is emitted until the mapping completes.
	if err := r.Deliver(1, payload[:17], c.emit); err != nil {
		t.Fatal(err)
	}
	if len(c.pieces) != 0 {
		t.Fatal("bytes emitted before the mapping's checksum was verified")
	}
	if err := r.Deliver(18, payload[17:], c.emit); err != nil {
		t.Fatal(err)
	}
	if len(c.pieces) != 1 || c.pieces[0].DSN != m.DSN || !bytes.Equal(c.pieces[0].Data, payload) {
		t.Fatalf("pieces = %+v", c.pieces)
	}

	// Every single-bit corruption of the payload is caught, and nothing of
	// the corrupted mapping is emitted.
	for bit := 0; bit < len(payload)*8; bit++ {
		bad := append([]byte(nil), payload...)
		bad[bit/8] ^= 1 << (bit % 8)
		r := NewRxMap(0, true)
		r.Add(m)
		var c collected
		err := r.Deliver(1, bad, c.emit)
		if !errors.Is(err, ErrChecksum) || len(c.pieces) != 0 {
			t.Fatalf("bit %d flipped: err = %v, emitted %d pieces", bit, err, len(c.pieces))
		}
	}
}
