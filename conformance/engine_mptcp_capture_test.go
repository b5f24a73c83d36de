package conformance

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mptund/mptund/stack"
)

// TestEngineMPTCPCapture judges the engine's MPTCP by its packets: a
// capture of engine <-> kernel MPTCP connections (engine as client, then
// as server; DSS checksums on so that every mapping the engine sends is
// checksummed) must pass every capture assertion the kernel's own captures
// pass (checkCapture): each option decodes, our decoding agrees with
// tshark's and gopacket's field by field, the keys, tokens, IDSNs and the
// engine's DSS checksums verify, and the analyzer and `mptund pcap
// inspect` find one clean connection per run, with DATA_FIN both ways.
func TestEngineMPTCPCapture(t *testing.T) {
	for _, engineClient := range []bool{true, false} {
		t.Run(roleName(engineClient), func(t *testing.T) {
			r := newMPTCPRig(t, mptcpRigConfig{MPTCP: stack.MPTCPConfig{Checksums: true}})
			netns := r.ns
			file := filepath.Join(t.TempDir(), "engine.pcap")
			stop := netns.Capture(t, r.ifc, file, "tcp")
			c := r.open(t, engineClient, false, true)
			// The client sends 2 MiB; both sides then close (DATA_FIN
			// both ways).
			done := make(chan error, 1)
			go func() {
				_, err := verifiedTransfer(c.sender(), c.receiver(), 2<<20, time.Minute)
				done <- err
			}()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			r.settle(t)
			stop()
			features := []string{
				"MP_CAPABLE SYN", "MP_CAPABLE SYN/ACK", "MP_CAPABLE ACK",
				"MP_CAPABLE A flag", "DSS Data ACK", "DSS mapping", "DSS checksum", "DSS DATA_FIN",
			}
			checkCapture(t, file, captureWant{conns: 1, subflows: 1, features: features})
		})
	}
}
