package conformance

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps"
)

// These tests make sure the capture assertions can fail: each corrupts one
// value of a committed kernel capture and expects the check to notice.

func loadFixture(t *testing.T, name string) []pcaps.Packet {
	t.Helper()
	pkts, err := pcaps.ReadFile(filepath.Join(fixtureDir, name+".pcap"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return pkts
}

// mutateFirst applies fn to the first option for which it returns true.
func mutateFirst(t *testing.T, pkts []pcaps.Packet, fn func(p *pcaps.Packet, o options.Option) (options.Option, bool)) int {
	t.Helper()
	for i := range pkts {
		for j, o := range pkts[i].MPTCP {
			if n, ok := fn(&pkts[i], o); ok {
				pkts[i].MPTCP[j] = n
				return pkts[i].Index
			}
		}
	}
	t.Fatal("no option to corrupt")
	return 0
}

func expectProblem(t *testing.T, pkts []pcaps.Packet, frame int, substr string) {
	t.Helper()
	problems := verifyCrypto(pkts, make(map[string]int))
	for _, p := range problems {
		if strings.Contains(p, substr) {
			return
		}
	}
	t.Errorf("corrupting frame %d: no problem mentioning %q; got %q", frame, substr, problems)
}

func TestVerifyCryptoDetectsCorruption(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		for _, name := range []string{"join", "signal-v4", "checksum"} {
			if p := verifyCrypto(loadFixture(t, name), make(map[string]int)); len(p) != 0 {
				t.Errorf("%s: %q", name, p)
			}
		}
	})
	t.Run("join token", func(t *testing.T) {
		pkts := loadFixture(t, "join")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			j, ok := o.(options.MPJoin)
			j.Token ^= 1
			return j, ok && j.Form == options.JoinSYN
		})
		expectProblem(t, pkts, f, "matches no MP_CAPABLE key")
	})
	t.Run("join SYN/ACK HMAC", func(t *testing.T) {
		pkts := loadFixture(t, "join")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			j, ok := o.(options.MPJoin)
			j.TruncatedHMAC ^= 1 << 40
			return j, ok && j.Form == options.JoinSYNACK
		})
		expectProblem(t, pkts, f, "SYN/ACK truncated HMAC")
	})
	t.Run("join ACK HMAC", func(t *testing.T) {
		pkts := loadFixture(t, "join")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			j, ok := o.(options.MPJoin)
			j.HMAC[19] ^= 0x80
			return j, ok && j.Form == options.JoinACK
		})
		expectProblem(t, pkts, f, "MP_JOIN ACK HMAC")
	})
	t.Run("ADD_ADDR HMAC", func(t *testing.T) {
		pkts := loadFixture(t, "signal-v4")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			a, ok := o.(options.AddAddr)
			a.HMAC ^= 1
			return a, ok && !a.Echo
		})
		expectProblem(t, pkts, f, "ADD_ADDR")
	})
	t.Run("ADD_ADDR port", func(t *testing.T) {
		pkts := loadFixture(t, "signal-v4")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			a, ok := o.(options.AddAddr)
			a.Port++
			return a, ok && !a.Echo && a.HasPort
		})
		expectProblem(t, pkts, f, "ADD_ADDR")
	})
	t.Run("DSS checksum payload", func(t *testing.T) {
		pkts := loadFixture(t, "checksum")
		f := mutateFirst(t, pkts, func(p *pcaps.Packet, o options.Option) (options.Option, bool) {
			d, ok := o.(options.DSS)
			if !ok || !d.HasChecksum || len(p.Payload) == 0 {
				return nil, false
			}
			p.Payload = append([]byte(nil), p.Payload...)
			p.Payload[len(p.Payload)/2] ^= 0x10
			return d, true
		})
		expectProblem(t, pkts, f, "DSS checksum")
	})
	t.Run("DSS checksum field", func(t *testing.T) {
		pkts := loadFixture(t, "checksum")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			d, ok := o.(options.DSS)
			d.Checksum ^= 0x0100
			return d, ok && d.HasMapping && d.HasChecksum
		})
		expectProblem(t, pkts, f, "DSS checksum")
	})
	t.Run("checksum without negotiation", func(t *testing.T) {
		pkts := loadFixture(t, "basic")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			d, ok := o.(options.DSS)
			d.HasChecksum = true
			return d, ok && d.HasMapping
		})
		expectProblem(t, pkts, f, "checksums negotiated false")
	})
	t.Run("MP_FASTCLOSE key", func(t *testing.T) {
		pkts := loadFixture(t, "fastclose")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			c, ok := o.(options.MPFastclose)
			c.Key ^= 1
			return c, ok
		})
		expectProblem(t, pkts, f, "MP_FASTCLOSE key")
	})
	t.Run("MP_CAPABLE key echo", func(t *testing.T) {
		pkts := loadFixture(t, "basic")
		f := mutateFirst(t, pkts, func(_ *pcaps.Packet, o options.Option) (options.Option, bool) {
			m, ok := o.(options.MPCapable)
			m.ReceiverKey ^= 1
			return m, ok && m.Form == options.CapableACK
		})
		expectProblem(t, pkts, f, "keys are echoed unchanged")
	})
}

// TestComparisonsDetectDifferences feeds the tshark and gopacket
// comparisons a decoded option that differs from the bytes they decoded.
func TestComparisonsDetectDifferences(t *testing.T) {
	path := filepath.Join(fixtureDir, "signal-v4.pcap")
	pkts := loadFixture(t, "signal-v4")
	frames, err := gopacketTCP(path)
	if err != nil {
		t.Fatal(err)
	}
	var ts map[int][]tsOption
	if _, err := exec.LookPath("tshark"); err == nil {
		ts, _ = tsharkOptions(t, path)
	}
	// One alteration per option type present in the capture.
	alter := func(o options.Option) options.Option {
		switch o := o.(type) {
		case options.MPCapable:
			o.Flags ^= options.CapableFlagChecksum
			return o
		case options.MPJoin:
			o.Nonce ^= 1
			o.HMAC[0] ^= 1
			return o
		case options.DSS:
			o.DataAck ^= 1
			o.DSN ^= 1
			return o
		case options.AddAddr:
			o.AddrID ^= 1
			return o
		}
		return nil
	}
	checked := 0
	for i := range pkts {
		p := &pkts[i]
		for j, o := range p.MPTCP {
			n := alter(o)
			if n == nil {
				continue
			}
			g := frames[p.Index]
			var gmp []int
			for k, opt := range g.Options {
				if opt.OptionType == 30 {
					gmp = append(gmp, k)
				}
			}
			if err := diffGopacket(g.Options[gmp[j]], n); err == nil {
				t.Errorf("frame %d: gopacket comparison accepted altered %+v", p.Index, n)
			}
			if ts != nil && len(diffTshark(n, ts[p.Index][j])) == 0 {
				t.Errorf("frame %d: tshark comparison accepted altered %+v", p.Index, n)
			}
			checked++
		}
	}
	if checked < 10 {
		t.Errorf("only %d options altered", checked)
	}
}
