package conformance

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps"
)

// compareGopacket is the second opinion of assertion (b): the capture read
// with gopacket's pcapgo and decoded with its layers package, whose TCP
// layer parses MPTCP options, compared with our decoding frame by frame.
// gopacket exposes no 64-bit MP_FAIL flag detail and no reserved bits; what
// it exposes is compared.
func compareGopacket(t *testing.T, path string, pkts []pcaps.Packet) {
	frames, err := gopacketTCP(path)
	if err != nil {
		t.Fatalf("gopacket: %v", err)
	}
	compared := 0
	for i := range pkts {
		p := &pkts[i]
		g := frames[p.Index]
		if g == nil {
			t.Errorf("frame %d: gopacket found no TCP layer", p.Index)
			continue
		}
		var mp []layers.TCPOption
		for _, o := range g.Options {
			if o.OptionType == layers.TCPOptionKindMultipathTCP {
				mp = append(mp, o)
			}
		}
		if len(mp) != len(p.MPTCP) {
			t.Errorf("frame %d: gopacket shows %d MPTCP options, we decode %d", p.Index, len(mp), len(p.MPTCP))
			continue
		}
		for j, o := range p.MPTCP {
			if err := diffGopacket(mp[j], o); err != nil {
				t.Errorf("frame %d option %d: gopacket: %v", p.Index, j+1, err)
			}
			compared++
		}
	}
	if compared == 0 {
		t.Error("no option compared with gopacket")
	}
}

// gopacketTCP reads a pcap or pcapng file with pcapgo and returns the TCP
// layer of each frame, by 1-based frame number.
func gopacketTCP(path string) (map[int]*layers.TCP, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, err
	}
	type source interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
		LinkType() layers.LinkType
	}
	var src source
	if binary.BigEndian.Uint32(magic) == 0x0a0d0d0a {
		src, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	} else {
		src, err = pcapgo.NewReader(br)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[int]*layers.TCP)
	for n := 1; ; n++ {
		data, _, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", n, err)
		}
		pkt := gopacket.NewPacket(data, src.LinkType(), gopacket.Default)
		if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			out[n] = tcp
		}
	}
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// low returns the 4 or 8 bytes a DSS field takes on the wire.
func low(v uint64, wide bool) []byte {
	if wide {
		return be64(v)
	}
	return be64(v)[4:]
}

