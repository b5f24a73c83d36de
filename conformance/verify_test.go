package conformance

import (
	"fmt"
	"github.com/mptund/mptund/dsnmap"
	"net/netip"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps"
)

// This file is assertion (c): the capture's cryptographic material checked
// directly with the handshake and checksum packages, independently of
// pcaps.Analyze.

// flowKey names a TCP flow regardless of direction.
type flowKey struct{ a, b netip.AddrPort }

func keyOf(src, dst netip.AddrPort) flowKey {
	if src.Compare(dst) < 0 {
		return flowKey{src, dst}
	}
	return flowKey{dst, src}
}

// dir is one direction of a flow.
type dir struct{ src, dst netip.AddrPort }

// mconn is an MPTCP connection as seen from its MP_CAPABLE handshake.
type mconn struct {
	client, server     netip.AddrPort // of the MP_CAPABLE subflow
	keyC, keyS         uint64
	haveKeyC, haveKeyS bool
	csumC, csumS       bool // A flag in SYN / SYN-ACK
}

// mflow is one subflow and which of its ends holds the connection
// client's key.
type mflow struct {
	conn      *mconn
	clientEnd netip.AddrPort // the end whose key is conn.keyC
	join      *joinInfo
}

type joinInfo struct {
	frame                 int
	initiator             netip.AddrPort
	token                 uint32
	nonceI, nonceL        uint32
	truncHMAC             uint64
	haveSYNACK            bool
	hmac                  [20]byte
	haveACK               bool
	synackFrame, ackFrame int
}

// mapping is a DSS (or MP_CAPABLE ACK+data) mapping that carries a checksum.
type mapping struct {
	frame   int
	d       dir
	dsn     uint64
	dsn64   bool
	ssn     uint32
	dataLen uint16
	dataFIN bool
	csum    uint16
	fromMPC bool // the implicit mapping of MP_CAPABLE ACK+data
}

// stream collects one direction's payload by relative subflow sequence
// number (1 = first payload byte, RFC 8684 §3.3.1).
type stream struct {
	isn  uint32
	data []byte
	have []bool
}

const maxStream = 1 << 20

func (s *stream) add(seq uint32, b []byte) {
	rel := seq - s.isn
	if uint64(rel)+uint64(len(b)) > maxStream {
		return
	}
	if end := int(rel) + len(b); end > len(s.data) {
		s.data = append(s.data, make([]byte, end-len(s.data))...)
		s.have = append(s.have, make([]bool, end-len(s.have))...)
	}
	copy(s.data[rel:], b)
	for i := range b {
		s.have[int(rel)+i] = true
	}
}

func (s *stream) get(rel uint32, n int) ([]byte, bool) {
	if int(rel)+n > len(s.data) {
		return nil, false
	}
	for _, h := range s.have[rel : int(rel)+n] {
		if !h {
			return nil, false
		}
	}
	return s.data[rel : int(rel)+n], true
}

// expandDSN widens a 32-bit DSN to the 64-bit value nearest to ref.
func expandDSN(ref uint64, low uint32) uint64 {
	return uint64(dsnmap.Expand(low, dsnmap.DSN(ref)))
}

