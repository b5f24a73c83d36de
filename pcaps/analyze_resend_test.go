package pcaps

import (
	"fmt"
	"slices"
	"testing"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps/pcapstest"
)

// kernelTail is a conversation in which the server sends 8192 bytes the
// way Linux does when its DATA_FIN leaves before the last data: the mapping
// (DSN A, subflow sequence 1, length 8192) on the first five segments, a
// bare DATA_FIN at A+8192, then the last 952 bytes on a segment carrying
// the mapping again with the DATA_FIN added (length 8193, checksum computed
// for 8193).
type kernelTail struct {
	c                *pcapstest.Conn
	data             []byte
	first, fin, tail int // segment indexes
}

const kernelTailMSS = 1448

func newKernelTail(checksums bool) *kernelTail {
	k := &kernelTail{c: pcapstest.NewConn(clientAddr, serverAddr, clientKey, serverKey, checksums), data: pattern(8192, 2)}
	k.c.MSS = kernelTailMSS
	sf := k.c.Handshake()
	sf.Send(pcapstest.Client, pattern(100, 1))
	k.first, k.fin, k.tail = sf.SendDataFINFirst(pcapstest.Server, k.data, 8192-5*kernelTailMSS)
	sf.Ack(pcapstest.Client)
	sf.DataFIN(pcapstest.Client)
	sf.Ack(pcapstest.Server)
	sf.Fin(pcapstest.Server)
	sf.Fin(pcapstest.Client)
	return k
}

// dss is the server's mapping of data[off:off+n] (DATA_FIN after it when
// fin), with the checksum a sender computes for it.
func (k *kernelTail) dss(off, n int, fin bool) []byte {
	return pcapstest.Options(k.dssOpt(off, n, fin))
}

func (k *kernelTail) dssOpt(off, n int, fin bool) options.DSS {
	d := options.DSS{HasMapping: true, DSN64: true, DSN: handshake.IDSN(serverKey) + 1 + uint64(off),
		SubflowSeq: 1 + uint32(off), DataLen: uint16(n), DataFIN: fin}
	if fin {
		d.DataLen++
	}
	if k.c.Checksums {
		d.HasChecksum = true
		d.Checksum = checksum.DSSChecksum(d.DSN, d.SubflowSeq, d.DataLen, k.data[off:off+n])
	}
	return d
}

// resend appends a copy of segment i with options opts, as a retransmission.
func (k *kernelTail) resend(i int, opts []byte) int {
	s := k.c.Segs[i]
	s.Options = opts
	s.Time = k.c.Time
	k.c.Segs = append(k.c.Segs, s)
	return len(k.c.Segs) - 1
}

