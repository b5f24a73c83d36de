package conformance

// Interoperability of the engine's MPTCP (RFC 8684) with the Linux
// kernel's: the engine runs in this process on a TUN whose kernel side is
// in a test namespace (mptcp_harness_test.go), kernel MPTCP sockets there
// talk to it, and each test checks, like the kernel selftests, the data
// (SHA-256), both ends' view of the connection (ConnInfo, MPTCP_INFO,
// `ss -Mtni`) and the kernel's MPTcpExt counters.
//
// Assertions about the engine's own MPTCP behaviour that a plain-TCP
// engine cannot satisfy are behind requireEngineMPTCP; the kernel-side
// checks always run.

import (
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptund/mptund/stack"
	"github.com/mptund/mptund/stack/mptcp"
)

// mptcpTransferTimeout bounds one verified transfer.
const mptcpTransferTimeout = 3 * time.Minute

// checkedMPTCPTransfer opens an MPTCP connection between the engine and a
// kernel MPTCP socket, moves n verified bytes (from the engine when it is
// the client, from the kernel otherwise) and checks that the connection
// ran MPTCP from end to end: the engine's ConnInfo, the kernel socket's
// MPTCP_INFO (tokens agree, checksums as negotiated: RFC 8684 §3.1 "either
// side"), `ss -Mtni` listing the kernel's MPTCP socket during the
// transfer, the handshake counters (MP_CAPABLE SYN, SYN/ACK and third ACK,
// §3.1), and no error, fallback or abort counter.
func (r *mptcpRig) checkedMPTCPTransfer(t *testing.T, engineClient, v6 bool, n int64, wantCsum bool) stack.ConnInfo {
	t.Helper()
	label := roleName(engineClient) + "/" + famName(v6)
	tcpBefore := r.kernelCounters(t)
	synBefore := r.synChallengeCounters(t)
	before := r.mptcpCounters(t)
	c := r.open(t, engineClient, v6, true)
	el, mid, ss, err := r.observedTransfer(c, n, mptcpTransferTimeout)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	ci := c.eng.ConnInfo()
	r.settle(t)
	after := r.mptcpCounters(t)
	logMovedCounters(t, label, before, after)
	var sf stack.SubflowInfo
	if len(ci.Subflows) > 0 {
		sf = ci.Subflows[0]
	}
	t.Logf("%s: %d MiB verified in %v (%.1f MB/s); engine subflow: %d bytes retransmitted, %d RTOs, %d fast recoveries, %d out-of-order segments; kernel MPTCP_INFO mid-transfer: %+v; ss: %d samples, %d listing the MPTCP socket",
		label, n>>20, el.Round(time.Millisecond), float64(n)/el.Seconds()/1e6,
		sf.TCP.BytesRetrans, sf.TCP.RTOs, sf.TCP.FastRecoveries, sf.TCP.OutOfOrderSegs, mid.Kernel, ss.Samples, ss.Seen)

	// The engine's view, in the middle of the transfer and at its end.
	if !mid.Taken {
		t.Fatalf("%s: the transfer was never observed in its middle", label)
	}
	for _, v := range []struct {
		when string
		ci   stack.ConnInfo
	}{{"mid-transfer", mid.Engine}, {"after close", ci}} {
		if !v.ci.MPTCP || v.ci.Fallback != "" {
			t.Errorf("%s: engine ConnInfo %s: MPTCP=%v Fallback=%q, want MPTCP without fallback", label, v.when, v.ci.MPTCP, v.ci.Fallback)
		}
		if v.ci.LocalToken == 0 || v.ci.RemoteToken == 0 {
			t.Errorf("%s: engine ConnInfo %s: tokens local %08x remote %08x, want both non-zero", label, v.when, v.ci.LocalToken, v.ci.RemoteToken)
		}
		if v.ci.Checksums != wantCsum {
			t.Errorf("%s: engine ConnInfo %s: Checksums=%v, want %v", label, v.when, v.ci.Checksums, wantCsum)
		}
		if len(v.ci.Subflows) != 1 {
			t.Errorf("%s: engine ConnInfo %s: %d subflows, want 1", label, v.when, len(v.ci.Subflows))
		}
	}
	if len(ci.Subflows) == 1 && ci.Subflows[0].Remote != c.kernLocal {
		t.Errorf("%s: engine subflow remote %v, want the kernel socket %v", label, ci.Subflows[0].Remote, c.kernLocal)
	}
	if ci.Data != nil && ci.Data.Stats.ChecksumErrors != 0 {
		t.Errorf("%s: engine counted %d DSS checksum errors", label, ci.Data.Stats.ChecksumErrors)
	}

	// The kernel socket's own view (MPTCP_INFO), mid-transfer.
	switch k := mid.Kernel; {
	case mid.KErr != nil:
		t.Errorf("%s: kernel MPTCP_INFO: %v", label, mid.KErr)
	case k.Plain:
		t.Errorf("%s: the kernel socket runs plain TCP mid-transfer (MPTCP_INFO refused or fallback flag): the kernel fell back", label)
	default:
		if k.Token != ci.RemoteToken {
			t.Errorf("%s: kernel token %08x, engine's remote token %08x: they must be the same (RFC 8684 §3.2)", label, k.Token, ci.RemoteToken)
		}
		if k.CsumEnabled != wantCsum {
			t.Errorf("%s: kernel csum_enabled=%v, want %v", label, k.CsumEnabled, wantCsum)
		}
	}

	// ss -M, sampled while data flowed.
	if ss.Samples == 0 {
		t.Errorf("%s: no ss -Mtni sample completed: %v", label, ss.Errs)
	}
	if ss.Seen == 0 {
		t.Errorf("%s: ss -Mtni never listed an MPTCP socket %v <-> %v in %d samples", label, c.kernLocal, c.kernPeer, ss.Samples)
	} else if !slices.Contains(ss.Tokens, ci.RemoteToken) {
		t.Errorf("%s: ss -Mtni tokens %08x, want the engine's remote token %08x", label, ss.Tokens, ci.RemoteToken)
	}

	// The kernel's counters: one MP_CAPABLE handshake, nothing wrong.
	if engineClient {
		wantDeltas(t, label, before, after, map[string]int64{"MPCapableSYNRX": 1, "MPCapableACKRX": 1})
	} else {
		wantDeltas(t, label, before, after, map[string]int64{"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 1})
	}
	checkMPTCPErrors(t, label, before, after)
	checkNoAborts(t, label, before, after)
	if r.syns == nil {
		r.checkKernelCounters(t, tcpBefore)
		return ci
	}
	// On an impaired path a lost SYN/ACK (or a lost ACK of it) makes the
	// engine send a SYN/ACK again, and one may reach a kernel client
	// already established, which then counts TcpInErrs for its SYN
	// challenge (RFC 5961 §4; TestEngineMPTCPLostSynAck). That, and only
	// that, is what the impairment may cause.
	r.checkKernelCountersExcept(t, tcpBefore, "TcpInErrs")
	checkSYNChallenges(t, label, synBefore, r.synChallengeCounters(t), max(0, r.syns.synsTo(c.kernPeer, c.kernLocal)-1))
	return ci
}

// synChallengeCounters snapshots the counters of checkSYNChallenges.
func (r *mptcpRig) synChallengeCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	all, err := r.ns.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint64)
	for _, k := range synChallengeCounters {
		m[k] = all[k]
	}
	return m
}

