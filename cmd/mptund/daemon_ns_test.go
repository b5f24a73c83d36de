package main

// Namespace tests of "mptund client" and "mptund proxy". Each builds
//
//	cli: kernel-TCP apps, mptund client   c1 10.91.1.2 ==A== r1 10.91.1.1
//	                                      c2 10.91.2.2 ==B== r2 10.91.2.1   prx: mptund proxy (TUN mpp0, engine 10.93.0.2)
//	                                                          b0 10.92.0.1 --- b1 10.92.0.2   srv: legacy kernel-TCP servers
//
// and runs the binary in it (ip netns exec); apps and servers are kernel
// sockets opened in their namespaces. Every test stops the daemons with
// SIGTERM at the end and checks that they exit cleanly and leave no rule,
// route or nftables table behind.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/convert"
	"github.com/mptund/mptund/internal/netns"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// mptundBinary builds the command once per test process.
func mptundBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = errors.New("needs the go tool to build mptund")
			return
		}
		if binDir, binErr = os.MkdirTemp("", "mptund-test-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "mptund")
		args := []string{"build", "-o", binPath}
		if os.Getenv("MPTUND_TEST_RACE") != "" {
			// The daemons' own data races, reported on their stderr
			// (dtopo.stop fails the test on one).
			args = append(args, "-race")
		}
		if out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Skip("skipping:", binErr)
	}
	return binPath
}

// dtopo is the three-namespace topology.
type dtopo struct {
	t             *testing.T
	bin           string
	cli, prx, srv *netns.NS
	dir           string
	procs         []*proc
}

const (
	dProxy   = "10.93.0.2"
	dProxy2  = "10.94.0.2"
	dServer  = "10.92.0.2"
	dTimeout = 60 * time.Second
)

func newDTopo(t *testing.T) *dtopo {
	netns.Require(t)
	netns.RequireTools(t, "nft", "tc")
	d := &dtopo{t: t, bin: mptundBinary(t), dir: t.TempDir()}
	d.cli = netns.New(t, "mptdc")
	d.prx = netns.New(t, "mptdp")
	d.srv = netns.New(t, "mptds")
	netns.Veth(t, d.cli, "c1", "10.91.1.2/24", d.prx, "r1", "10.91.1.1/24")
	netns.Veth(t, d.cli, "c2", "10.91.2.2/24", d.prx, "r2", "10.91.2.1/24")
	netns.Veth(t, d.prx, "b0", "10.92.0.1/24", d.srv, "b1", "10.92.0.2/24")
	d.srv.MustRun("ip", "route", "add", "default", "via", "10.92.0.1")
	d.prx.Sysctl("net.ipv4.ip_forward", "1")
	// Kernel clients in cli reach the proxy's addresses directly.
	d.cli.MustRun("ip", "route", "add", "10.93.0.0/24", "via", "10.91.1.1")
	d.cli.MustRun("ip", "route", "add", "10.94.0.0/24", "via", "10.91.2.1")
	return d
}

// start runs a daemon in ns and waits until it is ready.
func (d *dtopo) start(ns *netns.NS, args ...string) *proc {
	d.t.Helper()
	p := startMptund(d.t, ns, d.bin, io.Discard, args...)
	p.waitLine(d.t, ": ready:", 20*time.Second)
	d.procs = append(d.procs, p)
	return p
}

// proxy starts "mptund proxy" on the TUN path mpp0 (10.93.0.2).
func (d *dtopo) proxy(args ...string) *proc {
	base := []string{"proxy", "-v", "--path", "mpp0,addr=" + dProxy + "/24,peer=10.93.0.1/24",
		"--status", d.dir + "/proxy.sock", "--state-dir", d.dir + "/proxy"}
	return d.start(d.prx, append(base, args...)...)
}

// client starts "mptund client" on the uplinks c1 (path A) and c2 (B).
func (d *dtopo) client(args ...string) *proc {
	return d.clientWith([]string{"--uplink", "c1,gw=10.91.1.1,tun=mpta", "--uplink", "c2,gw=10.91.2.1,tun=mptb"}, args...)
}

func (d *dtopo) clientWith(paths []string, args ...string) *proc {
	base := append([]string{"client", "-v", "--status", d.dir + "/client.sock", "--state-dir", d.dir + "/client"}, paths...)
	return d.start(d.cli, append(base, args...)...)
}

