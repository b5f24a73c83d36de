package options

import "testing"

// removeAddrVectors follow RFC 8684 §3.4.2, Figure 13.
var removeAddrVectors = []vector{
	{name: "REMOVE_ADDR one ID", raw: hx("1e 04 40 05"),
		want: RemoveAddr{IDs: []uint8{5}}},
	{name: "REMOVE_ADDR eight IDs (Linux maximum)", raw: hx("1e 0b 40 01 02 03 04 05 06 07 08"),
		want: RemoveAddr{IDs: []uint8{1, 2, 3, 4, 5, 6, 7, 8}}},
	{name: "REMOVE_ADDR ten IDs", raw: hx("1e 0d 40 00 ff 10 20 30 40 50 60 70 80"),
		want: RemoveAddr{IDs: []uint8{0, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80}}},
}

var removeAddrBad = []badVector{
	{"REMOVE_ADDR without IDs", hx("1e 03 40"), ErrBadLength},
}

// TestRemoveAddrAliases documents that ParseRemoveAddr does not copy.
func TestRemoveAddrAliases(t *testing.T) {
	buf := hx("1e 05 40 01 02")
	r, err := ParseRemoveAddr(buf)
	if err != nil {
		t.Fatal(err)
	}
	buf[3] = 9
	if r.IDs[0] != 9 {
		t.Error("IDs does not alias the input")
	}
	if cap(r.IDs) != 2 {
		t.Errorf("cap(IDs) = %d, want 2: appending must not clobber the buffer", cap(r.IDs))
	}
}

func TestRemoveAddrNoAlloc(t *testing.T) {
	buf := hx("1e 07 40 01 02 03 04")
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseRemoveAddr(buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ParseRemoveAddr allocates %v times", n)
	}
}