// TestAnalyzeDataFINResentOnTail: the mapping Linux re-sends with the
// DATA_FIN added (another data-level length, so another checksum), and
// re-sends with other consistent boundaries, are what RFC 8684 §3.3.1
// allows: no problem, each version's checksum verified against its own
// length over the payload. True conflicts still fail.
func TestAnalyzeDataFINResentOnTail(t *testing.T) {
	type tc struct {
		name string
		edit func(k *kernelTail) (frame int) // frame of the expected problem, 0 for none
		// checks: with checksums, how many DSS checksums verify (the
		// client's MP_CAPABLE mapping, the server's mapping, its FIN
		// version, and any re-send with other boundaries).
		checks int
		fail   string // the check that fails, if any
	}
	cases := []tc{
		{"as Linux sends it", func(k *kernelTail) int { return 0 }, 3, ""},
		{"tail retransmitted", func(k *kernelTail) int {
			k.resend(k.tail, k.c.Segs[k.tail].Options)
			return 0
		}, 3, ""},
		{"FIN version first, plain one on the tail", func(k *kernelTail) int {
			k.c.Segs[k.first].Options = k.dss(0, 8192, true)
			k.c.Segs[k.tail].Options = k.dss(0, 8192, false)
			return 0
		}, 3, ""},
		{"FIN version after the tail", func(k *kernelTail) int {
			k.resend(k.tail, k.dss(0, 8192, true))
			k.c.Segs[k.tail].Options = k.dss(0, 8192, false)
			return 0
		}, 3, ""},
		{"re-sent split: one segment, its own mapping", func(k *kernelTail) int {
			k.resend(k.first+1, k.dss(kernelTailMSS, kernelTailMSS, false))
			return 0
		}, 4, ""},
		{"re-sent merged over bytes seen before", func(k *kernelTail) int {
			// Retransmission of the third segment with a mapping of the
			// second and third: the second's bytes are in the capture,
			// earlier.
			k.resend(k.first+2, k.dss(kernelTailMSS, 2*kernelTailMSS, false))
			return 0
		}, 4, ""},
		{"FIN version carrying the plain version's checksum", func(k *kernelTail) int {
			if !k.c.Checksums {
				return -1
			}
			plain, fin := k.dss(0, 8192, false), k.dss(0, 8192, true)
			copy(fin[len(fin)-2:], plain[len(plain)-2:])
			k.c.Segs[k.tail].Options = fin
			return k.tail
		}, 2, CheckChecksum},
		{"FIN version with a corrupted checksum after the mapping verified", func(k *kernelTail) int {
			if !k.c.Checksums {
				return -1
			}
			fin := k.dss(0, 8192, true)
			fin[len(fin)-1] ^= 1
			k.c.Segs[k.tail].Options = k.dss(0, 8192, false)
			return k.resend(k.tail, fin)
		}, 2, CheckChecksum},
		{"plain copy with another checksum", func(k *kernelTail) int {
			if !k.c.Checksums {
				return -1
			}
			plain := k.dss(0, 8192, false)
			plain[len(plain)-1] ^= 1
			return k.resend(k.first+4, plain)
		}, 3, CheckChecksum},
		{"copy mapping the bytes elsewhere", func(k *kernelTail) int {
			// Mapped three DSNs up, with the checksum for that claim.
			dss := k.dssOpt(100, 1000, false)
			dss.DSN += 3
			dss.Checksum = checksum.DSSChecksum(dss.DSN, dss.SubflowSeq, dss.DataLen, k.data[100:1100])
			return k.resend(k.first, pcapstest.Options(dss))
		}, 4, CheckMapping},
		{"FIN version moving the DATA_FIN", func(k *kernelTail) int {
			// The DATA_FIN one DSN further than the bare one put it.
			d := k.dssOpt(0, 8192, true)
			d.DataLen++
			k.c.Segs[k.tail].Options = pcapstest.Options(d)
			return k.tail
		}, -1, CheckDataFIN},
	}
	for _, c := range cases {
		for _, csum := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/checksums=%v", c.name, csum), func(t *testing.T) {
				k := newKernelTail(csum)
				at := c.edit(k)
				if at < 0 {
					t.Skip("needs checksums")
				}
				r := analyzeSegs(t, rawFormat, k.c.Segs)
				if c.fail == "" {
					if !r.OK() || r.Stats.NotChecked != 0 {
						dumpReport(t, r)
						t.Fatalf("problems %v, not checked %v", r.Problems, r.NotChecked)
					}
				} else {
					if len(r.Problems) == 0 {
						dumpReport(t, r)
						t.Fatalf("no problem, want a %s failure at frame %d", c.fail, at+1)
					}
					for _, p := range r.Problems {
						if p.Check != c.fail {
							t.Errorf("problem %v, want only %s failures", p, c.fail)
						}
					}
					if c.fail != CheckDataFIN && (len(r.Problems) != 1 || r.Problems[0].Frame != at+1) {
						t.Errorf("problems %v, want one at frame %d", r.Problems, at+1)
					}
				}
				if s := checkStat(r, CheckChecksum); csum && c.checks >= 0 && s.Passed != c.checks {
					t.Errorf("%d checksums verified, want %d (%+v)", s.Passed, c.checks, s)
				}
				conn := r.Connections[0]
				if c.fail == "" && (!conn.DataFINToClient || conn.BytesToClient != 8192) {
					t.Errorf("DATA_FIN to client %v, %d bytes", conn.DataFINToClient, conn.BytesToClient)
				}
			})
		}
	}
}

// TestSendDataFINFirst checks the synthetic sequence itself: the mapping,
// the bare DATA_FIN and the FIN-added copy on the tail, as Linux sends them.
func TestSendDataFINFirst(t *testing.T) {
	k := newKernelTail(true)
	var got []string
	for _, i := range []int{k.first, k.first + 1, k.fin, k.tail} {
		s := k.c.Segs[i]
		d, err := options.ParseDSS(s.Options[:s.Options[1]])
		if err != nil {
			t.Fatal(err)
		}
		if d.HasMapping {
			got = append(got, fmt.Sprintf("ssn %d len %d fin %v payload %d", d.SubflowSeq, d.DataLen, d.DataFIN, len(s.Payload)))
		}
	}
	want := []string{"ssn 1 len 8192 fin false payload 1448", "ssn 0 len 1 fin true payload 0", "ssn 1 len 8193 fin true payload 952"}
	if !slices.Equal(got, want) {
		t.Fatalf("mappings %q, want %q", got, want)
	}
}