// diffGopacket compares the fields gopacket exposes for one MPTCP option.
func diffGopacket(g layers.TCPOption, ours options.Option) error {
	if options.Subtype(g.OptionMultipath) != ours.Subtype() {
		return fmt.Errorf("subtype %d, ours %v", g.OptionMultipath, ours.Subtype())
	}
	if int(g.OptionLength) != ours.Len() {
		return fmt.Errorf("length %d, ours %d", g.OptionLength, ours.Len())
	}
	bad := func(what string, theirs, mine any) error {
		return fmt.Errorf("%s: gopacket %+v, ours %+v", what, theirs, mine)
	}
	switch o := ours.(type) {
	case options.MPCapable:
		c := g.OptionMPTCPMpCapable
		if c == nil {
			return errors.New("MP_CAPABLE not decoded")
		}
		if c.Version != o.Version || c.A != (o.Flags&0x80 != 0) || c.B != (o.Flags&0x40 != 0) ||
			c.C != (o.Flags&0x20 != 0) || c.H != (o.Flags&0x01 != 0) {
			return bad("MP_CAPABLE version/flags", c, o)
		}
		var send, recv []byte
		if o.Form != options.CapableSYN {
			send = be64(o.SenderKey)
		}
		if o.Form == options.CapableACK || o.Form == options.CapableACKData {
			recv = be64(o.ReceiverKey)
		}
		if !bytes.Equal(c.SendKey, send) || !bytes.Equal(c.ReceivKey, recv) {
			return bad("MP_CAPABLE keys", c, o)
		}
		if o.Form == options.CapableACKData && (c.DataLength != o.DataLen || c.Checksum != o.Checksum) {
			return bad("MP_CAPABLE data-level length/checksum", c, o)
		}
	case options.MPJoin:
		j := g.OptionMPTCPMpJoin
		if j == nil {
			return errors.New("MP_JOIN not decoded")
		}
		switch o.Form {
		case options.JoinSYN:
			if j.Backup != o.Backup || j.AddrID != o.AddrID || j.ReceivToken != o.Token || j.SendRandNum != o.Nonce {
				return bad("MP_JOIN SYN", j, o)
			}
		case options.JoinSYNACK:
			if j.Backup != o.Backup || j.AddrID != o.AddrID || !bytes.Equal(j.SendHMAC, be64(o.TruncatedHMAC)) || j.SendRandNum != o.Nonce {
				return bad("MP_JOIN SYN/ACK", j, o)
			}
		case options.JoinACK:
			if !bytes.Equal(j.SendHMAC, o.HMAC[:]) {
				return bad("MP_JOIN ACK HMAC", j.SendHMAC, o.HMAC)
			}
		}
	case options.DSS:
		d := g.OptionMPTCPDss
		if d == nil {
			return errors.New("DSS not decoded")
		}
		if d.F != o.DataFIN || d.M != o.HasMapping || d.A != o.HasDataAck {
			return bad("DSS flags", d, o)
		}
		var ack, dsn []byte
		if o.HasDataAck {
			ack = low(o.DataAck, o.DataAck64)
		}
		if o.HasMapping {
			dsn = low(o.DSN, o.DSN64)
			if d.SSN != o.SubflowSeq || d.DataLength != o.DataLen || (o.HasChecksum && d.Checksum != o.Checksum) {
				return bad("DSS mapping", d, o)
			}
		}
		if !bytes.Equal(d.DataAck, ack) || !bytes.Equal(d.DSN, dsn) {
			return bad("DSS Data ACK/DSN", d, o)
		}
	case options.AddAddr:
		a := g.OptionMPTCPAddAddr
		if a == nil {
			return errors.New("ADD_ADDR not decoded")
		}
		var hmac []byte
		if !o.Echo {
			hmac = be64(o.HMAC)
		}
		// gopacket v1.7.7 takes the HMAC as everything from 8 bytes
		// before the option's end to the end of the option area; only
		// its first 8 bytes are the HMAC.
		got := a.SendHMAC[:min(len(a.SendHMAC), 8)]
		if o.Echo {
			got = nil
		}
		if a.E != o.Echo || a.AddrID != o.AddrID || !bytes.Equal(a.Address, o.Addr.AsSlice()) ||
			a.Port != o.Port || !bytes.Equal(got, hmac) {
			return bad("ADD_ADDR", a, o)
		}
	case options.RemoveAddr:
		r := g.OptionMTCPRemAddr
		if r == nil || !slices.Equal(r.AddrIDs, o.IDs) {
			return bad("REMOVE_ADDR", r, o)
		}
	case options.MPPrio:
		p := g.OptionMPTCPMpPrio
		if p == nil || p.Backup != o.Backup {
			return bad("MP_PRIO", p, o)
		}
	case options.MPFail:
		f := g.OptionMTCPMPFail
		if f == nil || f.DSN != o.DSN {
			return bad("MP_FAIL", f, o)
		}
	case options.MPFastclose:
		f := g.OptionMTCPMPFastClose
		if f == nil || !bytes.Equal(f.ReceivKey, be64(o.Key)) {
			return bad("MP_FASTCLOSE", f, o)
		}
	case options.MPTCPRst:
		r := g.OptionMPTCPMPTcpRst
		if r == nil || r.U != (o.Flags&8 != 0) || r.V != (o.Flags&4 != 0) || r.W != (o.Flags&2 != 0) ||
			r.T != o.Transient() || r.Reason != o.Reason {
			return bad("MP_TCPRST", r, o)
		}
	default:
		return fmt.Errorf("no gopacket comparison for %T", ours)
	}
	return nil
}