// TestEngineMPTCPKernelBulk moves 256 MiB each way over MPTCP (16 MiB with
// -short), engine client -> kernel server and kernel client -> engine
// server, IPv4 and IPv6, without DSS checksums and with checksums
// requested by both sides; then, IPv4 only and 64 MiB (8 MiB with -short),
// with checksums requested by the kernel only and by the engine only:
// checksums are in use when either side asks (RFC 8684 §3.1, flag A).
func TestEngineMPTCPKernelBulk(t *testing.T) {
	n, nCsum := int64(256<<20), int64(64<<20)
	if testing.Short() {
		n, nCsum = 16<<20, 8<<20
	}
	cases := []struct {
		name                   string
		engineCsum, kernelCsum bool
		families               []bool
		n                      int64
	}{
		{"csum-off", false, false, []bool{false, true}, n},
		{"csum-both", true, true, []bool{false, true}, n},
		{"csum-kernel-only", false, true, []bool{false}, nCsum},
		{"csum-engine-only", true, false, []bool{false}, nCsum},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newMPTCPRig(t, mptcpRigConfig{
				MPTCP:           stack.MPTCPConfig{Checksums: tc.engineCsum},
				KernelChecksums: tc.kernelCsum,
			})
			wantCsum := tc.engineCsum || tc.kernelCsum
			for _, v6 := range tc.families {
				for _, engineClient := range []bool{true, false} {
					t.Run(roleName(engineClient)+"/"+famName(v6), func(t *testing.T) {
						r.checkedMPTCPTransfer(t, engineClient, v6, tc.n, wantCsum)
					})
				}
			}
		})
	}
}

