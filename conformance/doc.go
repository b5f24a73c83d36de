// Package conformance holds mptund's wire-level conformance tests against
// the Linux kernel's MPTCP implementation (RFC 8684).
//
// The tests run real kernel MPTCP peers (the kpeer program in
// internal/kpeer) in network namespaces, make the kernel exercise each part
// of the protocol — MP_CAPABLE, MP_JOIN, DSS mappings and DATA_FIN,
// ADD_ADDR (IPv4 and IPv6, with and without port) and its echo,
// REMOVE_ADDR, MP_PRIO, DSS checksums, MP_FASTCLOSE with MP_TCPRST — capture
// the packets with tcpdump and check, for every capture:
//
//   - that the options and pcaps packages decode every MPTCP option;
//   - that the decoded fields equal tshark's dissection of the same packets,
//     option by option, and gopacket's where it exposes them;
//   - that every token, join HMAC, ADD_ADDR HMAC and DSS checksum verifies
//     with the handshake and checksum packages;
//   - that pcaps.Analyze and `mptund pcap inspect` accept the capture;
//   - that the kernel's MPTcpExt counters moved as expected and no error
//     counter moved.
//
// One capture per scenario is kept in pcaps/testdata/kernel as a regression
// fixture; TestKernelFixtures re-checks them without root. Regenerate them
// with
//
//	go test ./conformance -run TestKernelScenarios -update
//
// (or MPTUND_UPDATE_FIXTURES=1), as root on a kernel with MPTCP.
//
// Beyond single scenarios, some tests look for what goes wrong rarely or
// under attack: TestRepeatMPTCP (hundreds of short and medium transfers
// drawn from a seed, with kpeer's application-like mode "app" as the
// kernel side; long mode with -conformance.repeat=N), TestHostileLive
// (forged segments of many classes on a live transfer, each class first
// validated against a Linux target), TestEngineMPTCPSynFlood (genuine
// MPTCP clients during and after a spoofed MP_CAPABLE SYN flood) and
// TestEngineMPTCPLostSynAck (what a lost SYN/ACK may legitimately make the
// kernel count).
//
// TestMultipath* (multipath_test.go) run the cases of the kernel's
// selftest mptcp_join.sh with the engine as one of its two hosts, as
// client and as server: a kernel namespace with four TUN devices, one
// engine NIC behind each (multipath_harness_test.go); subflow and signal
// endpoints with limits, ADD_ADDR with a port and its retransmission,
// REMOVE_ADDR (ID 0 and flush included) and re-adding, backup and
// MP_PRIO, link failures, fullmesh, the C flag, IPv6 and mixed
// families, MP_FASTCLOSE with two subflows, forged joins and ADD_ADDRs.
// Each checks the counters mptcp_join.sh checks on the side that counts
// them, on both sides (the kernel's MPTcpExt counters and the engine's
// counters of the same names), the subflow lists and both directions of
// a transfer (SHA-256). Longer variants: -conformance.multipath.long.
package conformance
