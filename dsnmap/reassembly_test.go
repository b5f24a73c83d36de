package dsnmap

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

func TestReassemblerShuffledDuplicatedPieces(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for iter := 0; iter < 200; iter++ {
		start := DSN(rng.Uint64())
		stream := make([]byte, 1+rng.Intn(20000))
		rng.Read(stream)
		// Cut into random pieces, duplicate some with random overlaps.
		var pieces []Piece
		for off := 0; off < len(stream); {
			n := 1 + rng.Intn(1500)
			if off+n > len(stream) {
				n = len(stream) - off
			}
			pieces = append(pieces, Piece{DSN: start.Add(uint64(off)), Data: stream[off : off+n]})
			if rng.Intn(4) == 0 {
				a := rng.Intn(len(stream))
				b := a + rng.Intn(len(stream)-a) + 1
				pieces = append(pieces, Piece{DSN: start.Add(uint64(a)), Data: stream[a:b]})
			}
			off += n
		}
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		r := NewReassembler(start, len(stream))
		var accepted int
		for _, p := range pieces {
			n, err := r.Insert(p)
			if err != nil {
				t.Fatal(err)
			}
			accepted += n
		}
		if accepted != len(stream) || r.Next() != start.Add(uint64(len(stream))) || r.OutOfOrder() != 0 {
			t.Fatalf("iter %d: accepted %d of %d, next %d, ooo %d", iter, accepted, len(stream), r.Next()-start, r.OutOfOrder())
		}
		got := make([]byte, len(stream)+10)
		n := r.Read(got)
		if !bytes.Equal(got[:n], stream) {
			t.Fatalf("iter %d: reassembled stream differs", iter)
		}
	}
}

func TestReassemblerWindow(t *testing.T) {
	r := NewReassembler(100, 10)
	// Just beyond the right edge: accepted as overshoot (a subflow may
	// have advertised the window rounded up), never dropped.
	if n, err := r.Insert(Piece{DSN: 110, Data: []byte("x")}); n != 1 || err != nil || r.Stats().Overshoot != 1 {
		t.Fatalf("byte at the right edge: n=%d err=%v stats %+v", n, err, r.Stats())
	}
	// Beyond the slack: refused with an error, counted.
	far := DSN(110 + minSlack)
	if n, err := r.Insert(Piece{DSN: far, Data: []byte("yz")}); n != 0 || !errors.Is(err, ErrBeyondWindow) || r.Stats().Refused != 2 {
		t.Fatalf("piece beyond the slack: n=%d err=%v stats %+v", n, err, r.Stats())
	}
	// Straddling the slack's edge: the part inside is kept, the error
	// still reported.
	if n, err := r.Insert(Piece{DSN: far - 3, Data: []byte("abcdef")}); n != 3 || !errors.Is(err, ErrBeyondWindow) {
		t.Fatalf("straddling piece: n=%d err=%v", n, err)
	}
	if n, _ := r.Insert(Piece{DSN: 100, Data: []byte("0123456789")}); n != 10 {
		t.Fatalf("in-order piece: accepted %d", n)
	}
	if r.Window() != 0 || r.Readable() != 11 {
		t.Fatalf("window %d readable %d, want 0 and 11", r.Window(), r.Readable())
	}
	buf := make([]byte, 4)
	r.Read(buf)
	if r.Window() != 3 {
		t.Fatalf("window after reading 4 of 11 with limit 10: %d", r.Window())
	}
	r.Read(buf)
	if r.Window() != 7 {
		t.Fatalf("window after reading 8 of 11: %d", r.Window())
	}
}

