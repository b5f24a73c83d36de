package dsnmap

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mptund/mptund/checksum"
)

// subflowStream is the payload of one subflow, relative sequence number 1
// first, from which test mappings compute their real DSS checksums.
type subflowStream []byte

func (s subflowStream) bytes(ssn uint32, n int) []byte { return s[ssn-1 : int(ssn-1)+n] }

// mapping builds the mapping of n subflow bytes from ssn onto dsn, with the
// DATA_FIN after them when fin is set (data-level length n+1), and the
// checksum a sender computes for that data-level length (RFC 8684 §3.3.1).
func (s subflowStream) mapping(dsn DSN, ssn uint32, n int, fin bool) Mapping {
	m := Mapping{DSN: dsn, SubflowSeq: ssn, Len: uint16(n), DataFIN: fin}
	if fin {
		m.Len++
	}
	m.Checksum = checksum.DSSChecksum(uint64(dsn), ssn, m.Len, s.bytes(ssn, n))
	return m
}

// rxStep is one event of a table test: a mapping added, or subflow bytes
// [from, to) delivered, with the error expected.
type rxStep struct {
	add      *Mapping
	from, to uint32
	err      error
}

func add(m Mapping) rxStep               { return rxStep{add: &m} }
func addErr(m Mapping, err error) rxStep { return rxStep{add: &m, err: err} }
func deliver(from, to uint32) rxStep     { return rxStep{from: from, to: to} }

// runSteps plays steps on r and returns what was emitted, flattened to one
// DSN per byte, and the DSN of the DATA_FIN pieces announced (or 0).
func runSteps(t *testing.T, r *RxMap, sub subflowStream, steps []rxStep) (dsns []DSN, data []byte, finAt []DSN) {
	t.Helper()
	for i, st := range steps {
		var err error
		if st.add != nil {
			err = r.Add(*st.add)
		} else {
			err = r.Deliver(st.from, sub.bytes(st.from, int(st.to-st.from)), func(p Piece) {
				for k := range p.Data {
					dsns = append(dsns, p.DSN.Add(uint64(k)))
				}
				data = append(data, p.Data...)
				if p.DataFIN {
					finAt = append(finAt, p.DSN.Add(uint64(len(p.Data))))
				}
			})
		}
		if !errors.Is(err, st.err) || (st.err == nil && err != nil) {
			what := fmt.Sprintf("deliver [%d,%d)", st.from, st.to)
			if st.add != nil {
				what = "add " + st.add.String()
			}
			t.Fatalf("step %d (%s): err = %v, want %v", i, what, err, st.err)
		}
	}
	return dsns, data, finAt
}

