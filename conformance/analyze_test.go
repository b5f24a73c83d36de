package conformance

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mptund/mptund/pcaps"
)

// checkAnalyze is assertion (d): pcaps.Analyze finds the expected
// connections and subflows and every check passes, and the mptund command
// agrees (`mptund pcap inspect` exits 0).
func checkAnalyze(t *testing.T, path string, pkts []pcaps.Packet, want captureWant) {
	t.Helper()
	r := pcaps.Analyze(pkts)
	if len(r.Connections) != want.conns {
		t.Errorf("Analyze: %d MPTCP connections, want %d", len(r.Connections), want.conns)
	}
	subflows := 0
	for _, c := range r.Connections {
		subflows += len(c.Subflows)
		if c.Fallback != "" {
			t.Errorf("Analyze: connection %d fell back to TCP at frame %d: %s", c.ID, c.FallbackFrame, c.Fallback)
		}
	}
	if subflows != want.subflows {
		t.Errorf("Analyze: %d subflows, want %d", subflows, want.subflows)
	}
	if r.Unanalyzed != 0 {
		t.Errorf("Analyze: %d flows not analyzed", r.Unanalyzed)
	}
	if !r.OK() {
		for _, p := range r.Problems {
			t.Errorf("Analyze: %v", p)
		}
		t.Errorf("Analyze: report not OK")
	}
	if r.Stats.Passed == 0 {
		t.Errorf("Analyze: no check passed")
	}
	if testing.Verbose() && len(r.NotChecked) > 0 {
		t.Logf("Analyze: %d checks not carried out, first: %v", len(r.NotChecked), r.NotChecked[0])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, mptund(t), "pcap", "inspect", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Errorf("mptund pcap inspect exited %d:\n%s", ee.ExitCode(), out.String())
		} else {
			t.Errorf("mptund pcap inspect: %v", err)
		}
	} else if !strings.Contains(out.String(), "MPTCP") && !strings.Contains(out.String(), "onnection") {
		t.Errorf("mptund pcap inspect printed no connection:\n%s", out.String())
	}
}