func TestReassemblerDataFIN(t *testing.T) {
	r := NewReassembler(1, 100)
	// The FIN-carrying piece arrives first, out of order.
	if _, err := r.Insert(Piece{DSN: 4, Data: []byte("def"), DataFIN: true}); err != nil {
		t.Fatal(err)
	}
	if r.FINReceived() {
		t.Fatal("FIN reached with a hole before it")
	}
	if _, err := r.Insert(Piece{DSN: 1, Data: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	if !r.FINReceived() || r.Next() != 8 {
		t.Fatalf("FINReceived=%v Next=%d; want true and 8 (6 bytes + FIN)", r.FINReceived(), r.Next())
	}
	if _, err := r.Insert(Piece{DSN: 7, Data: []byte("z")}); err == nil {
		t.Fatal("data after DATA_FIN accepted")
	}
	buf := make([]byte, 10)
	if n := r.Read(buf); n != 6 || !r.EOF() {
		t.Fatalf("read %d, EOF=%v", n, r.EOF())
	}
}

// FuzzReassembler inserts arbitrary pieces of a known stream, with limit
// changes and reads in between, and checks that what comes out is always a
// prefix of the stream (each byte once, DATA_FINs set anywhere never
// breaking that), that Next accounts for every byte delivered, and that the bytes buffered and the ring stay within the
// largest limit used plus its slack. The range bound is lowered so that
// refusals (ErrTooManyRanges, a counted drop) happen.
func FuzzReassembler(f *testing.F) {
	f.Add([]byte{0, 10, 5, 5, 20, 3}, uint16(64), uint8(4))
	f.Add([]byte{3, 4, 0, 3, 7, 9, 1, 1}, uint16(5), uint8(1))
	f.Add([]byte{9, 1, 7, 1, 5, 1, 3, 1, 0xff, 0x80, 1, 1, 0, 9}, uint16(300), uint8(2))
	f.Fuzz(func(t *testing.T, ops []byte, limit uint16, ranges uint8) {
		stream := make([]byte, 300)
		for i := range stream {
			stream[i] = byte(i * 7)
		}
		start := DSN(1<<64 - 100) // crosses the 2^64 wrap
		r := NewReassembler(start, int(limit))
		r.ooo.max = 1 + int(ranges%8)
		maxLimit := int(limit)
		var out []byte
		buf := make([]byte, 37)
		for len(ops) >= 2 {
			off, n := int(ops[0])%len(stream), int(ops[1])
			ops = ops[2:]
			switch {
			case n == 0xff && len(ops) > 0:
				// A limit change: grow or shrink.
				l := int(ops[0]) * 4
				ops = ops[1:]
				r.SetLimit(l)
				maxLimit = max(maxLimit, l)
				continue
			case n == 0xfe:
				// A DATA_FIN at off: refused below data held.
				if err := r.SetFIN(start.Add(uint64(off))); err != nil && !errors.Is(err, ErrDataAfterFIN) {
					t.Fatal(err)
				}
				continue
			}
			if off+n > len(stream) {
				n = len(stream) - off
			}
			oooBefore, refusedBefore := r.OutOfOrder(), r.Stats().RangesRefusedPieces
			_, err := r.Insert(Piece{DSN: start.Add(uint64(off)), Data: stream[off : off+n]})
			switch {
			case err == nil, errors.Is(err, ErrBeyondWindow), errors.Is(err, ErrDataAfterFIN):
			case errors.Is(err, ErrTooManyRanges):
				if r.OutOfOrder() != oooBefore || r.Stats().RangesRefusedPieces != refusedBefore+1 {
					t.Fatal("refused piece changed the buffer or was not counted")
				}
			default:
				t.Fatal(err)
			}
			if r.ooo.len() > r.ooo.max {
				t.Fatalf("%d out-of-order ranges, bound %d", r.ooo.len(), r.ooo.max)
			}
			bound := maxLimit + max(maxLimit/4, minSlack)
			if r.Readable()+r.OutOfOrder() > bound || len(r.buf) > bound {
				t.Fatalf("buffered %d, ring %d > largest limit %d + slack", r.Readable()+r.OutOfOrder(), len(r.buf), maxLimit)
			}
			k := r.Read(buf)
			out = append(out, buf[:k]...)
		}
		if !bytes.Equal(out, stream[:len(out)]) {
			t.Fatal("output is not a prefix of the stream")
		}
		fin := 0
		if r.FINReceived() {
			fin = 1 // the DATA_FIN takes a DSN
		}
		if uint64(len(out)+r.Readable()+fin) != start.Size(r.Next()) {
			t.Fatalf("Next %d inconsistent with %d delivered bytes", start.Size(r.Next()), len(out)+r.Readable())
		}
	})
}
