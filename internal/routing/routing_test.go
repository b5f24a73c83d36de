package routing

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mptund/mptund/internal/netns"
)

// inNS runs fn inside ns (commands it starts and sysctls it touches act
// there).
func inNS(t *testing.T, ns *netns.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func TestUplinkCaptureAndUndo(t *testing.T) {
	netns.Require(t)
	netns.RequireTools(t, "nft")
	ns := netns.New(t, "mptr")
	ns.MustRun("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	ns.MustRun("ip", "link", "set", "up0p", "up")
	ns.AddAddr("up0", "192.0.2.2/24")
	ns.MustRun("ip", "link", "set", "up0", "up")
	ns.MustRun("ip", "route", "add", "default", "via", "192.0.2.1")
	ns.MustRun("ip", "tuntap", "add", "mode", "tun", "name", "pt0")
	ns.AddAddr("pt0", "10.213.0.1/30")
	ns.MustRun("ip", "link", "set", "pt0", "up")
	ns.MustRun("ip", "tuntap", "add", "mode", "tun", "name", "app0")
	ns.MustRun("ip", "link", "set", "app0", "up")
	// (IPv6 link-local routes come and go on their own: only the tables
	// and rules this package touches are compared.)
	before := ns.MustRun("sh", "-c", "ip rule; ip -6 rule; ip -4 route show table all; ip -6 route show table 7100 2>/dev/null; nft list ruleset; sysctl net.ipv4.conf.up0.forwarding net.ipv4.conf.pt0.forwarding net.ipv4.conf.app0.rp_filter")

	state := filepath.Join(t.TempDir(), "state.json")
	var s *Setup
	inNS(t, ns, func() error {
		var err error
		if s, err = New(state, t.Logf); err != nil {
			return err
		}
		if err := s.AddUplink(Uplink{TUN: "pt0", Engine: netip.MustParseAddr("10.213.0.2"), Dev: "up0", Table: 7101, Priority: 7000, NftTable: "mptund_test_up0"}); err != nil {
			return err
		}
		return s.AddCapture(Capture{TUN: "app0", Table: 7100, Priority: 7010, Default: true, Routes: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}})
	})
	rules := ns.MustRun("ip", "rule")
	for _, want := range []string{"7000:\tfrom all iif pt0 lookup 7101", "7009:\tfrom all lookup main suppress_prefixlength 0", "7010:\tfrom all ipproto tcp lookup 7100"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ip rule lacks %q:\n%s", want, rules)
		}
	}
	if r := ns.MustRun("ip", "route", "show", "table", "7101"); !strings.Contains(r, "default via 192.0.2.1 dev up0") {
		t.Errorf("table 7101:\n%s", r)
	}
	if r := ns.MustRun("ip", "-6", "rule"); !strings.Contains(r, "ipproto tcp lookup 7100") {
		t.Errorf("ip -6 rule:\n%s", r)
	}
	// Where does TCP go now? Application traffic into app0, the engine's
	// (from pt0) out of up0.
	if r := ns.MustRun("ip", "route", "get", "198.51.100.7", "ipproto", "tcp"); !strings.Contains(r, "dev app0") {
		t.Errorf("application TCP: %s", r)
	}
	if r := ns.MustRun("ip", "route", "get", "198.51.100.7", "ipproto", "udp"); !strings.Contains(r, "dev up0") {
		t.Errorf("application UDP: %s", r)
	}
	if r := ns.MustRun("ip", "route", "get", "198.51.100.7", "from", "10.213.0.2", "iif", "pt0", "ipproto", "tcp"); !strings.Contains(r, "dev up0") {
		t.Errorf("engine TCP: %s", r)
	}
	if r := ns.MustRun("nft", "list", "table", "inet", "mptund_test_up0"); !strings.Contains(r, "masquerade") {
		t.Errorf("nft:\n%s", r)
	}
	if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), "mptund_test_up0") {
		t.Errorf("state file: %s %v", b, err)
	}

	// A Setup whose process died is undone by the next one.
	b, _ := os.ReadFile(state)
	os.WriteFile(state, []byte(strings.Replace(string(b), `"pid":`, `"pid":999999`+"0", 1)), 0o600)
	cmd := exec.Command("true")
	_ = cmd
	inNS(t, ns, func() error {
		s2, err := New(state, t.Logf)
		if err != nil {
			return err
		}
		return s2.Close()
	})
	after := ns.MustRun("sh", "-c", "ip rule; ip -6 rule; ip -4 route show table all; ip -6 route show table 7100 2>/dev/null; nft list ruleset; sysctl net.ipv4.conf.up0.forwarding net.ipv4.conf.pt0.forwarding net.ipv4.conf.app0.rp_filter")
	if after != before {
		t.Errorf("left behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file still there: %v", err)
	}
}

func TestSysctlPath(t *testing.T) {
	for k, want := range map[string]string{
		"net.ipv4.conf.eth0.forwarding":    "/proc/sys/net/ipv4/conf/eth0/forwarding",
		"net.ipv4.conf.eth0.100.rp_filter": "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
		"net.ipv4.ip_forward":              "/proc/sys/net/ipv4/ip_forward",
	} {
		if got := sysctlPath(k); got != want {
			t.Errorf("%s: %s, want %s", k, got, want)
		}
	}
}
