package options

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// tcpSegment wraps an option area in a 20-byte TCP header (padding the
// options with EOL to a multiple of 4) followed by a few payload bytes.
func tcpSegment(opts []byte) []byte {
	padded := append([]byte{}, opts...)
	for len(padded)%4 != 0 {
		padded = append(padded, KindEOL)
	}
	h := make([]byte, 20, 20+len(padded)+4)
	binary.BigEndian.PutUint16(h[0:], 40000)
	binary.BigEndian.PutUint16(h[2:], 80)
	binary.BigEndian.PutUint32(h[4:], 1)
	binary.BigEndian.PutUint32(h[8:], 2)
	h[12] = byte((20+len(padded))/4) << 4
	h[13] = 0x18 // PSH, ACK
	binary.BigEndian.PutUint16(h[14:], 512)
	return append(append(h, padded...), "data"...)
}

// decodeGopacket decodes a TCP segment with gopacket's layers package.
func decodeGopacket(t *testing.T, seg []byte) *layers.TCP {
	t.Helper()
	p := gopacket.NewPacket(seg, layers.LayerTypeTCP, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatal("gopacket: no TCP layer")
	}
	return tcp
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// compareMPTCP compares one gopacket-decoded MPTCP option with ours.
func compareMPTCP(g layers.TCPOption, ours Option) error {
	if Subtype(g.OptionMultipath) != ours.Subtype() {
		return fmt.Errorf("subtype %v vs %v", g.OptionMultipath, ours.Subtype())
	}
	if int(g.OptionLength) != ours.Len() {
		return fmt.Errorf("length %d vs %d", g.OptionLength, ours.Len())
	}
	switch o := ours.(type) {
	case MPCapable:
		c := g.OptionMPTCPMpCapable
		flags := o.Flags
		if c == nil || c.Version != o.Version || c.A != (flags&0x80 != 0) || c.B != (flags&0x40 != 0) ||
			c.C != (flags&0x20 != 0) || c.H != (flags&0x01 != 0) {
			return fmt.Errorf("MP_CAPABLE header %+v vs %+v", c, o)
		}
		var wantSend, wantRecv []byte
		if o.Form != CapableSYN {
			wantSend = be64(o.SenderKey)
		}
		if o.Form == CapableACK || o.Form == CapableACKData {
			wantRecv = be64(o.ReceiverKey)
		}
		if !bytes.Equal(c.SendKey, wantSend) || !bytes.Equal(c.ReceivKey, wantRecv) ||
			c.DataLength != o.DataLen || c.Checksum != o.Checksum {
			return fmt.Errorf("MP_CAPABLE body %+v vs %+v", c, o)
		}
	case MPJoin:
		j := g.OptionMPTCPMpJoin
		if j == nil {
			return fmt.Errorf("MP_JOIN not decoded")
		}
		switch o.Form {
		case JoinSYN:
			if j.Backup != o.Backup || j.AddrID != o.AddrID || j.ReceivToken != o.Token || j.SendRandNum != o.Nonce {
				return fmt.Errorf("MP_JOIN SYN %+v vs %+v", j, o)
			}
		case JoinSYNACK:
			if j.Backup != o.Backup || j.AddrID != o.AddrID || !bytes.Equal(j.SendHMAC, be64(o.TruncatedHMAC)) || j.SendRandNum != o.Nonce {
				return fmt.Errorf("MP_JOIN SYN/ACK %+v vs %+v", j, o)
			}
		case JoinACK:
			if !bytes.Equal(j.SendHMAC, o.HMAC[:]) {
				return fmt.Errorf("MP_JOIN ACK %x vs %x", j.SendHMAC, o.HMAC)
			}
		}
	case DSS:
		d := g.OptionMPTCPDss
		if d == nil || d.F != o.DataFIN || d.M != o.HasMapping || d.A != o.HasDataAck {
			return fmt.Errorf("DSS flags %+v vs %+v", d, o)
		}
		var ack, dsn []byte
		if o.HasDataAck {
			ack = be64(o.DataAck)
			if !o.DataAck64 {
				ack = ack[4:]
			}
		}
		if !bytes.Equal(d.DataAck, ack) {
			return fmt.Errorf("DSS Data ACK %x vs %x", d.DataAck, ack)
		}
		if o.HasMapping {
			dsn = be64(o.DSN)
			if !o.DSN64 {
				dsn = dsn[4:]
			}
			if d.SSN != o.SubflowSeq || d.DataLength != o.DataLen || d.Checksum != o.Checksum {
				return fmt.Errorf("DSS mapping %+v vs %+v", d, o)
			}
		}
		if !bytes.Equal(d.DSN, dsn) {
			return fmt.Errorf("DSS DSN %x vs %x", d.DSN, dsn)
		}
	case AddAddr:
		a := g.OptionMPTCPAddAddr
		var hmac []byte
		if !o.Echo {
			hmac = be64(o.HMAC)
		}
		if a == nil {
			return fmt.Errorf("ADD_ADDR not decoded")
		}
		// gopacket v1.7.7 slices the HMAC as data[length-8:] without an end
		// bound, so SendHMAC also holds whatever follows the option in the
		// option area; only its first 8 bytes are the HMAC.
		gotHMAC := a.SendHMAC[:min(len(a.SendHMAC), 8)]
		if a.E != o.Echo || a.AddrID != o.AddrID || !bytes.Equal(a.Address, o.Addr.AsSlice()) ||
			a.Port != o.Port || !bytes.Equal(gotHMAC, hmac) {
			return fmt.Errorf("ADD_ADDR %+v vs %+v", a, o)
		}
	case RemoveAddr:
		r := g.OptionMTCPRemAddr
		if r == nil || !slices.Equal(r.AddrIDs, o.IDs) {
			return fmt.Errorf("REMOVE_ADDR %+v vs %+v", r, o)
		}
	case MPPrio:
		p := g.OptionMPTCPMpPrio
		if p == nil || p.Backup != o.Backup {
			return fmt.Errorf("MP_PRIO %+v vs %+v", p, o)
		}
	case MPFail:
		f := g.OptionMTCPMPFail
		if f == nil || f.DSN != o.DSN {
			return fmt.Errorf("MP_FAIL %+v vs %+v", f, o)
		}
	case MPFastclose:
		f := g.OptionMTCPMPFastClose
		if f == nil || !bytes.Equal(f.ReceivKey, be64(o.Key)) {
			return fmt.Errorf("MP_FASTCLOSE %+v vs %+v", f, o)
		}
	case MPTCPRst:
		r := g.OptionMPTCPMPTcpRst
		if r == nil || r.U != (o.Flags&8 != 0) || r.V != (o.Flags&4 != 0) || r.W != (o.Flags&2 != 0) ||
			r.T != o.Transient() || r.Reason != o.Reason {
			return fmt.Errorf("MP_TCPRST %+v vs %+v", r, o)
		}
	default:
		return fmt.Errorf("no comparison for %T", ours)
	}
	return nil
}

// TestCrossCheckGopacketVectors decodes every RFC-conformant vector inside a
// TCP header with gopacket and compares the MPTCP fields it exposes with
// ours.
func TestCrossCheckGopacketVectors(t *testing.T) {
	for _, v := range allVectors() {
		if v.lenient {
			continue
		}
		if _, unknown := v.want.(Unknown); unknown {
			continue // gopacket keeps no fields for these
		}
		t.Run(v.name, func(t *testing.T) {
			tcp := decodeGopacket(t, tcpSegment(v.raw))
			var mp []layers.TCPOption
			for _, o := range tcp.Options {
				if o.OptionType == layers.TCPOptionKindMultipathTCP {
					mp = append(mp, o)
				}
			}
			if len(mp) != 1 {
				t.Fatalf("gopacket found %d MPTCP options (padding %x)", len(mp), tcp.Padding)
			}
			ours, err := Parse(v.raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := compareMPTCP(mp[0], ours); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestCrossCheckGopacketSegments lays out whole option blocks and compares
// gopacket's view of every option with ParseTCPOptions and Parse.
func TestCrossCheckGopacketSegments(t *testing.T) {
	areas := map[string][]byte{"Linux SYN": linuxSYN, "Linux data": linuxData}
	for _, l := range []Layout{
		{MSS: 1460, SACKPermitted: true, HasTimestamp: true, TSVal: 9, HasWindowScale: true, WindowScale: 7,
			MPTCP: []Option{MPJoin{Form: JoinSYN, Backup: true, AddrID: 2, Token: 0xdeadbeef, Nonce: 7}}},
		{HasTimestamp: true, TSVal: 1, TSEcr: 2, MPTCP: []Option{fullDSS}},
		{MPTCP: []Option{DSS{HasDataAck: true, DataAck: 3}, MPPrio{Backup: true}}, SACKBlocks: threeSACK},
		{HasTimestamp: true, MPTCP: []Option{MPFail{DSN: 5}, MPTCPRst{Flags: 1, Reason: 6}}},
	} {
		out, _ := l.Append(nil)
		areas[fmt.Sprintf("layout % x", out)] = out
	}
	for name, area := range areas {
		t.Run(name, func(t *testing.T) {
			tcp := decodeGopacket(t, tcpSegment(area))
			var ours TCPOptions
			if err := ParseTCPOptions(area, &ours); err != nil {
				t.Fatal(err)
			}
			var got TCPOptions
			for _, o := range tcp.Options {
				switch o.OptionType {
				case layers.TCPOptionKindMSS:
					got.HasMSS, got.MSS = true, binary.BigEndian.Uint16(o.OptionData)
				case layers.TCPOptionKindWindowScale:
					got.HasWindowScale, got.WindowScale = true, o.OptionData[0]
				case layers.TCPOptionKindSACKPermitted:
					got.SACKPermitted = true
				case layers.TCPOptionKindTimestamps:
					got.HasTimestamp = true
					got.TSVal = binary.BigEndian.Uint32(o.OptionData)
					got.TSEcr = binary.BigEndian.Uint32(o.OptionData[4:])
				case layers.TCPOptionKindSACK:
					for p := o.OptionData; len(p) >= 8; p = p[8:] {
						got.SACKBlocks[got.NumSACKBlocks] = SACKBlock{binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])}
						got.NumSACKBlocks++
					}
				case layers.TCPOptionKindMultipathTCP:
					if got.NumMPTCP >= ours.NumMPTCP {
						t.Fatalf("gopacket found more MPTCP options than we did")
					}
					mine, err := Parse(ours.MPTCP[got.NumMPTCP])
					if err != nil {
						t.Fatal(err)
					}
					if err := compareMPTCP(o, mine); err != nil {
						t.Error(err)
					}
					got.MPTCP[got.NumMPTCP] = ours.MPTCP[got.NumMPTCP]
					got.NumMPTCP++
				}
			}
			if !equalTCPOptions(got, ours) {
				t.Errorf("gopacket %+v\nours    %+v", got, ours)
			}
		})
	}
}
