package conformance

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKernelFixtures runs the capture assertions on the kernel captures
// committed in pcaps/testdata/kernel (written by TestKernelScenarios
// -update). It needs no root; the tshark comparison runs when tshark is
// installed.
func TestKernelFixtures(t *testing.T) {
	if updateFixtures() {
		t.Skip("regenerating fixtures: TestKernelScenarios checks the fresh captures")
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			path := filepath.Join(fixtureDir, sc.name+".pcap")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("fixture missing (regenerate with go test ./conformance -run TestKernelScenarios -update as root): %v", err)
			}
			checkCapture(t, path, sc.want)
		})
	}
}
