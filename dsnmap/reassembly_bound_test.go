package dsnmap

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestReassemblerMemoryBounded: a peer that ignores the window and keeps
// sending in order, with nothing read, gets at most the limit and the
// slack accepted, then ErrBeyondWindow: the overshoot allowance does not
// move with the data it let in.
func TestReassemblerMemoryBounded(t *testing.T) {
	const limit = 1000
	r := NewReassembler(5, limit)
	stream := pattern(limit+minSlack+5000, 4)
	var err error
	off := 0
	for off < len(stream) {
		var n int
		n, err = r.Insert(Piece{DSN: DSN(5 + off), Data: stream[off:min(off+100, len(stream))]})
		off += n
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrBeyondWindow) {
		t.Fatalf("after %d bytes in order without reading: err %v, want ErrBeyondWindow", off, err)
	}
	if r.Readable() != limit+minSlack || off != limit+minSlack {
		t.Fatalf("accepted %d, readable %d; want limit+slack = %d", off, r.Readable(), limit+minSlack)
	}
	if st := r.Stats(); st.Overshoot != minSlack {
		t.Errorf("overshoot %d, want %d", st.Overshoot, minSlack)
	}
	// A DATA_FIN alone right there is no overshoot.
	if n, err := r.Insert(Piece{DSN: DSN(5 + off), DataFIN: true}); n != 0 || err != nil || !r.FINReceived() {
		t.Fatalf("bare DATA_FIN at the slack's edge: n %d err %v", n, err)
	}
}

// TestReassemblerEdgeMovesWithReads: reading makes room again, from the
// new edge.
func TestReassemblerEdgeMovesWithReads(t *testing.T) {
	const limit = 1000
	r := NewReassembler(5, limit)
	stream := pattern(limit+minSlack+600, 4)
	if n, _ := r.Insert(Piece{DSN: 5, Data: stream[:limit+minSlack]}); n != limit+minSlack {
		t.Fatalf("accepted %d", n)
	}
	if _, err := r.Insert(Piece{DSN: 5 + limit + minSlack, Data: stream[limit+minSlack:]}); !errors.Is(err, ErrBeyondWindow) {
		t.Fatalf("beyond limit+slack: %v", err)
	}
	buf := make([]byte, 600)
	r.Read(buf)
	if n, err := r.Insert(Piece{DSN: 5 + limit + minSlack, Data: stream[limit+minSlack:]}); n != 600 || err != nil {
		t.Fatalf("after reading 600: n %d err %v", n, err)
	}
}

// TestReassemblerOutOfOrderRangesBounded: pieces that each need a new run
// of out-of-order bytes are refused beyond MaxOutOfOrderRanges with
// ErrTooManyRanges (a counted drop, not a violation); pieces extending an
// existing run and in-order pieces are still taken, and the stream comes
// out whole once the refused bytes are sent again.
func TestReassemblerOutOfOrderRangesBounded(t *testing.T) {
	const start = DSN(1 << 63)
	n := 2*MaxOutOfOrderRanges + 100
	stream := pattern(2*n+1, 5)
	r := NewReassembler(start, 1<<20)
	piece := func(off, k int) Piece { return Piece{DSN: start.Add(uint64(off)), Data: stream[off : off+k]} }
	refused := 0
	// Odd bytes only: each one a run of its own.
	for i := range n {
		got, err := r.Insert(piece(2*i+1, 1))
		switch {
		case i < MaxOutOfOrderRanges && (err != nil || got != 1):
			t.Fatalf("piece %d: n %d err %v", i, got, err)
		case i >= MaxOutOfOrderRanges && (!errors.Is(err, ErrTooManyRanges) || got != 0):
			t.Fatalf("piece %d beyond the bound: n %d err %v", i, got, err)
		case err != nil:
			refused++
		}
	}
	st := r.Stats()
	if r.OutOfOrder() != MaxOutOfOrderRanges || st.RangesRefused != uint64(refused) || st.RangesRefusedPieces != uint64(refused) {
		t.Fatalf("out of order %d, stats %+v, refused %d", r.OutOfOrder(), st, refused)
	}
	// Extending a run needs no new one.
	if got, err := r.Insert(piece(2, 1)); got != 1 || err != nil {
		t.Fatalf("piece joining two runs: n %d err %v", got, err)
	}
	// The peer resends everything (data-level retransmission).
	for i := 0; i < len(stream); i += 7 {
		if _, err := r.Insert(piece(i, min(7, len(stream)-i))); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(stream)+1)
	if k := r.Read(got); !bytes.Equal(got[:k], stream) || r.OutOfOrder() != 0 {
		t.Fatalf("read %d bytes, want the %d of the stream", k, len(stream))
	}
}