// verifyCrypto checks every token, join HMAC, ADD_ADDR HMAC and DSS
// checksum in pkts and counts the successes in feat ("verified ...").
func verifyCrypto(pkts []pcaps.Packet, feat map[string]int) (problems []string) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	flows := make(map[flowKey]*mflow)
	var conns []*mconn
	streams := make(map[dir]*stream)
	var maps []mapping

	// Pass 1: handshakes, keys, ISNs, payload, mappings.
	for i := range pkts {
		p := &pkts[i]
		k := keyOf(p.Src, p.Dst)
		d := dir{p.Src, p.Dst}
		syn := p.Flags&pcaps.FlagSYN != 0
		if syn {
			streams[d] = &stream{isn: p.Seq}
		}
		for _, o := range p.MPTCP {
			switch o := o.(type) {
			case options.MPCapable:
				switch o.Form {
				case options.CapableSYN:
					if _, ok := flows[k]; !ok {
						c := &mconn{client: p.Src, server: p.Dst,
							csumC: o.Flags&options.CapableFlagChecksum != 0}
						conns = append(conns, c)
						flows[k] = &mflow{conn: c, clientEnd: p.Src}
					}
				case options.CapableSYNACK:
					if f := flows[k]; f != nil {
						setKey(bad, p.Index, f.conn, false, o.SenderKey)
						f.conn.csumS = o.Flags&options.CapableFlagChecksum != 0
					}
				case options.CapableACK, options.CapableACKData:
					f := flows[k]
					if f == nil {
						continue
					}
					setKey(bad, p.Index, f.conn, true, o.SenderKey)
					setKey(bad, p.Index, f.conn, false, o.ReceiverKey)
					if o.Form == options.CapableACKData && o.HasChecksum {
						maps = append(maps, mapping{frame: p.Index, d: d, ssn: 1,
							dataLen: o.DataLen, csum: o.Checksum, fromMPC: true})
					}
				}
			case options.MPJoin:
				switch o.Form {
				case options.JoinSYN:
					if _, ok := flows[k]; !ok {
						flows[k] = &mflow{join: &joinInfo{frame: p.Index, initiator: p.Src,
							token: o.Token, nonceI: o.Nonce}}
					}
				case options.JoinSYNACK:
					if f := flows[k]; f != nil && f.join != nil {
						f.join.nonceL, f.join.truncHMAC = o.Nonce, o.TruncatedHMAC
						f.join.haveSYNACK, f.join.synackFrame = true, p.Index
					}
				case options.JoinACK:
					if f := flows[k]; f != nil && f.join != nil {
						f.join.hmac, f.join.haveACK, f.join.ackFrame = o.HMAC, true, p.Index
					}
				}
			case options.DSS:
				if o.HasMapping && o.HasChecksum {
					maps = append(maps, mapping{frame: p.Index, d: d, dsn: o.DSN, dsn64: o.DSN64,
						ssn: o.SubflowSeq, dataLen: o.DataLen, dataFIN: o.DataFIN, csum: o.Checksum})
				}
			}
		}
		if s := streams[d]; s != nil && len(p.Payload) > 0 && !p.Truncated() {
			s.add(p.Seq, p.Payload)
		}
	}

	// Join subflows: find the connection by token (RFC 8684 §3.2).
	for _, f := range flows {
		j := f.join
		if j == nil {
			continue
		}
		var keyL, keyI uint64
		for _, c := range conns {
			switch {
			case c.haveKeyS && handshake.Token(c.keyS) == j.token:
				f.conn, keyL, keyI = c, c.keyS, c.keyC
				// The initiator holds the client's key.
				f.clientEnd = j.initiator
			case c.haveKeyC && handshake.Token(c.keyC) == j.token:
				f.conn, keyL, keyI = c, c.keyC, c.keyS
				f.clientEnd = netip.AddrPort{} // set below: the listener end
			}
			if f.conn != nil {
				break
			}
		}
		if f.conn == nil {
			bad("frame %d: MP_JOIN SYN token %08x matches no MP_CAPABLE key in the capture", j.frame, j.token)
			continue
		}
		feat["verified token"]++
		if !f.clientEnd.IsValid() {
			// A join initiated by the connection's server: the
			// listener end holds the client's key.
			for k, ff := range flows {
				if ff == f {
					f.clientEnd = k.a
					if k.a == j.initiator {
						f.clientEnd = k.b
					}
				}
			}
		}
		if j.haveSYNACK {
			if handshake.VerifyJoinSYNACK(keyL, keyI, j.nonceL, j.nonceI, j.truncHMAC) {
				feat["verified join SYN/ACK HMAC"]++
			} else {
				bad("frame %d: MP_JOIN SYN/ACK truncated HMAC %016x does not verify", j.synackFrame, j.truncHMAC)
			}
		}
		if j.haveACK {
			if handshake.VerifyJoinACK(keyI, keyL, j.nonceI, j.nonceL, j.hmac) {
				feat["verified join ACK HMAC"]++
			} else {
				bad("frame %d: MP_JOIN ACK HMAC %x does not verify", j.ackFrame, j.hmac)
			}
		}
	}

	// sender returns the keys of the packet's sender and receiver.
	keys := func(p *pcaps.Packet) (f *mflow, send, recv uint64, ok bool) {
		f = flows[keyOf(p.Src, p.Dst)]
		if f == nil || f.conn == nil || !f.conn.haveKeyC || !f.conn.haveKeyS {
			return f, 0, 0, false
		}
		if p.Src == f.clientEnd {
			return f, f.conn.keyC, f.conn.keyS, true
		}
		return f, f.conn.keyS, f.conn.keyC, true
	}

	// Pass 2: ADD_ADDR HMACs (RFC 8684 §3.4.1) and the first mappings.
	for i := range pkts {
		p := &pkts[i]
		for _, o := range p.MPTCP {
			switch o := o.(type) {
			case options.AddAddr:
				if o.Echo {
					continue
				}
				_, ks, kr, ok := keys(p)
				if !ok {
					bad("frame %d: ADD_ADDR on a subflow without known keys", p.Index)
					continue
				}
				var port uint16
				if o.HasPort {
					port = o.Port
				}
				if handshake.VerifyAddAddr(ks, kr, o.AddrID, o.Addr, port, o.HMAC) {
					feat["verified ADD_ADDR HMAC"]++
				} else {
					bad("frame %d: ADD_ADDR id %d %v port %d HMAC %016x does not verify",
						p.Index, o.AddrID, o.Addr, port, o.HMAC)
				}
			case options.MPFastclose:
				// RFC 8684 §3.5: the option carries the receiver's key.
				_, _, kr, ok := keys(p)
				if !ok {
					bad("frame %d: MP_FASTCLOSE on a subflow without known keys", p.Index)
				} else if o.Key != kr {
					bad("frame %d: MP_FASTCLOSE key %016x is not the receiver's key %016x", p.Index, o.Key, kr)
				} else {
					feat["verified MP_FASTCLOSE key"]++
				}
			case options.DSS:
				if !o.HasMapping {
					continue
				}
				f, ks, _, ok := keys(p)
				if !ok {
					continue
				}
				// RFC 8684 §3.3.1: checksums are in use when either
				// side set A, and then every mapping carries one.
				if want := f.conn.csumC || f.conn.csumS; o.HasChecksum != want {
					bad("frame %d: DSS mapping with checksum field %v, checksums negotiated %v", p.Index, o.HasChecksum, want)
				}
				idsn := handshake.IDSN(ks)
				dsn := o.DSN
				if !o.DSN64 {
					dsn = expandDSN(idsn, uint32(o.DSN))
				}
				if dsn == idsn+1 {
					feat["MP_CAPABLE IDSN"]++
				}
			}
		}
	}

	// DSS checksums (RFC 8684 §3.3.1), over whole mappings.
	// Each distinct (mapping, checksum) pair is verified once: a mapping
	// repeated on every segment it covers must carry the same checksum
	// in every copy.
	type mkey struct {
		d       dir
		dsn     uint64
		ssn     uint32
		dataLen uint16
		csum    uint16
	}
	seen := make(map[mkey]bool)
	for _, m := range maps {
		f := flows[keyOf(m.d.src, m.d.dst)]
		if f == nil || f.conn == nil || !f.conn.haveKeyC || !f.conn.haveKeyS {
			bad("frame %d: checksummed mapping on a subflow without known keys", m.frame)
			continue
		}
		ks := f.conn.keyS
		if m.d.src == f.clientEnd {
			ks = f.conn.keyC
		}
		idsn := handshake.IDSN(ks)
		dsn := m.dsn
		switch {
		case m.fromMPC:
			dsn = idsn + 1
		case !m.dsn64:
			dsn = expandDSN(idsn, uint32(m.dsn))
		}
		mk := mkey{m.d, dsn, m.ssn, m.dataLen, m.csum}
		if seen[mk] {
			continue
		}
		n := int(m.dataLen)
		if m.dataFIN {
			n-- // the DATA_FIN takes one data sequence number, no byte
		}
		var payload []byte
		if n > 0 {
			s := streams[m.d]
			var ok bool
			if s != nil {
				payload, ok = s.get(m.ssn, n)
			}
			if !ok {
				feat["unverifiable DSS checksum"]++
				continue
			}
		}
		seen[mk] = true
		if checksum.VerifyDSS(dsn, m.ssn, m.dataLen, payload, m.csum) {
			feat["verified DSS checksum"]++
		} else {
			bad("frame %d: DSS checksum %04x of mapping dsn %d ssn %d len %d (fin %v) does not verify (computed %04x)",
				m.frame, m.csum, dsn, m.ssn, m.dataLen, m.dataFIN, checksum.DSSChecksum(dsn, m.ssn, m.dataLen, payload))
		}
	}
	return problems
}

// setKey records one of a connection's keys and reports a key that changes.
func setKey(bad func(string, ...any), frame int, c *mconn, client bool, key uint64) {
	have, cur := &c.haveKeyS, &c.keyS
	if client {
		have, cur = &c.haveKeyC, &c.keyC
	}
	if *have && *cur != key {
		bad("frame %d: MP_CAPABLE key %016x, earlier %016x (RFC 8684 §3.1: keys are echoed unchanged)", frame, key, *cur)
		return
	}
	*have, *cur = true, key
}
