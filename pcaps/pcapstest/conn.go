package pcapstest

import (
	"net/netip"
	"time"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
)

// Connection roles for [Subflow] methods: the host that sent the
// MP_CAPABLE SYN is the Client.
const (
	Client = 0
	Server = 1
)

// Conn builds an MPTCP v1 conversation (RFC 8684) segment by segment into
// Segs. Everything it writes is correct: keys echoed, tokens, join and
// ADD_ADDR HMACs, mappings starting at IDSN+1, DSS checksums when
// Checksums is set. Methods return the indexes into Segs of what they
// wrote, so that a test can corrupt exactly one field afterwards (and
// recompute nothing: the TCP checksum is computed when the capture is
// written).
type Conn struct {
	ClientKey, ServerKey uint64
	Checksums            bool
	// MSS is the payload size of a segment (default 1000).
	MSS int
	// MappingSize is the largest mapping Send makes (default 4000): larger
	// sends become several mappings, each spanning several segments.
	MappingSize int
	// MapEverySegment repeats a mapping's DSS on every segment it covers
	// (as TSO does); by default only the mapping's first segment carries it.
	MapEverySegment bool
	Segs            []Segment
	// Time is the timestamp of the next segment; each segment adds 1 ms.
	Time time.Time

	addrs       [2]netip.AddrPort // of the initial subflow, by role
	dsn         [2]uint64         // next DSN to send, by role
	mpcDataSent bool
	nsub        int
}

// Subflow is one TCP flow of a [Conn].
type Subflow struct {
	c *Conn
	// Addr holds the SYN sender's (side 0) and SYN receiver's (side 1)
	// address.
	Addr    [2]netip.AddrPort
	ISN     [2]uint32
	next    [2]uint32 // next sequence number to send, by side
	rev     int       // 1 when side 0 is the connection's server
	initial bool
}

// NewConn starts a conversation between client and server with the given
// keys; checksums sets the A flag in the client's MP_CAPABLE.
func NewConn(client, server netip.AddrPort, clientKey, serverKey uint64, checksums bool) *Conn {
	c := &Conn{
		ClientKey: clientKey, ServerKey: serverKey, Checksums: checksums,
		MSS: 1000, MappingSize: 4000,
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	c.dsn[Client] = handshake.IDSN(clientKey) + 1
	c.dsn[Server] = handshake.IDSN(serverKey) + 1
	c.addrs = [2]netip.AddrPort{client, server}
	return c
}

// Options concatenates the encodings of opts and pads them with NOPs to a
// multiple of 4 bytes, as Linux aligns MPTCP options.
func Options(opts ...options.Option) []byte {
	var b []byte
	for _, o := range opts {
		b = o.Append(b)
	}
	for len(b)%4 != 0 {
		b = append(b, 1)
	}
	return b
}

func (c *Conn) key(role int) uint64 {
	if role == Client {
		return c.ClientKey
	}
	return c.ServerKey
}

// Handshake writes the MP_CAPABLE three-way handshake (RFC 8684 §3.1) of
// the initial subflow: SYN, SYN/ACK (server key), ACK (both keys).
func (c *Conn) Handshake() *Subflow {
	sf := c.newSubflow(c.addrs[0], c.addrs[1], 0)
	sf.initial = true
	flags := uint8(options.CapableFlagHMACSHA256)
	if c.Checksums {
		flags |= options.CapableFlagChecksum
	}
	mss := []byte{2, 4, 0x05, 0xb4}
	sf.raw(0, SYN, append(mss, Options(options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: flags})...), nil)
	sf.raw(1, SYN|ACK, append(mss, Options(options.MPCapable{Form: options.CapableSYNACK, Version: 1,
		Flags: options.CapableFlagHMACSHA256, SenderKey: c.ServerKey})...), nil)
	sf.raw(0, ACK, Options(options.MPCapable{Form: options.CapableACK, Version: 1, Flags: flags,
		SenderKey: c.ClientKey, ReceiverKey: c.ServerKey}), nil)
	return sf
}

// JoinParams describes an MP_JOIN subflow.
type JoinParams struct {
	Initiator, Listener netip.AddrPort
	// FromServer makes the connection's server the initiator (it then
	// names the client's token).
	FromServer                    bool
	InitiatorID, ListenerID       uint8
	InitiatorNonce, ListenerNonce uint32
	Backup                        bool
}

