package conformance

// TestHostileLive: forged segments hit a live MPTCP connection while it
// carries a genuine transfer (32 MiB peer -> target and 8 MiB target ->
// peer, paced so that it lasts a couple of seconds), one class of forgery
// per connection. The forger is an AF_PACKET socket on the peer's
// interface (rawinject_test.go) that sniffs the connection to learn its
// sequence numbers, timestamps, keys and data sequence numbers, and then
// injects segments on the connection's four-tuple (or, for the MP_JOIN
// classes, SYNs to the target's listening port) as if the peer had sent
// them, in the TCP window where the class needs it.
//
// The same classes run against two targets:
//
//   - kernel: a Linux MPTCP server in one namespace, its peer in another,
//     joined by a veth; the forger sits on the peer's end of the veth.
//   - engine: the in-process engine as the server on a TUN, the kernel
//     peer on the TUN's other side, the forger on that side too.
//
// A class is part of the suite only if the Linux target keeps its
// transfer intact (the engine must do at least as well); for the others,
// what both did is logged. For the engine, each class must leave the
// transfer intact in both directions (SHA-256), the connection must not
// fall back or be reset, and MPTCP must still be negotiated by a new
// connection opened during the forgery and one opened after it. What the
// targets counted (the kernel's nstat, the engine's Stats and ConnInfo) is
// logged per class. Checksums are on (net.mptcp.checksum_enabled on both
// kernels), so that the mapping and MP_FAIL classes mean something.
//
//	go test ./conformance -run TestHostileLive -v [-conformance.hostile.class=NAME]

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/stack"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var hostileClass = flag.String("conformance.hostile.class", "", "run only the TestHostileLive classes whose name contains this")

// Sizes and pacing of the genuine transfer of each class.
const (
	hostileUp     = 32 << 20 // peer -> target
	hostileDown   = 8 << 20  // target -> peer
	hostileRate   = 16e6     // bytes/s of each writer
	hostileWarmup = 300 * time.Millisecond
	hostileSpread = 800 * time.Millisecond // forged segments are spread over this
	// hostileDeadline bounds each class's transfer.
	hostileDeadline = 12 * time.Second
)

// joinPorts are the source ports of forged MP_JOIN SYNs; the peer's
// namespace drops what the target answers to them, so that its kernel
// does not reset the half-open joins before the forger completes them.
const joinPortLo, joinPortHi = 61000, 61999

// connState is what the sniffer learned about the live connection.
type connState struct {
	mu sync.Mutex
	connVals
	joinSynAck map[uint16]parsedSeg // SYN/ACKs to forged joins, by port
}

// connVals are connState's values.
type connVals struct {
	peer, tgt  netip.AddrPort
	peerISN    uint32
	tgtISN     uint32
	haveISN    bool
	peerNxt    uint32 // highest sequence the peer sent, plus one
	peerAck    uint32 // the peer's latest acknowledgement
	peerWin    uint16
	peerTS     uint32 // the peer's latest TSval
	peerTSecr  uint32
	tgtNxt     uint32
	tgtTS      uint32
	peerKey    uint64 // from MP_CAPABLE
	tgtKey     uint64
	peerDSN    uint64 // next DSN of the peer's data (from its mappings)
	tgtDSN     uint64 // next DSN of the target's data
	peerDataAk uint64 // the peer's Data ACK (the target's data-level SND.UNA)
	haveDSN    bool
	segsPeer   int
	segsTgt    int
}

// observe updates the state with a sniffed segment.
func (s *connState) observe(p parsedSeg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case p.Src == s.peer && p.Dst == s.tgt:
		s.segsPeer++
		if p.Flags&header.TCPFlagSyn != 0 {
			s.peerISN = p.Seq
		}
		end := p.Seq + uint32(p.PayLen)
		if p.Flags&(header.TCPFlagSyn|header.TCPFlagFin) != 0 {
			end++
		}
		if s.segsPeer == 1 || int32(end-s.peerNxt) > 0 {
			s.peerNxt = end
		}
		if p.Flags&header.TCPFlagAck != 0 {
			s.peerAck, s.peerWin = p.Ack, p.Window
		}
		if v, e, ok := tcpTimestamp(p.Options); ok {
			s.peerTS, s.peerTSecr = v, e
		}
		s.learnMPTCP(p, true)
	case p.Src == s.tgt && p.Dst == s.peer:
		s.segsTgt++
		if p.Flags&header.TCPFlagSyn != 0 {
			s.tgtISN, s.haveISN = p.Seq, true
		}
		end := p.Seq + uint32(p.PayLen)
		if p.Flags&(header.TCPFlagSyn|header.TCPFlagFin) != 0 {
			end++
		}
		if s.segsTgt == 1 || int32(end-s.tgtNxt) > 0 {
			s.tgtNxt = end
		}
		if v, _, ok := tcpTimestamp(p.Options); ok {
			s.tgtTS = v
		}
		s.learnMPTCP(p, false)
	case p.Src.Addr() == s.tgt.Addr() && p.Src.Port() == s.tgt.Port() && p.Dst.Port() >= joinPortLo && p.Dst.Port() <= joinPortHi:
		if p.Flags&(header.TCPFlagSyn|header.TCPFlagAck) == header.TCPFlagSyn|header.TCPFlagAck {
			s.joinSynAck[p.Dst.Port()] = p
		}
	}
}

