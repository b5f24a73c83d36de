package dsnmap

import (
	"encoding/binary"
	"testing"

	"github.com/mptund/mptund/checksum"
)

// FuzzRxMap feeds an RxMap arbitrary mappings (any subflow sequence number,
// DSN, length, DATA_FIN, right or wrong checksum) and in-order deliveries,
// and checks what a connection relies on, whatever the peer sends:
//
//   - no panic, and never more pending mappings than the limit;
//   - until the first Deliver error (after which the subflow is reset),
//     the bytes emitted are exactly the bytes delivered, in order, less
//     those held for a checksum, each emitted once;
//   - every byte emitted has the DSN that some accepted mapping gave it,
//     and with checksums every piece is a whole accepted mapping whose
//     checksum verifies;
//   - a Piece's DATA_FIN is where an accepted mapping put one.
func FuzzRxMap(f *testing.F) {
	f.Add([]byte("\x00\x01\x00\x00\x00\x10\x01\x00\x20\x00\x02\x00\x01\x00\x10"), false, uint8(4))
	f.Add([]byte("\x01\x01\x00\x00\x00\x10\x01\x00\x20\x00\x02\x00\x01\x00\x08\x02\x00\x09\x00\x08"), true, uint8(2))
	f.Fuzz(func(t *testing.T, ops []byte, checksums bool, limit uint8) {
		const subLen = 600
		sub := make([]byte, subLen+1)
		for i := range sub {
			sub[i] = byte(i*31 + i>>3)
		}
		r := NewRxMap(int(limit%16), checksums)
		lim := int(limit % 16)
		if lim == 0 {
			lim = DefaultRxMapLimit
		}
		type acc struct {
			ssn uint32
			n   uint32
			dsn DSN
			fin bool
		}
		var accepted []acc
		var delivered, emitted []byte
		next := uint32(1) // next subflow byte to deliver
		for len(ops) >= 3 {
			op := ops[0]
			switch op % 3 {
			case 0, 1: // a mapping
				if len(ops) < 9 {
					return
				}
				ssn := uint32(binary.BigEndian.Uint16(ops[1:])) % (subLen + 50)
				dsn := DSN(binary.BigEndian.Uint16(ops[3:])) + 1<<40
				n := uint16(ops[5]) % 120
				fin := ops[6]&1 != 0
				good := ops[6]&2 == 0
				ops = ops[9:]
				m := Mapping{DSN: dsn, SubflowSeq: ssn, Len: n, DataFIN: fin}
				if op%3 == 1 && ssn+uint32(m.PayloadLen()) <= subLen+1 && ssn > 0 {
					m.Checksum = checksum.DSSChecksum(uint64(dsn), ssn, n, sub[ssn-1:ssn-1+m.PayloadLen()])
				}
				if !good {
					m.Checksum ^= 0x5a5a
				}
				if m.Infinite() {
					continue // fallback is covered by TestRxMapInfinite
				}
				if r.Add(m) == nil {
					accepted = append(accepted, acc{ssn, m.PayloadLen(), dsn, fin})
				}
				if r.Pending() > lim {
					t.Fatalf("%d pending mappings, limit %d", r.Pending(), lim)
				}
			case 2: // deliver the next bytes
				n := uint32(ops[1]) % 80
				ops = ops[3:]
				if next+n > subLen+1 {
					n = subLen + 1 - next
				}
				data := sub[next-1 : next-1+n]
				delivered = append(delivered, data...)
				err := r.Deliver(next, data, func(p Piece) {
					// Which subflow bytes is this? The next emitted ones.
					first := uint32(len(emitted)) + 1
					emitted = append(emitted, p.Data...)
					ok := false
					for _, a := range accepted {
						if first-a.ssn < a.n && uint64(first-a.ssn)+uint64(len(p.Data)) <= uint64(a.n) &&
							a.dsn.Add(uint64(first-a.ssn)) == p.DSN &&
							(!p.DataFIN || (a.fin && uint64(first-a.ssn)+uint64(len(p.Data)) == uint64(a.n))) {
							ok = true
							break
						}
					}
					if !ok {
						t.Fatalf("piece %+v for subflow bytes from %d matches no accepted mapping", p, first)
					}
					if checksums {
						whole := false
						for _, a := range accepted {
							if a.ssn == first && a.n == uint32(len(p.Data)) && a.dsn == p.DSN {
								whole = true
							}
						}
						if !whole {
							t.Fatalf("checksummed piece %+v is not a whole accepted mapping", p)
						}
					}
				})
				next += n
				if err != nil {
					return
				}
				if len(emitted) > len(delivered) || string(emitted) != string(delivered[:len(emitted)]) {
					t.Fatal("emitted bytes are not a prefix of the delivered ones")
				}
				if !checksums && len(emitted) != len(delivered) {
					t.Fatalf("without checksums, %d bytes emitted of %d delivered", len(emitted), len(delivered))
				}
			}
		}
	})
}