// stop ends a daemon with SIGTERM and checks a clean exit.
func (d *dtopo) stop(p *proc) {
	d.t.Helper()
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	if code := p.wait(d.t, 30*time.Second); code != exitOK {
		d.t.Errorf("exit %d; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
	}
	for _, l := range p.stderrLines() {
		if strings.Contains(l, "DATA RACE") {
			d.t.Errorf("data race in the daemon:\n%s", strings.Join(p.stderrLines(), "\n"))
			break
		}
	}
	for i, q := range d.procs {
		if q == p {
			d.procs = append(d.procs[:i], d.procs[i+1:]...)
			break
		}
	}
}

// stopAll stops what still runs and checks that no host change is left.
// Tests defer it (it must run before the cleanups that kill whatever
// still runs in the namespaces).
func (d *dtopo) stopAll() {
	for len(d.procs) > 0 {
		d.stop(d.procs[len(d.procs)-1])
	}
	for _, ns := range []*netns.NS{d.cli, d.prx} {
		out, _ := ns.Run("sh", "-c", "ip rule; ip route show table all | grep -E 'table 7[0-9]{3}'; nft list tables")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "lookup 71") || strings.Contains(line, "table 71") || strings.Contains(line, "mptund_") {
				d.t.Errorf("%s: left behind: %s", ns.Name, line)
			}
		}
		out, _ = ns.Run("ip", "-o", "link")
		for _, tun := range []string{"mpta", "mptb", "mptapp0", "mpp0", "mpp1", "mptp0", "mptp1", "mptc0", "mptc1"} {
			if strings.Contains(out, ": "+tun+":") {
				d.t.Errorf("%s: TUN %s left behind", ns.Name, tun)
			}
		}
	}
	if files, _ := filepath.Glob(d.dir + "/*/*.json"); len(files) > 0 {
		d.t.Errorf("state files left: %v", files)
	}
}

// status reads a daemon's status.
func (d *dtopo) status(role string) *Status {
	d.t.Helper()
	st, err := readStatus(d.dir + "/" + role + ".sock")
	if err != nil {
		d.t.Fatal(err)
	}
	return st
}

// listen opens a kernel TCP (or MPTCP) listener in ns and serves every
// connection with handle.
func listenIn(t *testing.T, ns *netns.NS, addr string, mptcp bool, handle func(*net.TCPConn)) net.Listener {
	t.Helper()
	var ln net.Listener
	kernelDo(t, ns, func() error {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(mptcp)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c.(*net.TCPConn))
		}
	}()
	return ln
}

// dialIn opens a kernel TCP (or MPTCP) connection from ns.
func dialIn(ns *netns.NS, addr string, mptcp bool) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 15 * time.Second}
		d.SetMultipathTCP(mptcp)
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// halfCloseServer reads until the client's FIN, then answers with reply
// and closes; it sends what it read on got.
func halfCloseServer(reply []byte, got chan<- []byte) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(dTimeout))
		in, err := io.ReadAll(c)
		if err != nil {
			got <- nil
			return
		}
		got <- in
		c.Write(reply)
	}
}

func shaOf(b []byte) [32]byte { return sha256.Sum256(b) }