// learnMPTCP reads keys and data sequence numbers from MPTCP options.
func (s *connState) learnMPTCP(p parsedSeg, fromPeer bool) {
	opts, _ := mptcpOptions(p.Options)
	for _, o := range opts {
		if len(o) < 4 {
			continue
		}
		switch o[2] >> 4 {
		case 0: // MP_CAPABLE
			if len(o) >= 12 && fromPeer && p.Flags&header.TCPFlagSyn == 0 {
				s.peerKey = binary.BigEndian.Uint64(o[4:])
				if len(o) >= 20 {
					s.tgtKey = binary.BigEndian.Uint64(o[12:])
				}
			}
			if len(o) == 12 && !fromPeer {
				s.tgtKey = binary.BigEndian.Uint64(o[4:])
			}
		case 2: // DSS
			f := o[3]
			i := 4
			if f&0x01 != 0 { // Data ACK
				var ack uint64
				if f&0x02 != 0 {
					if i+8 > len(o) {
						continue
					}
					ack = binary.BigEndian.Uint64(o[i:])
					i += 8
				} else {
					if i+4 > len(o) {
						continue
					}
					ack = expand32(uint32(binary.BigEndian.Uint32(o[i:])), s.peerDataAk)
					i += 4
				}
				if fromPeer {
					s.peerDataAk = ack
				}
			}
			if f&0x04 != 0 { // mapping
				var dsn uint64
				if f&0x08 != 0 {
					if i+8 > len(o) {
						continue
					}
					dsn = binary.BigEndian.Uint64(o[i:])
					i += 8
				} else {
					if i+4 > len(o) {
						continue
					}
					ref := s.tgtDSN
					if fromPeer {
						ref = s.peerDSN
					}
					dsn = expand32(binary.BigEndian.Uint32(o[i:]), ref)
					i += 4
				}
				if i+6 > len(o) {
					continue
				}
				end := dsn + uint64(binary.BigEndian.Uint16(o[i+4:]))
				if fromPeer {
					if !s.haveDSN || int64(end-s.peerDSN) > 0 {
						s.peerDSN = end
					}
					s.haveDSN = true
				} else if int64(end-s.tgtDSN) > 0 || s.tgtDSN == 0 {
					s.tgtDSN = end
				}
			}
		}
	}
}

// expand32 widens a 32-bit data sequence number next to ref.
func expand32(v uint32, ref uint64) uint64 {
	c := ref&^0xffffffff | uint64(v)
	switch d := int64(c - ref); {
	case d > 1<<31:
		c -= 1 << 32
	case d < -(1 << 31):
		c += 1 << 32
	}
	return c
}

// snapshot copies the state.
func (s *connState) snapshot() connVals {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connVals
}

// forger builds and sends forged segments on the live connection.
type forger struct {
	ps   *packetSock
	st   *connState
	rng  *rand.Rand
	sent int
	errs int
}

// seg returns a segment from the peer to the target at the peer's current
// sequence number and acknowledgement, with its timestamps, carrying
// opts (MPTCP options) and payload.
func (f *forger) seg(flags header.TCPFlags, mopts []byte, payload []byte) rawSeg {
	s := f.st.snapshot()
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(ts[4:], s.peerTS)
	binary.BigEndian.PutUint32(ts[8:], s.peerTSecr)
	opts := ts
	if len(opts)+len(mopts) > 40 {
		opts = nil // the MPTCP option needs the room
	}
	return rawSeg{
		Src: s.peer, Dst: s.tgt, Seq: s.peerNxt, Ack: s.peerAck,
		Flags: flags | header.TCPFlagAck, Window: max(s.peerWin, 1024),
		Options: append(append([]byte(nil), opts...), mopts...), Payload: payload,
	}
}

func (f *forger) send(s rawSeg) {
	if err := f.ps.send(s.bytes()); err != nil {
		f.errs++
	} else {
		f.sent++
	}
}

// ack sends a pure ACK carrying mopts.
func (f *forger) ack(mopts []byte) { f.send(f.seg(0, mopts, nil)) }

func (f *forger) rand8() []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, f.rng.Uint64())
	return b
}

// mopt assembles an MPTCP option: kind 30, the given length (which may
// lie), subtype and nibble, then body.
func mopt(length int, subtype, nibble byte, body ...byte) []byte {
	o := []byte{30, byte(length), subtype<<4 | nibble&0x0f}
	return append(o, body...)
}

