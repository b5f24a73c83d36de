package checksum

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/mptund/mptund/internal/netns"
)

// The kernel ground truth: a capture of a Linux kernel MPTCP connection with
// DSS checksums on (net.mptcp.checksum_enabled=1), data both ways in writes
// of odd sizes, over a link whose MTU makes the MSS odd and without TSO, so
// that one mapping spans several segments that start at odd offsets. Every
// DSS checksum in it was computed by the kernel; the test recomputes each
// one from the captured bytes.
//
// TestKernelCapture checks the committed capture; TestKernelLive makes a new
// one (root, kernel MPTCP, tcpdump and ethtool needed) and checks it, and
// with -update replaces the committed one.

var update = flag.Bool("update", false, "replace "+kernelPcap+" with the capture made by TestKernelLive")

const kernelPcap = "testdata/kernel_dss_csum.pcap"

// Sizes of the writes each side makes (odd on purpose).
var writeSizes = []int{1, 3, 777, 1449, 4097, 9001, 1}

type csumFindings struct {
	mappings  int // DSS mappings whose checksum was recomputed and matched
	multiSeg  int // of which spanning more than one captured segment
	dataFin   int // mappings carrying a DATA_FIN
	mpcData   int // MP_CAPABLE ACK+data checksums
	oddSplits int // of which cut into segments at an odd offset
}

func TestKernelCapture(t *testing.T) {
	f := checkCapture(t, kernelPcap)
	if f.mappings < 10 || f.multiSeg < 1 || f.oddSplits < 1 || f.dataFin < 1 || f.mpcData < 1 {
		t.Errorf("capture findings %+v: expected at least 10 mappings, one cut at an odd offset, a DATA_FIN and MP_CAPABLE data", f)
	}
}

