package conformance

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
)

// scenario is one kernel-to-kernel MPTCP conversation that makes the kernel
// send a particular set of MPTCP options (RFC 8684 §3).
type scenario struct {
	name string
	v6   bool
	// capture is "any" (tcpdump -i any: Linux cooked SLL2) or "eth" (one
	// Ethernet capture per server interface, merged).
	capture   string
	checksums bool
	// noTimestamps turns TCP timestamps off in both namespaces: an IPv6
	// ADD_ADDR with port and HMAC (30 bytes) does not fit next to the
	// timestamp option, and Linux drops it (AddAddrTxDrop).
	noTimestamps bool
	// Bytes each side sends.
	clientSend, serverSend int
	// fastclose makes the client abort the connection while the server's
	// data sits unread in its receive queue (MP_FASTCLOSE, RFC 8684 §3.5).
	fastclose bool
	// linger0 makes the client close with SO_LINGER 0 right after the
	// handshake, the other way Linux aborts with MP_FASTCLOSE
	// (__mptcp_close in net/mptcp/protocol.c).
	linger0 bool
	// setup runs before the connection: endpoints, extra addresses.
	setup func(t *testing.T, tp *topology)
	// during runs while the client keeps the connection open, after the
	// first half of its data.
	during func(t *testing.T, tp *topology)
	// moved lists the MPTcpExt counters (without the prefix) that must
	// move in the client and in the server namespace.
	movedClient, movedServer []string
	want                     captureWant
}

// captureWant is what a scenario's capture must show.
type captureWant struct {
	conns    int // MPTCP connections
	subflows int // subflows over all connections
	// features must each be seen at least once (see features()).
	features []string
}

const port = 10000 // the server's listening port

// signalPort is the port announced with ADD_ADDR by the "port" endpoints.
const signalPort = 10100