// dss builds a DSS option with checksum field (checksums are in use).
// ack64/dsn64 select the 8-byte forms; a nil dataAck or dsn omits it.
func dss(dataAck *uint64, ack64 bool, dsn *uint64, dsn64 bool, ssn uint32, dlen uint16, fin bool, csum uint16) []byte {
	var flags byte
	body := []byte{}
	if dataAck != nil {
		flags |= 0x01
		if ack64 {
			flags |= 0x02
			body = binary.BigEndian.AppendUint64(body, *dataAck)
		} else {
			body = binary.BigEndian.AppendUint32(body, uint32(*dataAck))
		}
	}
	if dsn != nil {
		flags |= 0x04
		if dsn64 {
			flags |= 0x08
			body = binary.BigEndian.AppendUint64(body, *dsn)
		} else {
			body = binary.BigEndian.AppendUint32(body, uint32(*dsn))
		}
		body = binary.BigEndian.AppendUint32(body, ssn)
		body = binary.BigEndian.AppendUint16(body, dlen)
		body = binary.BigEndian.AppendUint16(body, csum)
	}
	if fin {
		flags |= 0x10
	}
	o := []byte{30, byte(4 + len(body)), 0x20, flags}
	return append(o, body...)
}

func u64(v uint64) *uint64 { return &v }

// hostileClass is one kind of forgery. run sends its segments, spread
// over hostileSpread; it is called once the connection is established and
// carrying data.
type hostileClassDef struct {
	name string
	why  string // what the forgery is and the expected reaction (RFC)
	run  func(f *forger, lport uint16)
}

// spread calls fn n times over hostileSpread.
func spread(n int, fn func(i int)) {
	for i := range n {
		fn(i)
		time.Sleep(hostileSpread / time.Duration(n))
	}
}