// TestClientProxyNS: unmodified kernel-TCP apps through client + proxy
// over two paths to legacy kernel-TCP servers: data both ways (SHA-256)
// with half-close, resets carried both ways, refusals, a path cut during
// a transfer, and 1000 concurrent connections.
func TestClientProxyNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	cfg := filepath.Join(d.dir, "client.toml")
	// The client reads part of its configuration from a file; the path
	// rates (50 Mbit/s each way) come from it.
	os.WriteFile(cfg, []byte(`
[client]
mode = "proxy"
proxy = "10.93.0.2:5124"
routes = ["10.92.0.0/16"]

[[path]]
uplink = "c1"
gateway = "10.91.1.1"
tun = "mpta"
rate = "50mbit"

[[path]]
uplink = "c2"
gateway = "10.91.2.1"
tun = "mptb"
rate = "50mbit"
`), 0o644)
	pcfg := filepath.Join(d.dir, "proxy.toml")
	os.WriteFile(pcfg, []byte("[engine]\nbacklog = 2048\n\n[proxy]\nallow = [\"10.92.0.0/24\"]\n"), 0o644)
	d.proxy("--config", pcfg)
	d.clientWith(nil, "--config", cfg)

	t.Run("sha-half-close", func(t *testing.T) {
		up, down := randomBytes(8<<20), randomBytes(8<<20)
		got := make(chan []byte, 1)
		ln := listenIn(t, d.srv, dServer+":8001", false, halfCloseServer(down, got))
		defer ln.Close()
		c, err := dialIn(d.cli, dServer+":8001", false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		in, err := exchange(c, up, dTimeout)
		if err != nil {
			t.Fatalf("app: %v", err)
		}
		if shaOf(<-got) != shaOf(up) {
			t.Errorf("server's SHA-256 of the upload differs")
		}
		if shaOf(in) != shaOf(down) {
			t.Errorf("app read %d bytes, want the server's %d", len(in), len(down))
		}
		st := d.status("client")
		if st.MPTCP["MPJoinSynAckRx"] == 0 || st.MPTCP["MPCapableSYNACKRX"] == 0 {
			t.Errorf("client engine counters: no MPTCP with a join: %v", st.MPTCP)
		}
		// The Convert header rode in the SYN (RFC 8803 §4).
		if ps := d.status("proxy"); ps.App["syn_data"] == 0 {
			t.Errorf("proxy: no connection brought its Convert header in the SYN: %v", ps.App)
		}
	})

	t.Run("resets", func(t *testing.T) {
		// The server resets: the app sees ECONNRESET.
		listenIn(t, d.srv, dServer+":8002", false, func(c *net.TCPConn) {
			io.ReadFull(c, make([]byte, 1000))
			c.SetLinger(0)
			c.Close()
		})
		c, err := dialIn(d.cli, dServer+":8002", false)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(make([]byte, 1000))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("app read after the server's reset: %v, want ECONNRESET", err)
		}
		c.Close()
		// The app resets: the server sees ECONNRESET.
		serr := make(chan error, 1)
		listenIn(t, d.srv, dServer+":8003", false, func(c *net.TCPConn) {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, c)
			serr <- err
		})
		c, err = dialIn(d.cli, dServer+":8003", false)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(make([]byte, 1000))
		time.Sleep(200 * time.Millisecond)
		c.SetLinger(0)
		c.Close()
		if err := <-serr; !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("server read after the app's reset: %v, want ECONNRESET", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		before := d.status("proxy").App
		// Nobody listens: the proxy's connection is refused, so is the app's.
		if _, err := dialIn(d.cli, dServer+":8999", false); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("closed port: %v, want ECONNREFUSED", err)
		}
		// Outside the proxy's allow-list: refused too.
		if _, err := dialIn(d.cli, "10.92.7.7:80", false); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("not allowed: %v, want ECONNREFUSED", err)
		}
		after := d.status("proxy").App
		for _, k := range []string{"refused_connection_reset", "refused_not_authorized"} {
			if after[k] != before[k]+1 {
				t.Errorf("proxy %s: %d -> %d, want one more", k, before[k], after[k])
			}
		}
	})

	t.Run("path-down", func(t *testing.T) {
		down := randomBytes(24 << 20)
		listenIn(t, d.srv, dServer+":8004", false, func(c *net.TCPConn) {
			defer c.Close()
			c.Write(down)
			c.CloseWrite()
			io.Copy(io.Discard, c)
		})
		c, err := dialIn(d.cli, dServer+":8004", false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Cut path B after half a second for two seconds.
		go func() {
			time.Sleep(500 * time.Millisecond)
			d.prx.Nft("table inet cut {\n chain c {\n  type filter hook forward priority -10; policy accept;\n  iifname \"r2\" drop\n  oifname \"r2\" drop\n }\n}\n")
			time.Sleep(2 * time.Second)
			d.prx.MustRun("nft", "delete", "table", "inet", "cut")
		}()
		c.SetDeadline(time.Now().Add(dTimeout))
		in, err := io.ReadAll(c)
		if err != nil || shaOf(in) != shaOf(down) {
			t.Fatalf("app read %d of %d bytes (%v), SHA-256 match %v", len(in), len(down), err, shaOf(in) == shaOf(down))
		}
		// The app has not closed: the flow is still there to look at.
		st := d.status("client")
		if len(st.Flows) != 1 {
			t.Fatalf("client status: %d flows", len(st.Flows))
		}
		per := map[string]uint64{}
		for _, s := range st.Flows[0].Subflows {
			per[s.Path] += s.BytesReceived
		}
		if per["mpta"] < 4<<20 || per["mptb"] < 1<<20 {
			t.Errorf("bytes per path %v: both paths should have carried data", per)
		}
		t.Logf("bytes per path with B cut for 2 s: %v", per)
	})

	t.Run("1000-concurrent", func(t *testing.T) {
		const n = 1000
		var served atomic.Int64
		release := make(chan struct{})
		listenIn(t, d.srv, dServer+":8005", false, func(c *net.TCPConn) {
			defer c.Close()
			b := make([]byte, 4096)
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			served.Add(1)
			<-release
			c.Write(b)
		})
		conns := make([]*net.TCPConn, n)
		var wg sync.WaitGroup
		var fails atomic.Int64
		sem := make(chan struct{}, 100)
		start := time.Now()
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dialIn(d.cli, dServer+":8005", false)
				if err != nil {
					fails.Add(1)
					return
				}
				conns[i] = c
				b := bytes.Repeat([]byte{byte(i)}, 4096)
				c.Write(b)
			}()
		}
		wg.Wait()
		for served.Load()+fails.Load() < n && time.Since(start) < dTimeout {
			time.Sleep(50 * time.Millisecond)
		}
		if st := d.status("proxy"); st.Totals.Active != n {
			t.Errorf("proxy relays %d connections at once, want %d", st.Totals.Active, n)
		}
		t.Logf("%d connections open through client and proxy in %v", served.Load(), time.Since(start).Round(time.Millisecond))
		close(release)
		for i, c := range conns {
			if c == nil {
				continue
			}
			c.SetDeadline(time.Now().Add(dTimeout))
			b := make([]byte, 4096)
			if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) || b[4095] != byte(i) {
				fails.Add(1)
			}
			c.Close()
		}
		if f := fails.Load(); f > 0 {
			t.Errorf("%d of %d connections failed", f, n)
		}
	})
}

