package pcaps

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps/pcapstest"
)

var update = flag.Bool("update", false, "rewrite the synthetic captures under testdata/synthetic and testdata/fuzz")

// fixture is a synthetic capture committed under testdata/synthetic. Names
// starting with "bad-" must fail analysis; all others must pass.
type fixture struct {
	name   string
	format pcapstest.Format
	segs   func() []pcapstest.Segment
}

// smallConversation is goodConversation's shape with little data, to keep
// the committed files at a few KB.
func smallConversation(checksums bool) *conversation {
	cv := &conversation{c: pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, checksums)}
	c := cv.c
	c.MSS, c.MappingSize = 200, 400
	sf := c.Handshake()
	cv.initial = sf
	cv.clientData[0], cv.clientData[1] = sf.Send(pcapstest.Client, pattern(300, 1))
	cv.serverData[0], cv.serverData[1] = sf.Send(pcapstest.Server, pattern(900, 2))
	cv.addAddr = sf.AddAddr(pcapstest.Server, 1, announced, 0)
	j := c.Join(pcapstest.JoinParams{Initiator: client2Addr, Listener: server2Addr, InitiatorID: 2, ListenerID: 1,
		InitiatorNonce: 0xa1a2a3a4, ListenerNonce: 0xb1b2b3b4, Backup: true})
	cv.join = j
	j.Send(pcapstest.Client, pattern(200, 3))
	j.Send(pcapstest.Server, pattern(300, 4))
	sf.DataFIN(pcapstest.Client)
	j.DataFIN(pcapstest.Server)
	sf.Ack(pcapstest.Client)
	j.Ack(pcapstest.Server)
	return cv
}

var fixtures = []fixture{
	{"join-checksums.pcapng", pcapstest.Format{LinkType: layers.LinkTypeEthernet, NG: true}, func() []pcapstest.Segment {
		return smallConversation(true).c.Segs
	}},
	{"join-sll2.pcap", pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL2}, func() []pcapstest.Segment {
		return smallConversation(false).c.Segs
	}},
	{"fallback-v6.pcap", pcapstest.Format{LinkType: layers.LinkTypeRaw}, func() []pcapstest.Segment {
		a, b := netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::2]:80")
		syn := pcapstest.Options(options.MPCapable{Form: options.CapableSYN, Version: 1, Flags: 0x01})
		segs := []pcapstest.Segment{
			{Src: a, Dst: b, Seq: 100, Flags: pcapstest.SYN, Options: syn},
			{Src: b, Dst: a, Seq: 900, Ack: 101, Flags: pcapstest.SYN | pcapstest.ACK},
			{Src: a, Dst: b, Seq: 101, Ack: 901, Flags: pcapstest.ACK},
			{Src: a, Dst: b, Seq: 101, Ack: 901, Flags: pcapstest.ACK | pcapstest.PSH, Payload: []byte("GET / HTTP/1.0\r\n\r\n")},
		}
		for i := range segs {
			segs[i].Time = rawTime.Add(time.Duration(i) * time.Millisecond)
		}
		return segs
	}},
	// Linux's DATA_FIN before its last data: the last mapping re-sent on
	// the tail with the DATA_FIN added (length +1, another checksum).
	{"datafin-resent-tail.pcap", pcapstest.Format{LinkType: layers.LinkTypeEthernet}, func() []pcapstest.Segment {
		c := pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, true)
		c.MSS = 200
		sf := c.Handshake()
		sf.Send(pcapstest.Client, pattern(300, 1))
		sf.SendDataFINFirst(pcapstest.Server, pattern(900, 2), 100)
		sf.Ack(pcapstest.Client)
		sf.DataFIN(pcapstest.Client)
		sf.Ack(pcapstest.Server)
		return c.Segs
	}},
	{"bad-dss-checksum.pcap", pcapstest.Format{LinkType: layers.LinkTypeRaw}, func() []pcapstest.Segment {
		cv := smallConversation(true)
		i := cv.serverData[0] + 1
		cv.c.Segs[i].Payload = slices.Clone(cv.c.Segs[i].Payload)
		cv.c.Segs[i].Payload[0] ^= 0xff
		return cv.c.Segs
	}},
}

// fuzzSeeds are small captures for testdata/fuzz/FuzzRead.
var fuzzSeeds = []fixture{
	{"handshake-raw", pcapstest.Format{LinkType: layers.LinkTypeRaw}, func() []pcapstest.Segment {
		return smallConversation(true).c.Segs[:4]
	}},
	{"handshake-sll2-ng", pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL2, NG: true}, func() []pcapstest.Segment {
		return smallConversation(false).c.Segs[:5]
	}},
	{"join-ethernet", pcapstest.Format{LinkType: layers.LinkTypeEthernet}, func() []pcapstest.Segment {
		cv := smallConversation(true)
		return cv.c.Segs[cv.addAddr : cv.addAddr+5]
	}},
	{"truncated-sll", pcapstest.Format{LinkType: layers.LinkTypeLinuxSLL, Snaplen: 80}, func() []pcapstest.Segment {
		cv := smallConversation(true)
		return cv.c.Segs[:6]
	}},
}

// TestSyntheticFixtures checks that the committed synthetic captures are
// what the generator makes (go test -run TestSyntheticFixtures -update
// rewrites them, and the fuzz seeds).
func TestSyntheticFixtures(t *testing.T) {
	for _, fx := range fixtures {
		data := writeCapture(t, fx.format, fx.segs())
		path := filepath.Join("testdata", "synthetic", fx.name)
		if *update {
			writeFile(t, path, data)
			continue
		}
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if !bytes.Equal(old, data) {
			t.Errorf("%s differs from the generator (run with -update)", path)
		}
	}
	if *update {
		for _, fx := range fuzzSeeds {
			data := writeCapture(t, fx.format, fx.segs())
			path := filepath.Join("testdata", "fuzz", "FuzzRead", fx.name)
			writeFile(t, path, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data))
		}
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCaptures analyzes every capture under testdata/: the synthetic ones
// and the Linux kernel captures in testdata/kernel/, which must all pass.
func TestCaptures(t *testing.T) {
	var paths []string
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "fuzz" {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".pcap" || ext == ".pcapng") {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kernel := 0
	for _, path := range paths {
		if strings.Contains(filepath.ToSlash(path), "/kernel/") {
			kernel++
		}
		t.Run(filepath.ToSlash(path), func(t *testing.T) {
			pkts, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			r := Analyze(pkts)
			if err := r.WriteText(io.Discard); err != nil {
				t.Fatal(err)
			}
			bad := strings.HasPrefix(filepath.Base(path), "bad-")
			if r.OK() == bad {
				var b strings.Builder
				r.WriteText(&b)
				t.Errorf("OK() = %v, want %v\n%s", r.OK(), !bad, b.String())
			}
			if len(pkts) > 0 && len(r.Connections)+r.Plain+r.Unanalyzed == 0 {
				t.Errorf("%d packets but no flows", len(pkts))
			}
		})
	}
	if kernel == 0 {
		t.Log("no kernel captures under testdata/kernel yet")
	}
}