var hostileClasses = []hostileClassDef{
	{"mpc-on-established", "MP_CAPABLE (ACK form, random keys) on an established subflow: ignored (RFC 8684 §3.1)", func(f *forger, _ uint16) {
		spread(20, func(int) { f.ack(mopt(20, 0, 1, append(append([]byte{0x81}, f.rand8()...), f.rand8()...)...)) })
	}},
	{"mpc-bad-lengths", "MP_CAPABLE of every wrong length: malformed, ignored", func(f *forger, _ uint16) {
		spread(10, func(int) {
			for _, l := range []int{3, 4, 5, 11, 13, 19, 21, 23, 25} {
				body := make([]byte, max(0, l-3))
				if len(body) > 0 {
					body[0] = 0x81
				}
				f.ack(mopt(l, 0, 1, body...))
			}
		})
	}},
	{"mpc-wrong-version", "MP_CAPABLE version 0 and 2..15 on an established subflow: ignored", func(f *forger, _ uint16) {
		spread(10, func(int) {
			for v := range 16 {
				if v != 1 {
					f.ack(mopt(20, 0, byte(v), append(append([]byte{0x81}, f.rand8()...), f.rand8()...)...))
				}
			}
		})
	}},
	{"join-on-established", "MP_JOIN (SYN, SYN/ACK and ACK forms) on an established subflow: ignored", func(f *forger, _ uint16) {
		spread(20, func(int) {
			f.ack(mopt(12, 1, 0, append([]byte{0}, f.rand8()...)...))
			f.ack(mopt(16, 1, 0, append(append([]byte{0}, f.rand8()...), 1, 2, 3, 4)...))
			f.ack(mopt(24, 1, 0, append(append(append([]byte{0}, f.rand8()...), f.rand8()...), 1, 2, 3, 4)...))
		})
	}},
	{"options-bad-lengths", "every other subtype (DSS, ADD_ADDR, REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST) with wrong lengths: malformed, ignored", func(f *forger, _ uint16) {
		spread(10, func(int) {
			for _, st := range []byte{2, 3, 4, 5, 6, 7, 8} {
				for _, l := range []int{3, 4, 5, 7, 9, 11, 13, 15, 17, 21, 27, 31} {
					if st == 4 && l >= 4 { // REMOVE_ADDR: any length >= 4 is valid
						continue
					}
					body := make([]byte, max(0, l-3))
					f.rng.Shuffle(len(body), func(i, j int) {})
					for i := range body {
						body[i] = byte(f.rng.Uint32())
					}
					if st == 2 && len(body) > 0 {
						body[0] = 0x1f // every DSS flag, any length is wrong but 28/30
					}
					f.ack(mopt(l, st, 0, body...))
				}
			}
		})
	}},
	{"options-truncated", "MPTCP options whose length runs past the TCP header: malformed, ignored", func(f *forger, _ uint16) {
		spread(20, func(int) {
			for _, st := range []byte{0, 1, 2, 3, 6, 7} {
				f.ack(mopt(38, st, 1, 0x81, 0, 0, 0)) // claims 38 bytes, has 7
			}
		})
	}},
	{"unknown-subtypes", "subtypes 0x9-0xf (0xf: MP_EXPERIMENTAL) of several lengths: ignored", func(f *forger, _ uint16) {
		spread(10, func(int) {
			for st := byte(9); st <= 15; st++ {
				for _, l := range []int{3, 4, 8, 12, 20} {
					f.ack(mopt(l, st, byte(f.rng.Uint32()), make([]byte, l-3)...))
				}
			}
		})
	}},
	{"dataack-far-8", "Data ACK (8 bytes) 2^40 ahead of and 2^40 behind the data-level window: ignored (RFC 8684 §3.3.2)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.tgtDSN+1<<40), true, nil, false, 0, 0, false, 0))
			f.ack(dss(u64(s.tgtDSN-1<<40), true, nil, false, 0, 0, false, 0))
		})
	}},
	{"dataack-far-4", "Data ACK (4 bytes) 2^31-1 ahead of and behind the data-level window: ignored", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.tgtDSN+1<<31-1), false, nil, false, 0, 0, false, 0))
			f.ack(dss(u64(s.tgtDSN-1<<31+1), false, nil, false, 0, 0, false, 0))
		})
	}},
	{"dsn-far", "mappings (4- and 8-byte DSN) far outside the data-level receive window on pure ACKs: no data, nothing to map (RFC 8684 §3.3.1)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			rel := s.peerNxt - s.peerISN
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN+1<<40), true, rel, 1400, false, uint16(f.rng.Uint32())))
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN+1<<31), false, rel, 1400, false, uint16(f.rng.Uint32())))
		})
	}},
	{"datafin-far-8", "DATA_FIN (8-byte DSN) 2^40 ahead of and behind the data-level window: ignored (RFC 8684 §3.3.3)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN+1<<40), true, 0, 1, true, uint16(f.rng.Uint32())))
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN-1<<40), true, 0, 1, true, uint16(f.rng.Uint32())))
		})
	}},
	{"datafin-far-4", "DATA_FIN (4-byte DSN) 2^31 away from the data-level window: ignored", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN+1<<31), false, 0, 1, true, uint16(f.rng.Uint32())))
		})
	}},
	{"one-byte-mappings", "1-byte mappings at the subflow's next sequence number, on pure ACKs: the data that follows brings its own mapping", func(f *forger, _ uint16) {
		spread(40, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN), true, s.peerNxt-s.peerISN, 1, false, uint16(f.rng.Uint32())))
		})
	}},
	{"infinite-map-pure-ack", "an infinite mapping (length 0) on a pure ACK: no data to fall back with", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN), true, 0, 0, false, 0))
		})
	}},
	{"bad-csum-map-pure-ack", "a mapping with a wrong checksum on a pure ACK: no data, nothing to verify", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			f.ack(dss(u64(s.peerDataAk), true, u64(s.peerDSN), true, s.peerNxt-s.peerISN, 1000, false, 0xdead))
		})
	}},
	{"old-data-conflicting-dss", "payload at already acknowledged sequence numbers with a mapping that contradicts the original: a duplicate, dropped at the TCP level", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			back := uint32(20000 + f.rng.IntN(20000))
			if s.peerNxt-s.peerISN < back+2000 {
				return
			}
			seq := s.peerNxt - back
			payload := make([]byte, 1000)
			for i := range payload {
				payload[i] = byte(f.rng.Uint32())
			}
			sg := f.seg(0, dss(u64(s.peerDataAk), true, u64(f.rng.Uint64()), true, seq-s.peerISN, 1000, false, uint16(f.rng.Uint32())), payload)
			sg.Seq = seq
			f.send(sg)
		})
	}},
	{"fastclose-wrong-key", "MP_FASTCLOSE with a wrong key, on an ACK and on an in-window RST: ignored (RFC 8684 §3.5)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			f.ack(mopt(12, 7, 0, append([]byte{0}, f.rand8()...)...))
			sg := f.seg(header.TCPFlagRst, mopt(12, 7, 0, append([]byte{0}, f.rand8()...)...), nil)
			sg.Flags = header.TCPFlagRst | header.TCPFlagAck
			sg.Seq += 1000
			f.send(sg)
		})
	}},
	{"tcprst-on-ack", "MP_TCPRST on segments without RST: ignored (RFC 8684 §3.6)", func(f *forger, _ uint16) {
		spread(20, func(int) { f.ack(mopt(4, 8, 1, 1)) })
	}},
	{"mpfail-forged", "MP_FAIL for a random DSN (and for the current one) on ACKs", func(f *forger, _ uint16) {
		spread(20, func(i int) {
			s := f.st.snapshot()
			dsn := f.rng.Uint64()
			if i%2 == 1 {
				dsn = s.peerDSN
			}
			f.ack(mopt(12, 6, 0, append([]byte{0}, binary.BigEndian.AppendUint64(nil, dsn)...)...))
		})
	}},
	{"addaddr-bad-hmac", "ADD_ADDR (IPv4, IPv4 with port, IPv6) with a random HMAC: dropped (RFC 8684 §3.4.1)", func(f *forger, _ uint16) {
		spread(20, func(i int) {
			f.ack(mopt(16, 3, 0, append([]byte{byte(i + 1), 10, 218, 9, 9}, f.rand8()...)...))
			f.ack(mopt(18, 3, 0, append([]byte{byte(i + 1), 10, 218, 9, 9, 0x13, 0x88}, f.rand8()...)...))
			v6 := []byte{byte(i + 1), 0xfd, 0x10, 2, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9}
			f.ack(mopt(28, 3, 0, append(v6, f.rand8()...)...))
		})
	}},
	{"rmaddr-unknown", "REMOVE_ADDR of address IDs nobody announced: nothing to remove", func(f *forger, _ uint16) {
		spread(20, func(int) { f.ack(mopt(6, 4, 0, 5, 77, 200)) })
	}},
	{"mp-prio", "MP_PRIO setting and clearing backup on the only subflow: the transfer goes on", func(f *forger, _ uint16) {
		spread(20, func(i int) { f.ack(mopt(3, 5, byte(i%2))) })
	}},
	{"rst-in-window", "RSTs in the window but not at RCV.NXT: challenge ACK only (RFC 5961 §3.2)", func(f *forger, _ uint16) {
		spread(20, func(i int) {
			sg := f.seg(0, nil, nil)
			sg.Flags = header.TCPFlagRst | header.TCPFlagAck
			sg.Seq += uint32(1 + f.rng.IntN(8000))
			f.send(sg)
		})
	}},
	{"rst-out-of-window", "RSTs far outside the window: dropped (RFC 5961 §3.2)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			sg := f.seg(0, nil, nil)
			sg.Flags = header.TCPFlagRst
			sg.Seq += 1 << 30
			f.send(sg)
		})
	}},
	{"syn-on-4tuple", "SYNs on the connection's four-tuple, in and out of the window, with and without MP_CAPABLE: challenge ACK (RFC 5961 §4)", func(f *forger, _ uint16) {
		spread(20, func(i int) {
			sg := f.seg(0, nil, nil)
			sg.Flags = header.TCPFlagSyn
			sg.Ack = 0
			sg.Options = mpCapableSYNOptions(f.st.snapshot().peerTS)
			if i%2 == 1 {
				sg.Seq += 1 << 30
				sg.Options = nil
			}
			f.send(sg)
		})
	}},
	{"fin-out-of-window", "FINs far outside the window: dropped with an ACK", func(f *forger, _ uint16) {
		spread(20, func(int) {
			sg := f.seg(header.TCPFlagFin, nil, nil)
			sg.Seq += 1 << 30
			f.send(sg)
		})
	}},
	{"ack-unsent", "ACKs of data the target never sent: dropped with an ACK (RFC 5961 §5, RFC 9293 §3.10.7.4)", func(f *forger, _ uint16) {
		spread(20, func(int) {
			s := f.st.snapshot()
			sg := f.seg(0, nil, nil)
			sg.Ack = s.tgtNxt + 1<<20 + uint32(f.rng.IntN(1<<20))
			f.send(sg)
		})
	}},
	{"join-syn-forged-token", "MP_JOIN SYNs with random tokens to the listening port: refused (RST), the connection untouched (RFC 8684 §3.2)", func(f *forger, lport uint16) {
		spread(20, func(i int) {
			s := f.st.snapshot()
			f.send(rawSeg{
				Src: netip.AddrPortFrom(s.peer.Addr(), uint16(joinPortLo+i)), Dst: netip.AddrPortFrom(s.tgt.Addr(), lport),
				Seq: f.rng.Uint32(), Flags: header.TCPFlagSyn, Window: 64240,
				Options: append([]byte{2, 4, 0x05, 0xb4, 4, 2}, mopt(12, 1, 0, append([]byte{1}, f.rand8()...)...)...),
			})
		})
	}},
	{"join-bad-hmac", "MP_JOIN SYNs with the connection's real token, then third ACKs with a wrong HMAC: the join is reset, the connection untouched (RFC 8684 §3.2)", func(f *forger, lport uint16) {
		spread(10, func(i int) {
			s := f.st.snapshot()
			sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, s.tgtKey))
			port := uint16(joinPortLo + 100 + i)
			isn := f.rng.Uint32()
			f.send(rawSeg{
				Src: netip.AddrPortFrom(s.peer.Addr(), port), Dst: netip.AddrPortFrom(s.tgt.Addr(), lport),
				Seq: isn, Flags: header.TCPFlagSyn, Window: 64240,
				Options: append([]byte{2, 4, 0x05, 0xb4, 4, 2}, mopt(12, 1, 0, append(append([]byte{1}, sum[:4]...), f.rand8()[:4]...)...)...),
			})
			// The SYN/ACK (if any) within 50 ms, then the bad third ACK.
			var sa parsedSeg
			for range 10 {
				time.Sleep(5 * time.Millisecond)
				f.st.mu.Lock()
				sa = f.st.joinSynAck[port]
				f.st.mu.Unlock()
				if sa.Flags != 0 {
					break
				}
			}
			if sa.Flags == 0 {
				return
			}
			hmac := append(f.rand8(), append(f.rand8(), f.rand8()[:4]...)...)
			f.send(rawSeg{
				Src: netip.AddrPortFrom(s.peer.Addr(), port), Dst: netip.AddrPortFrom(s.tgt.Addr(), lport),
				Seq: isn + 1, Ack: sa.Seq + 1, Flags: header.TCPFlagAck, Window: 502,
				Options: mopt(24, 1, 0, append([]byte{0}, hmac...)...),
			})
		})
	}},
}

