// Package pcaps reads packet captures and inspects the Multipath TCP
// conversations in them.
//
// It is the project's second ground truth next to tshark: [ReadFile] and
// [Read] decode pcap and pcapng files (Ethernet, raw IP, BSD loopback and
// Linux cooked SLL/SLL2 link types; IPv4 and IPv6) into TCP [Packet] values
// with their options parsed by package options, and [Analyze] groups TCP
// flows into MPTCP connections and checks them against RFC 8684:
//
//   - MP_CAPABLE keys echoed consistently and the first mapping of each
//     direction starting at IDSN+1 (RFC 8684 §3.1, §3.3.1);
//   - MP_JOIN tokens naming a known connection and join HMACs verifying
//     (§3.2);
//   - ADD_ADDR HMACs verifying (§3.4.1);
//   - DSS checksums over reassembled mappings when checksums were negotiated
//     (§3.3.1), each copy of a mapping against its own data-level length:
//     Linux re-sends its last mapping with the DATA_FIN added (length one
//     larger, so another checksum) when the DATA_FIN left before the last
//     data;
//   - mapping consistency: every payload byte covered by a mapping, no
//     subflow range mapped to two different data sequence numbers (copies
//     re-sent with other boundaries are fine when every byte keeps its
//     DSN), DATA_FIN taking one data sequence number (§3.3.1, §3.3.3);
//   - MP_FASTCLOSE carrying the receiver's key (§3.5).
//
// It also records what happened without judging it: fallback to TCP (§3.7),
// MP_FAIL, infinite mappings, resets with their MP_TCPRST reason (§3.6),
// ADD_ADDR/REMOVE_ADDR and MP_PRIO.
//
// The package never panics on malformed input: a malformed option is a
// [Problem] in the [Report], a malformed packet is skipped.
package pcaps