// TestEngineMPTCPKernelImpaired repeats the MPTCP transfer through a lossy,
// delaying, reordering path: "loss 1% delay 10ms reorder 5%" in each
// direction (20 ms RTT), applied in userspace by internal/impair between
// the engine's NIC and the TUN (this kernel has no sch_netem). The
// connection must stay MPTCP, with mappings and (in the second case) DSS
// checksums surviving retransmission and reordering. 4 MiB each way
// (1 MiB with -short); 2 MiB with checksums.
func TestEngineMPTCPKernelImpaired(t *testing.T) {
	n, nCsum := int64(4<<20), int64(2<<20)
	if testing.Short() {
		n, nCsum = 1<<20, 1<<20
	}
	const spec = "loss 1% delay 10ms reorder 5% limit 10000"
	for _, tc := range []struct {
		name string
		csum bool
		n    int64
	}{{"csum-off", false, n}, {"csum-both", true, nCsum}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMPTCPRig(t, mptcpRigConfig{
				MPTCP:           stack.MPTCPConfig{Checksums: tc.csum},
				KernelChecksums: tc.csum,
				Impair:          &mptcpImpairment{Egress: spec, Ingress: spec, Seed: 8684},
			})
			for _, engineClient := range []bool{true, false} {
				t.Run(roleName(engineClient), func(t *testing.T) {
					st0 := r.imp.Stats()
					ci := r.checkedMPTCPTransfer(t, engineClient, false, tc.n, tc.csum)
					st := r.imp.Stats()
					eg, in := st.Egress, st.Ingress
					t.Logf("impairment: egress %d packets, %d dropped, %d reordered; ingress %d packets, %d dropped, %d reordered",
						eg.Packets-st0.Egress.Packets, eg.Dropped-st0.Egress.Dropped, eg.Reordered-st0.Egress.Reordered,
						in.Packets-st0.Ingress.Packets, in.Dropped-st0.Ingress.Dropped, in.Reordered-st0.Ingress.Reordered)
					if eg.Dropped == st0.Egress.Dropped || in.Dropped == st0.Ingress.Dropped {
						t.Errorf("the impairment dropped nothing in one direction: the path was not lossy")
					}
					if eg.Oversize != 0 || in.Oversize != 0 {
						t.Errorf("impairment saw %d/%d oversize packets: it acted on super-packets, not wire packets", eg.Oversize, in.Oversize)
					}
					if len(ci.Subflows) == 1 {
						sf := ci.Subflows[0].TCP
						if engineClient && sf.BytesRetrans == 0 {
							t.Errorf("engine sent through a lossy path without retransmitting")
						}
						if !engineClient && sf.OutOfOrderSegs == 0 {
							t.Errorf("engine received through a lossy, reordering path without an out-of-order segment")
						}
					}
				})
			}
		})
	}
}

// fallbackResult is what fallbackTransfer observed.
type fallbackResult struct {
	label         string
	before, after map[string]uint64 // MPTcpExt counters
	tcpBefore     map[string]uint64 // TCP error counters
	mid           midTransfer
	ci            stack.ConnInfo // after the transfer
	c             *mptcpConn
}

