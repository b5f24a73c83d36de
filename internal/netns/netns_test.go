package netns

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTopology(t *testing.T) {
	Require(t)
	RequireTools(t, "tcpdump", "nstat")
	a := New(t, "mptn")
	b := New(t, "mptn")
	Veth(t, a, "ea", "10.201.0.1/24", b, "eb", "10.201.0.2/24")

	before, err := b.Counters()
	if err != nil {
		t.Fatal(err)
	}

	// A socket opened inside Do lives in the namespace: only the peer
	// namespace can reach it.
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp", "10.201.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	pcap := filepath.Join(t.TempDir(), "tcp.pcap")
	stop := b.Capture(t, "eb", pcap, "tcp")
	out := a.MustRun("bash", "-c", "exec 3<>/dev/tcp/10.201.0.2/"+strconv.Itoa(port)+"; timeout 5 cat <&3")
	stop()
	if strings.TrimSpace(out) != "hello" {
		t.Fatalf("got %q from the listener in %s", out, b.Name)
	}
	// pcap global header is 24 bytes; a handshake adds well over 100.
	if st, err := os.Stat(pcap); err != nil || st.Size() < 200 {
		t.Fatalf("capture file missing or nearly empty: %v %v", err, st.Size())
	}

	after, err := b.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if d := after["TcpPassiveOpens"] - before["TcpPassiveOpens"]; d != 1 {
		t.Errorf("TcpPassiveOpens moved by %d in %s, want 1", d, b.Name)
	}
	// The test process itself (root namespace) has no route to it.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("listener inside the namespace was reachable from the root namespace")
	}
}

func TestNftAndTxQueueLen(t *testing.T) {
	Require(t)
	RequireTools(t, "nft")
	a := New(t, "mptn")
	b := New(t, "mptn")
	Veth(t, a, "na", "10.202.0.1/24", b, "nb", "10.202.0.2/24")
	if err := a.Nft("table inet t {\n\tchain c { type filter hook input priority 0; counter; }\n}"); err != nil {
		t.Fatal(err)
	}
	if out := a.MustRun("nft", "list", "table", "inet", "t"); !strings.Contains(out, "counter packets") {
		t.Errorf("table not loaded: %s", out)
	}
	if err := a.Nft("not a ruleset"); err == nil || !strings.Contains(err.Error(), a.Name) {
		t.Errorf("bad ruleset: %v, want an error naming the namespace", err)
	}
	a.SetTxQueueLen("na", 12345)
	if out := a.MustRun("cat", "/sys/class/net/na/tx_queue_len"); strings.TrimSpace(out) != "12345" {
		t.Errorf("tx_queue_len %q, want 12345", out)
	}
}
