package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

// mapping is the chunk metadata the test's "MPTCP layer" uses.
type mapping struct{ dsn uint64 }

// fakeMPTCP is a toy MPTCP layer: MP_CAPABLE on SYNs, a DSS mapping per
// chunk on every data segment, MP_TCPRST on resets; on receive it keeps the
// mappings it saw and places delivered bytes by DSN.
type fakeMPTCP struct {
	t        *testing.T
	dss      []options.DSS // scratch boxes, one per outgoing segment slot
	synSeen  bool
	maps     map[uint32]options.DSS // by subflow seq
	stream   []byte                 // reassembled by DSN - base
	base     uint64
	window   int
	vetoData bool
	states   []tcp.State
	rstSent  int
}

func newFake(t *testing.T) *fakeMPTCP {
	return &fakeMPTCP{t: t, maps: map[uint32]options.DSS{}, dss: make([]options.DSS, 1), window: 300_000, base: 1 << 40}
}

var capable = &options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: 0x01}
var tcprst = &options.MPTCPRst{Reason: 1}

func (f *fakeMPTCP) SegmentOptions(info *tcp.SegmentInfo, space int, dst []options.Option) []options.Option {
	switch {
	case info.Flags&tcp.FlagSYN != 0:
		return append(dst, capable)
	case info.Flags&tcp.FlagRST != 0:
		f.rstSent++
		return append(dst, tcprst)
	case info.Meta != nil:
		m := info.Meta.(*mapping)
		if info.RelSeq < info.ChunkRelSeq || int(info.RelSeq-info.ChunkRelSeq)+info.Len > info.ChunkLen {
			f.t.Errorf("segment [%d,+%d) outside its chunk [%d,+%d)", info.RelSeq, info.Len, info.ChunkRelSeq, info.ChunkLen)
		}
		f.dss[0] = options.DSS{HasMapping: true, DSN64: true, DSN: m.dsn, SubflowSeq: info.ChunkRelSeq, DataLen: uint16(info.ChunkLen)}
		if f.dss[0].Len() > space {
			f.t.Errorf("no room for DSS: %d", space)
		}
		return append(dst, &f.dss[0])
	}
	return dst
}

func (f *fakeMPTCP) Incoming(seg *tcp.Segment, st tcp.State) tcp.Verdict {
	for _, raw := range seg.Options.MPTCPOptions() {
		if d, err := options.ParseDSS(raw); err == nil && d.HasMapping {
			f.maps[d.SubflowSeq] = d
		}
		if _, err := options.ParseMPCapable(raw); err == nil && seg.Flags&tcp.FlagSYN != 0 {
			f.synSeen = true
		}
	}
	if f.vetoData && len(seg.Payload) > 0 {
		return tcp.VerdictReset
	}
	return tcp.VerdictAccept
}

func (f *fakeMPTCP) StateChanged(from, to tcp.State) { f.states = append(f.states, to) }

func (f *fakeMPTCP) Deliver(relSeq uint32, data []byte) {
	for len(data) > 0 {
		var m options.DSS
		found := false
		for ssn, d := range f.maps {
			if relSeq >= ssn && relSeq < ssn+uint32(d.DataLen) {
				m, found = d, true
				break
			}
		}
		if !found {
			f.t.Fatalf("delivered subflow seq %d without a mapping", relSeq)
		}
		n := min(len(data), int(m.SubflowSeq+uint32(m.DataLen)-relSeq))
		at := int(m.DSN - f.base + uint64(relSeq-m.SubflowSeq))
		for len(f.stream) < at+n {
			f.stream = append(f.stream, 0)
		}
		copy(f.stream[at:], data[:n])
		data, relSeq = data[n:], relSeq+uint32(n)
	}
}

func (f *fakeMPTCP) ReceiveWindow() (int, bool) { return f.window, true }

// TestExtensionHooks sends chunks with metadata over a lossy link and
// checks every segment carries its chunk's mapping, the receiver can place
// every byte by DSN, the extension's window is advertised and the SYN
// options were exchanged.
func TestExtensionHooks(t *testing.T) {
	cext, sext := newFake(t), newFake(t)
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond, Rate: 10_000_000, Loss: 0.02}
	p := newPair(t, pairOpts{seed: 5, ab: link, ba: link, client: tcp.Config{Extension: cext},
		listener: tcp.ListenerConfig{NewExtension: func(flow tcp.FlowID, seg *tcp.Segment) (tcp.Extension, tcp.Verdict) {
			if seg.Options.NumMPTCP == 0 {
				t.Error("SYN without MP_CAPABLE")
			}
			sext.Incoming(seg, tcp.StateClosed)
			return sext, tcp.VerdictAccept
		}}})
	p.establish()
	if !cext.synSeen || !sext.synSeen {
		t.Fatalf("MP_CAPABLE not seen: client %v server %v", cext.synSeen, sext.synSeen)
	}
	data := randBytes(9, 3<<20)
	var metas []*mapping
	off := 0
	sizes := []int{1, 1000, 1448, 5000, tcp.MaxChunk, 777, 30000}
	i := 0
	done := p.net.RunUntil(func() bool {
		for off < len(data) {
			n := min(sizes[i%len(sizes)], len(data)-off)
			m := &mapping{dsn: sext.base + uint64(off)}
			if err := p.a.EnqueueChunk(data[off:off+n], m); err != nil {
				break
			}
			metas = append(metas, m)
			off += n
			i++
		}
		return off == len(data) && p.b.Info().BytesReceived == uint64(len(data))
	}, 5*time.Minute)
	if !done {
		t.Fatalf("sent %d, received %d", off, p.b.Info().BytesReceived)
	}
	sameData(t, data, sext.stream)
	if n, err := p.b.Read(make([]byte, 10)); n != 0 || err != tcp.ErrWouldBlock {
		t.Fatalf("Read with a Receiver extension: %d %v", n, err)
	}
	// The extension's window, rounded up to the window scale.
	if in := p.a.Info(); in.SndWnd < 300_000 || in.SndWnd >= 300_000+1<<in.SndWScale {
		t.Fatalf("client sees window %d, want the extension's 300000 rounded up to a multiple of %d", in.SndWnd, 1<<in.SndWScale)
	}
	if p.a.Info().Retransmits == 0 {
		t.Fatal("no retransmissions on a lossy link: test too weak")
	}
	// Veto: the server resets on the next data segment, with MP_TCPRST.
	sext.vetoData = true
	var rstOpts int
	p.net.Trace = func(pk *simnet.Packet) {
		if pk.Seg.Flags&tcp.FlagRST != 0 {
			rstOpts += pk.Seg.Options.NumMPTCP
		}
	}
	p.a.EnqueueChunk([]byte("boom"), &mapping{dsn: 1})
	p.net.RunUntil(func() bool { return p.a.State() == tcp.StateClosed }, 10*time.Second)
	if p.a.Err() != tcp.ErrConnectionReset || p.b.Err() != tcp.ErrAborted || rstOpts != 1 {
		t.Fatalf("veto: client %v server %v, RST MPTCP options %d", p.a.Err(), p.b.Err(), rstOpts)
	}
	if last := sext.states[len(sext.states)-1]; last != tcp.StateClosed {
		t.Fatalf("extension states %v", sext.states)
	}
}