// fallbackTransfer opens a connection whose MPTCP is expected not to
// survive (or never to start), moves n verified bytes over it and
// collects both ends' views and the counters.
func (r *mptcpRig) fallbackTransfer(t *testing.T, engineClient, kernelMPTCP bool, n int64) fallbackResult {
	t.Helper()
	res := fallbackResult{label: roleName(engineClient)}
	res.tcpBefore = r.kernelCounters(t)
	res.before = r.mptcpCounters(t)
	res.c = r.open(t, engineClient, false, kernelMPTCP)
	el, mid, _, err := r.observedTransfer(res.c, n, 20*time.Second)
	res.mid, res.ci = mid, res.c.eng.ConnInfo()
	r.settle(t)
	res.after = r.mptcpCounters(t)
	logMovedCounters(t, res.label, res.before, res.after)
	t.Logf("%s: engine ConnInfo: MPTCP=%v Fallback=%q State=%s; kernel MPTCP_INFO mid-transfer (taken %v): %+v (err %v)",
		res.label, res.ci.MPTCP, res.ci.Fallback, res.ci.State, mid.Taken, mid.Kernel, mid.KErr)
	if res.ci.Data != nil {
		t.Logf("%s: engine data level: %+v", res.label, *res.ci.Data)
	}
	if err != nil {
		t.Fatalf("%s: %v", res.label, err)
	}
	t.Logf("%s: %d MiB verified in %v", res.label, n>>20, el.Round(time.Millisecond))
	if !mid.Taken {
		t.Fatalf("%s: the transfer was never observed in its middle", res.label)
	}
	return res
}

// kernelPlain fails t unless the kernel socket ran plain TCP in the middle
// of the transfer (never MPTCP, or fallen back).
func (res fallbackResult) kernelPlain(t *testing.T) {
	t.Helper()
	if res.mid.KErr != nil {
		t.Errorf("%s: kernel MPTCP_INFO: %v", res.label, res.mid.KErr)
	} else if !res.mid.Kernel.Plain {
		t.Errorf("%s: the kernel socket still runs MPTCP mid-transfer (%+v), want plain TCP", res.label, res.mid.Kernel)
	}
}

// engineNotMPTCP fails t if the engine claims MPTCP.
func (res fallbackResult) engineNotMPTCP(t *testing.T) {
	t.Helper()
	for when, ci := range map[string]stack.ConnInfo{"mid-transfer": res.mid.Engine, "after close": res.ci} {
		if ci.MPTCP {
			t.Errorf("%s: engine ConnInfo %s says MPTCP, but the connection is plain TCP", res.label, when)
		}
	}
}

// engineFallbackReported checks, for an engine that speaks MPTCP, that it
// reports a fallback reason containing want (RFC 8684 §3.7).
func (res fallbackResult) engineFallbackReported(t *testing.T, want string) {
	t.Helper()
	t.Run("engine-fallback-reason", func(t *testing.T) {
		requireEngineMPTCP(t)
		if res.ci.Fallback == "" || !strings.Contains(res.ci.Fallback, want) {
			t.Errorf("%s: engine ConnInfo().Fallback = %q, want a reason containing %q", res.label, res.ci.Fallback, want)
		}
		if res.ci.MPTCP {
			t.Errorf("%s: engine ConnInfo().MPTCP true after a fallback", res.label)
		}
	})
}

// TestEngineMPTCPFallbackPlainPeer connects the engine (MPTCP on) with a
// kernel plain TCP socket, each side as client: the connection is plain
// TCP (RFC 8684 §3.1: a SYN/ACK, or a SYN, without MP_CAPABLE), the data
// arrives intact, the kernel never touches MPTCP (no MPTcpExt counter
// moves) and, once the engine speaks MPTCP, it reports why it fell back.
func TestEngineMPTCPFallbackPlainPeer(t *testing.T) {
	const n = 4 << 20
	r := newMPTCPRig(t, mptcpRigConfig{})
	for _, engineClient := range []bool{true, false} {
		t.Run(roleName(engineClient), func(t *testing.T) {
			r.captureFailures(t)
			res := r.fallbackTransfer(t, engineClient, false, n)
			res.kernelPlain(t)
			res.engineNotMPTCP(t)
			if moved := movedCounters(res.before, res.after); len(moved) != 0 {
				t.Errorf("kernel MPTcpExt counters moved for a plain TCP socket: %v", moved)
			}
			r.checkKernelCounters(t, res.tcpBefore)
			res.engineFallbackReported(t, "MP_CAPABLE")
		})
	}
}

