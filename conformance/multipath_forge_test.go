package conformance

// Forged segments for the multipath tests (TestMultipathForged,
// TestMultipathDenyJoinID0): an AF_PACKET socket on the kernel's side of
// path 1 (rawinject_test.go) injects segments towards the engine — join
// SYNs from a source address the kernel does not own (10.0.1.77, so that
// the engine's answers reach nobody and only the sniffer sees them), and
// ADD_ADDRs on the connection's initial subflow as if the kernel had sent
// them (its sequence numbers and timestamps learnt by sniffing, as
// hostile_test.go's forger does).

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// mpSpoofed is the source of forged joins: on path 1's subnet, owned by
// nobody.
var mpSpoofed = netip.MustParseAddr("10.0.1.77")

// mpForger forges segments towards the engine on path 1.
type mpForger struct {
	ps  *packetSock
	st  *connState
	f   *forger
	tgt netip.AddrPort // the engine's end of the initial subflow

	mu       sync.Mutex
	replies  map[uint16][]parsedSeg // the engine's segments to mpSpoofed, by port
	nextPort uint16
}

// mpForgeResult is what the engine answered to forged joins.
type mpForgeResult struct {
	synAcks, rsts int
	rstReason     int // MP_TCPRST reason of the last RST, -1 if it had none
}

func newMPForger(t *testing.T, r *mpRig, c *mpConn) *mpForger {
	t.Helper()
	ps, err := openPacketSock(r.ns, mpIfc(1), true)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	eng := c.eng.LocalAddr().(*net.TCPAddr).AddrPort()
	kern := c.eng.RemoteAddr().(*net.TCPAddr).AddrPort()
	f := &mpForger{ps: ps, tgt: eng, replies: map[uint16][]parsedSeg{}, nextPort: 61000,
		st: &connState{joinSynAck: map[uint16]parsedSeg{}}}
	f.st.peer = netip.AddrPortFrom(kern.Addr().Unmap(), kern.Port())
	f.st.tgt = netip.AddrPortFrom(eng.Addr().Unmap(), eng.Port())
	f.f = &forger{ps: ps, st: f.st, rng: mrand.New(mrand.NewPCG(1, 2))}
	ps.setSniffer(func(p parsedSeg) {
		if p.Dst.Addr() == mpSpoofed {
			f.mu.Lock()
			f.replies[p.Dst.Port()] = append(f.replies[p.Dst.Port()], p)
			f.mu.Unlock()
			return
		}
		f.st.observe(p)
	})
	return f
}

func (f *mpForger) close() { f.ps.close() }

// waitReply waits up to 300 ms for the engine's answer on port with one
// of the flags in want, and returns it.
func (f *mpForger) waitReply(port uint16, want header.TCPFlags) (parsedSeg, bool) {
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		for _, p := range f.replies[port] {
			if p.Flags&want != 0 {
				f.mu.Unlock()
				return p, true
			}
		}
		f.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
	return parsedSeg{}, false
}

// rstReason returns the MP_TCPRST reason of a RST, -1 if it has none.
func rstReason(p parsedSeg) int {
	opts, _ := mptcpOptions(p.Options)
	for _, o := range opts {
		if len(o) >= 4 && o[2]>>4 == 8 {
			return int(o[3])
		}
	}
	return -1
}

// joinSYNs sends n MP_JOIN SYNs to the engine's end of the initial
// subflow, with token (0: a random one per SYN), and waits for each
// answer; with badHMAC it completes each SYN/ACK with a third ACK whose
// HMAC is random and waits for the RST that refuses it.
func (f *mpForger) joinSYNs(t *testing.T, token uint32, n int, badHMAC bool) mpForgeResult {
	t.Helper()
	res := mpForgeResult{rstReason: -1}
	for range n {
		f.mu.Lock()
		port := f.nextPort
		f.nextPort++
		f.mu.Unlock()
		var b [12]byte
		rand.Read(b[:])
		tok := token
		if tok == 0 {
			tok = binary.BigEndian.Uint32(b[:4])
		}
		isn := binary.BigEndian.Uint32(b[4:8])
		join := mopt(12, 1, 0, append(append([]byte{9}, binary.BigEndian.AppendUint32(nil, tok)...), b[8:12]...)...)
		src := netip.AddrPortFrom(mpSpoofed, port)
		f.f.send(rawSeg{Src: src, Dst: f.tgt, Seq: isn, Flags: header.TCPFlagSyn, Window: 64240,
			Options: append([]byte{2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7}, join...)})
		p, ok := f.waitReply(port, header.TCPFlagSyn|header.TCPFlagRst)
		if !ok {
			t.Logf("forged join SYN from port %d: no answer", port)
			continue
		}
		if p.Flags&header.TCPFlagRst != 0 {
			res.rsts++
			res.rstReason = rstReason(p)
			continue
		}
		res.synAcks++
		if !badHMAC {
			continue
		}
		hmac := make([]byte, 20)
		rand.Read(hmac)
		f.f.send(rawSeg{Src: src, Dst: f.tgt, Seq: isn + 1, Ack: p.Seq + 1, Flags: header.TCPFlagAck, Window: 502,
			Options: mopt(24, 1, 0, append([]byte{0}, hmac...)...)})
		if rst, ok := f.waitReply(port, header.TCPFlagRst); ok {
			res.rsts++
			res.rstReason = rstReason(rst)
		} else {
			t.Logf("forged third ACK from port %d: no RST", port)
		}
	}
	return res
}

// addAddrs sends n ADD_ADDRs with random HMACs on the initial subflow as
// if from the kernel (IPv4, IPv4 with a port, IPv6 in turn, for
// addresses of path 4), spread over 200 ms, and returns how many it sent.
func (f *mpForger) addAddrs(t *testing.T, n int) int {
	t.Helper()
	sent := 0
	for i := range n {
		if s := f.st.snapshot(); s.segsPeer == 0 {
			t.Logf("forged ADD_ADDR: the initial subflow was never seen")
			return sent
		}
		var hmac [8]byte
		rand.Read(hmac[:])
		id := byte(40 + i)
		var o []byte
		switch i % 3 {
		case 0:
			o = mopt(16, 3, 0, append([]byte{id, 10, 0, 4, 77}, hmac[:]...)...)
		case 1:
			o = mopt(18, 3, 0, append([]byte{id, 10, 0, 4, 78, 0x27, 0x74}, hmac[:]...)...)
		default:
			a := netip.MustParseAddr("dead:beef:4::77").As16()
			o = mopt(28, 3, 0, append(append([]byte{id}, a[:]...), hmac[:]...)...)
		}
		f.f.ack(o)
		sent++
		time.Sleep(200 * time.Millisecond / time.Duration(n))
	}
	return sent
}