var scenarios = []scenario{
	{
		name:        "basic",
		capture:     "eth",
		clientSend:  24000,
		serverSend:  16000,
		movedClient: []string{"MPCapableSYNTX", "MPCapableSYNACKRX"},
		movedServer: []string{"MPCapableSYNRX", "MPCapableACKRX"},
		want: captureWant{conns: 1, subflows: 1, features: []string{
			"MP_CAPABLE SYN", "MP_CAPABLE SYN/ACK", "MP_CAPABLE ACK", "MP_CAPABLE ACK+data",
			"DSS Data ACK", "DSS mapping", "DSS DATA_FIN",
			"MP_CAPABLE IDSN",
		}},
	},
	{
		name:       "join",
		capture:    "any",
		clientSend: 24000,
		serverSend: 16000,
		setup: func(t *testing.T, tp *topology) {
			tp.client.AddEndpoint(netns.Endpoint{Addr: clientV4Link2, Dev: "c2", Flags: []string{"subflow"}})
		},
		during: func(t *testing.T, tp *topology) {
			tp.server.WaitCounter(t, "MPJoinAckRx", 1, 10*time.Second)
		},
		movedClient: []string{"MPJoinSynTx", "MPJoinSynAckRx"},
		movedServer: []string{"MPJoinSynRx", "MPJoinAckRx"},
		want: captureWant{conns: 1, subflows: 2, features: []string{
			"MP_JOIN SYN", "MP_JOIN SYN/ACK", "MP_JOIN ACK",
			"verified token", "verified join SYN/ACK HMAC", "verified join ACK HMAC",
		}},
	},
	{
		name:       "signal-v4",
		capture:    "eth",
		clientSend: 24000,
		serverSend: 16000,
		setup: func(t *testing.T, tp *topology) {
			tp.server.AddAddr("s2", "10.210.2.3/24")
			tp.server.AddEndpoint(netns.Endpoint{Addr: serverV4Link2, Dev: "s2", Flags: []string{"signal"}})
			tp.server.AddEndpoint(netns.Endpoint{Addr: "10.210.2.3", Port: signalPort, Dev: "s2", Flags: []string{"signal"}})
		},
		during: func(t *testing.T, tp *topology) {
			// A join to an announced port is counted apart.
			tp.server.WaitCounter(t, "MPJoinAckRx", 1, 10*time.Second)
			tp.server.WaitCounter(t, "MPJoinPortAckRx", 1, 10*time.Second)
		},
		movedClient: []string{"AddAddr", "EchoAddTx", "PortAdd", "MPJoinSynTx", "MPJoinSynAckRx"},
		movedServer: []string{"AddAddrTx", "EchoAdd", "MPJoinSynRx", "MPJoinPortSynRx", "MPJoinAckRx"},
		want: captureWant{conns: 1, subflows: 3, features: []string{
			"ADD_ADDR v4", "ADD_ADDR v4 port", "ADD_ADDR echo",
			"verified ADD_ADDR HMAC", "verified join ACK HMAC",
		}},
	},
	{
		name:         "signal-v6",
		v6:           true,
		noTimestamps: true,
		capture:      "any",
		clientSend:   24000,
		serverSend:   16000,
		setup: func(t *testing.T, tp *topology) {
			tp.server.AddAddr("s2", "fd10:210:2::3/64")
			tp.server.AddEndpoint(netns.Endpoint{Addr: serverV6Link2, Dev: "s2", Flags: []string{"signal"}})
			tp.server.AddEndpoint(netns.Endpoint{Addr: "fd10:210:2::3", Port: signalPort, Dev: "s2", Flags: []string{"signal"}})
		},
		during: func(t *testing.T, tp *topology) {
			// A join to an announced port is counted apart.
			tp.server.WaitCounter(t, "MPJoinAckRx", 1, 10*time.Second)
			tp.server.WaitCounter(t, "MPJoinPortAckRx", 1, 10*time.Second)
		},
		movedClient: []string{"AddAddr", "EchoAddTx", "PortAdd", "MPJoinSynTx", "MPJoinSynAckRx"},
		movedServer: []string{"AddAddrTx", "EchoAdd", "MPJoinSynRx", "MPJoinPortSynRx", "MPJoinAckRx"},
		want: captureWant{conns: 1, subflows: 3, features: []string{
			"ADD_ADDR v6", "ADD_ADDR v6 port", "ADD_ADDR echo",
			"verified ADD_ADDR HMAC", "verified join ACK HMAC",
		}},
	},
	{
		name:       "remove",
		capture:    "eth",
		clientSend: 24000,
		serverSend: 16000,
		setup: func(t *testing.T, tp *topology) {
			tp.server.AddEndpoint(netns.Endpoint{Addr: serverV4Link2, Dev: "s2", Flags: []string{"signal"}})
		},
		during: func(t *testing.T, tp *topology) {
			tp.server.WaitCounter(t, "MPJoinAckRx", 1, 10*time.Second)
			id, err := tp.server.EndpointID(serverV4Link2)
			if err != nil {
				t.Fatal(err)
			}
			tp.server.DelEndpoint(id)
			tp.client.WaitCounter(t, "RmAddr", 1, 10*time.Second)
		},
		movedClient: []string{"AddAddr", "RmAddr"},
		movedServer: []string{"AddAddrTx", "RmAddrTx", "RmSubflow", "MPJoinAckRx"},
		want: captureWant{conns: 1, subflows: 2, features: []string{
			"ADD_ADDR v4", "REMOVE_ADDR", "MP_JOIN ACK",
		}},
	},
	{
		name:       "prio",
		capture:    "eth",
		clientSend: 24000,
		serverSend: 16000,
		setup: func(t *testing.T, tp *topology) {
			tp.client.AddEndpoint(netns.Endpoint{Addr: clientV4Link2, Dev: "c2", Flags: []string{"subflow"}})
		},
		during: func(t *testing.T, tp *topology) {
			tp.server.WaitCounter(t, "MPJoinAckRx", 1, 10*time.Second)
			id, err := tp.client.EndpointID(clientV4Link2)
			if err != nil {
				t.Fatal(err)
			}
			tp.client.ChangeEndpoint(id, "backup")
			tp.server.WaitCounter(t, "MPPrioRx", 1, 10*time.Second)
		},
		movedClient: []string{"MPPrioTx", "MPJoinSynAckRx"},
		movedServer: []string{"MPPrioRx", "MPJoinAckRx"},
		want: captureWant{conns: 1, subflows: 2, features: []string{
			"MP_PRIO backup", "MP_JOIN ACK",
		}},
	},
	{
		name:        "checksum",
		capture:     "eth",
		checksums:   true,
		clientSend:  24000,
		serverSend:  16000,
		movedClient: []string{"MPCapableSYNTX", "MPCapableSYNACKRX"},
		movedServer: []string{"MPCapableSYNRX", "MPCapableACKRX"},
		want: captureWant{conns: 1, subflows: 1, features: []string{
			"MP_CAPABLE A flag", "MP_CAPABLE ACK+data checksum", "DSS checksum",
			"verified DSS checksum", "DSS DATA_FIN",
		}},
	},
	{
		name:        "fastclose",
		capture:     "eth",
		clientSend:  10000,
		serverSend:  16000,
		fastclose:   true,
		movedClient: []string{"MPFastcloseTx", "MPRstTx"},
		movedServer: []string{"MPFastcloseRx", "MPRstRx"},
		want: captureWant{conns: 1, subflows: 1, features: []string{
			"MP_FASTCLOSE", "MP_TCPRST", "DSS mapping", "verified MP_FASTCLOSE key",
		}},
	},
	{
		name:        "fastclose-linger0",
		capture:     "eth",
		linger0:     true,
		movedClient: []string{"MPFastcloseTx", "MPRstTx"},
		movedServer: []string{"MPFastcloseRx", "MPRstRx"},
		want: captureWant{conns: 1, subflows: 1, features: []string{
			"MP_FASTCLOSE", "MP_TCPRST", "verified MP_FASTCLOSE key",
		}},
	},
}