// TestEngineMPTCPFallbackEngineDisabled connects an engine with MPTCP
// disabled and a kernel MPTCP socket, each side as client. The kernel
// client's MP_CAPABLE SYN gets a plain SYN/ACK and falls back
// (MPCapableFallbackSYNACK); the kernel server gets a SYN without
// MP_CAPABLE and never starts MPTCP (no MP_CAPABLE counter moves). The
// engine reports plain TCP, without a fallback reason (it never tried)
// and without data-level state.
func TestEngineMPTCPFallbackEngineDisabled(t *testing.T) {
	const n = 4 << 20
	r := newMPTCPRig(t, mptcpRigConfig{MPTCP: stack.MPTCPConfig{Disabled: true}})
	for _, engineClient := range []bool{true, false} {
		t.Run(roleName(engineClient), func(t *testing.T) {
			r.captureFailures(t)
			res := r.fallbackTransfer(t, engineClient, true, n)
			res.kernelPlain(t)
			res.engineNotMPTCP(t)
			if res.ci.Fallback != "" || res.ci.Data != nil || res.ci.LocalToken != 0 || res.ci.RemoteToken != 0 {
				t.Errorf("engine with MPTCP disabled: ConnInfo Fallback=%q Data=%v tokens %08x/%08x, want no fallback, no data-level state, no tokens",
					res.ci.Fallback, res.ci.Data != nil, res.ci.LocalToken, res.ci.RemoteToken)
			}
			if engineClient {
				wantDeltas(t, res.label, res.before, res.after, map[string]int64{
					"MPCapableSYNRX": 0, "MPCapableACKRX": 0, "MPCapableFallbackACK": 0,
				})
				checkMPTCPErrors(t, res.label, res.before, res.after)
			} else {
				wantDeltas(t, res.label, res.before, res.after, map[string]int64{
					"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 0, "MPCapableFallbackSYNACK": 1,
				})
				checkMPTCPErrors(t, res.label, res.before, res.after, "MPCapableFallbackSYNACK")
			}
			checkNoAborts(t, res.label, res.before, res.after)
			r.checkKernelCounters(t, res.tcpBefore)
		})
	}
}

// stripVariant is one way for a middlebox to remove MPTCP options.
type stripVariant struct {
	name string
	// match selects the segments to strip, per address family.
	match func(v6 bool) []string
	// want are the kernel counter deltas per role; wantPlain says whether
	// they hold for an engine that does not speak MPTCP too (otherwise
	// they are checked under requireEngineMPTCP).
	want      map[bool]map[string]int64
	wantPlain bool
	// reason is what the engine's fallback reason must contain, per role.
	reason map[bool]string
}

// stripFallbackCounters are the fallback counters a stripping middlebox
// may legitimately move at the kernel; everything else in
// mptcpErrorCounters (corruption, checksum, MP_FAIL, failed fallback)
// must stay put.
var stripFallbackCounters = []string{"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableDataFallback", "DssFallback"}