// hostileTarget is one side that receives the forgeries.
type hostileTarget struct {
	name     string
	peerNS   *netns.NS // the peer's namespace: its sockets, the forger
	ps       *packetSock
	tgtAddr  netip.Addr
	listen   func(t *testing.T) (addr string, accept func() (net.Conn, error), closeLn func())
	mptcpOK  func(c net.Conn) (bool, string) // did the target's conn run MPTCP?
	counters func() map[string]uint64
	describe func(c net.Conn) string // the target's own view of its conn
}

// hostileResult is what one class did to one target.
type hostileResult struct {
	class            string
	intact           bool
	err              string
	mptcp            bool
	why              string
	during, after    string // "" when the new connection negotiated MPTCP
	sent, sendErrs   int
	moved            []string
	view             string
	learnedKeys, dsn bool
}

// runHostileClass runs one class against one target.
func runHostileClass(t *testing.T, tg *hostileTarget, cl hostileClassDef, seed uint64) hostileResult {
	res := hostileResult{class: cl.name}
	addr, accept, closeLn := tg.listen(t)
	defer closeLn()
	lport := netip.MustParseAddrPort(addr).Port()
	before := tg.counters()

	st := &connState{joinSynAck: map[uint16]parsedSeg{}}
	var dialed net.Conn
	accCh := make(chan net.Conn, 1)
	go func() {
		c, err := accept()
		if err != nil {
			accCh <- nil
			return
		}
		accCh <- c
	}()
	// The sniffer must see the handshake: the 4-tuple is known only
	// after connect, so record everything on the target's port until then.
	var early []parsedSeg
	var emu sync.Mutex
	tg.ps.setSniffer(func(p parsedSeg) {
		if p.Src.Port() != lport && p.Dst.Port() != lport {
			return
		}
		emu.Lock()
		if st.peer.IsValid() {
			emu.Unlock()
			st.observe(p)
			return
		}
		early = append(early, p)
		emu.Unlock()
	})
	defer tg.ps.setSniffer(nil)
	err := tg.peerNS.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		d.SetMultipathTCP(true)
		dialed, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		res.err = "peer dial: " + err.Error()
		return res
	}
	pc := dialed.(*net.TCPConn)
	var tc net.Conn
	select {
	case tc = <-accCh:
	case <-time.After(10 * time.Second):
	}
	if tc == nil {
		pc.Close()
		res.err = "target accept failed"
		return res
	}
	emu.Lock()
	st.peer = pc.LocalAddr().(*net.TCPAddr).AddrPort()
	st.tgt = netip.AddrPortFrom(tg.tgtAddr, lport)
	for _, p := range early {
		st.observe(p)
	}
	early = nil
	emu.Unlock()

	// The genuine transfer, both ways, paced.
	type dirResult struct {
		n        int64
		sum      [32]byte
		err      error
		wroteSum [32]byte
	}
	// A paced transfer takes about 2.5 s; one that stalls is cut short.
	deadline := time.Now().Add(hostileDeadline)
	pc.SetDeadline(deadline)
	tc.SetDeadline(deadline)
	var wg sync.WaitGroup
	var up, down dirResult // up: peer -> target
	pacedSend := func(w net.Conn, n int64, key byte, out *dirResult) {
		defer wg.Done()
		rng := rand.NewChaCha8([32]byte{'h', 'o', 's', 't', key, byte(seed), byte(seed >> 8)})
		h := sha256.New()
		buf := make([]byte, 128<<10)
		start := time.Now()
		for sent := int64(0); sent < n; {
			k := int(min(int64(len(buf)), n-sent))
			rng.Read(buf[:k])
			m, err := w.Write(buf[:k])
			h.Write(buf[:m])
			sent += int64(m)
			if err != nil {
				out.err = fmt.Errorf("write after %d bytes: %w", sent, err)
				break
			}
			if d := time.Until(start.Add(time.Duration(float64(sent) / hostileRate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		copy(out.wroteSum[:], h.Sum(nil))
		if out.err == nil {
			if cw, ok := w.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					out.err = fmt.Errorf("CloseWrite: %w", err)
				}
			}
		}
	}
	recv := func(r net.Conn, out *dirResult) {
		defer wg.Done()
		h := sha256.New()
		n, err := io.CopyBuffer(h, r, make([]byte, 128<<10))
		out.n = n
		copy(out.sum[:], h.Sum(nil))
		if err != nil {
			out.err = fmt.Errorf("read after %d bytes: %w", n, err)
		}
	}
	var upW, downW dirResult
	wg.Add(4)
	go pacedSend(pc, hostileUp, 'u', &upW)
	go pacedSend(tc, hostileDown, 'd', &downW)
	go recv(tc, &up)
	go recv(pc, &down)

	time.Sleep(hostileWarmup)
	snap := st.snapshot()
	res.learnedKeys = snap.tgtKey != 0 && snap.peerKey != 0
	res.dsn = snap.haveDSN
	rng := rand.New(rand.NewPCG(seed, uint64(len(cl.name))))
	f := &forger{ps: tg.ps, st: st, rng: rng}
	duringDone := make(chan string, 1)
	go func() {
		time.Sleep(hostileSpread / 2)
		duringDone <- probeMPTCP(tg, addr, accept)
	}()
	cl.run(f, lport)
	res.sent, res.sendErrs = f.sent, f.errs
	res.during = <-duringDone
	wg.Wait()
	res.mptcp, res.why = tg.mptcpOK(tc)
	res.view = tg.describe(tc)
	pc.Close()
	tc.Close()
	var errs []string
	for _, e := range []struct {
		what string
		err  error
	}{{"peer write", upW.err}, {"target write", downW.err}, {"target read", up.err}, {"peer read", down.err}} {
		if e.err != nil {
			errs = append(errs, e.what+": "+e.err.Error())
		}
	}
	if up.n != hostileUp || up.sum != upW.wroteSum {
		errs = append(errs, fmt.Sprintf("target received %d of %d bytes (SHA-256 match %v)", up.n, hostileUp, up.sum == upW.wroteSum))
	}
	if down.n != hostileDown || down.sum != downW.wroteSum {
		errs = append(errs, fmt.Sprintf("peer received %d of %d bytes (SHA-256 match %v)", down.n, hostileDown, down.sum == downW.wroteSum))
	}
	res.intact = len(errs) == 0
	res.err = strings.Join(errs, "; ")
	res.after = probeMPTCP(tg, addr, accept)
	after := tg.counters()
	for _, k := range sortedKeys(after) {
		if d := after[k] - before[k]; d != 0 {
			res.moved = append(res.moved, fmt.Sprintf("%s+%d", k, d))
		}
	}
	return res
}

// probeMPTCP opens a new connection from the peer to the target's
// listener, exchanges a few bytes and reports "" if both ends ran MPTCP,
// or what went wrong.
func probeMPTCP(tg *hostileTarget, addr string, accept func() (net.Conn, error)) string {
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := accept()
		if err != nil {
			c = nil
		}
		acc <- c
	}()
	var pc net.Conn
	err := tg.peerNS.Do(func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		d.SetMultipathTCP(true)
		pc, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return "dial: " + err.Error()
	}
	defer pc.Close()
	var tc net.Conn
	select {
	case tc = <-acc:
	case <-time.After(5 * time.Second):
	}
	if tc == nil {
		return "accept failed"
	}
	defer tc.Close()
	if err := pingPong(pc, tc); err != nil {
		return err.Error()
	}
	ki, err := kernelMPTCPState(pc.(*net.TCPConn))
	if err != nil || ki.Plain {
		return fmt.Sprintf("the peer's socket runs plain TCP (%v)", err)
	}
	if ok, why := tg.mptcpOK(tc); !ok {
		return "target: " + why
	}
	return ""
}