// TestConvertHostileNS: malformed and hostile Convert messages sent to the
// proxy by a kernel client are each answered with the RFC's Error TLV
// (and the connection closed), a flood of them changes nothing, and the
// proxy still serves a valid request afterwards.
func TestConvertHostileNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.proxy("--allow", "10.92.0.0/24:8000-8099")
	listenIn(t, d.srv, dServer+":8010", false, func(c *net.TCPConn) {
		defer c.Close()
		io.Copy(c, c)
	})
	connect := func(port uint16, opts []byte) []byte {
		m := convert.Message{TLVs: []convert.TLV{&convert.Connect{Port: port, Addr: netip.MustParseAddr(dServer), Options: opts}}}
		return m.Append(nil)
	}
	hdr := func(total byte) []byte { return []byte{1, total, 0x22, 0x63} }
	cases := []struct {
		name  string
		send  []byte
		half  bool // half-close after sending
		want  convert.ErrorCode
		value []byte
	}{
		{"bad magic", []byte{1, 1, 0x88, 0x03}, false, convert.ErrorMalformedMessage, nil},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, convert.ErrorMalformedMessage, nil},
		{"version 2", []byte{2, 1, 0x22, 0x63}, false, convert.ErrorUnsupportedVersion, []byte{1}},
		{"total length 0", []byte{1, 0, 0x22, 0x63}, false, convert.ErrorMalformedMessage, nil},
		{"TLV length 0", append(hdr(2), 10, 0, 0, 0), false, convert.ErrorMalformedMessage, nil},
		{"truncated TLV: Connect of 5 words in a 3-word message", append(hdr(3), connect(8010, nil)[4:12]...), false, convert.ErrorMalformedMessage, nil},
		{"Connect of 4 words", append(hdr(5), append([]byte{10, 4}, connect(8010, nil)[6:20]...)...), false, convert.ErrorMalformedMessage, nil},
		{"length past the payload, then FIN", append(hdr(255), 10, 5, 0, 80), true, convert.ErrorMalformedMessage, nil},
		{"unknown TLV type", append(connect(8010, nil)[:0:0], append(hdr(7), append(connect(8010, nil)[4:], 99, 1, 0, 0)...)...), false, convert.ErrorUnsupportedMessage, []byte{99}},
		{"Error TLV from a client", append(hdr(2), 30, 1, 1, 0), false, convert.ErrorUnsupportedMessage, []byte{30}},
		{"MPTCP option in Connect", connect(8010, []byte{30, 4, 0, 0}), false, convert.ErrorUnsupportedTCPOption, []byte{30}},
		{"two Connect TLVs", append(hdr(11), append(connect(8010, nil)[4:], connect(8011, nil)[4:]...)...), false, convert.ErrorMalformedMessage, nil},
		{"not allowed: port", connect(9000, nil), false, convert.ErrorNotAuthorized, nil},
		{"closed port", connect(8099, nil), false, convert.ErrorConnectionReset, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialIn(d.cli, dProxy+":5124", false)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			c.Write(tc.send)
			if tc.half {
				c.CloseWrite()
			}
			m, _, err := convert.ReadMessage(c, nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			e := m.Err()
			if e == nil || e.Code != tc.want || !bytes.Equal(e.Value, tc.value) {
				t.Fatalf("answer %#v, want error %v %v", m.TLVs, tc.want, tc.value)
			}
			if !tc.half {
				c.CloseWrite()
			}
			if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
				t.Errorf("after the answer: %d bytes, %v; want the proxy's FIN", len(rest), err)
			}
		})
	}
	t.Run("info", func(t *testing.T) {
		c, err := dialIn(d.cli, dProxy+":5124", false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append(hdr(2), 1, 1, 0, 0))
		m, _, err := convert.ReadMessage(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := convert.ParseReply(m)
		if err != nil || rep.Supported == nil || !bytes.Contains(rep.Supported.Kinds, []byte{30}) {
			t.Errorf("answer to Info: %#v, %v", m.TLVs, err)
		}
	})
	t.Run("flood", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialIn(d.cli, dProxy+":5124", false)
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(15 * time.Second))
				junk := randomBytes(2 + i%700)
				junk[0], junk[1] = 1, byte(i)
				c.Write(junk)
				c.CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
		wg.Wait()
	})
	t.Run("still-serving", func(t *testing.T) {
		// A valid request, from a kernel MPTCP socket, after all that.
		c, err := dialIn(d.cli, dProxy+":5124", true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write(connect(8010, []byte{2, 4, 5, 0xb4}))
		m, _, err := convert.ReadMessage(c, nil)
		if err != nil || m.Err() != nil {
			t.Fatalf("answer %#v, %v", m.TLVs, err)
		}
		data := randomBytes(1 << 20)
		got, err := exchange(c, data, 20*time.Second)
		if err != nil || shaOf(got) != shaOf(data) {
			t.Errorf("echo through the proxy: %d bytes, %v", len(got), err)
		}
		st := d.status("proxy")
		if st.App["refused_malformed_message"] < 8 {
			t.Errorf("proxy counters: %v", st.App)
		}
	})
}

