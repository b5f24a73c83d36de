package main

import (
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseDaemonArgs builds a configuration from a config file text (empty:
// none) and flags, as the command does.
func parseDaemonArgs(t *testing.T, role, file string, args ...string) (*daemonConfig, error) {
	t.Helper()
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &daemonFlags{}
	f.register(fs, role)
	if file != "" {
		p := filepath.Join(t.TempDir(), "mptund.toml")
		if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", p}, args...)
	}
	if _, err := parseInterspersed(fs, args); err != nil {
		return nil, err
	}
	return buildConfig(role, f)
}

const goodClient = `# two uplinks
[engine]
scheduler = "default"
subflows = 4

[client]
mode = "proxy"
proxy = "198.51.100.7:5124"
routes = ["10.50.0.0/16", "2001:db8::/32"]

[[path]]
uplink = "eth0"
rate = "20mbit"

[[path]]
uplink = "wlan0"
gateway = "192.168.8.1"
delay = "15ms"
backup = true
`

func TestConfigFile(t *testing.T) {
	c, err := parseDaemonArgs(t, "client", goodClient)
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy != netip.MustParseAddrPort("198.51.100.7:5124") || len(c.Routes) != 2 || c.Subflows != 4 {
		t.Errorf("config %+v", c)
	}
	if len(c.Paths) != 2 || c.Paths[0].Name != "mptc0" || c.Paths[1].Name != "mptc1" {
		t.Fatalf("paths %+v", c.Paths)
	}
	p0, p1 := c.Paths[0], c.Paths[1]
	if p0.Rate != 2_500_000 || p0.Addrs[0].String() != "10.213.0.2/30" || p0.Peers[0].String() != "10.213.0.1/30" {
		t.Errorf("path 0 %+v", p0)
	}
	if p1.Addrs[0].String() != "10.213.0.6/30" || p1.Gateway.String() != "192.168.8.1" || p1.Delay != 15*time.Millisecond || !p1.Backup {
		t.Errorf("path 1 %+v", p1)
	}
	// Flags override the file: the paths and the routes are replaced.
	c, err = parseDaemonArgs(t, "client", goodClient, "--uplink", "eth1,rate=1gbit", "--route", "192.0.2.0/24", "--mode", "direct", "--subflows", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Paths) != 1 || c.Paths[0].Uplink != "eth1" || c.Paths[0].Rate != 125_000_000 || len(c.Routes) != 1 || c.Mode != "direct" || c.Subflows != 1 {
		t.Errorf("overridden: %+v", c)
	}
}

// TestConfigErrors: each bad file is refused with the file, the line and
// the key in the message.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"syntax", "[client]\nproxy = \n", ":2: "},
		{"unknown key", "[client]\nproxy = \"192.0.2.1:1\"\nroutez = []\n", ":3: client.routez: unknown key"},
		{"unknown section", "[clinet]\nproxy = 1\n", "unknown key"},
		{"bad type", "[engine]\nmtu = \"big\"\n", ":2: engine.mtu: incompatible types"},
		{"bad proxy", "[client]\nproxy = \"192.0.2.1\"\n", ":2: client.proxy: \"192.0.2.1\": want IP:PORT"},
		{"bad rate", goodClient + "[[path]]\nuplink = \"eth2\"\nrate = \"fast\"\n", ":22: path[2].rate: \"fast\": want a number with a unit"},
		{"bad delay in second path", strings.Replace(goodClient, `"15ms"`, `"15 parsecs"`, 1), ":18: path[1].delay:"},
		{"mtu out of range", "[engine]\nmtu = 70000\n", ":2: engine.mtu: 70000 is out of range 576..65535"},
		{"path without addr or uplink", "[client]\nproxy = \"192.0.2.1:1\"\n[[path]]\ntun = \"x0\"\n", ":3: path[0]"},
		{"mode", "[client]\nmode = \"tunnel\"\n", ":2: client.mode: \"tunnel\": want proxy or direct"},
	} {
		_, err := parseDaemonArgs(t, "client", tc.file)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func TestConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		role string
		args []string
		want string
	}{
		{"client", []string{"--uplink", "eth0", "--route", "10.0.0.0/8"}, "mode proxy needs --proxy"},
		{"client", []string{"--uplink", "eth0", "--proxy", "192.0.2.1:5124"}, "nothing to capture"},
		{"client", []string{"--uplink", "eth0", "--proxy", "192.0.2.1:5124", "--route", "10.0.0.0/8", "--default-route"}, "exclude each other"},
		{"client", []string{"--proxy", "192.0.2.1:5124", "--route", "10.0.0.0/8"}, "no path"},
		{"client", []string{"--path", "p0,addr=10.1.0.2/24", "--path", "p0,addr=10.2.0.2/24", "--mode", "direct", "--route", "10.0.0.0/8"}, "TUN name used twice"},
		{"client", []string{"--path", "p0,addr=10.1.0.2/24,color=red"}, "unknown key"},
		{"client", []string{"--uplink", "eth0,signal", "--mode", "direct", "--route", "10.0.0.0/8"}, "signal is for the proxy"},
		{"proxy", []string{"--uplink", "eth0"}, "needs an allow-list"},
		{"proxy", []string{"--uplink", "eth0", "--backend", "db:5432", "--allow", "0.0.0.0/0"}, "--allow is for Convert mode"},
		{"proxy", []string{"--uplink", "eth0", "--backend", "db"}, "--backend \"db\""},
		{"proxy", []string{"--uplink", "eth0", "--allow", "2001:db8::/32:443"}, "IPv6 in brackets"},
	} {
		_, err := parseDaemonArgs(t, tc.role, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: error %v, want it to contain %q", tc.role, tc.args, err, tc.want)
		}
	}
	c, err := parseDaemonArgs(t, "proxy", "", "--uplink", "eth0", "--uplink", "eth1,signal,subflow-rate=5mbit", "--allow", "10.0.0.0/8:80", "--allow", "[2001:db8::/32]:8000-8080")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Allow) != 2 || c.Listen != 5124 || !c.Paths[1].Signal || c.Paths[1].SubflowRate != 625_000 || c.Paths[0].Addrs[0].String() != "10.214.0.2/30" {
		t.Errorf("proxy config %+v", c)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"20mbit": 2_500_000, "1.5Mbit": 187_500, "8kbit": 1000, "1gbit": 125_000_000, "2mbps": 2_000_000, "100kbps": 100_000} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("%s: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "20", "mbit", "-1mbit", "1bit", "fast", "NaNmbit", "1e30gbit"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if s := formatRate(2_500_000); s != "20mbit" {
		t.Errorf("formatRate: %s", s)
	}
}