// TestKernelScenarios runs every scenario between two kernel MPTCP peers in
// network namespaces, checks data integrity and the kernel's counters, and
// runs the capture checks on what tcpdump saw. With -update it rewrites the
// fixtures in pcaps/testdata/kernel.
func TestKernelScenarios(t *testing.T) {
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "tcpdump", "nstat", "ethtool", "mergecap", "go")
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			path := runScenario(t, sc)
			if keep := os.Getenv("MPTUND_KEEP_CAPTURES"); keep != "" {
				keepCapture(t, path, filepath.Join(keep, sc.name+".pcap"))
			}
			checkCapture(t, path, sc.want)
			if updateFixtures() && !t.Failed() {
				saveFixture(t, path, sc.name)
			}
		})
	}
}

// runScenario runs sc and returns the path of its capture.
func runScenario(t *testing.T, sc scenario) string {
	tp := newTopology(t, sc.checksums)
	if sc.noTimestamps {
		tp.client.Sysctl("net.ipv4.tcp_timestamps", "0")
		tp.server.Sysctl("net.ipv4.tcp_timestamps", "0")
	}
	if sc.setup != nil {
		sc.setup(t, tp)
	}
	dir := t.TempDir()
	// tcpdump drops its privileges before writing.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// tcpdump's snap length: whole frames (offloads are off, MTU 1500),
	// and small enough that the ring buffer --immediate-mode uses, one
	// snap-length slot per packet, holds a burst: with netns.Capture's
	// "-s 0" (262144-byte slots in a 2 MiB buffer) tcpdump drops most
	// of a burst. GNU getopt lets these options follow the filter.
	filter := []string{"-s", "1600", "-B", "8192", "tcp"}
	var stops []func()
	var files []string
	if sc.capture == "any" {
		f := filepath.Join(dir, "any.pcap")
		stops = append(stops, tp.server.Capture(t, "any", f, filter...))
		files = append(files, f)
	} else {
		for _, ifc := range []string{"s1", "s2"} {
			f := filepath.Join(dir, ifc+".pcap")
			stops = append(stops, tp.server.Capture(t, ifc, f, filter...))
			files = append(files, f)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, ns := range []*netns.NS{tp.client, tp.server} {
				out, _ := ns.Run("sh", "-c", "nstat -az | grep MPTcp | grep -v ' 0 '; ip mptcp endpoint; ss -Mtni")
				t.Logf("%s state:\n%s", ns.Name, out)
			}
		}
	})
	beforeC, err := tp.client.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	beforeS, err := tp.server.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}

	// The server listens on the wildcard address: Linux hands an MP_JOIN
	// SYN to the listening socket of the address and port it is sent to
	// (RFC 8684 §3.2), so joins to the server's second address need one.
	listen := ":" + strconv.Itoa(port)
	connect := net.JoinHostPort(serverV4Link1, strconv.Itoa(port))
	if sc.v6 {
		connect = net.JoinHostPort(serverV6Link1, strconv.Itoa(port))
	}
	// The server answers only after reading all of the client's data, so
	// that the client's first data goes out before any server data: it
	// then carries MP_CAPABLE (the ACK+data form, RFC 8684 §3.1).
	srvArgs := []string{"server", "-listen", listen, "-send", strconv.Itoa(sc.serverSend),
		"-expect", strconv.Itoa(sc.clientSend)}
	cliArgs := []string{"client", "-connect", connect, "-send", strconv.Itoa(sc.clientSend), "-pause"}
	switch {
	case sc.fastclose:
		cliArgs = append(cliArgs, "-unread", strconv.Itoa(sc.serverSend))
	case sc.linger0:
		cliArgs = append(cliArgs, "-linger0")
	}
	srv := startPeer(t, tp.server, "server", srvArgs...)
	srv.wait("listening", 10*time.Second)
	cli := startPeer(t, tp.client, "client", cliArgs...)
	if e := cli.wait("connected", 10*time.Second); !e.Multipath {
		t.Fatalf("client connection fell back to TCP: %+v", e)
	}
	if e := srv.wait("connected", 10*time.Second); !e.Multipath {
		t.Fatalf("server connection fell back to TCP: %+v", e)
	}
	cli.wait("paused", 10*time.Second)
	if sc.during != nil {
		sc.during(t, tp)
	}
	cli.resume()
	cdone := cli.wait("done", 30*time.Second)
	sdone := srv.wait("done", 30*time.Second)
	checkTransfer(t, sc, cdone, sdone)

	// Let the last ACKs and the counters settle, then stop capturing.
	time.Sleep(300 * time.Millisecond)
	for _, stop := range stops {
		stop()
	}
	afterC, err := tp.client.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	afterS, err := tp.server.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	checkCounters(t, "client", counterDelta(beforeC, afterC), sc.movedClient)
	checkCounters(t, "server", counterDelta(beforeS, afterS), sc.movedServer)

	if len(files) == 1 {
		return files[0]
	}
	merged := filepath.Join(dir, "merged.pcap")
	args := append([]string{"-F", "pcap", "-w", merged}, files...)
	if out, err := exec.Command("mergecap", args...).CombinedOutput(); err != nil {
		t.Fatalf("mergecap: %v: %s", err, out)
	}
	return merged
}