// TestDirectNS: "mptund client --mode direct" speaks MPTCP to a kernel
// MPTCP server itself (initial subflow on path A, a join on path B), and
// falls back to TCP against a plain server; the app sees no difference.
func TestDirectNS(t *testing.T) {
	netns.RequireMPTCP(t)
	d := newDTopo(t)
	defer d.stopAll()
	d.srv.MPTCPLimits(4, 0)
	d.client("--mode", "direct", "--route", "10.92.0.0/24")
	for _, kernelMPTCP := range []bool{true, false} {
		name := map[bool]string{true: "kernel-mptcp", false: "kernel-tcp-fallback"}[kernelMPTCP]
		t.Run(name, func(t *testing.T) {
			port := map[bool]string{true: ":8020", false: ":8021"}[kernelMPTCP]
			before, _ := d.srv.MPTCPCounters()
			up, down := randomBytes(4<<20), randomBytes(6<<20)
			got := make(chan []byte, 1)
			listenIn(t, d.srv, dServer+port, kernelMPTCP, halfCloseServer(down, got))
			c, err := dialIn(d.cli, dServer+port, false)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			in, err := exchange(c, up, dTimeout)
			if err != nil {
				t.Fatalf("app: %v", err)
			}
			if shaOf(<-got) != shaOf(up) || shaOf(in) != shaOf(down) {
				t.Errorf("data differs: app read %d of %d", len(in), len(down))
			}
			after, _ := d.srv.MPTCPCounters()
			capable := after["MPTcpExtMPCapableSYNRX"] - before["MPTcpExtMPCapableSYNRX"]
			joins := after["MPTcpExtMPJoinSynRx"] - before["MPTcpExtMPJoinSynRx"]
			if kernelMPTCP && (capable != 1 || joins != 1) {
				t.Errorf("kernel server: MP_CAPABLE SYNs %d, MP_JOIN SYNs %d; want 1 and 1", capable, joins)
			}
			if !kernelMPTCP && capable != 0 {
				t.Errorf("plain server counted %d MP_CAPABLE SYNs", capable)
			}
		})
	}
	st := d.status("client")
	if st.MPTCP["MPCapableFallbackSYNACK"] == 0 && st.MPTCP["MPCapableSYNACKRX"] < 1 {
		t.Errorf("client counters: %v", st.MPTCP)
	}
}