func TestParseAllow(t *testing.T) {
	d := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	for _, tc := range []struct {
		rule     string
		yes, no  []netip.AddrPort
		asString string
	}{
		{"10.0.0.0/8", []netip.AddrPort{d("10.1.2.3:1"), d("10.0.0.1:65535")}, []netip.AddrPort{d("11.0.0.1:80")}, "10.0.0.0/8"},
		{"10.0.0.0/8:443", []netip.AddrPort{d("10.1.2.3:443")}, []netip.AddrPort{d("10.1.2.3:80")}, "10.0.0.0/8:443"},
		{"192.0.2.7:8000-8099", []netip.AddrPort{d("192.0.2.7:8050")}, []netip.AddrPort{d("192.0.2.8:8050"), d("192.0.2.7:8100")}, "192.0.2.7/32:8000-8099"},
		{"[2001:db8::/32]:443", []netip.AddrPort{d("[2001:db8::1]:443")}, []netip.AddrPort{d("[2001:db9::1]:443")}, "[2001:db8::/32]:443"},
	} {
		r, err := parseAllow(tc.rule)
		if err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		for _, a := range tc.yes {
			if !r.allows(a) {
				t.Errorf("%s refuses %v", tc.rule, a)
			}
		}
		for _, a := range tc.no {
			if r.allows(a) {
				t.Errorf("%s allows %v", tc.rule, a)
			}
		}
		if r.String() != tc.asString {
			t.Errorf("%s: String %s", tc.rule, r)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/8:", "10.0.0.0/8:0", "10.0.0.0/8:90-80", "2001:db8::/32", "[2001:db8::/32", "x:1"} {
		if _, err := parseAllow(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDaemonsNeedRoot: without the privileges the commands say what is
// missing (checked only where the test does not run as root).
func TestDaemonsNeedRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root")
	}
	code, _, stderr := runCLI("client", "--uplink", "eth0", "--mode", "direct", "--route", "10.0.0.0/8")
	if code != exitFailed || !strings.Contains(stderr, "needs root") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI("demo")
	if code != exitFailed || !strings.Contains(stderr, "cannot run here: needs root") {
		t.Errorf("demo: exit %d, stderr %q", code, stderr)
	}
}
