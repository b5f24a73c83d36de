package tcp_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// FuzzHandleSegment feeds an established endpoint a sequence of hostile
// segments: sequence and acknowledgment numbers near the live windows, any
// flags, raw option bytes and payload, interleaved with time steps. It
// checks the endpoint never panics, never emits an invalid option block
// (newRaw's Output checks that), keeps its counters consistent and never
// lets Read return bytes that were not received. Some payloads come with a
// PayloadView, released right after the call, as the adapter's do.
func FuzzHandleSegment(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0x10, 0xff, 0, 10, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'})
	f.Add([]byte{0, 5, 0, 0, 0x04, 0xff, 0, 0})
	f.Add([]byte{0xff, 0xff, 0, 1, 0x12, 0, 12, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newRaw(t, tcp.Config{NoDelay: true})
		r.establish()
		r.ep.Write(make([]byte, 5000))
		var received int
		buf := make([]byte, 4096)
		for len(b) >= 8 {
			dseq := int16(binary.BigEndian.Uint16(b[0:]))
			dack := int16(binary.BigEndian.Uint16(b[2:]))
			seg := tcp.Segment{
				Seq:    r.peerNxt + seqnum.Value(int32(dseq)),
				Ack:    localISS + 1 + seqnum.Value(int32(dack)),
				Flags:  header.TCPFlags(b[4]),
				Window: uint16(b[5]) << 8,
			}
			optLen, payLen := int(b[6])%41, int(b[7])%200
			b = b[8:]
			optLen, payLen = min(optLen, len(b)), min(payLen, max(len(b)-optLen, 0))
			options.ParseTCPOptionsLenient(b[:optLen], &seg.Options) // as ParseSegment does
			seg.Payload = b[optLen : optLen+payLen]
			b = b[optLen+payLen:]
			var v *buffer.View
			if len(seg.Payload) > 0 && dack&1 == 0 {
				// Offered by reference, as the adapter does.
				v = buffer.NewViewWithData(seg.Payload)
				seg.Payload, seg.PayloadView = v.AsSlice(), v
			}
			r.ep.HandleSegment(&seg)
			if v != nil {
				v.Release()
			}
			if seg.Flags&tcp.FlagACK != 0 && len(b) > 0 && b[0]&1 != 0 {
				r.advance(time.Duration(b[0]) * 10 * time.Millisecond)
			}
			n, _ := r.ep.Read(buf)
			received += n
			i := r.ep.Info()
			if uint64(received) > i.BytesReceived || i.BytesInFlight < 0 || i.BytesAcked > 5000 {
				t.Fatalf("inconsistent: read %d, info %+v", received, i)
			}
		}
	})
}
