package conformance

// synTap: a pass-through link endpoint that counts the SYN-bearing
// segments (SYN and SYN/ACK) the engine's NIC hands to the kernel, per
// connection, and can drop the first few SYN/ACKs. The impaired MPTCP rig
// puts it below the impairer, so it counts what actually reaches the
// kernel.
//
// Why: a SYN or SYN/ACK that reaches a kernel socket already synchronized
// (the engine retransmitted it because the first copy, or the ACK of it,
// was lost) is answered with a challenge ACK (RFC 5961 §4) and counted as
// TcpInErrs and TcpExtTCPSYNChallenge. Over a lossy path that is the
// impairment's doing, not the engine's, and the number of such segments
// bounds how often it may happen: at most one per SYN-bearing segment
// beyond the first of a connection.

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/impair"
	"github.com/mptund/mptund/internal/netns"
	"github.com/mptund/mptund/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// synKey names a connection by its engine-side and kernel-side ports.
type synKey struct{ engine, kernel uint16 }

type synTap struct {
	gstack.LinkEndpoint

	mu         sync.Mutex
	syns       map[synKey]int // SYN-bearing segments passed to the kernel
	dropSynAck int            // SYN/ACKs still to drop
	dropped    int
}

func newSynTap(child gstack.LinkEndpoint) *synTap {
	return &synTap{LinkEndpoint: child, syns: make(map[synKey]int)}
}

// WritePackets implements stack.LinkWriter: it counts the SYN-bearing
// segments and drops the SYN/ACKs it was told to.
func (s *synTap) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	var keep gstack.PacketBufferList
	dropped := 0
	for _, p := range pkts.AsSlice() {
		if s.onEgress(p) {
			dropped++
			continue
		}
		keep.PushBack(p)
	}
	if dropped == 0 {
		return s.LinkEndpoint.WritePackets(pkts)
	}
	n, err := s.LinkEndpoint.WritePackets(keep)
	return n + dropped, err
}

// onEgress counts p and reports whether to drop it.
func (s *synTap) onEgress(p *gstack.PacketBuffer) bool {
	v := p.ToView()
	defer v.Release()
	tcp, ok := tcpOf(v.AsSlice())
	if !ok || tcp.Flags()&header.TCPFlagSyn == 0 {
		return false
	}
	k := synKey{engine: tcp.SourcePort(), kernel: tcp.DestinationPort()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tcp.Flags()&header.TCPFlagAck != 0 && s.dropSynAck > 0 {
		s.dropSynAck--
		s.dropped++
		return true
	}
	s.syns[k]++
	return false
}

// tcpOf returns the TCP header of an IPv4 or IPv6 packet.
func tcpOf(b []byte) (header.TCP, bool) {
	if len(b) == 0 {
		return nil, false
	}
	var payload []byte
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if len(b) < header.IPv4MinimumSize || !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return nil, false
		}
		payload = ip.Payload()
	case 6:
		ip := header.IPv6(b)
		if len(b) < header.IPv6MinimumSize || ip.TransportProtocol() != header.TCPProtocolNumber {
			return nil, false
		}
		payload = ip.Payload()
	default:
		return nil, false
	}
	if len(payload) < header.TCPMinimumSize {
		return nil, false
	}
	return header.TCP(payload), true
}

// synsTo returns how many SYN-bearing segments of the connection between
// the engine and the kernel socket at kernel reached the kernel.
func (s *synTap) synsTo(engine, kernel netip.AddrPort) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syns[synKey{engine: engine.Port(), kernel: kernel.Port()}]
}

// synChallengeCounters are the kernel counters a SYN reaching a
// synchronized socket moves (tcp_validate_incoming, "syn_challenge").
var synChallengeCounters = []string{"TcpInErrs", "TcpExtTCPSYNChallenge"}

// checkSYNChallenges is the exact expectation for TcpInErrs on an impaired
// path: every input error the kernel counted is a SYN challenge (so
// ΔTcpInErrs <= ΔTcpExtTCPSYNChallenge), and there are no more SYN
// challenges than SYN-bearing segments of the connection beyond its
// first that reached the kernel (retransmissions the impairment caused).
func checkSYNChallenges(t *testing.T, label string, before, after map[string]uint64, surplus int) {
	t.Helper()
	inErrs := int64(after["TcpInErrs"] - before["TcpInErrs"])
	challenges := int64(after["TcpExtTCPSYNChallenge"] - before["TcpExtTCPSYNChallenge"])
	if inErrs != 0 || challenges != 0 || surplus != 0 {
		t.Logf("%s: kernel TcpInErrs +%d, TcpExtTCPSYNChallenge +%d; %d SYN-bearing segments beyond the first reached the kernel",
			label, inErrs, challenges, surplus)
	}
	if inErrs > challenges {
		t.Errorf("%s: kernel TcpInErrs moved by %d but TcpExtTCPSYNChallenge only by %d: input errors other than SYN challenges", label, inErrs, challenges)
	}
	if challenges > int64(surplus) {
		t.Errorf("%s: kernel answered %d SYNs with challenge ACKs, but only %d SYN-bearing segments beyond the first reached it", label, challenges, surplus)
	}
}

