package conformance

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/mptund/mptund/options"
	"github.com/mptund/mptund/pcaps"
)

// checkCapture runs the capture assertions on the file at path:
// (a) every MPTCP option decodes, (b) our fields equal tshark's and
// gopacket's, (c) tokens, HMACs and DSS checksums verify, (d) pcaps.Analyze
// and `mptund pcap inspect` accept it; and the features the scenario
// promises are present.
func checkCapture(t *testing.T, path string, want captureWant) {
	t.Helper()
	pkts, err := pcaps.ReadFile(path)
	if err != nil {
		t.Fatalf("pcaps.ReadFile: %v", err)
	}
	feat := checkDecode(t, pkts)
	t.Run("tshark", func(t *testing.T) { compareTshark(t, path, pkts) })
	t.Run("gopacket", func(t *testing.T) { compareGopacket(t, path, pkts) })
	for _, p := range verifyCrypto(pkts, feat) {
		t.Error(p)
	}
	checkAnalyze(t, path, pkts, want)
	var missing []string
	for _, f := range want.features {
		if feat[f] == 0 {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		t.Errorf("capture lacks %q; it has %s", missing, featureList(feat))
	} else if testing.Verbose() {
		t.Logf("capture has %s", featureList(feat))
	}
}

func featureList(feat map[string]int) string {
	var s []string
	for k, v := range feat {
		s = append(s, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// checkDecode is assertion (a): every kind-30 option of every packet
// decodes with options.Parse and pcaps agrees; it returns the features seen.
func checkDecode(t *testing.T, pkts []pcaps.Packet) map[string]int {
	t.Helper()
	feat := make(map[string]int)
	nopts := 0
	for i := range pkts {
		p := &pkts[i]
		if p.Truncated() {
			t.Errorf("frame %d: payload cut by the snap length (%d of %d bytes)", p.Index, len(p.Payload), p.PayloadLen)
		}
		for _, e := range p.OptErrors {
			t.Errorf("frame %d: pcaps: %v", p.Index, e)
		}
		raws, err := mptcpOptions(p.Options)
		if err != nil {
			t.Errorf("frame %d: option area: %v", p.Index, err)
			continue
		}
		// options.ParseTCPOptions (run by pcaps) keeps raw views of the
		// first MaxMPTCPOptions kind-30 options.
		if n := min(len(raws), options.MaxMPTCPOptions); p.Opts.NumMPTCP != n {
			t.Errorf("frame %d: ParseTCPOptions found %d MPTCP options, want %d", p.Index, p.Opts.NumMPTCP, n)
		} else {
			for j, v := range p.Opts.MPTCPOptions() {
				if !bytes.Equal(v, raws[j]) {
					t.Errorf("frame %d: ParseTCPOptions view %x, option is %x", p.Index, v, raws[j])
				}
			}
		}
		if len(raws) != len(p.MPTCP) {
			t.Errorf("frame %d: %d kind-30 options, pcaps decoded %d", p.Index, len(raws), len(p.MPTCP))
			continue
		}
		for j, raw := range raws {
			o, err := options.Parse(raw)
			if err != nil {
				t.Errorf("frame %d: options.Parse(%x): %v", p.Index, raw, err)
				continue
			}
			nopts++
			if o.Len() != len(raw) {
				t.Errorf("frame %d: %T.Len() = %d, option is %d bytes", p.Index, o, o.Len(), len(raw))
			}
			if fmt.Sprint(o) != fmt.Sprint(p.MPTCP[j]) {
				t.Errorf("frame %d: options.Parse gives %+v, pcaps %+v", p.Index, o, p.MPTCP[j])
			}
			for _, f := range optionFeatures(o, p.Flags) {
				feat[f]++
			}
		}
	}
	if nopts == 0 {
		t.Error("no MPTCP option in the capture")
	}
	return feat
}

// mptcpOptions returns the raw kind-30 options of a TCP option area, walked
// independently of options.ParseTCPOptions.
func mptcpOptions(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		switch b[0] {
		case options.KindEOL:
			return out, nil
		case options.KindNOP:
			b = b[1:]
			continue
		}
		if len(b) < 2 || b[1] < 2 || int(b[1]) > len(b) {
			return out, fmt.Errorf("bad option framing at %x", b)
		}
		if b[0] == options.KindMPTCP {
			out = append(out, b[:b[1]])
		}
		b = b[b[1]:]
	}
	return out, nil
}

// optionFeatures names what an option shows, for the scenarios' "this
// capture must contain" lists.
func optionFeatures(o options.Option, tcpFlags uint8) []string {
	switch o := o.(type) {
	case options.MPCapable:
		f := []string{"MP_CAPABLE " + o.Form.String()}
		if o.Flags&options.CapableFlagChecksum != 0 {
			f = append(f, "MP_CAPABLE A flag")
		}
		if o.Form == options.CapableACKData && o.HasChecksum {
			f = append(f, "MP_CAPABLE ACK+data checksum")
		}
		return f
	case options.MPJoin:
		f := []string{"MP_JOIN " + o.Form.String()}
		if o.Backup {
			f = append(f, "MP_JOIN backup")
		}
		return f
	case options.DSS:
		var f []string
		if o.HasDataAck {
			f = append(f, "DSS Data ACK")
		}
		if o.HasMapping {
			f = append(f, "DSS mapping")
			if o.HasChecksum {
				f = append(f, "DSS checksum")
			}
		}
		if o.DataFIN {
			f = append(f, "DSS DATA_FIN")
		}
		return f
	case options.AddAddr:
		if o.Echo {
			return []string{"ADD_ADDR echo"}
		}
		s := "ADD_ADDR v4"
		if o.Addr.Is6() {
			s = "ADD_ADDR v6"
		}
		if o.HasPort {
			s += " port"
		}
		return []string{s}
	case options.RemoveAddr:
		return []string{"REMOVE_ADDR"}
	case options.MPPrio:
		if o.Backup {
			return []string{"MP_PRIO backup"}
		}
		return []string{"MP_PRIO"}
	case options.MPFail:
		return []string{"MP_FAIL"}
	case options.MPFastclose:
		return []string{"MP_FASTCLOSE"}
	case options.MPTCPRst:
		if tcpFlags&pcaps.FlagRST == 0 {
			return []string{"MP_TCPRST without RST"}
		}
		return []string{"MP_TCPRST"}
	}
	return []string{fmt.Sprintf("%T", o)}
}
