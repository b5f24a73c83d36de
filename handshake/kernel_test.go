package handshake

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/internal/netns"
)

// The kernel ground truth: a capture of a Linux kernel MPTCP connection (two
// namespaces, two paths, DSS checksums on) with MP_JOIN subflows and
// ADD_ADDR announcements. Every key, token, nonce and HMAC in it was made by
// the kernel; the test recomputes them with this package.
//
// TestKernelCapture checks the committed capture; TestKernelLive makes a new
// one (root, kernel MPTCP and tcpdump needed) and checks it, and with
// -update replaces the committed one.

var update = flag.Bool("update", false, "replace "+kernelPcap+" with the capture made by TestKernelLive")

const kernelPcap = "testdata/kernel_join.pcap"

// Bytes the client and the server send in the live exchange.
const (
	clientBytes = 3000
	serverBytes = 5000
)

// kernelFindings counts what checkCapture verified.
type kernelFindings struct {
	joins                       int // complete MP_JOIN handshakes (SYN, SYN/ACK, ACK)
	addAddr4, addAddr6, addPort int // ADD_ADDR (not echo) verified, by kind
	idsnChecks                  int
}

func TestKernelCapture(t *testing.T) {
	f := checkCapture(t, kernelPcap)
	// The committed capture has all of these (see TestKernelLive's log when
	// it was made); a regression in any function shows up as a failure
	// inside checkCapture, a broken capture file as a count of zero.
	if f.joins < 2 || f.addAddr4 < 1 || f.addAddr6 < 1 || f.addPort < 1 || f.idsnChecks < 3 {
		t.Errorf("capture findings %+v: expected at least 2 joins, an IPv4, an IPv6 and a port ADD_ADDR and 3 IDSN checks", f)
	}
}