// TestEngineMPTCPLostSynAck reproduces the failure of
// TestEngineMPTCPKernelImpaired/csum-both/kernel-client ("kernel counter
// TcpInErrs moved: 0 -> 1" with the engine's subflow at 1 RTO and 0
// bytes retransmitted) deterministically: the engine's first SYN/ACK to a
// kernel MPTCP client is dropped. The kernel retransmits its SYN after
// its initial RTO (1 s) and the engine retransmits its SYN/ACK after its
// own (1 s); the engine also answers the retransmitted SYN with a SYN/ACK
// (RFC 9293 §3.10.7.4, as Linux's request sockets do). Whichever SYN/ACK
// arrives second finds the kernel socket established: the kernel sends a
// challenge ACK and counts TcpInErrs and TcpExtTCPSYNChallenge (RFC 5961
// §4). The engine behaves correctly; the connection must still run MPTCP
// with intact data, and the kernel's input errors must all be SYN
// challenges, no more than the surplus SYN/ACKs.
func TestEngineMPTCPLostSynAck(t *testing.T) {
	netns.RequireMPTCP(t)
	// The path of TestEngineMPTCPKernelImpaired without its loss: 10 ms
	// each way, so that the engine's SYN/ACK timer and the kernel's SYN
	// timer expire within one path delay of each other.
	delay, err := impair.Parse("delay 10ms")
	if err != nil {
		t.Fatal(err)
	}
	var tap *synTap
	g := newEngineTUNWith(t, engineTUNConfig{
		prefix: mptcpNSPrefix, ifc: mptcpIfc, mtu: 1500,
		tunOpts: []tun.Option{tun.WithGRO(false)},
		wrap: func(ep *tun.Endpoint) gstack.LinkEndpoint {
			tap = newSynTap(ep)
			return impair.New(tap, delay, delay, 1)
		},
	})
	g.ns.Sysctl("net.mptcp.enabled", "1")
	r := &mptcpRig{engineTUN: g}
	const rounds = 3
	sawChallenge := 0
	for i := range rounds {
		tap.mu.Lock()
		tap.dropSynAck = 1
		tap.mu.Unlock()
		before, err := g.ns.Counters()
		if err != nil {
			t.Fatal(err)
		}
		mb := r.mptcpCounters(t)
		start := time.Now()
		c := r.open(t, false, false, true)
		hs := time.Since(start)
		ci0 := c.eng.ConnInfo()
		if _, err := verifiedTransfer(c.sender(), c.receiver(), 256<<10, 30*time.Second); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		r.settle(t)
		after, err := g.ns.Counters()
		if err != nil {
			t.Fatal(err)
		}
		ma := r.mptcpCounters(t)
		syns := tap.synsTo(c.kernPeer, c.kernLocal)
		sf := ci0.Subflows[0].TCP
		t.Logf("round %d: handshake %v; %d SYN/ACKs reached the kernel (first dropped); engine subflow RTOs %d, bytes retransmitted %d",
			i, hs.Round(time.Millisecond), syns, sf.RTOs, sf.BytesRetrans)
		checkSYNChallenges(t, "lost SYN/ACK", before, after, max(0, syns-1))
		if after["TcpExtTCPSYNChallenge"] > before["TcpExtTCPSYNChallenge"] {
			sawChallenge++
		}
		if !ci0.MPTCP || ci0.Fallback != "" {
			t.Errorf("round %d: engine MPTCP=%v Fallback=%q after a lost SYN/ACK", i, ci0.MPTCP, ci0.Fallback)
		}
		checkMPTCPErrors(t, "lost SYN/ACK", mb, ma)
		for _, k := range kernelErrorCounters {
			if k != "TcpInErrs" && after[k] != before[k] {
				t.Errorf("round %d: kernel %s moved by %d", i, k, after[k]-before[k])
			}
		}
	}
	t.Logf("%d of %d rounds made the kernel send a SYN challenge ACK", sawChallenge, rounds)
	if tap.dropped != rounds {
		t.Errorf("dropped %d SYN/ACKs, want %d", tap.dropped, rounds)
	}
}