// TestRxMapResentMappings covers the ways a legitimate sender (or a
// segment-splitting middlebox) re-sends mappings (RFC 8684 §3.3.1: a
// mapping is fixed once declared, but it may ride again on any segment it
// covers), and the true conflicts, with and without DSS checksums.
func TestRxMapResentMappings(t *testing.T) {
	sub := subflowStream(pattern(20000, 3))
	const A = DSN(1<<32 + 1000) // a DSN that needs 64 bits
	const S = uint32(1)
	type want struct {
		// bytes: every subflow byte [1, bytes] emitted once, subflow byte
		// s at DSN dsnOf(s).
		bytes int
		dsnOf func(s uint32) DSN
		fin   DSN // 0: no DATA_FIN piece
	}
	linear := func(s uint32) DSN { return A.Add(uint64(s - S)) }
	cases := []struct {
		name  string
		csum  []bool // checksum modes the case runs in
		steps []rxStep
		want  want
	}{
		{
			// The Linux sequence: DATA_FIN sent before the tail, attached
			// to the last mapping (length 8192+1) when the tail goes out.
			name: "kernel DATA_FIN re-sent on the tail, plain first",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 8192, false)),
				deliver(S, S+4096),
				add(Mapping{DSN: A + 8192, SubflowSeq: 0, Len: 1, DataFIN: true}),
				add(sub.mapping(A, S, 8192, true)),
				deliver(S+4096, S+8192),
			},
			want: want{bytes: 8192, dsnOf: linear, fin: A + 8192},
		},
		{
			name: "FIN version first, then the plain one",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 8192, true)),
				deliver(S, S+1000),
				add(sub.mapping(A, S, 8192, false)),
				deliver(S+1000, S+8192),
			},
			want: want{bytes: 8192, dsnOf: linear, fin: A + 8192},
		},
		{
			name: "FIN version re-sent after every byte but the last",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 300, false)),
				deliver(S, S+299),
				add(sub.mapping(A, S, 300, true)),
				add(sub.mapping(A, S, 300, false)),
				deliver(S+299, S+300),
			},
			want: want{bytes: 300, dsnOf: linear, fin: A + 300},
		},
		{
			name: "identical repeats",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				add(sub.mapping(A, S, 100, false)),
				deliver(S, S+50),
				add(sub.mapping(A, S, 100, false)),
				deliver(S+50, S+100),
				add(sub.mapping(A, S, 100, false)),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			// A retransmission split differently (or a middlebox
			// splitting segments and mappings): every byte keeps its DSN.
			name: "split re-send inside a pending mapping",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				add(sub.mapping(A+40, S+40, 30, false)),
				deliver(S, S+20),
				add(sub.mapping(A, S, 10, false)),
				add(sub.mapping(A+90, S+90, 10, false)),
				deliver(S+20, S+100),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			name: "merged re-send over two pending mappings",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 50, false)),
				add(sub.mapping(A+50, S+50, 50, false)),
				add(sub.mapping(A, S, 100, false)),
				deliver(S, S+100),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			// Without checksums, a consistent mapping that reaches past
			// the pending ones maps the new bytes.
			name: "extension without checksums",
			csum: []bool{false},
			steps: []rxStep{
				add(sub.mapping(A, S, 50, false)),
				deliver(S, S+30),
				add(sub.mapping(A+20, S+20, 80, true)),
				deliver(S+30, S+100),
			},
			want: want{bytes: 100, dsnOf: linear, fin: A + 100},
		},
		{
			// With checksums, the longer mapping cannot be verified as a
			// unit: it is ignored, and the original mapping of the rest
			// (which a sender sends first) maps the bytes.
			name: "partial overlap with checksums is ignored",
			csum: []bool{true},
			steps: []rxStep{
				add(sub.mapping(A, S, 50, false)),
				add(sub.mapping(A+20, S+20, 80, false)),
				add(sub.mapping(A+50, S+50, 50, false)),
				deliver(S, S+100),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			name: "second mapping at another DSN, repeated while in progress",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 50, false)),
				add(sub.mapping(A+5000, S+50, 50, false)),
				deliver(S, S+70),
				add(sub.mapping(A+5000, S+50, 50, false)),
				deliver(S+70, S+100),
			},
			want: want{bytes: 100, dsnOf: func(s uint32) DSN {
				if s < S+50 {
					return linear(s)
				}
				return A + 5000 + DSN(s-S-50)
			}},
		},
		{
			name: "delivered bytes re-mapped identically or by a part",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				deliver(S, S+100),
				add(sub.mapping(A, S, 100, false)),
				add(sub.mapping(A+10, S+10, 20, false)),
				add(sub.mapping(A+90, S+90, 10, false)),
				add(sub.mapping(A+100, S+100, 20, false)),
				add(sub.mapping(A+95, S+95, 10, false)),
				deliver(S+100, S+120),
			},
			want: want{bytes: 120, dsnOf: linear},
		},
		{
			name: "DATA_FIN-only mappings are ignored",
			csum: []bool{false, true},
			steps: []rxStep{
				add(Mapping{DSN: A + 10, SubflowSeq: 0, Len: 1, DataFIN: true}),
				add(sub.mapping(A, S, 10, false)),
				add(Mapping{DSN: A + 10, SubflowSeq: 0, Len: 1, DataFIN: true}),
				deliver(S, S+10),
			},
			want: want{bytes: 10, dsnOf: linear},
		},
		{
			name: "conflict: same bytes, another DSN",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				addErr(sub.mapping(A+1, S+10, 10, false), ErrMappingConflict),
				addErr(sub.mapping(A+200, S+90, 20, false), ErrMappingConflict),
				deliver(S, S+100),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			name: "conflict: DATA_FIN before mapped data",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				addErr(sub.mapping(A, S, 50, true), ErrMappingConflict),
				deliver(S, S+100),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
		{
			name: "conflict: DATA_FIN at another DSN than a known one",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, true)),
				addErr(sub.mapping(A+100, S+100, 10, true), ErrMappingConflict),
				addErr(sub.mapping(A+100, S+100, 10, false), ErrMappingConflict),
				deliver(S, S+100),
			},
			want: want{bytes: 100, dsnOf: linear, fin: A + 100},
		},
		{
			name: "conflict: delivered bytes re-mapped elsewhere",
			csum: []bool{false, true},
			steps: []rxStep{
				add(sub.mapping(A, S, 100, false)),
				deliver(S, S+100),
				addErr(sub.mapping(A+7, S+10, 20, false), ErrStaleMapping),
				addErr(sub.mapping(A+7, S+90, 20, false), ErrStaleMapping),
			},
			want: want{bytes: 100, dsnOf: linear},
		},
	}
	for _, tc := range cases {
		for _, csum := range tc.csum {
			t.Run(fmt.Sprintf("%s/checksums=%v", tc.name, csum), func(t *testing.T) {
				r := NewRxMap(0, csum)
				dsns, data, finAt := runSteps(t, r, sub, tc.steps)
				if len(data) != tc.want.bytes {
					t.Fatalf("emitted %d bytes, want %d", len(data), tc.want.bytes)
				}
				for i := range data {
					s := S + uint32(i)
					if data[i] != sub[s-1] || dsns[i] != tc.want.dsnOf(s) {
						t.Fatalf("byte %d: %#x at DSN %d, want %#x at DSN %d", i, data[i], dsns[i], sub[s-1], tc.want.dsnOf(s))
					}
				}
				switch {
				case tc.want.fin == 0 && len(finAt) != 0:
					t.Errorf("DATA_FIN pieces at %v, want none", finAt)
				case tc.want.fin != 0 && (len(finAt) != 1 || finAt[0] != tc.want.fin):
					t.Errorf("DATA_FIN pieces at %v, want one at %d", finAt, tc.want.fin)
				}
			})
		}
	}
}