func TestKernelLive(t *testing.T) {
	netns.RequireMPTCP(t)
	netns.RequireTools(t, "tcpdump", "ethtool")
	file := filepath.Join(t.TempDir(), "csum.pcap")
	kernelExchange(t, file)
	f := checkCapture(t, file)
	t.Logf("live capture: %+v", f)
	if f.mappings < 10 || f.oddSplits < 1 {
		t.Errorf("live capture findings %+v: expected at least 10 mappings, one cut at an odd offset", f)
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

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	return b
}

func total() int {
	n := 0
	for _, s := range writeSizes {
		n += s
	}
	return n
}

// writeAll writes msg in writeSizes pieces, pausing so that each becomes
// its own mapping.
func writeAll(c net.Conn, msg []byte) error {
	for _, n := range writeSizes {
		if _, err := c.Write(msg[:n]); err != nil {
			return err
		}
		msg = msg[n:]
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// kernelExchange runs one checksummed kernel MPTCP connection between two
// namespaces (10.232.0.1 -> 10.232.0.2, MTU 1501, TSO off) and captures it
// on the server's interface into file.
func kernelExchange(t *testing.T, file string) {
	c := netns.New(t, "hc")
	s := netns.New(t, "hc")
	netns.Veth(t, c, "c1", "10.232.0.1/24", s, "s1", "10.232.0.2/24")
	for _, e := range []struct {
		n   *netns.NS
		ifc string
	}{{c, "c1"}, {s, "s1"}} {
		e.n.Sysctl("net.mptcp.checksum_enabled", "1")
		e.n.MustRun("ip", "link", "set", e.ifc, "mtu", "1501")
		// No TSO: the stack still builds large mappings, but software GSO
		// cuts them into odd-sized segments before the capture point.
		e.n.MustRun("ethtool", "-K", e.ifc, "tso", "off", "gro", "off")
	}
	stop := s.Capture(t, "s1", file, "tcp")

	var ln net.Listener
	if err := s.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		ln, err = lc.Listen(context.Background(), "tcp4", "10.232.0.2:0")
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
		if err == nil && !bytes.Equal(got, pattern(total(), 1)) {
			err = fmt.Errorf("server received %d bytes, not the %d sent", len(got), total())
		}
		if err == nil {
			err = writeAll(conn, pattern(total(), 2))
		}
		served <- err
	}()

	var conn net.Conn
	if err := c.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(true)
		conn, err = d.Dial("tcp4", net.JoinHostPort("10.232.0.2", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if mp, err := conn.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
		t.Fatalf("connection is not MPTCP (%v, %v)", mp, err)
	}
	if err := writeAll(conn, pattern(total(), 1)); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, pattern(total(), 2)) {
		t.Fatalf("client received %d bytes (%v), want %d", len(got), err, total())
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	conn.Close()
	time.Sleep(200 * time.Millisecond)
	stop()

	for _, n := range []*netns.NS{c, s} {
		ctr, err := n.MPTCPCounters()
		if err != nil {
			t.Fatal(err)
		}
		if ctr["MPTcpExtDataCsumErr"] != 0 || ctr["MPTcpExtMPFailTx"] != 0 {
			t.Errorf("%s: DataCsumErr %d, MPFailTx %d", n.Name, ctr["MPTcpExtDataCsumErr"], ctr["MPTcpExtMPFailTx"])
		}
	}
}

// dssMapping is one DSS mapping with a checksum, as captured.
type dssMapping struct {
	dsn     uint64
	ssn     uint32
	dataLen uint16
	fin     bool
	csum    uint16
}

// direction is one direction of the subflow: its stream bytes by relative
// sequence number (1 = first payload byte), the segment boundaries seen,
// and the mappings.
type direction struct {
	isn      uint32
	synSeen  bool
	stream   []byte
	have     []bool
	starts   map[uint32]bool // relative seqs at which a captured segment starts
	mappings map[dssMapping]bool
	key      uint64 // sender's MP_CAPABLE key
	mpcData  []dssMapping
}

func (d *direction) put(rel uint32, p []byte) {
	end := int(rel) + len(p)
	for len(d.stream) < end {
		d.stream = append(d.stream, 0)
		d.have = append(d.have, false)
	}
	copy(d.stream[rel:], p)
	for i := range p {
		d.have[int(rel)+i] = true
	}
	d.starts[rel] = true
}

func checkCapture(t *testing.T, file string) csumFindings {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]*direction{}
	get := func(k string) *direction {
		if dirs[k] == nil {
			dirs[k] = &direction{starts: map[uint32]bool{}, mappings: map[dssMapping]bool{}}
		}
		return dirs[k]
	}
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		tcp, ok := p.TransportLayer().(*layers.TCP)
		ip, ok4 := p.NetworkLayer().(*layers.IPv4)
		if !ok || !ok4 {
			continue
		}
		src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
		d := get(netip.AddrPortFrom(src, uint16(tcp.SrcPort)).String() + ">" + netip.AddrPortFrom(dst, uint16(tcp.DstPort)).String())
		if tcp.SYN {
			d.isn, d.synSeen = tcp.Seq, true
		}
		if !d.synSeen {
			t.Fatalf("segment before its SYN")
		}
		if len(tcp.Payload) > 0 {
			d.put(tcp.Seq-d.isn, tcp.Payload)
		}
		o := tcp.Contents[20:]
		for len(o) > 0 && o[0] != 0 {
			if o[0] == 1 {
				o = o[1:]
				continue
			}
			if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
				t.Fatalf("malformed TCP options %x", tcp.Contents[20:])
			}
			opt := o[:o[1]]
			o = o[o[1]:]
			if opt[0] != 30 {
				continue
			}
			switch opt[2] >> 4 {
			case 0: // MP_CAPABLE; ACK+data with checksum is 24 bytes
				if !tcp.SYN && len(opt) >= 20 {
					d.key = binary.BigEndian.Uint64(opt[4:12])
				}
				if len(opt) == 24 {
					// Maps the first data: DSN IDSN+1, subflow seq 1.
					d.mpcData = append(d.mpcData, dssMapping{ssn: 1, dataLen: binary.BigEndian.Uint16(opt[20:22]), csum: binary.BigEndian.Uint16(opt[22:24])})
				}
			case 2: // DSS
				flags := opt[3]
				b := opt[4:]
				if flags&0x01 != 0 {
					b = b[4+4*int(flags>>1&1):]
				}
				if flags&0x04 == 0 {
					continue
				}
				if flags&0x08 == 0 {
					t.Fatalf("DSS with a 32-bit DSN: this test needs the full DSN")
				}
				if len(b) != 16 {
					t.Fatalf("DSS mapping without checksum (%x): were checksums on?", opt)
				}
				m := dssMapping{
					dsn: binary.BigEndian.Uint64(b), ssn: binary.BigEndian.Uint32(b[8:]),
					dataLen: binary.BigEndian.Uint16(b[12:]), fin: flags&0x10 != 0,
					csum: binary.BigEndian.Uint16(b[14:]),
				}
				d.mappings[m] = true
			}
		}
	}

	var f csumFindings
	for name, d := range dirs {
		check := func(m dssMapping) {
			n := int(m.dataLen)
			if m.fin {
				n-- // the DATA_FIN takes a byte of data space, not of payload
			}
			if m.dataLen == 0 || (n == 0 && m.ssn == 0) {
				// Infinite mapping, or a payload-less DATA_FIN.
				if m.dataLen != 0 && !VerifyDSS(m.dsn, m.ssn, m.dataLen, nil, m.csum) {
					t.Errorf("%s: payload-less DATA_FIN %+v: kernel checksum %#04x, ours %#04x", name, m, m.csum, DSSChecksum(m.dsn, m.ssn, m.dataLen, nil))
				}
				if m.fin {
					f.dataFin++
				}
				return
			}
			lo, hi := int(m.ssn), int(m.ssn)+n
			if hi > len(d.stream) {
				t.Errorf("%s: mapping %+v beyond the captured stream (%d bytes)", name, m, len(d.stream))
				return
			}
			for i := lo; i < hi; i++ {
				if !d.have[i] {
					t.Errorf("%s: mapping %+v: byte %d not captured", name, m, i)
					return
				}
			}
			payload := d.stream[lo:hi]
			if got := DSSChecksum(m.dsn, m.ssn, m.dataLen, payload); got != m.csum || !VerifyDSS(m.dsn, m.ssn, m.dataLen, payload, m.csum) {
				t.Errorf("%s: mapping %+v: kernel checksum %#04x, DSSChecksum %#04x", name, m, m.csum, got)
			}
			// Again the way a receiver sees it: segment by segment.
			s := NewDSS(m.dsn, m.ssn, m.dataLen)
			segs, odd := 0, false
			for i := lo; i < hi; {
				j := i + 1
				for j < hi && !d.starts[uint32(j)] {
					j++
				}
				s.Add(d.stream[i:j])
				odd = odd || (j < hi && (j-lo)%2 == 1)
				i, segs = j, segs+1
			}
			if !s.Verify(m.csum) || s.Len() != uint64(n) {
				t.Errorf("%s: mapping %+v: incremental sum over %d segments does not verify", name, m, segs)
			}
			f.mappings++
			if segs > 1 {
				f.multiSeg++
			}
			if odd {
				f.oddSplits++
			}
			if m.fin {
				f.dataFin++
			}
		}
		for m := range d.mappings {
			check(m)
		}
		for _, m := range d.mpcData {
			if d.key == 0 {
				t.Fatalf("%s: MP_CAPABLE data without a key", name)
			}
			k := binary.BigEndian.AppendUint64(nil, d.key)
			h := sha256.Sum256(k)
			m.dsn = binary.BigEndian.Uint64(h[24:]) + 1 // IDSN + 1 (RFC 8684 §3.1)
			check(m)
			f.mpcData++
		}
	}
	return f
}