// Join writes an MP_JOIN handshake (RFC 8684 §3.2): SYN (listener's
// token, initiator's nonce), SYN/ACK (truncated HMAC), ACK (full HMAC) and
// the listener's fourth ACK.
func (c *Conn) Join(p JoinParams) *Subflow {
	rev := 0
	if p.FromServer {
		rev = 1
	}
	sf := c.newSubflow(p.Initiator, p.Listener, rev)
	ki, kl := c.key(rev), c.key(1-rev)
	sf.raw(0, SYN, Options(options.MPJoin{Form: options.JoinSYN, Backup: p.Backup, AddrID: p.InitiatorID,
		Token: handshake.Token(kl), Nonce: p.InitiatorNonce}), nil)
	sf.raw(1, SYN|ACK, Options(options.MPJoin{Form: options.JoinSYNACK, Backup: p.Backup, AddrID: p.ListenerID,
		TruncatedHMAC: handshake.JoinSYNACKHMAC(kl, ki, p.ListenerNonce, p.InitiatorNonce), Nonce: p.ListenerNonce}), nil)
	sf.raw(0, ACK, Options(options.MPJoin{Form: options.JoinACK,
		HMAC: handshake.JoinACKHMAC(ki, kl, p.InitiatorNonce, p.ListenerNonce)}), nil)
	sf.raw(1, ACK, Options(c.dataAck(1^rev)), nil)
	return sf
}

func (c *Conn) newSubflow(a, b netip.AddrPort, rev int) *Subflow {
	c.nsub++
	// The initial subflow's client ISN sits just below 2^32 so that the
	// relative sequence numbers wrap.
	isn := [2]uint32{0xffffffff - 1500 + uint32(c.nsub)*7919, 1_000_000 * uint32(c.nsub)}
	return &Subflow{c: c, Addr: [2]netip.AddrPort{a, b}, ISN: isn, next: isn, rev: rev}
}

// dataAck is a DSS carrying only the Data ACK of what role received.
func (c *Conn) dataAck(role int) options.DSS {
	return options.DSS{HasDataAck: true, DataAck64: true, DataAck: c.dsn[1-role]}
}

// raw appends a segment from side with the given flags, options and
// payload, advancing that side's sequence number.
func (sf *Subflow) raw(side int, flags uint8, opts, payload []byte) int {
	c := sf.c
	s := Segment{
		Time: c.Time, Src: sf.Addr[side], Dst: sf.Addr[1-side],
		Seq: sf.next[side], Flags: flags, Window: 512, Options: opts, Payload: payload,
	}
	if flags&ACK != 0 {
		s.Ack = sf.next[1-side]
	}
	sf.next[side] += uint32(len(payload))
	if flags&(SYN|FIN) != 0 {
		sf.next[side]++
	}
	c.Time = c.Time.Add(time.Millisecond)
	c.Segs = append(c.Segs, s)
	return len(c.Segs) - 1
}

// Segment appends a segment sent by role with the given flags (ACK is
// added), options and payload, and returns its index.
func (sf *Subflow) Segment(role int, flags uint8, opts []byte, payload []byte) int {
	return sf.raw(role^sf.rev, flags|ACK, opts, payload)
}

// rel is the relative subflow sequence number of side's next byte.
func (sf *Subflow) rel(side int) uint32 { return sf.next[side] - sf.ISN[side] }

// Send writes data from role as DSS mappings of at most MappingSize bytes
// (RFC 8684 §3.3.1), each cut into MSS-sized segments carrying the Data ACK
// of the other direction. The client's first data on the initial subflow
// is mapped by MP_CAPABLE ACK+data instead (§3.1). It returns the indexes
// of the first and last segment written.
func (sf *Subflow) Send(role int, data []byte) (first, last int) {
	c := sf.c
	side := role ^ sf.rev
	first = len(c.Segs)
	for len(data) > 0 {
		n := min(len(data), c.MappingSize, 0xffff)
		chunk := data[:n]
		data = data[n:]
		dsn, ssn := c.dsn[role], sf.rel(side)
		var mapOpt []byte
		if sf.initial && role == Client && !c.mpcDataSent {
			c.mpcDataSent = true
			m := options.MPCapable{Form: options.CapableACKData, Version: 1, Flags: options.CapableFlagHMACSHA256,
				SenderKey: c.ClientKey, ReceiverKey: c.ServerKey, DataLen: uint16(n)}
			if c.Checksums {
				m.Flags |= options.CapableFlagChecksum
				m.HasChecksum = true
				m.Checksum = checksum.DSSChecksum(dsn, ssn, uint16(n), chunk)
			}
			mapOpt = Options(m)
		} else {
			d := c.dataAck(role)
			d.HasMapping, d.DSN64, d.DSN, d.SubflowSeq, d.DataLen = true, true, dsn, ssn, uint16(n)
			if c.Checksums {
				d.HasChecksum = true
				d.Checksum = checksum.DSSChecksum(dsn, ssn, uint16(n), chunk)
			}
			mapOpt = Options(d)
		}
		for off := 0; off < n; off += c.MSS {
			opts := mapOpt
			if off > 0 && !c.MapEverySegment {
				opts = Options(c.dataAck(role))
			}
			last = sf.raw(side, ACK|PSH, opts, chunk[off:min(off+c.MSS, n)])
		}
		c.dsn[role] += uint64(n)
	}
	return first, last
}