// checkTransfer compares what each peer sent with what the other received.
func checkTransfer(t *testing.T, sc scenario, cli, srv event) {
	t.Helper()
	if cli.Sent != int64(sc.clientSend) || srv.Sent != int64(sc.serverSend) {
		t.Errorf("sent: client %d (want %d), server %d (want %d); errors %q %q",
			cli.Sent, sc.clientSend, srv.Sent, sc.serverSend, cli.WriteErr, srv.WriteErr)
	}
	if srv.Recv != cli.Sent || srv.RecvSHA256 != cli.SentSHA256 {
		t.Errorf("server received %d bytes sha256 %s, client sent %d bytes sha256 %s (server error %q)",
			srv.Recv, srv.RecvSHA256, cli.Sent, cli.SentSHA256, srv.ReadErr)
	}
	if sc.fastclose || sc.linger0 {
		// The client aborted (unread data or SO_LINGER 0): the
		// server's read ends with the reset, the client read nothing.
		if srv.ReadErr == "" {
			t.Errorf("server read ended without error after the client's fast close")
		}
		if cli.Recv != 0 {
			t.Errorf("client read %d bytes, want 0", cli.Recv)
		}
		return
	}
	if cli.Recv != srv.Sent || cli.RecvSHA256 != srv.SentSHA256 {
		t.Errorf("client received %d bytes sha256 %s, server sent %d bytes sha256 %s (client error %q)",
			cli.Recv, cli.RecvSHA256, srv.Sent, srv.SentSHA256, cli.ReadErr)
	}
	if cli.ReadErr != "" || srv.ReadErr != "" || cli.WriteErr != "" || srv.WriteErr != "" {
		t.Errorf("I/O errors: client %q %q, server %q %q", cli.ReadErr, cli.WriteErr, srv.ReadErr, srv.WriteErr)
	}
}

// checkCounters asserts that every counter in moved went up and no error
// counter did.
func checkCounters(t *testing.T, side string, delta map[string]uint64, moved []string) {
	t.Helper()
	for _, name := range moved {
		full := "MPTcpExt" + name
		if _, ok := delta[full]; !ok {
			t.Errorf("%s: kernel has no counter %s", side, full)
			continue
		}
		if delta[full] == 0 {
			t.Errorf("%s: %s did not move", side, full)
		}
	}
	for _, name := range errorCounters {
		if d := delta["MPTcpExt"+name]; d != 0 {
			t.Errorf("%s: error counter MPTcpExt%s moved by %d", side, name, d)
		}
	}
	if testing.Verbose() {
		var s string
		for k, v := range delta {
			if v != 0 && v < 1<<32 {
				s += " " + k[len("MPTcpExt"):] + "=" + strconv.FormatUint(v, 10)
			}
		}
		t.Logf("%s counters:%s", side, s)
	}
}

// saveFixture copies the capture into pcaps/testdata/kernel.
func saveFixture(t *testing.T, path, name string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 100<<10 {
		t.Errorf("capture is %d bytes, over the 100 KiB fixture budget: shorten the transfer", len(b))
		return
	}
	dst := filepath.Join(fixtureDir, name+".pcap")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", dst, len(b))
}

// keepCapture copies a capture to dst for debugging
// (MPTUND_KEEP_CAPTURES=DIR).
func keepCapture(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Errorf("keeping capture: %v", err)
	}
}