// TestEngineMPTCPFallbackStripped puts a middlebox on the path that strips
// MPTCP options (TCP option kind 30, iptables TCPOPTSTRIP in the kernel's
// namespace, both directions) and checks that the engine and the kernel
// fall back to TCP without the application noticing (RFC 8684 §3.7): the
// data arrives intact both ways, the kernel's counters show its own
// fallback path and no data corruption (DataCsumErr, DSS mismatches stay
// 0), and the engine reports a fallback. Variants:
//
//   - syn: stripped from SYN and SYN/ACK only: plain TCP from the start;
//   - after-handshake: stripped from every segment but SYN and SYN/ACK:
//     MP_CAPABLE is negotiated, then the third ACK and every DSS vanish;
//   - data: stripped only from segments carrying payload after the
//     handshake: the third ACK (and pure ACKs with Data ACKs) get through,
//     the data loses its MP_CAPABLE/DSS mappings.
func TestEngineMPTCPFallbackStripped(t *testing.T) {
	const n = 4 << 20
	// Longest header of a segment without payload: IP (20, or 40 for
	// IPv6) + TCP with 40 bytes of options. Longer packets carry payload
	// (a payload shorter than the option space left unused is missed,
	// which a bulk transfer's full-sized segments never are).
	payloadOnly := func(v6 bool) []string {
		lo := "81"
		if v6 {
			lo = "101"
		}
		return []string{"--tcp-flags", "SYN", "NONE", "-m", "length", "--length", lo + ":65535"}
	}
	variants := []stripVariant{{
		name:  "syn",
		match: func(bool) []string { return []string{"--tcp-flags", "SYN", "SYN"} },
		want: map[bool]map[string]int64{
			true:  {"MPCapableSYNRX": 0, "MPCapableACKRX": 0, "MPCapableFallbackACK": 0},
			false: {"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 0, "MPCapableFallbackSYNACK": 1},
		},
		wantPlain: true,
		reason:    map[bool]string{true: "SYN/ACK without MP_CAPABLE", false: "SYN without MP_CAPABLE"},
	}, {
		name:  "after-handshake",
		match: func(bool) []string { return []string{"--tcp-flags", "SYN", "NONE"} },
		want: map[bool]map[string]int64{
			true:  {"MPCapableSYNRX": 1, "MPCapableACKRX": 0, "MPCapableFallbackACK": 1},
			false: {"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 1, "MPCapableDataFallback": 1},
		},
		reason: map[bool]string{true: "", false: "handshake ACK without MP_CAPABLE"},
	}, {
		name:  "data",
		match: payloadOnly,
		want: map[bool]map[string]int64{
			true:  {"MPCapableSYNRX": 1, "MPCapableACKRX": 1, "DssFallback": 1},
			false: {"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 1, "MPCapableDataFallback": 1},
		},
		reason: map[bool]string{true: "", false: "data without DSS mapping"},
	}}
	r := newMPTCPRig(t, mptcpRigConfig{})
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r.stripMPTCP(t, v.match)
			for _, engineClient := range []bool{true, false} {
				t.Run(roleName(engineClient), func(t *testing.T) {
					r.captureFailures(t)
					hits0 := r.stripHits(t)
					res := r.fallbackTransfer(t, engineClient, true, n)
					hits := r.stripHits(t)
					t.Logf("%s: TCPOPTSTRIP rule hits %v -> %v", res.label, hits0, hits)
					if sum(hits) == sum(hits0) {
						t.Errorf("%s: no TCPOPTSTRIP rule matched a packet of this connection", res.label)
					}
					// Kernel-side checks, true whatever the engine speaks.
					res.kernelPlain(t)
					res.engineNotMPTCP(t)
					checkMPTCPErrors(t, res.label, res.before, res.after, stripFallbackCounters...)
					checkNoAborts(t, res.label, res.before, res.after)
					r.checkKernelCounters(t, res.tcpBefore)
					if v.wantPlain {
						wantDeltas(t, res.label, res.before, res.after, v.want[engineClient])
					}
					// What only an MPTCP-speaking engine can satisfy.
					t.Run("kernel-fallback-path", func(t *testing.T) {
						requireEngineMPTCP(t)
						wantDeltas(t, res.label, res.before, res.after, v.want[engineClient])
					})
					res.engineFallbackReported(t, v.reason[engineClient])
				})
			}
			// Every rule (both hooks) must have stripped something over
			// the two directions: IPv4 only is exercised here.
			for _, chain := range []string{"iptables PREROUTING", "iptables POSTROUTING"} {
				if h := r.stripHits(t)[chain]; h == 0 {
					t.Errorf("TCPOPTSTRIP rule %s never matched", chain)
				}
			}
		})
	}
}

