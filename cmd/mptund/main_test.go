package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/mptund/mptund/pcaps"
	"github.com/mptund/mptund/pcaps/pcapstest"
)

// captures writes a passing and a failing synthetic MPTCP capture into a
// temporary directory and returns their paths.
func captures(t *testing.T) (good, bad string) {
	t.Helper()
	build := func(corrupt bool) []pcapstest.Segment {
		c := pcapstest.NewConn(netip.MustParseAddrPort("192.0.2.1:50000"), netip.MustParseAddrPort("192.0.2.2:443"),
			0x1122334455667788, 0x8877665544332211, true)
		sf := c.Handshake()
		sf.Send(pcapstest.Client, bytes.Repeat([]byte("ping"), 300))
		first, _ := sf.Send(pcapstest.Server, bytes.Repeat([]byte("pong"), 300))
		sf.AddAddr(pcapstest.Server, 1, netip.MustParseAddr("198.51.100.2"), 0)
		j := c.Join(pcapstest.JoinParams{
			Initiator: netip.MustParseAddrPort("203.0.113.1:50001"), Listener: netip.MustParseAddrPort("198.51.100.2:443"),
			InitiatorID: 1, ListenerID: 1, InitiatorNonce: 7, ListenerNonce: 9,
		})
		j.Send(pcapstest.Client, []byte("over the second path"))
		if corrupt {
			c.Segs[first+1].Payload = slices.Clone(c.Segs[first+1].Payload)
			c.Segs[first+1].Payload[3] ^= 1
		}
		return c.Segs
	}
	dir := t.TempDir()
	write := func(name string, f pcapstest.Format, segs []pcapstest.Segment) string {
		var b bytes.Buffer
		if err := pcapstest.Write(&b, f, segs); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good = write("good.pcapng", pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL2, NG: true}, build(false))
	bad = write("bad.pcap", pcapstest.Format{LinkType: layers.LinkTypeEthernet}, build(true))
	return good, bad
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestPcapInspect(t *testing.T) {
	good, bad := captures(t)

	code, out, errOut := runCLI("pcap", "inspect", good)
	if code != exitOK || errOut != "" {
		t.Fatalf("good: exit %d, stderr %q\n%s", code, errOut, out)
	}
	for _, re := range []string{
		`(?m)^MPTCP connection 1: 192\.0\.2\.1:50000 -> 192\.0\.2\.2:443`,
		`(?m)^  client key 1122334455667788 token [0-9a-f]{8} idsn [0-9a-f]{16}$`,
		`(?m)^    2 +203\.0\.113\.1:50001 +198\.51\.100\.2:443 +1/1 `,
		`(?m)^checks: [1-9][0-9]* passed, 0 failed, 0 not checked$`,
		`(?m)^  dss_checksum +[1-9][0-9]* passed +0 failed`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("good: output does not match %s:\n%s", re, out)
		}
	}

	code, out, _ = runCLI("pcap", "inspect", bad)
	if code != exitFailed {
		t.Fatalf("bad: exit %d, want %d\n%s", code, exitFailed, out)
	}
	if !regexp.MustCompile(`(?m)^checks: [0-9]+ passed, 1 failed`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^FAIL frame [0-9]+ \[dss_checksum\]: conn 1 subflow 1: DSS checksum`).MatchString(out) {
		t.Errorf("bad: output:\n%s", out)
	}

	// --json before or after the file.
	for _, args := range [][]string{{"pcap", "inspect", "--json", bad}, {"pcap", "inspect", bad, "-json"}} {
		code, out, _ = runCLI(args...)
		var r pcaps.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if code != exitFailed || len(r.Connections) != 1 || len(r.Problems) != 1 || r.Problems[0].Check != pcaps.CheckChecksum {
			t.Errorf("%v: exit %d, report %+v", args, code, r)
		}
	}
}

func TestPcapInspectCutShort(t *testing.T) {
	good, _ := captures(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.pcapng")
	if err := os.WriteFile(cut, data[:len(data)-30], 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("pcap", "inspect", cut)
	if code != exitOK || !strings.Contains(errOut, "warning: pcaps: frame") || !strings.Contains(errOut, "cut short") ||
		!strings.Contains(out, "MPTCP connection 1") {
		t.Errorf("exit %d, stderr %q\n%s", code, errOut, out)
	}
}

func TestUsage(t *testing.T) {
	notCapture := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notCapture, []byte("not a capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // substring expected on stdout
		stderr string // substring expected on stderr
	}{
		{nil, exitUsage, "", "Usage:"},
		{[]string{"help"}, exitOK, "pcap", ""},
		{[]string{"-h"}, exitOK, "Commands:", ""},
		{[]string{"help", "pcap"}, exitOK, "mptund pcap inspect FILE [--json]", ""},
		{[]string{"help", "nope"}, exitUsage, "", `unknown command "nope"`},
		{[]string{"nope"}, exitUsage, "", `unknown command "nope"`},
		{[]string{"pcap"}, exitUsage, "", "missing subcommand"},
		{[]string{"pcap", "-h"}, exitOK, "Exit status", ""},
		{[]string{"pcap", "frobnicate"}, exitUsage, "", `unknown subcommand "frobnicate"`},
		{[]string{"pcap", "inspect"}, exitUsage, "", "want exactly one capture file, got 0"},
		{[]string{"pcap", "inspect", "a", "b"}, exitUsage, "", "got 2"},
		{[]string{"pcap", "inspect", "-h"}, exitOK, "", "-json"},
		{[]string{"pcap", "inspect", "--color", "x"}, exitUsage, "", "flag provided but not defined: -color"},
		{[]string{"pcap", "inspect", "/nonexistent/x.pcap"}, exitUsage, "", "no such file"},
		{[]string{"pcap", "inspect", notCapture}, exitUsage, "", "not a pcap or pcapng capture"},
		{[]string{"pcap", "inspect", "--", "-json"}, exitUsage, "", "-json: no such file"},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("%q: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out, errOut)
		}
	}
}
