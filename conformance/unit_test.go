package conformance

import (
	"strings"
	"testing"
)

func TestExpandDSN(t *testing.T) {
	for _, c := range []struct {
		ref  uint64
		low  uint32
		want uint64
	}{
		{0x1_0000_0010, 0x20, 0x1_0000_0020},
		{0x1_ffff_fff0, 0x10, 0x2_0000_0010},        // wrapped forward
		{0x2_0000_0010, 0xffff_fff0, 0x1_ffff_fff0}, // just behind the reference
		{0xffff_ffff_ffff_fff0, 0x5, 0x5},           // 64-bit wrap
		{0x10, 0xffff_fffe, 0xffff_ffff_ffff_fffe},  // below zero
	} {
		if got := expandDSN(c.ref, c.low); got != c.want {
			t.Errorf("expandDSN(%#x, %#x) = %#x, want %#x", c.ref, c.low, got, c.want)
		}
	}
}

func TestParsePDML(t *testing.T) {
	const doc = `<?xml version="1.0"?>
<pdml>
<packet>
  <proto name="frame"><field name="frame.number" show="7"/></proto>
  <proto name="tcp">
    <field name="tcp.options">
      <proto name="mptcp" size="4" pos="66">
        <field name="tcp.option_len" show="4" value="04"/>
        <field name="tcp.options.mptcp.subtype" show="4"/>
        <field name="tcp.options.mptcp.addrid" show="3"/>
        <field name="tcp.options.mptcp.flags" show="0x40"><field name="tcp.options.mptcp.backup.flag" show="0"/></field>
      </proto>
      <proto name="mptcp" size="0" pos="70"><field name="mptcp.analysis" show=""/></proto>
      <proto name="mptcp" size="3" pos="70"><field name="tcp.options.mptcp.subtype" show="5"/></proto>
    </field>
    <field name="_ws.malformed" show=""/>
  </proto>
</packet>
</pdml>`
	opts, malformed, err := parsePDML(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	got := opts[7]
	if len(got) != 2 {
		t.Fatalf("frame 7: %d options, want 2 (the size-0 analysis element is skipped): %+v", len(got), got)
	}
	if v, _ := got[0].first("tcp.options.mptcp.addrid"); v != "3" {
		t.Errorf("addrid %q", v)
	}
	if v, _ := got[0].first("tcp.options.mptcp.backup.flag"); v != "0" {
		t.Errorf("nested field %q", v)
	}
	if got[0].pos != 66 || got[0].size != 4 {
		t.Errorf("pos/size %d/%d", got[0].pos, got[0].size)
	}
	if v, _ := got[1].first("tcp.options.mptcp.subtype"); v != "5" {
		t.Errorf("second option subtype %q", v)
	}
	if !malformed[7] {
		t.Error("malformed flag not seen")
	}
}