// dssMapping is a DSS carrying role's Data ACK and the mapping of payload
// (subflow bytes from ssn) onto dsn, with the DATA_FIN after it when fin is
// set: data-level length len(payload)+1, and the checksum computed for that
// length (RFC 8684 §3.3.1).
func (c *Conn) dssMapping(role int, dsn uint64, ssn uint32, payload []byte, fin bool) options.DSS {
	d := c.dataAck(role)
	d.HasMapping, d.DSN64, d.DSN, d.SubflowSeq, d.DataLen, d.DataFIN = true, true, dsn, ssn, uint16(len(payload)), fin
	if fin {
		d.DataLen++
	}
	if c.Checksums {
		d.HasChecksum = true
		d.Checksum = checksum.DSSChecksum(dsn, ssn, d.DataLen, payload)
	}
	return d
}

// SendDataFINFirst writes data from role as one mapping the way Linux
// does when its DATA_FIN goes out before the last data: the mapping rides
// on the segments of all but the last tail bytes; then comes a bare
// DATA_FIN (subflow sequence 0, data-level length 1, RFC 8684 §3.3.3);
// then the tail, on a segment carrying the mapping again with the DATA_FIN
// added (data-level length len(data)+1, and so, with checksums, another
// checksum). The DATA_FIN's DSN is consumed. It returns the indexes of the
// first data segment, the bare DATA_FIN and the tail segment. data must fit
// one mapping (65534 bytes) and not be the client's first data on the
// initial subflow (that one MP_CAPABLE maps).
func (sf *Subflow) SendDataFINFirst(role int, data []byte, tail int) (first, fin, last int) {
	c := sf.c
	side := role ^ sf.rev
	dsn, ssn := c.dsn[role], sf.rel(side)
	plain := Options(c.dssMapping(role, dsn, ssn, data, false))
	head := data[:len(data)-tail]
	first = len(c.Segs)
	for off := 0; off < len(head); off += c.MSS {
		opts := plain
		if off > 0 && !c.MapEverySegment {
			opts = Options(c.dataAck(role))
		}
		sf.raw(side, ACK|PSH, opts, head[off:min(off+c.MSS, len(head))])
	}
	bare := c.dataAck(role)
	bare.DataFIN, bare.HasMapping, bare.DSN64, bare.DSN, bare.DataLen = true, true, true, dsn+uint64(len(data)), 1
	if c.Checksums {
		bare.HasChecksum = true
		bare.Checksum = checksum.DSSChecksum(bare.DSN, 0, 1, nil)
	}
	fin = sf.raw(side, ACK, Options(bare), nil)
	last = sf.raw(side, ACK|PSH, Options(c.dssMapping(role, dsn, ssn, data, true)), data[len(data)-tail:])
	c.dsn[role] += uint64(len(data)) + 1
	return first, fin, last
}

// Ack writes a pure ACK from role with a DSS Data ACK.
func (sf *Subflow) Ack(role int) int {
	return sf.raw(role^sf.rev, ACK, Options(sf.c.dataAck(role)), nil)
}

// DataFIN writes a DATA_FIN from role without data: a DSS mapping with
// subflow sequence 0 and data-level length 1 (RFC 8684 §3.3.3), which
// consumes one DSN.
func (sf *Subflow) DataFIN(role int) int {
	c := sf.c
	d := c.dataAck(role)
	d.DataFIN, d.HasMapping, d.DSN64, d.DSN, d.DataLen = true, true, true, c.dsn[role], 1
	if c.Checksums {
		d.HasChecksum = true
		d.Checksum = checksum.DSSChecksum(c.dsn[role], 0, 1, nil)
	}
	c.dsn[role]++
	return sf.raw(role^sf.rev, ACK, Options(d), nil)
}

// AddAddr writes a pure ACK from role carrying an ADD_ADDR with its HMAC
// (RFC 8684 §3.4.1); port 0 means no port field.
func (sf *Subflow) AddAddr(role int, id uint8, addr netip.Addr, port uint16) int {
	c := sf.c
	a := options.AddAddr{AddrID: id, Addr: addr, HasPort: port != 0, Port: port,
		HMAC: handshake.AddAddrHMAC(c.key(role), c.key(1-role), id, addr, port)}
	opts := Options(a, c.dataAck(role))
	if len(opts) > maxOptions {
		opts = Options(a) // as Linux, drop the Data ACK when both do not fit
	}
	return sf.raw(role^sf.rev, ACK, opts, nil)
}

// Fin writes a subflow FIN from role.
func (sf *Subflow) Fin(role int) int {
	return sf.raw(role^sf.rev, ACK|FIN, Options(sf.c.dataAck(role)), nil)
}

// Key returns the key of role.
func (c *Conn) Key(role int) uint64 { return c.key(role) }