// TestReassemblerNoAllocPerPiece: once the ring exists, out-of-order and
// in-order pieces are stored without allocating.
func TestReassemblerNoAllocPerPiece(t *testing.T) {
	r := NewReassembler(0, 1<<20)
	stream := pattern(64<<10, 6)
	buf := make([]byte, len(stream))
	var base uint64
	cycle := func() {
		// 64 pieces of 1 KiB, odd ones first in reverse, then the rest.
		for _, first := range []int{1, 0} {
			for i := 63 - (1 - first); i >= 0; i -= 2 {
				if _, err := r.Insert(Piece{DSN: DSN(base + uint64(i)<<10), Data: stream[i<<10 : (i+1)<<10]}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n := r.Read(buf); n != len(stream) {
			t.Fatalf("read %d", n)
		}
		base += uint64(len(stream))
	}
	cycle()
	if a := testing.AllocsPerRun(20, cycle); a != 0 {
		t.Fatalf("%v allocations per 64 pieces", a)
	}
}

// TestReassemblerLazyMemory: the ring is allocated when bytes arrive, sized
// to what they need (growing by doubling), never beyond limit + slack.
func TestReassemblerLazyMemory(t *testing.T) {
	r := NewReassembler(0, 64<<20)
	if r.buf != nil {
		t.Fatal("ring allocated before any byte")
	}
	r.Insert(Piece{DSN: 0, Data: []byte("hello")})
	if len(r.buf) > minRing {
		t.Fatalf("ring of %d bytes for 5", len(r.buf))
	}
	// A far out-of-order piece makes it grow to reach it, no further than
	// twice what is needed.
	r.Insert(Piece{DSN: 1 << 20, Data: []byte("x")})
	if len(r.buf) < 1<<20+1 || len(r.buf) > 2<<20+2 {
		t.Fatalf("ring of %d bytes to hold offset 1 MiB", len(r.buf))
	}
	small := NewReassembler(0, 1000)
	small.Insert(Piece{DSN: 2000, Data: []byte("y")})
	if len(small.buf) > 1000+minSlack {
		t.Fatalf("ring of %d bytes beyond limit+slack", len(small.buf))
	}
}

// TestReassemblerSetLimit: the limit may grow or shrink at any time; bytes
// held are kept, and the right edge once offered is not taken back.
func TestReassemblerSetLimit(t *testing.T) {
	stream := pattern(1<<20, 7)
	r := NewReassembler(0, 100<<10)
	ins := func(off, n int) (int, error) { return r.Insert(Piece{DSN: DSN(off), Data: stream[off : off+n]}) }
	// Out of order near the edge, then grow: the bytes survive the ring's
	// reallocation.
	if _, err := ins(90<<10, 10<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := ins(10, 1000); err != nil {
		t.Fatal(err)
	}
	r.SetLimit(400 << 10)
	if r.Window() != 400<<10 {
		t.Fatalf("window %d after growing", r.Window())
	}
	if _, err := ins(300<<10, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := ins(0, 300<<10); err != nil {
		t.Fatal(err)
	}
	// Shrink below what is held: nothing is lost, the window closes, and
	// bytes up to the edge already offered (400 KiB) plus the slack are
	// still accepted.
	r.SetLimit(50 << 10)
	if r.Readable() != 300<<10+4096 || r.Window() != 0 {
		t.Fatalf("readable %d window %d after shrinking", r.Readable(), r.Window())
	}
	if n, err := ins(300<<10+4096, 100<<10-4096); n != 100<<10-4096 || err != nil {
		t.Fatalf("within the edge offered before shrinking: n %d err %v", n, err)
	}
	if _, err := ins(400<<10+minSlack, 10); !errors.Is(err, ErrBeyondWindow) {
		t.Fatalf("beyond the old edge and the slack: %v", err)
	}
	got := make([]byte, 1<<20)
	n := r.Read(got)
	if !bytes.Equal(got[:n], stream[:400<<10]) {
		t.Fatalf("read %d bytes, not the stream's first 400 KiB", n)
	}
	// Emptied after a shrink, the ring is given back and comes back at
	// the new size.
	if r.buf != nil {
		t.Fatalf("ring of %d bytes kept after shrinking and draining", len(r.buf))
	}
	if _, err := ins(400<<10, 10); err != nil || len(r.buf) > 50<<10+minSlack {
		t.Fatalf("after shrink: err %v, ring %d", err, len(r.buf))
	}
}

// TestReassemblerDataFINRepeated: a DATA_FIN at the same place reported
// twice, or first by a bare DATA_FIN then by a mapping's piece, before or
// after the data, is fine; a DATA_FIN below queued data or elsewhere is a
// violation.
func TestReassemblerDataFINRepeated(t *testing.T) {
	data := []byte("0123456789")
	for _, order := range []string{"bare first", "piece first", "bare after data", "twice"} {
		t.Run(order, func(t *testing.T) {
			r := NewReassembler(100, 1000)
			var err error
			switch order {
			case "bare first":
				err = errors.Join(r.SetFIN(110), ignoreN(r.Insert(Piece{DSN: 105, Data: data[5:], DataFIN: true})),
					ignoreN(r.Insert(Piece{DSN: 100, Data: data[:5]})))
			case "piece first":
				err = errors.Join(ignoreN(r.Insert(Piece{DSN: 105, Data: data[5:], DataFIN: true})), r.SetFIN(110),
					ignoreN(r.Insert(Piece{DSN: 100, Data: data[:5]})), r.SetFIN(110))
			case "bare after data":
				err = errors.Join(ignoreN(r.Insert(Piece{DSN: 100, Data: data})), r.SetFIN(110),
					ignoreN(r.Insert(Piece{DSN: 105, Data: data[5:], DataFIN: true})), r.SetFIN(110))
			case "twice":
				err = errors.Join(r.SetFIN(110), r.SetFIN(110), ignoreN(r.Insert(Piece{DSN: 100, Data: data, DataFIN: true})),
					ignoreN(r.Insert(Piece{DSN: 100, Data: data, DataFIN: true})), r.SetFIN(110))
			}
			if err != nil {
				t.Fatal(err)
			}
			if !r.FINReceived() || r.Next() != 111 {
				t.Fatalf("FINReceived %v Next %d", r.FINReceived(), r.Next())
			}
			if err := r.SetFIN(109); !errors.Is(err, ErrDataAfterFIN) {
				t.Fatalf("second DATA_FIN elsewhere: %v", err)
			}
		})
	}
	r := NewReassembler(100, 1000)
	r.Insert(Piece{DSN: 120, Data: data})
	if err := r.SetFIN(125); !errors.Is(err, ErrDataAfterFIN) {
		t.Fatalf("DATA_FIN below queued data: %v", err)
	}
	if err := r.SetFIN(130); err != nil {
		t.Fatal(err)
	}
}

func ignoreN(_ int, err error) error { return err }

// TestReassemblerFirstCopyWins: bytes received twice with different
// contents keep the first copy (RFC 8684 §3.3.1: the first data received
// for a data sequence number is the one delivered).
func TestReassemblerFirstCopyWins(t *testing.T) {
	r := NewReassembler(0, 100)
	r.Insert(Piece{DSN: 5, Data: []byte("AAAAA")})
	r.Insert(Piece{DSN: 3, Data: []byte("bbbbbbbbbb")})
	r.Insert(Piece{DSN: 0, Data: []byte("cccccccccccccccc")})
	got := make([]byte, 32)
	n := r.Read(got)
	if string(got[:n]) != "cccbbAAAAAbbbccc" {
		t.Fatalf("read %q", got[:n])
	}
	if st := r.Stats(); st.InOrder+st.OutOfOrder != 16 || st.Duplicate != 5+10 {
		t.Fatalf("stats %+v", st)
	}
}

// BenchmarkReassembler measures Insert and Read of 1-byte pieces, in order
// and shuffled (within windows of 256 pieces, as several subflows
// interleave, and across the whole stream, where the range bound refuses
// what a single pass cannot hold): the time per piece stays flat from 10k
// to 100k pieces.
func BenchmarkReassembler(b *testing.B) {
	for _, order := range []string{"inorder", "shuffled256", "shuffled"} {
		for _, n := range []int{10_000, 100_000} {
			b.Run(fmt.Sprintf("%s/pieces=%s", order, itoa(n)), func(b *testing.B) {
				stream := pattern(n, 8)
				perm := make([]int, n)
				for i := range perm {
					perm[i] = i
				}
				rng := rand.New(rand.NewPCG(1, 2))
				switch order {
				case "shuffled256":
					for w := 0; w < n; w += 256 {
						win := perm[w:min(w+256, n)]
						rng.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
					}
				case "shuffled":
					rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
				}
				buf := make([]byte, n)
				var refused uint64
				b.SetBytes(int64(n))
				b.ResetTimer()
				for range b.N {
					r := NewReassembler(0, n)
					for _, i := range perm {
						r.Insert(Piece{DSN: DSN(i), Data: stream[i : i+1]})
					}
					r.Read(buf)
					refused = r.Stats().RangesRefusedPieces
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/piece")
				b.ReportMetric(float64(refused)/float64(n), "refused/piece")
			})
		}
	}
}