// TestProxyKernelClientsNS: kernel MPTCP clients (IPPROTO_MPTCP) reach a
// legacy server through "mptund proxy --backend"; the proxy announces its
// second address (ADD_ADDR) and the kernel joins it.
func TestProxyKernelClientsNS(t *testing.T) {
	netns.RequireMPTCP(t)
	d := newDTopo(t)
	defer d.stopAll()
	d.cli.MPTCPLimits(2, 1)
	d.proxy("--path", "mpp1,addr="+dProxy2+"/24,peer=10.94.0.1/24,signal", "--backend", dServer+":8030")
	up, down := randomBytes(8<<20), randomBytes(8<<20)
	got := make(chan []byte, 1)
	listenIn(t, d.srv, dServer+":8030", false, halfCloseServer(down, got))
	before, _ := d.cli.MPTCPCounters()
	c, err := dialIn(d.cli, dProxy+":5124", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, err := exchange(c, up, dTimeout)
	if err != nil {
		t.Fatalf("kernel client: %v", err)
	}
	if shaOf(<-got) != shaOf(up) || shaOf(in) != shaOf(down) {
		t.Errorf("data differs: client read %d of %d", len(in), len(down))
	}
	after, _ := d.cli.MPTCPCounters()
	for name, want := range map[string]uint64{"MPTcpExtAddAddr": 1, "MPTcpExtMPJoinSynAckRx": 1} {
		if v := after[name] - before[name]; v != want {
			t.Errorf("kernel client %s moved by %d, want %d", name, v, want)
		}
	}
	// Plain TCP clients are served too.
	c2, err := dialIn(d.cli, dProxy+":5124", false)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	in, err = exchange(c2, up, dTimeout)
	if err != nil || shaOf(in) != shaOf(down) || shaOf(<-got) != shaOf(up) {
		t.Errorf("plain TCP client: %d bytes, %v", len(in), err)
	}
}

// TestOptionStripNS: a middlebox on path A strips TCP option 30 (MPTCP)
// both ways, so the connection (its initial subflow runs there) falls back
// to TCP; the app never notices.
func TestOptionStripNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.prx.MustRun("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "r1", "-p", "tcp", "-j", "TCPOPTSTRIP", "--strip-options", "30")
	d.prx.MustRun("iptables", "-t", "mangle", "-A", "POSTROUTING", "-o", "r1", "-p", "tcp", "-j", "TCPOPTSTRIP", "--strip-options", "30")
	d.proxy("--allow", "10.92.0.0/24")
	d.client("--proxy", dProxy+":5124", "--route", "10.92.0.0/24")
	up, down := randomBytes(4<<20), randomBytes(4<<20)
	got := make(chan []byte, 1)
	hold := make(chan struct{})
	listenIn(t, d.srv, dServer+":8040", false, func(c *net.TCPConn) {
		defer c.Close()
		in, _ := io.ReadAll(c)
		got <- in
		<-hold
		c.Write(down)
	})
	c, err := dialIn(d.cli, dServer+":8040", false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(up)
	c.CloseWrite()
	if shaOf(<-got) != shaOf(up) {
		t.Fatal("upload differs")
	}
	st := d.status("client")
	if len(st.Flows) != 1 || st.Flows[0].MPTCP || st.Flows[0].Fallback == "" || len(st.Flows[0].Subflows) != 1 {
		t.Errorf("client flow: %+v, want a fallback to TCP with one subflow", st.Flows)
	} else {
		t.Logf("fallback: %s", st.Flows[0].Fallback)
	}
	close(hold)
	c.SetDeadline(time.Now().Add(dTimeout))
	in, err := io.ReadAll(c)
	if err != nil || shaOf(in) != shaOf(down) {
		t.Errorf("download: %d bytes, %v", len(in), err)
	}
}

// TestReloadNS: SIGHUP re-reads the config file: a path added there is
// opened and used by the next connection; limits and rates follow.
func TestReloadNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.proxy("--allow", "10.92.0.0/24")
	cfg := filepath.Join(d.dir, "reload.toml")
	write := func(paths int) {
		s := "[client]\nproxy = \"10.93.0.2:5124\"\nroutes = [\"10.92.0.0/24\"]\n[engine]\nsubflows = 3\n"
		for i, dev := range []string{"c1", "c2"}[:paths] {
			s += fmt.Sprintf("[[path]]\nuplink = %q\ngateway = \"10.91.%d.1\"\ntun = \"mpt%c\"\nrate = \"100mbit\"\n", dev, i+1, 'a'+i)
		}
		os.WriteFile(cfg, []byte(s), 0o644)
	}
	write(1)
	p := d.clientWith(nil, "--config", cfg)
	subflows := func() int {
		hold := make(chan struct{})
		ln := listenIn(t, d.srv, dServer+":8050", false, func(c *net.TCPConn) { <-hold; c.Close() })
		defer ln.Close()
		c, err := dialIn(d.cli, dServer+":8050", false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		defer close(hold)
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := d.status("client")
			n := 0
			for _, f := range st.Flows {
				for _, s := range f.Subflows {
					if s.Established {
						n++
					}
				}
			}
			if n >= 2 || time.Now().After(deadline) {
				return n
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := subflows(); n != 1 {
		t.Errorf("one path: %d subflows", n)
	}
	write(2)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLine(t, "reloaded: paths 2", 10*time.Second)
	if n := len(d.status("client").Paths); n != 2 {
		t.Errorf("after SIGHUP: %d paths", n)
	}
	if n := subflows(); n != 2 {
		t.Errorf("two paths: %d subflows", n)
	}
	write(1)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLine(t, "reloaded: paths 1", 10*time.Second)
}

// demoNamespaces lists the namespaces a demo of process pid made.
func demoNamespaces(pid int) []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var l []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "mptd-") && strings.Contains(f[0], fmt.Sprintf("-%d-", pid)) {
			l = append(l, f[0])
		}
	}
	return l
}

// TestDemoNS runs a short "mptund demo" to its end, and another one
// interrupted with SIGINT; neither leaves a namespace behind.
func TestDemoNS(t *testing.T) {
	netns.Require(t)
	netns.RequireTools(t, "nft", "tc")
	bin := mptundBinary(t)
	cmd := exec.Command(bin, "demo", "--duration", "6s", "--down-at", "2s", "--down-for", "2s", "--upload", "300000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"path B goes down", "path B is back", "goodput", "path A ", "path B ", "SHA-256 down:", "SHA-256 up:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(string(out), "  OK") != 2 {
		t.Errorf("demo did not verify both directions:\n%s", out)
	}
	if l := demoNamespaces(cmd.Process.Pid); len(l) > 0 {
		t.Errorf("namespaces left: %v", l)
	}
	// Interrupted mid-transfer.
	cmd = exec.Command(bin, "demo", "--duration", "20s")
	var buf syncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(buf.String(), "app goodput") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	if cmd.ProcessState.ExitCode() != exitFailed || !strings.Contains(buf.String(), "interrupted") {
		t.Errorf("interrupted demo: %v\n%s", err, buf.String())
	}
	if l := demoNamespaces(cmd.Process.Pid); len(l) > 0 {
		t.Errorf("namespaces left after SIGINT: %v", l)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCaptureModesNS: --default-route captures TCP to anywhere but the
// host's own subnets; --fwmark captures only marked connections (here
// marked by destination port with nftables, as one would by cgroup or
// user); an uplink that goes down and comes back gets its route back.
func TestCaptureModesNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.proxy("--allow", "10.92.0.0/24", "--allow", "10.91.0.0/16")
	echo := func(c *net.TCPConn) { defer c.Close(); io.Copy(c, c) }
	listenIn(t, d.srv, dServer+":8060", false, echo)
	listenIn(t, d.prx, "10.91.1.1:8061", false, echo)
	ping := func(addr string) error {
		c, err := dialIn(d.cli, addr, false)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := exchange(c, []byte("ping"), 10*time.Second)
		if err == nil && string(got) != "ping" {
			err = fmt.Errorf("echo %q", got)
		}
		return err
	}
	flows := func() uint64 { return d.status("client").Totals.Flows }

	t.Run("default-route", func(t *testing.T) {
		p := d.client("--proxy", dProxy+":5124", "--default-route")
		defer d.stop(p)
		n := flows()
		if err := ping(dServer + ":8060"); err != nil || flows() != n+1 {
			t.Errorf("remote server: %v, flows %d -> %d (want captured)", err, n, flows())
		}
		if err := ping("10.91.1.1:8061"); err != nil || flows() != n+1 {
			t.Errorf("own subnet: %v, flows %d (want direct)", err, flows())
		}
	})

	t.Run("fwmark", func(t *testing.T) {
		d.cli.MustRun("ip", "route", "add", "10.92.0.0/24", "via", "10.91.1.1")
		defer d.cli.MustRun("ip", "route", "del", "10.92.0.0/24", "via", "10.91.1.1")
		if err := d.cli.Nft("table inet mptmark {\n chain out {\n  type route hook output priority mangle; policy accept;\n  ip daddr 10.92.0.2 tcp dport 8060 meta mark set 0x10\n }\n}\n"); err != nil {
			t.Fatal(err)
		}
		defer d.cli.MustRun("nft", "delete", "table", "inet", "mptmark")
		listenIn(t, d.srv, dServer+":8064", false, echo)
		p := d.client("--proxy", dProxy+":5124", "--fwmark", "0x10")
		defer d.stop(p)
		n := flows()
		if err := ping(dServer + ":8060"); err != nil || flows() != n+1 {
			t.Errorf("marked: %v, flows %d -> %d (want captured)", err, n, flows())
		}
		if err := ping(dServer + ":8064"); err != nil || flows() != n+1 {
			t.Errorf("unmarked: %v, flows %d (want direct)", err, flows())
		}
	})

	t.Run("uplink-down-up", func(t *testing.T) {
		p := d.client("--proxy", dProxy+":5124", "--route", "10.92.0.0/24")
		defer d.stop(p)
		d.cli.MustRun("ip", "link", "set", "c2", "down")
		if out := d.cli.MustRun("ip", "route", "show", "table", "7102"); strings.Contains(out, "default via") {
			t.Logf("route kept while down: %s", out)
		}
		d.cli.MustRun("ip", "link", "set", "c2", "up")
		deadline := time.Now().Add(3*refreshInterval + time.Second)
		for !strings.Contains(d.cli.MustRun("ip", "route", "show", "table", "7102"), "default via 10.91.2.1 dev c2") {
			if time.Now().After(deadline) {
				t.Fatalf("path B's route not restored: %s", d.cli.MustRun("ip", "route", "show", "table", "7102"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := ping(dServer + ":8060"); err != nil {
			t.Error(err)
		}
	})
}

// TestDrainNS: SIGTERM lets an open connection finish (within
// drain_timeout) while new ones are refused, then the client exits
// cleanly; one that outlasts drain_timeout is reset.
func TestDrainNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.proxy("--allow", "10.92.0.0/24")
	cfg := filepath.Join(d.dir, "drain.toml")
	os.WriteFile(cfg, []byte("[engine]\ndrain_timeout = \"3s\"\n"), 0o644)
	p := d.client("--config", cfg, "--proxy", dProxy+":5124", "--route", "10.92.0.0/24")
	data := randomBytes(1 << 20)
	// Slow server: 1 MiB over about 1.5 s; a second one that never ends.
	listenIn(t, d.srv, dServer+":8070", false, func(c *net.TCPConn) {
		defer c.Close()
		for i := 0; i < len(data); i += 64 << 10 {
			c.Write(data[i : i+64<<10])
			time.Sleep(90 * time.Millisecond)
		}
	})
	listenIn(t, d.srv, dServer+":8071", false, func(c *net.TCPConn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	slow, err := dialIn(d.cli, dServer+":8070", false)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	endless, err := dialIn(d.cli, dServer+":8071", false)
	if err != nil {
		t.Fatal(err)
	}
	defer endless.Close()
	time.Sleep(200 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "stopping: 2 connections open", 5*time.Second)
	if _, err := dialIn(d.cli, dServer+":8070", false); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("new connection while draining: %v, want ECONNREFUSED", err)
	}
	slow.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(slow)
	if err != nil || shaOf(got) != shaOf(data) {
		t.Errorf("draining connection: %d of %d bytes, %v", len(got), len(data), err)
	}
	slow.Close() // both directions done: this one is over
	endless.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := endless.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection outlasting the drain: %v, want ECONNRESET", err)
	}
	p.waitLine(t, "resetting 1 connections left", 5*time.Second)
	p.wait(t, 15*time.Second) // exits on its own; d.stop checks the status
	d.stop(p)
}

// TestThrottleNS: the proxy limits each subflow on its path
// (subflow-rate): a download through client and proxy runs on both
// subflows, each within its limit, and so at about twice one limit.
func TestThrottleNS(t *testing.T) {
	d := newDTopo(t)
	defer d.stopAll()
	d.procs = append(d.procs, startMptund(t, d.prx, d.bin, io.Discard, "proxy", "--path",
		"mpp0,addr="+dProxy+"/24,peer=10.93.0.1/24,subflow-rate=16mbit", "--allow", "10.92.0.0/24",
		"--status", d.dir+"/proxy.sock", "--state-dir", d.dir+"/proxy"))
	d.procs[len(d.procs)-1].waitLine(t, ": ready:", 20*time.Second)
	d.client("--proxy", dProxy+":5124", "--route", "10.92.0.0/24")
	down := randomBytes(8 << 20)
	listenIn(t, d.srv, dServer+":8080", false, func(c *net.TCPConn) {
		defer c.Close()
		c.Write(down)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	c, err := dialIn(d.cli, dServer+":8080", false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(time.Now().Add(dTimeout))
	in, err := io.ReadAll(c)
	el := time.Since(start).Seconds()
	if err != nil || shaOf(in) != shaOf(down) {
		t.Fatalf("download: %d bytes, %v", len(in), err)
	}
	st := d.status("client")
	if len(st.Flows) != 1 || len(st.Flows[0].Subflows) != 2 {
		t.Fatalf("client flows: %+v", st.Flows)
	}
	const limit = 2e6 // 16 Mbit/s
	for _, s := range st.Flows[0].Subflows {
		if r := float64(s.BytesReceived) / el; r > 1.25*limit {
			t.Errorf("subflow on %s: %.2f MB/s, over its 2 MB/s limit", s.Path, r/1e6)
		}
	}
	if r := float64(len(in)) / el; r < 1.2*limit || r > 2.5*limit {
		t.Errorf("download at %.2f MB/s, want between one and two subflow limits (2 MB/s each)", r/1e6)
	}
	ps := d.status("proxy")
	if ps.Paths[0].Shaper == nil || ps.Paths[0].Shaper.Egress.Packets == 0 {
		t.Errorf("proxy shaper: %+v", ps.Paths[0].Shaper)
	}
	t.Logf("8 MiB in %.2f s (%.2f MB/s) with each subflow limited to 2 MB/s", el, float64(len(in))/el/1e6)
}

// TestProxyUplinkNS: "mptund proxy --uplink" on the proxy host's real
// interfaces: kernel MPTCP clients connect to r1's own address (DNAT to
// the engine), learn r2's address from ADD_ADDR and join there too.
func TestProxyUplinkNS(t *testing.T) {
	netns.RequireMPTCP(t)
	d := newDTopo(t)
	defer d.stopAll()
	d.cli.MPTCPLimits(2, 1)
	d.start(d.prx, "proxy", "-v", "--uplink", "r1", "--uplink", "r2,signal", "--backend", dServer+":8090",
		"--status", d.dir+"/proxy.sock", "--state-dir", d.dir+"/proxy")
	up, down := randomBytes(4<<20), randomBytes(4<<20)
	got := make(chan []byte, 1)
	listenIn(t, d.srv, dServer+":8090", false, halfCloseServer(down, got))
	before, _ := d.cli.MPTCPCounters()
	c, err := dialIn(d.cli, "10.91.1.1:5124", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, err := exchange(c, up, dTimeout)
	if err != nil || shaOf(in) != shaOf(down) || shaOf(<-got) != shaOf(up) {
		t.Fatalf("through the proxy's uplinks: %d bytes, %v", len(in), err)
	}
	after, _ := d.cli.MPTCPCounters()
	for name, want := range map[string]uint64{"MPTcpExtAddAddr": 1, "MPTcpExtMPJoinSynAckRx": 1} {
		if v := after[name] - before[name]; v != want {
			t.Errorf("kernel client %s moved by %d, want %d", name, v, want)
		}
	}
	if st := d.status("proxy"); len(st.Paths) != 2 || st.Paths[1].Public != "10.91.2.1" {
		t.Errorf("proxy paths: %+v", st.Paths)
	}
}
