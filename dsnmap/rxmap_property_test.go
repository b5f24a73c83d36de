package dsnmap

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mptund/mptund/checksum"
)

// finMode says how a generated scenario ends its stream.
type finMode int

const (
	finNone   finMode = iota
	finOnLast         // the last mapping carries the DATA_FIN
	finKernel         // the last mapping is re-sent with the DATA_FIN added (Linux)
)

// resendScenario is one subflow's bytes, cut into mappings at DSNs with
// gaps (the data in between travels on other subflows), and a sequence of
// events a legitimate sender and the network may produce: mappings added
// (originals, identical re-sends, FIN-added re-sends, splits, consistent
// merges, bare DATA_FINs) and in-order deliveries of random segment sizes.
type resendScenario struct {
	ssn0    uint32 // relative subflow sequence number of payload[0]
	payload []byte
	maps    []Mapping // the originals, in subflow order, checksums set
	dsnOf   []DSN     // DSN of each payload byte
	fin     finMode
	finDSN  DSN
	events  []resendEvent
}

type resendEvent struct {
	add      *Mapping
	from, to int // payload offsets delivered when add is nil
}

func (sc *resendScenario) mapping(dsn DSN, off, n int, fin bool) Mapping {
	m := Mapping{DSN: dsn, SubflowSeq: sc.ssn0 + uint32(off), Len: uint16(n)}
	if fin {
		m.DataFIN = true
		m.Len++
	}
	m.Checksum = checksum.DSSChecksum(uint64(m.DSN), m.SubflowSeq, m.Len, sc.payload[off:off+n])
	return m
}

func (sc *resendScenario) offOf(m Mapping) int { return int(m.SubflowSeq - sc.ssn0) }

func newResendScenario(rng *rand.Rand) *resendScenario {
	sc := &resendScenario{
		ssn0:    1,
		payload: make([]byte, 1+rng.IntN(20000)),
		fin:     finMode(rng.IntN(3)),
	}
	if rng.IntN(4) == 0 {
		sc.ssn0 = -uint32(rng.IntN(30000)) // wraps around 2^32
	}
	for i := range sc.payload {
		sc.payload[i] = byte(rng.Uint32())
	}
	// Cut into originals; consecutive mappings are often contiguous in
	// DSN space (mergeable) and otherwise leave a gap.
	dsn := DSN(rng.Uint64())
	sc.dsnOf = make([]DSN, len(sc.payload))
	var starts []int
	for off := 0; off < len(sc.payload); {
		n := 1 + rng.IntN(min(3000, len(sc.payload)-off))
		if rng.IntN(4) == 0 {
			n = 1 + rng.IntN(min(8, len(sc.payload)-off))
		}
		if rng.IntN(2) == 0 {
			dsn = dsn.Add(uint64(1 + rng.IntN(10000)))
		}
		fin := sc.fin == finOnLast && off+n == len(sc.payload)
		sc.maps = append(sc.maps, sc.mapping(dsn, off, n, fin))
		starts = append(starts, off)
		for k := range n {
			sc.dsnOf[off+k] = dsn.Add(uint64(k))
		}
		dsn = dsn.Add(uint64(n))
		off += n
	}
	sc.finDSN = dsn
	last := sc.maps[len(sc.maps)-1]
	finVariant := sc.mapping(last.DSN, sc.offOf(last), int(last.PayloadLen()), true)

	added := make([]bool, len(sc.maps))
	finVariantSent := false
	push := func(m Mapping) { sc.events = append(sc.events, resendEvent{add: &m}) }
	extra := func(delivered int) {
		for rng.IntN(3) == 0 {
			i := rng.IntN(len(sc.maps))
			if !added[i] {
				continue
			}
			m := sc.maps[i]
			off, n := sc.offOf(m), int(m.PayloadLen())
			switch rng.IntN(5) {
			case 0: // identical re-send
				push(m)
			case 1: // split: a consistent part of it
				a := rng.IntN(n)
				b := a + 1 + rng.IntN(n-a)
				fin := m.DataFIN && b == n && rng.IntN(2) == 0
				push(sc.mapping(m.DSN.Add(uint64(a)), off+a, b-a, fin))
			case 2: // merged with the next one when contiguous in DSN
				if i+1 < len(sc.maps) && n+int(sc.maps[i+1].PayloadLen()) < 65535 {
					nx := sc.maps[i+1]
					if nx.DSN == m.DSN.Add(uint64(n)) {
						push(sc.mapping(m.DSN, off, n+int(nx.PayloadLen()), nx.DataFIN))
					}
				}
			case 3: // the kernel's FIN-added re-send
				if sc.fin == finKernel && i == len(sc.maps)-1 {
					push(finVariant)
					finVariantSent = true
				}
			case 4: // a bare DATA_FIN
				if sc.fin != finNone {
					push(Mapping{DSN: sc.finDSN, Len: 1, DataFIN: true})
				}
			}
		}
	}
	// The FIN version may come first, before the plain one.
	for off := 0; off < len(sc.payload); {
		n := 1 + rng.IntN(min(1500, len(sc.payload)-off))
		end := off + n
		// Add the originals covering [off, end) that are not added yet,
		// sometimes a few further ones ahead.
		ahead := end
		if rng.IntN(3) == 0 {
			ahead = min(len(sc.payload), end+rng.IntN(5000))
		}
		for i, m := range sc.maps {
			if !added[i] && sc.offOf(m) < ahead {
				if i == len(sc.maps)-1 && sc.fin == finKernel && rng.IntN(3) == 0 {
					push(finVariant)
					finVariantSent = true
				}
				push(m)
				added[i] = true
			}
		}
		extra(off)
		if end == len(sc.payload) && sc.fin == finKernel && (!finVariantSent || rng.IntN(2) == 0) {
			// Linux sends the FIN-added mapping on the tail segment.
			push(finVariant)
			finVariantSent = true
		}
		sc.events = append(sc.events, resendEvent{from: off, to: end})
		off = end
	}
	extra(len(sc.payload))
	return sc
}