// Addresses of the kernel-to-kernel topology.
var (
	hostPeer4 = netip.MustParseAddr("10.218.0.1")
	hostTgt4  = netip.MustParseAddr("10.218.0.2")
)

// kernelHostileTarget: a Linux MPTCP server in its own namespace, the
// peer and the forger in another, a veth between them.
func kernelHostileTarget(t *testing.T) *hostileTarget {
	peer, tgt := netns.New(t, "mpth"), netns.New(t, "mpth")
	netns.Veth(t, peer, "hp0", hostPeer4.String()+"/24", tgt, "ht0", hostTgt4.String()+"/24")
	for _, ns := range []*netns.NS{peer, tgt} {
		ns.Sysctl("net.mptcp.enabled", "1")
		ns.Sysctl("net.mptcp.checksum_enabled", "1")
	}
	tgt.MPTCPLimits(2, 0) // joins are looked at (and refused by HMAC)
	dropJoinReplies(t, peer)
	ps, err := openPacketSock(peer, "hp0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.close)
	tgt.Do(func() error {
		ifi, err := net.InterfaceByName("ht0")
		if err == nil {
			ps.dstMAC = ifi.HardwareAddr
		}
		return err
	})
	return &hostileTarget{
		name: "kernel", peerNS: peer, ps: ps, tgtAddr: hostTgt4,
		listen: func(t *testing.T) (string, func() (net.Conn, error), func()) {
			var ln net.Listener
			if err := tgt.Do(func() (err error) {
				var lc net.ListenConfig
				lc.SetMultipathTCP(true)
				ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(hostTgt4, 0).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return ln.Addr().String(), ln.Accept, func() { ln.Close() }
		},
		mptcpOK: func(c net.Conn) (bool, string) {
			ki, err := kernelMPTCPState(c.(*net.TCPConn))
			if err != nil || ki.Plain {
				return false, fmt.Sprintf("kernel socket plain TCP (%v)", err)
			}
			return true, ""
		},
		counters: func() map[string]uint64 {
			all, err := tgt.Counters()
			if err != nil {
				return nil
			}
			return interestingCounters(all)
		},
		describe: func(net.Conn) string { return "" },
	}
}

// interestingCounters keeps the kernel counters worth reporting for a
// target: MPTcpExt, the challenge ACKs and the input errors.
func interestingCounters(all map[string]uint64) map[string]uint64 {
	m := map[string]uint64{}
	for k, v := range all {
		if strings.HasPrefix(k, "MPTcpExt") || slices.Contains([]string{
			"TcpInErrs", "TcpOutRsts", "TcpExtTCPChallengeACK", "TcpExtTCPSYNChallenge", "TcpExtTCPACKSkippedChallenge",
			"TcpExtTCPACKSkippedSeq", "TcpExtBeyondWindow", "TcpExtTCPAbortOnData", "TcpExtTCPAbortOnClose",
			"TcpExtPAWSEstab", "TcpExtTCPDSACKOldSent", "TcpExtTCPRcvCoalesce", "TcpExtTCPOFODrop", "TcpEstabResets",
		}, k) {
			m[k] = v
		}
	}
	delete(m, "TcpExtTCPRcvCoalesce")
	return m
}

// dropJoinReplies makes ns drop segments to the forged joins' ports.
func dropJoinReplies(t *testing.T, ns *netns.NS) {
	t.Helper()
	if err := ns.Nft(fmt.Sprintf(`table inet mpth_join {
	chain in { type filter hook input priority 0; tcp dport %d-%d drop; }
}`, joinPortLo, joinPortHi)); err != nil {
		t.Fatal(err)
	}
}

// engineHostileTarget: the in-process engine as the server on a TUN, the
// kernel peer and the forger on the TUN's kernel side.
func engineHostileTarget(t *testing.T) (*hostileTarget, *mptcpRig) {
	r := newMPTCPRig(t, mptcpRigConfig{KernelChecksums: true})
	dropJoinReplies(t, r.ns)
	ps, err := openPacketSock(r.ns, r.ifc, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.close)
	return &hostileTarget{
		name: "engine", peerNS: r.ns, ps: ps, tgtAddr: engEngine4,
		listen: func(t *testing.T) (string, func() (net.Conn, error), func()) {
			ln, err := r.eng.Listen("tcp", netip.AddrPortFrom(engEngine4, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			return ln.Addr().String(), ln.Accept, func() { ln.Close() }
		},
		mptcpOK: func(c net.Conn) (bool, string) {
			ci := c.(*stack.Conn).ConnInfo()
			if !ci.MPTCP || ci.Fallback != "" {
				return false, fmt.Sprintf("engine MPTCP=%v fallback %q", ci.MPTCP, ci.Fallback)
			}
			return true, ""
		},
		counters: func() map[string]uint64 {
			st := r.eng.Stats()
			m := map[string]uint64{
				"engine.ResetsSentUnknown": st.ResetsSentUnknown, "engine.ChecksumErrors": st.ChecksumErrors,
				"engine.Malformed": st.Malformed, "engine.AcceptQueueOverflows": st.AcceptQueueOverflows,
			}
			if all, err := r.ns.Counters(); err == nil {
				for k, v := range interestingCounters(all) {
					m["peer."+k] = v
				}
			}
			return m
		},
		describe: func(c net.Conn) string {
			ci := c.(*stack.Conn).ConnInfo()
			sf := ci.Subflows[0].TCP
			s := fmt.Sprintf("subflow dropped %d, challenge ACKs %d, PAWS drops %d, state %s", sf.DroppedSegs, sf.ChallengeAcks, sf.PAWSDrops, ci.State)
			if ci.Data != nil {
				s += fmt.Sprintf("; data level %+v", ci.Data.Stats)
			}
			return s
		},
	}, r
}

func TestHostileLive(t *testing.T) {
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "nstat", "nft", "sysctl")
	classes := slices.DeleteFunc(slices.Clone(hostileClasses), func(c hostileClassDef) bool {
		return *hostileClass != "" && !strings.Contains(c.name, *hostileClass)
	})
	if len(classes) == 0 {
		t.Fatalf("no class matches %q", *hostileClass)
	}
	// The kernel first: it decides which classes the engine is held to.
	kernel := kernelHostileTarget(t)
	kres := map[string]hostileResult{}
	for i, cl := range classes {
		res := runHostileClass(t, kernel, cl, uint64(i+1))
		kres[cl.name] = res
		t.Logf("kernel   %-26s intact=%v mptcp=%v sent=%d during=%q after=%q keys=%v dsn=%v err=%q\n\tcounters: %s",
			cl.name, res.intact, res.mptcp, res.sent, res.during, res.after, res.learnedKeys, res.dsn, res.err, strings.Join(res.moved, " "))
	}
	engine, _ := engineHostileTarget(t)
	var failed []string
	for i, cl := range classes {
		kr := kres[cl.name]
		suite := kr.intact && kr.mptcp && kr.err == ""
		res := runHostileClass(t, engine, cl, uint64(i+1))
		t.Logf("engine   %-26s intact=%v mptcp=%v sent=%d during=%q after=%q err=%q\n\t%s\n\tcounters: %s",
			cl.name, res.intact, res.mptcp, res.sent, res.during, res.after, res.err, res.view, strings.Join(res.moved, " "))
		if !suite {
			t.Logf("class %s is not in the suite: the kernel target did not keep its transfer (%s)", cl.name, kr.err)
			continue
		}
		var probs []string
		if res.sent == 0 {
			probs = append(probs, "no forged segment was sent")
		}
		if !res.intact {
			probs = append(probs, "transfer: "+res.err)
		}
		if !res.mptcp {
			probs = append(probs, "connection: "+res.why)
		}
		if res.during != "" {
			probs = append(probs, "new connection during the forgery: "+res.during)
		}
		if res.after != "" {
			probs = append(probs, "new connection after the forgery: "+res.after)
		}
		if len(probs) > 0 {
			failed = append(failed, cl.name)
			t.Errorf("class %s (%s): %s", cl.name, cl.why, strings.Join(probs, "; "))
		}
	}
	sort.Strings(failed)
	t.Logf("engine failed %d of %d classes in the suite: %v", len(failed), len(classes), failed)
}
