package mptcp

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/stack/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// FuzzSubflowInput feeds a server connection, past its handshake, with
// segments whose MPTCP options and payload come from the fuzzer: MP_CAPABLE,
// DSS (any flags, DSNs, lengths, checksums), MP_FASTCLOSE, MP_TCPRST, in
// any combination and order, as a hostile peer or a broken middlebox would
// send them. The layer must never panic, never return more bytes to the
// application than arrived, and keep its counters consistent.
func FuzzSubflowInput(f *testing.F) {
	f.Add([]byte{0x10, 20, 30, 20, 0x20, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 100, 0, 0})
	f.Add([]byte{0x10, 0, 30, 4, 0x20, 0x10})
	f.Add([]byte{0x04, 0, 30, 12, 0x70, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		clock := faketime.NewManualClock()
		c, s, ok, err := NewServer(Config{Clock: clock, Tokens: NewTokens(), Rand: rand.NewChaCha8([32]byte{1})},
			synWithCapable())
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		c.setRemoteKey(0x0102030405060708)
		c.fullyEstablished = true
		c.state = StateEstablished
		rel := uint32(1)
		delivered := 0
		for len(in) >= 2 {
			flags, olen := in[0], int(in[1])
			in = in[2:]
			olen = min(olen, len(in), 40)
			opt := in[:olen]
			in = in[olen:]
			plen := 0
			if len(in) > 0 {
				plen = int(in[0])
				in = in[1:]
			}
			var seg tcp.Segment
			seg.Flags = tcp.FlagACK
			if flags&0x04 != 0 {
				seg.Flags |= tcp.FlagRST
			}
			seg.Window = uint16(flags) << 4
			if err := options.ParseTCPOptions(opt, &seg.Options); err != nil {
				seg.Options = options.TCPOptions{}
			}
			payload := make([]byte, plen)
			if plen >= 4 {
				binary.BigEndian.PutUint32(payload, rel)
			}
			seg.Payload = payload
			if s.Incoming(&seg, tcp.StateEstablished) != tcp.VerdictAccept || seg.Flags&tcp.FlagRST != 0 {
				continue
			}
			if plen > 0 {
				s.Deliver(rel, payload)
				rel += uint32(plen)
				delivered += plen
			}
		}
		buf := make([]byte, 1<<16)
		got := 0
		for {
			n, err := c.Read(buf)
			got += n
			if n == 0 || err != nil {
				break
			}
		}
		if got > delivered {
			t.Fatalf("application read %d bytes, subflow delivered %d", got, delivered)
		}
		in2 := c.Info()
		if in2.Reassembly.InOrder+in2.Reassembly.OutOfOrder > uint64(delivered) {
			t.Fatalf("reassembly counted %d+%d bytes of %d delivered", in2.Reassembly.InOrder, in2.Reassembly.OutOfOrder, delivered)
		}
	})
}

// synWithCapable is a SYN carrying MP_CAPABLE v1 with H.
func synWithCapable() *tcp.Segment {
	var seg tcp.Segment
	seg.Flags = tcp.FlagSYN
	raw := options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: options.CapableFlagHMACSHA256}.Append(nil)
	if err := options.ParseTCPOptions(raw, &seg.Options); err != nil {
		panic(err)
	}
	return &seg
}