// play runs the scenario on a fresh RxMap and checks that the emitted
// pieces reproduce the subflow's bytes exactly once, each at its DSN, with
// one DATA_FIN piece at the right place when the stream has a DATA_FIN.
func (sc *resendScenario) play(t *testing.T, checksums bool) RxMapStats {
	t.Helper()
	r := NewRxMap(0, checksums)
	var got []byte
	var gotDSN []DSN
	var fins []DSN
	for i, ev := range sc.events {
		if ev.add != nil {
			if err := r.Add(*ev.add); err != nil {
				t.Fatalf("event %d: Add(%v): %v", i, *ev.add, err)
			}
			continue
		}
		err := r.Deliver(sc.ssn0+uint32(ev.from), sc.payload[ev.from:ev.to], func(p Piece) {
			got = append(got, p.Data...)
			for k := range p.Data {
				gotDSN = append(gotDSN, p.DSN.Add(uint64(k)))
			}
			if p.DataFIN {
				fins = append(fins, p.DSN.Add(uint64(len(p.Data))))
			}
		})
		if err != nil {
			t.Fatalf("event %d: Deliver [%d,%d): %v", i, ev.from, ev.to, err)
		}
	}
	if !bytes.Equal(got, sc.payload) {
		t.Fatalf("emitted %d bytes, want the %d of the subflow", len(got), len(sc.payload))
	}
	for i := range gotDSN {
		if gotDSN[i] != sc.dsnOf[i] {
			t.Fatalf("byte %d at DSN %d, want %d", i, gotDSN[i], sc.dsnOf[i])
		}
	}
	if sc.fin == finNone && len(fins) != 0 {
		t.Fatalf("DATA_FIN pieces at %v in a stream without DATA_FIN", fins)
	}
	if sc.fin != finNone && (len(fins) != 1 || fins[0] != sc.finDSN) {
		t.Fatalf("DATA_FIN pieces at %v, want one at %d", fins, sc.finDSN)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d mappings still pending after every byte was delivered", r.Pending())
	}
	if fin, ok := r.DataFIN(); ok != (sc.fin != finNone) || (ok && fin != sc.finDSN) {
		t.Fatalf("DataFIN() = %d, %v; want %d, %v", fin, ok, sc.finDSN, sc.fin != finNone)
	}
	return r.Stats()
}

// TestRxMapResendProperty: random streams, cut into mappings, re-sent in
// every legitimate way, delivered in random segment sizes, reproduce the
// stream exactly, with and without DSS checksums (RFC 8684 §3.3.1).
func TestRxMapResendProperty(t *testing.T) {
	iters := 400
	if testing.Short() {
		iters = 50
	}
	var total [2]RxMapStats
	for seed := range iters {
		for k, csum := range []bool{false, true} {
			sc := newResendScenario(rand.New(rand.NewPCG(uint64(seed), 42)))
			t.Run(fmt.Sprintf("seed%d/checksums=%v", seed, csum), func(t *testing.T) {
				st := sc.play(t, csum)
				tt := &total[k]
				tt.Repeated += st.Repeated
				tt.FINAdded += st.FINAdded
				tt.Covered += st.Covered
				tt.Extended += st.Extended
				tt.Unverifiable += st.Unverifiable
				tt.Stale += st.Stale
			})
		}
	}
	// The generator exercised every kind of legitimate re-send.
	noCsum, csum := total[0], total[1]
	t.Logf("without checksums %+v; with checksums %+v", noCsum, csum)
	if noCsum.Covered == 0 || noCsum.FINAdded == 0 || noCsum.Extended == 0 || noCsum.Stale == 0 {
		t.Errorf("without checksums, some re-send kinds never happened: %+v", noCsum)
	}
	if csum.Repeated == 0 || csum.FINAdded == 0 || csum.Covered == 0 || csum.Unverifiable == 0 || csum.Stale == 0 {
		t.Errorf("with checksums, some re-send kinds never happened: %+v", csum)
	}
}

// FuzzRxMapResend drives the same property from fuzzed seeds.
func FuzzRxMapResend(f *testing.F) {
	f.Add(uint64(1), false)
	f.Add(uint64(7), true)
	f.Fuzz(func(t *testing.T, seed uint64, checksums bool) {
		newResendScenario(rand.New(rand.NewPCG(seed, 42))).play(t, checksums)
	})
}