func TestKernelLive(t *testing.T) {
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "tcpdump")
	file := filepath.Join(t.TempDir(), "join.pcap")
	kernelExchange(t, file)
	f := checkCapture(t, file)
	t.Logf("live capture: %+v", f)
	if f.joins < 1 || f.addAddr4 < 1 || f.idsnChecks < 3 {
		t.Errorf("live capture findings %+v: expected at least a join, an IPv4 ADD_ADDR and 3 IDSN checks", f)
	}
	if *update && !t.Failed() {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kernelPcap, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// kernelExchange runs one kernel MPTCP connection between two namespaces
// and captures it (the server's interfaces) into file.
//
//	client 10.231.1.1 --- 10.231.1.2 server  initial subflow
//	       10.231.2.1 --- 10.231.2.2         announced (ADD_ADDR)
//	                      10.231.2.3         announced with port 10231
//	    fd00:231:2::1 --- fd00:231:2::2      announced (IPv6 ADD_ADDR)
func kernelExchange(t *testing.T, file string) {
	c := netns.New(t, "hc")
	s := netns.New(t, "hc")
	netns.Veth(t, c, "c1", "10.231.1.1/24", s, "s1", "10.231.1.2/24")
	netns.Veth(t, c, "c2", "10.231.2.1/24", s, "s2", "10.231.2.2/24")
	s.AddAddr("s2", "10.231.2.3/24")
	c.AddAddr("c2", "fd00:231:2::1/64")
	s.AddAddr("s2", "fd00:231:2::2/64")
	for _, n := range []*netns.NS{c, s} {
		n.Sysctl("net.mptcp.checksum_enabled", "1")
		n.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	}
	s.MustRun("ip", "mptcp", "endpoint", "add", "10.231.2.2", "dev", "s2", "signal")
	s.MustRun("ip", "mptcp", "endpoint", "add", "10.231.2.3", "dev", "s2", "signal", "port", "10231")
	// An IPv6 ADD_ADDR with a port (30 bytes) does not fit beside the
	// timestamp option, so this one goes without.
	s.MustRun("ip", "mptcp", "endpoint", "add", "fd00:231:2::2", "dev", "s2", "signal")
	c.MustRun("ip", "mptcp", "endpoint", "add", "10.231.2.1", "dev", "c2", "subflow")

	// One capture per interface: tcpdump on "any" lost packets (join SYNs
	// among them) in about half of the runs on kernel 6.18.
	dir := t.TempDir()
	parts := []string{filepath.Join(dir, "s1.pcap"), filepath.Join(dir, "s2.pcap")}
	stop1 := s.Capture(t, "s1", parts[0], "tcp")
	stop2 := s.Capture(t, "s2", parts[1], "tcp")

	var ln net.Listener
	if err := s.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		// All addresses, so that joins to the announced ones are accepted.
		ln, err = lc.Listen(context.Background(), "tcp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		got, err := io.ReadAll(conn)
		if err == nil && !bytes.Equal(got, pattern(clientBytes, 1)) {
			err = fmt.Errorf("server received %d bytes, not the %d sent", len(got), clientBytes)
		}
		if err == nil {
			_, err = conn.Write(pattern(serverBytes, 2))
		}
		served <- err
	}()

	var conn net.Conn
	if err := c.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(true)
		conn, err = d.Dial("tcp", net.JoinHostPort("10.231.1.2", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if mp, err := conn.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
		t.Fatalf("connection is not MPTCP (%v, %v)", mp, err)
	}

	// Send a little, wait for the joins, then send the rest so that data
	// flows over the new subflows too.
	msg := pattern(clientBytes, 1)
	if _, err := conn.Write(msg[:100]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctr, err := s.MPTCPCounters()
		if err != nil {
			t.Fatal(err)
		}
		if ctr["MPTcpExtMPJoinAckRx"] >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("only %d joins completed after 5s; counters %v", ctr["MPTcpExtMPJoinAckRx"], ctr)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for off := 100; off < len(msg); off += 700 {
		if _, err := conn.Write(msg[off:min(off+700, len(msg))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, pattern(serverBytes, 2)) {
		t.Fatalf("client received %d bytes (%v), want the server's %d", len(got), err, serverBytes)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	conn.Close()
	time.Sleep(200 * time.Millisecond) // let DATA_FIN/FIN exchanges finish
	stop1()
	stop2()
	mergeCaptures(t, file, parts...)

	ctr, err := s.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"MPTcpExtMPJoinAckHMacFailure", "MPTcpExtMPJoinSynAckHMacFailure", "MPTcpExtAddAddrDrop", "MPTcpExtDataCsumErr"} {
		if ctr[bad] != 0 {
			t.Errorf("server counter %s = %d", bad, ctr[bad])
		}
	}
}

// mergeCaptures writes the packets of the Ethernet captures in into out, in
// time order.
func mergeCaptures(t *testing.T, out string, in ...string) {
	t.Helper()
	type pkt struct {
		ci   gopacket.CaptureInfo
		data []byte
	}
	var all []pkt
	for _, name := range in {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		if r.LinkType() != layers.LinkTypeEthernet {
			t.Fatalf("%s: link type %v, want Ethernet", name, r.LinkType())
		}
		for {
			data, ci, err := r.ReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, pkt{ci, data})
		}
		f.Close()
	}
	slices.SortStableFunc(all, func(a, b pkt) int { return a.ci.Timestamp.Compare(b.ci.Timestamp) })
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if err := w.WritePacket(p.ci, p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// pattern returns n bytes that differ between calls with different seeds.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// segment is one captured TCP segment carrying MPTCP options.
type segment struct {
	src, dst netip.AddrPort
	syn, ack bool
	opts     [][]byte // each MPTCP option from its kind byte on
}

func (s segment) flow() string { return s.src.String() + ">" + s.dst.String() }
func (s segment) rev() string  { return s.dst.String() + ">" + s.src.String() }

// readSegments returns the TCP segments of a capture that carry MPTCP options.
func readSegments(t *testing.T, file string) []segment {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var segs []segment
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		tl, ok := p.TransportLayer().(*layers.TCP)
		if !ok || p.NetworkLayer() == nil {
			continue
		}
		var src, dst netip.Addr
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		case *layers.IPv6:
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
		default:
			continue
		}
		seg := segment{
			src: netip.AddrPortFrom(src, uint16(tl.SrcPort)),
			dst: netip.AddrPortFrom(dst, uint16(tl.DstPort)),
			syn: tl.SYN, ack: tl.ACK,
		}
		// Walk the raw option bytes rather than trusting any decoder.
		o := tl.Contents[20:]
		for len(o) > 0 {
			if o[0] == 0 {
				break
			}
			if o[0] == 1 {
				o = o[1:]
				continue
			}
			if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
				t.Fatalf("%s: malformed TCP options %x", seg.flow(), tl.Contents[20:])
			}
			if o[0] == 30 {
				seg.opts = append(seg.opts, o[:o[1]])
			}
			o = o[o[1]:]
		}
		if len(seg.opts) > 0 {
			segs = append(segs, seg)
		}
	}
	return segs
}

// checkCapture recomputes every MPTCP key-derived value of the one MPTCP
// connection in the capture and reports what it checked.
func checkCapture(t *testing.T, file string) kernelFindings {
	t.Helper()
	segs := readSegments(t, file)
	if len(segs) == 0 {
		t.Fatalf("%s: no MPTCP segments", file)
	}

	// Keys, from MP_CAPABLE (RFC 8684 §3.1): the SYN/ACK carries the
	// server's key, the third ACK (and the ACK with data) both keys,
	// sender's first.
	var client, server netip.AddrPort
	var keyC, keyS uint64
	for _, s := range segs {
		for _, o := range s.opts {
			if o[2]>>4 != 0 {
				continue
			}
			switch {
			case s.syn && !s.ack && len(o) == 4:
				client, server = s.src, s.dst
			case s.syn && s.ack && len(o) == 12:
				keyS = binary.BigEndian.Uint64(o[4:12])
			case !s.syn && len(o) >= 20 && s.src == client:
				keyC = binary.BigEndian.Uint64(o[4:12])
				if k := binary.BigEndian.Uint64(o[12:20]); k != keyS {
					t.Errorf("third ACK echoes server key %#x, SYN/ACK had %#x", k, keyS)
				}
			}
		}
	}
	if keyC == 0 || keyS == 0 {
		t.Fatalf("%s: MP_CAPABLE keys not found (client %#x, server %#x)", file, keyC, keyS)
	}
	t.Logf("client %s key %#x token %#x; server %s key %#x token %#x", client, keyC, Token(keyC), server, keyS, Token(keyS))

	// Which key each subflow's initiator holds, by flow in the direction
	// of its SYN.
	initiatorKey := map[string]uint64{client.String() + ">" + server.String(): keyC}
	peer := map[uint64]uint64{keyC: keyS, keyS: keyC}
	// keyOf returns the key of the host that sent s.
	keyOf := func(s segment) (uint64, bool) {
		if k, ok := initiatorKey[s.flow()]; ok {
			return k, true
		}
		if k, ok := initiatorKey[s.rev()]; ok {
			return peer[k], true
		}
		return 0, false
	}

	var f kernelFindings
	type joinState struct {
		keyI, keyL uint64
		rI, rL     uint32
		thmac      uint64
		synack     bool
	}
	joins := map[string]*joinState{} // by initiator->listener flow
	type seqs struct {
		minDSN  uint64
		dsn     bool
		maxAck  uint64
		ack     bool
		ack64   bool
		dataFin bool
	}
	dss := map[uint64]*seqs{keyC: {}, keyS: {}} // by sender's key

	for _, s := range segs {
		for _, o := range s.opts {
			sub := o[2] >> 4
			switch {
			case sub == 1 && s.syn && !s.ack: // MP_JOIN SYN: [token 4][nonce 4]
				if len(o) != 12 {
					t.Fatalf("%s: MP_JOIN SYN of length %d", s.flow(), len(o))
				}
				token := binary.BigEndian.Uint32(o[4:8])
				var j joinState
				switch token {
				case Token(keyS):
					j.keyI, j.keyL = keyC, keyS
				case Token(keyC):
					j.keyI, j.keyL = keyS, keyC
				default:
					t.Fatalf("%s: MP_JOIN SYN token %#x is neither Token(client key) %#x nor Token(server key) %#x",
						s.flow(), token, Token(keyC), Token(keyS))
				}
				j.rI = binary.BigEndian.Uint32(o[8:12])
				joins[s.flow()] = &j
				initiatorKey[s.flow()] = j.keyI
			case sub == 1 && s.syn && s.ack: // SYN/ACK: [thmac 8][nonce 4]
				j := joins[s.rev()]
				if j == nil || len(o) != 16 {
					t.Fatalf("%s: unexpected MP_JOIN SYN/ACK %x", s.flow(), o)
				}
				j.thmac = binary.BigEndian.Uint64(o[4:12])
				j.rL = binary.BigEndian.Uint32(o[12:16])
				if got := JoinSYNACKHMAC(j.keyL, j.keyI, j.rL, j.rI); got != j.thmac {
					t.Errorf("%s: kernel SYN/ACK HMAC %#x, JoinSYNACKHMAC %#x", s.flow(), j.thmac, got)
				}
				if !VerifyJoinSYNACK(j.keyL, j.keyI, j.rL, j.rI, j.thmac) {
					t.Errorf("%s: VerifyJoinSYNACK rejects the kernel's HMAC", s.flow())
				}
				j.synack = true
			case sub == 1 && !s.syn: // third ACK: [hmac 20]
				j := joins[s.flow()]
				if j == nil || !j.synack || len(o) != 24 {
					t.Fatalf("%s: unexpected MP_JOIN ACK %x", s.flow(), o)
				}
				mac := [20]byte(o[4:24])
				if got := JoinACKHMAC(j.keyI, j.keyL, j.rI, j.rL); got != mac {
					t.Errorf("%s: kernel ACK HMAC %x, JoinACKHMAC %x", s.flow(), mac, got)
				}
				if !VerifyJoinACK(j.keyI, j.keyL, j.rI, j.rL, mac) {
					t.Errorf("%s: VerifyJoinACK rejects the kernel's HMAC", s.flow())
				}
				f.joins++
				delete(joins, s.flow())
			case sub == 3: // ADD_ADDR: [id][addr 4|16][port 2]?[hmac 8]?
				echo := o[2]&1 != 0
				body := o[4:]
				if !echo {
					if len(body) < 8 {
						t.Fatalf("%s: short ADD_ADDR %x", s.flow(), o)
					}
					body = body[:len(body)-8]
				}
				var port uint16
				switch len(body) {
				case 4, 16:
				case 6, 18:
					port = binary.BigEndian.Uint16(body[len(body)-2:])
					body = body[:len(body)-2]
				default:
					t.Fatalf("%s: ADD_ADDR of length %d", s.flow(), len(o))
				}
				if echo {
					continue
				}
				addr, _ := netip.AddrFromSlice(body)
				mac := binary.BigEndian.Uint64(o[len(o)-8:])
				ks, ok := keyOf(s)
				if !ok {
					t.Fatalf("%s: ADD_ADDR on an unknown subflow", s.flow())
				}
				id := o[3]
				if got := AddAddrHMAC(ks, peer[ks], id, addr, port); got != mac {
					t.Errorf("%s: ADD_ADDR id %d %s port %d: kernel HMAC %#x, AddAddrHMAC %#x", s.flow(), id, addr, port, mac, got)
				}
				if !VerifyAddAddr(ks, peer[ks], id, addr, port, mac) {
					t.Errorf("%s: VerifyAddAddr rejects the kernel's ADD_ADDR HMAC for %s", s.flow(), addr)
				}
				if addr.Is4() {
					f.addAddr4++
				} else {
					f.addAddr6++
				}
				if port != 0 {
					f.addPort++
				}
			case sub == 2: // DSS: [flags][ack 4|8]?[dsn 4|8, ssn 4, len 2, csum 2?]?
				flags := o[3]
				k, ok := keyOf(s)
				if !ok {
					t.Fatalf("%s: DSS on an unknown subflow", s.flow())
				}
				q := dss[k]
				p := o[4:]
				if flags&0x01 != 0 {
					if flags&0x02 != 0 {
						q.maxAck, q.ack64 = max(q.maxAck, binary.BigEndian.Uint64(p)), true
						p = p[8:]
					} else {
						q.maxAck = max(q.maxAck, uint64(binary.BigEndian.Uint32(p)))
						p = p[4:]
					}
					q.ack = true
				}
				if flags&0x10 != 0 {
					q.dataFin = true
				}
				if flags&0x04 != 0 {
					var dsn uint64
					if flags&0x08 != 0 {
						dsn = binary.BigEndian.Uint64(p)
					} else {
						dsn = uint64(binary.BigEndian.Uint32(p))
					}
					if !q.dsn || dsn < q.minDSN {
						q.minDSN = dsn
					}
					q.dsn = true
				}
			}
		}
	}

	// IDSN (RFC 8684 §3.1): the server's first data byte has DSN
	// IDSN(server key)+1, and each side's final Data ACK covers all the
	// peer's bytes (plus one for its DATA_FIN) from IDSN(peer key)+1.
	lo32 := func(v uint64, wide bool) uint64 {
		if wide {
			return v
		}
		return v & 0xffffffff
	}
	if q := dss[keyS]; q.dsn {
		if want := lo32(IDSN(keyS)+1, q.minDSN > 0xffffffff); q.minDSN != want {
			t.Errorf("server's first DSN %#x, want IDSN(server key)+1 = %#x", q.minDSN, want)
		}
		f.idsnChecks++
	}
	for _, c := range []struct {
		acker, sender uint64
		n             uint64
	}{{keyS, keyC, clientBytes}, {keyC, keyS, serverBytes}} {
		q := dss[c.acker]
		if !q.ack {
			continue
		}
		base := IDSN(c.sender) + 1 + c.n
		if a, b := lo32(base, q.ack64), lo32(base+1, q.ack64); q.maxAck != a && q.maxAck != b {
			t.Errorf("highest Data ACK %#x, want IDSN(peer key)+1+%d = %#x (or one more for DATA_FIN)", q.maxAck, c.n, a)
		}
		f.idsnChecks++
	}
	for flow := range joins {
		t.Logf("%s: incomplete MP_JOIN handshake in capture", flow)
	}
	return f
}
