package pcaps

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/mptund/mptund/pcaps/pcapstest"
)

// FuzzRead feeds arbitrary bytes to Read as a capture file. Read must not
// panic, must return well-formed packets, and Analyze and both report
// writers must accept whatever it returns.
func FuzzRead(f *testing.F) {
	for _, fx := range fuzzSeeds {
		f.Add(writeCapture(f, fx.format, fx.segs()))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pkts, _ := Read(bytes.NewReader(data)) // packets before an error are kept
		last := 0
		for i := range pkts {
			p := &pkts[i]
			if p.Index <= last {
				t.Fatalf("frame numbers not increasing: %d after %d", p.Index, last)
			}
			last = p.Index
			if len(p.Payload) > p.PayloadLen || len(p.Options)%4 != 0 || len(p.Options) > 40 {
				t.Fatalf("frame %d: payload %d of %d, options %d", p.Index, len(p.Payload), p.PayloadLen, len(p.Options))
			}
			if !p.Src.IsValid() || !p.Dst.IsValid() {
				t.Fatalf("frame %d: invalid addresses %v %v", p.Index, p.Src, p.Dst)
			}
		}
		r := Analyze(pkts)
		if err := r.WriteText(io.Discard); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteJSON(io.Discard); err != nil {
			t.Fatal(err)
		}
		if r.OK() != (len(r.Problems) == 0) || r.Stats.Failed != len(r.Problems) || r.Stats.NotChecked != len(r.NotChecked) {
			t.Fatalf("inconsistent totals: %d problems, %+v", len(r.Problems), r.Stats)
		}
	})
}

// analyzeFrames decodes raw IP frames and analyzes them.
func analyzeFrames(frames [][]byte) *Report {
	var pkts []Packet
	for i, fr := range frames {
		var p Packet
		if ok, _ := decodePacket(&p, layers.LinkTypeRaw, fr, len(fr)); ok {
			p.Index = i + 1
			pkts = append(pkts, p)
		}
	}
	return Analyze(pkts)
}

// FuzzAnalyze mutates a valid MPTCP conversation (IP frames) as the fuzz
// input directs, four bytes per mutation: op, two bytes of offset, value.
// An op below 0xf0 XORs value into byte offset of frame op; 0xf0 and above
// swap two frames (capture reordering) and, from 0xf8, duplicates one
// (retransmission). The analyzer must neither panic nor report
// inconsistent totals.
func FuzzAnalyze(f *testing.F) {
	var base [][]byte
	for _, s := range smallConversation(true).c.Segs {
		fr, err := pcapstest.Frame(layers.LinkTypeRaw, s)
		if err != nil {
			f.Fatal(err)
		}
		base = append(base, fr)
	}
	if r := analyzeFrames(base); !r.OK() {
		f.Fatalf("base conversation fails: %v", r.Problems)
	}
	f.Add([]byte{})
	f.Add([]byte{5, 0, 45, 0x40})               // an option byte of the first server data segment
	f.Add([]byte{0xf1, 5, 6, 0, 0xf9, 8, 0, 0}) // reorder, then duplicate
	f.Fuzz(func(t *testing.T, muts []byte) {
		frames := make([][]byte, len(base))
		for i := range base {
			frames[i] = bytes.Clone(base[i])
		}
		for ; len(muts) >= 4 && len(frames) < 4*len(base); muts = muts[4:] {
			op, off, v := muts[0], int(binary.BigEndian.Uint16(muts[1:3])), muts[3]
			switch {
			case op < 0xf0:
				fr := frames[int(op)%len(frames)]
				fr[off%len(fr)] ^= v
			case op < 0xf8:
				a, b := int(muts[1])%len(frames), int(muts[2])%len(frames)
				frames[a], frames[b] = frames[b], frames[a]
			default:
				i := int(muts[1]) % len(frames)
				frames = slices.Insert(frames, int(muts[2])%len(frames), bytes.Clone(frames[i]))
			}
		}
		r := analyzeFrames(frames)
		if err := r.WriteText(io.Discard); err != nil {
			t.Fatal(err)
		}
		if r.OK() != (len(r.Problems) == 0) || r.Stats.Failed != len(r.Problems) || r.Stats.NotChecked != len(r.NotChecked) {
			t.Fatalf("inconsistent totals: %d problems, %+v", len(r.Problems), r.Stats)
		}
	})
}
