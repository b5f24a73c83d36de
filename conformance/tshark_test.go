package conformance

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/mptund/mptund/pcaps"
)

// tsOption is one MPTCP option as tshark dissects it: the fields of one
// <proto name="mptcp"> element of tshark's PDML output, by field name, in
// order of appearance (a name may repeat, e.g. REMOVE_ADDR's address IDs).
type tsOption struct {
	pos, size int
	fields    map[string][]tsField
}

type tsField struct {
	show  string // tshark's displayed value
	value string // raw bytes in hex, when tshark gives them
}

// first returns the show value of the first field named name.
func (o tsOption) first(name string) (string, bool) {
	f := o.fields[name]
	if len(f) == 0 {
		return "", false
	}
	return f[0].show, true
}

// tsharkOptions runs tshark on the capture and returns, per frame number,
// the MPTCP options it dissected, in order, plus the frames tshark flagged
// as malformed.
func tsharkOptions(t *testing.T, path string) (map[int][]tsOption, map[int]bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "tshark", "-n", "-r", path, "-T", "pdml", "-J", "frame tcp _ws.malformed")
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tshark: %v", err)
	}
	opts, malformed, perr := parsePDML(stdout)
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tshark: %v: %s", err, stderr.String())
	}
	if perr != nil {
		t.Fatalf("parsing tshark PDML: %v", perr)
	}
	return opts, malformed
}

// parsePDML collects the mptcp <proto> elements of each <packet>.
func parsePDML(r io.Reader) (map[int][]tsOption, map[int]bool, error) {
	dec := xml.NewDecoder(r)
	out := make(map[int][]tsOption)
	malformed := make(map[int]bool)
	frame := 0
	var cur *tsOption
	depth := 0 // element depth inside cur
	attr := func(e xml.StartElement, name string) string {
		for _, a := range e.Attr {
			if a.Name.Local == name {
				return a.Value
			}
		}
		return ""
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out, malformed, nil
		}
		if err != nil {
			return nil, nil, err
		}
		switch e := tok.(type) {
		case xml.StartElement:
			name := attr(e, "name")
			if cur != nil {
				depth++
				if e.Name.Local == "field" && name != "" {
					cur.fields[name] = append(cur.fields[name], tsField{show: attr(e, "show"), value: attr(e, "value")})
				}
				continue
			}
			switch {
			case e.Name.Local == "packet":
				frame = 0
			case name == "frame.number":
				frame, _ = strconv.Atoi(attr(e, "show"))
			case name == "_ws.malformed":
				malformed[frame] = true
			case e.Name.Local == "proto" && name == "mptcp" && attr(e, "size") != "0":
				pos, _ := strconv.Atoi(attr(e, "pos"))
				size, _ := strconv.Atoi(attr(e, "size"))
				cur = &tsOption{pos: pos, size: size, fields: make(map[string][]tsField)}
				depth = 0
			}
		case xml.EndElement:
			if cur == nil {
				continue
			}
			if depth > 0 {
				depth--
				continue
			}
			if frame == 0 {
				return nil, nil, fmt.Errorf("mptcp element outside a numbered frame")
			}
			out[frame] = append(out[frame], *cur)
			cur = nil
		}
	}
}

// compareTshark is assertion (b): per frame and per option occurrence,
// every field tshark shows equals ours.
func compareTshark(t *testing.T, path string, pkts []pcaps.Packet) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	ts, malformed := tsharkOptions(t, path)
	for f := range malformed {
		t.Errorf("tshark: frame %d is malformed", f)
	}
	compared := 0
	ours := make(map[int]bool)
	for i := range pkts {
		p := &pkts[i]
		ours[p.Index] = true
		got := ts[p.Index]
		if len(got) != len(p.MPTCP) {
			t.Errorf("frame %d: tshark shows %d MPTCP options, we decode %d", p.Index, len(got), len(p.MPTCP))
			continue
		}
		for j, o := range p.MPTCP {
			for _, d := range diffTshark(o, got[j]) {
				t.Errorf("frame %d option %d (%T): %s", p.Index, j+1, o, d)
			}
			compared++
		}
	}
	for f := range ts {
		if !ours[f] {
			t.Errorf("frame %d: tshark shows MPTCP options in a frame pcaps skipped", f)
		}
	}
	if compared == 0 {
		t.Error("no option compared with tshark")
	}
	t.Logf("compared %d MPTCP options with tshark", compared)
}
