package pcaps

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/mptund/mptund/pcaps/pcapstest"
)

// TestTsharkAgrees cross-checks the synthetic conversation and the
// analyzer against tshark's MPTCP dissector: the same grouping of
// subflows into connections, and the same tokens and IDSNs derived from
// the keys.
func TestTsharkAgrees(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	cv := goodConversation(true, nil)
	path := filepath.Join(t.TempDir(), "conv.pcapng")
	data := writeCapture(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, NG: true}, cv.c.Segs)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := analyzeSegs(t, pcapstest.Format{LinkType: layers.LinkTypeEthernet, NG: true}, cv.c.Segs)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tshark, "-n", "-r", path, "-T", "fields", "-E", "separator=/t",
		"-e", "frame.number", "-e", "mptcp.stream", "-e", "tcp.options.mptcp.sendkey",
		"-e", "mptcp.expected_token", "-e", "mptcp.expected_idsn", "-e", "_ws.malformed").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(cv.c.Segs) {
		t.Fatalf("tshark shows %d frames, want %d", len(lines), len(cv.c.Segs))
	}
	c := r.Connections[0]
	tokens := map[uint64][2]uint64{ // key -> token, IDSN as we computed them
		uint64(c.ClientKey): {uint64(c.ClientToken), uint64(c.ClientIDSN)},
		uint64(c.ServerKey): {uint64(c.ServerToken), uint64(c.ServerIDSN)},
	}
	checked := 0
	for _, line := range lines {
		f := strings.Split(line, "\t")
		for len(f) < 6 {
			f = append(f, "")
		}
		if f[5] != "" {
			t.Errorf("tshark: frame %s is malformed", f[0])
		}
		// Frame 1 (the SYN) has no stream yet in tshark; every other frame
		// must be in MPTCP stream 0, as our single connection.
		if f[0] != "1" && f[1] != "0" {
			t.Errorf("tshark: frame %s in MPTCP stream %q", f[0], f[1])
		}
		if f[2] == "" || f[3] == "" {
			continue
		}
		key, err1 := strconv.ParseUint(strings.Split(f[2], ",")[0], 10, 64)
		tok, err2 := strconv.ParseUint(f[3], 10, 32)
		idsn, err3 := strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("tshark fields %q: %v %v %v", line, err1, err2, err3)
		}
		want, ok := tokens[key]
		if !ok || want != [2]uint64{tok, idsn} {
			t.Errorf("frame %s: tshark key %x token %x idsn %x; ours %x", f[0], key, tok, idsn, want)
		}
		checked++
	}
	if checked < 2 {
		t.Errorf("tshark showed keys in only %d frames", checked)
	}
}