func sum(m map[string]uint64) uint64 {
	var s uint64
	for _, v := range m {
		s += v
	}
	return s
}

// TestEngineMPTCPFastclose checks the abortive close of an MPTCP
// connection both ways (RFC 8684 §3.5): an engine Close with unread data
// sends MP_FASTCLOSE, which the kernel counts (MPTcpExtMPFastcloseRx) and
// reports as a reset; a kernel close with SO_LINGER 0 sends MP_FASTCLOSE
// (MPTcpExtMPFastcloseTx), and the engine's Read fails with ECONNRESET
// (wrapping mptcp.ErrFastclose). Each with the engine as client and as
// server.
func TestEngineMPTCPFastclose(t *testing.T) {
	requireEngineMPTCP(t)
	r := newMPTCPRig(t, mptcpRigConfig{})
	unread := make([]byte, 64<<10)
	for _, engineClient := range []bool{true, false} {
		t.Run("engine-close-unread/"+roleName(engineClient), func(t *testing.T) {
			r.captureFailures(t)
			before := r.mptcpCounters(t)
			c := r.open(t, engineClient, false, true)
			c.kern.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.kern.Write(unread); err != nil {
				t.Fatal(err)
			}
			// Wait until the engine holds data the application has not read.
			deadline := time.Now().Add(5 * time.Second)
			for {
				ci := c.eng.ConnInfo()
				if ci.Data != nil && ci.Data.RcvReadable > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("engine never had unread data: %+v", ci.Data)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := c.eng.Close(); err != nil {
				t.Fatalf("engine Close: %v", err)
			}
			_, err := io.Copy(io.Discard, c.kern)
			r.ns.WaitCounter(t, "MPFastcloseRx", before["MPTcpExtMPFastcloseRx"]+1, 5*time.Second)
			r.settle(t)
			after := r.mptcpCounters(t)
			logMovedCounters(t, "engine-close-unread", before, after)
			if !isConnReset(err) {
				t.Errorf("kernel read after the engine's fastclose: %v, want ECONNRESET", err)
			}
			if ci := c.eng.ConnInfo(); ci.Data == nil || ci.Data.Stats.FastclosesSent == 0 {
				t.Errorf("engine did not count a sent MP_FASTCLOSE: %+v", ci.Data)
			}
			checkMPTCPErrors(t, "engine-close-unread", before, after)
		})
		t.Run("kernel-linger0/"+roleName(engineClient), func(t *testing.T) {
			r.captureFailures(t)
			before := r.mptcpCounters(t)
			c := r.open(t, engineClient, false, true)
			c.eng.SetDeadline(time.Now().Add(10 * time.Second))
			// Some data first, so that the connection is fully established
			// at both ends (RFC 8684 §3.1).
			msg := []byte("before the abort")
			if _, err := c.kern.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c.eng, got); err != nil {
				t.Fatalf("engine read: %v", err)
			}
			if err := c.kern.SetLinger(0); err != nil {
				t.Fatal(err)
			}
			c.kern.Close()
			_, err := c.eng.Read(got)
			r.ns.WaitCounter(t, "MPFastcloseTx", before["MPTcpExtMPFastcloseTx"]+1, 5*time.Second)
			r.settle(t)
			after := r.mptcpCounters(t)
			logMovedCounters(t, "kernel-linger0", before, after)
			var oe *net.OpError
			switch {
			case !isConnReset(err):
				t.Errorf("engine read after the kernel's fastclose: %v, want ECONNRESET", err)
			case !errors.As(err, &oe) || oe.Op != "read":
				t.Errorf("engine read error %v (%T), want a read *net.OpError", err, err)
			case !errors.Is(err, mptcp.ErrFastclose):
				t.Errorf("engine read error %v does not report MP_FASTCLOSE (mptcp.ErrFastclose)", err)
			}
			if ci := c.eng.ConnInfo(); ci.Data == nil || ci.Data.Stats.FastclosesRcvd == 0 {
				t.Errorf("engine did not count a received MP_FASTCLOSE: %+v", ci.Data)
			}
			checkMPTCPErrors(t, "kernel-linger0", before, after)
		})
	}
}