// TestRxMapChecksumOfKeptVersion: when a mapping is re-sent with the
// DATA_FIN added, the payload is verified against the checksum of the
// version kept (the first seen) with that version's data-level length: a
// corrupted payload fails whichever order the versions came in, and an
// intact one passes.
func TestRxMapChecksumOfKeptVersion(t *testing.T) {
	sub := subflowStream(pattern(1000, 9))
	const A = DSN(77)
	plain, fin := sub.mapping(A, 1, 999, false), sub.mapping(A, 1, 999, true)
	if plain.Checksum == fin.Checksum {
		t.Fatal("test needs checksums that differ with the data-level length")
	}
	for _, order := range [][2]Mapping{{plain, fin}, {fin, plain}} {
		for _, corrupt := range []bool{false, true} {
			r := NewRxMap(0, true)
			for _, m := range order {
				if err := r.Add(m); err != nil {
					t.Fatalf("%v then %v: %v", order[0], order[1], err)
				}
			}
			payload := append([]byte(nil), sub.bytes(1, 999)...)
			if corrupt {
				payload[500] ^= 0x10
			}
			var got []Piece
			err := r.Deliver(1, payload, func(p Piece) { got = append(got, p) })
			switch {
			case corrupt && (!errors.Is(err, ErrChecksum) || len(got) != 0):
				t.Errorf("%v first, corrupted: err %v, %d pieces", order[0], err, len(got))
			case !corrupt && (err != nil || len(got) != 1 || !got[0].DataFIN || len(got[0].Data) != 999):
				t.Errorf("%v first: err %v, pieces %v", order[0], err, got)
			}
		}
	}
}

// pattern returns n bytes of position-dependent data.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed*13 + i>>8)
	}
	return b
}
