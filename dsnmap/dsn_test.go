package dsnmap

import (
	"math/rand"
	"testing"
)

func TestExpand(t *testing.T) {
	for _, tc := range []struct {
		low  uint32
		ref  DSN
		want DSN
	}{
		{low: 0x10, ref: 0x10, want: 0x10},
		{low: 0x20, ref: 0x1_0000_0010, want: 0x1_0000_0020},
		// Just past a 32-bit wrap: the ref is in the old epoch.
		{low: 0x5, ref: 0x1_ffff_fff0, want: 0x2_0000_0005},
		// A value just behind ref across the wrap (e.g. an old Data ACK).
		{low: 0xffff_fff0, ref: 0x2_0000_0005, want: 0x1_ffff_fff0},
		// Near the top of the 64-bit space: wraps to 0.
		{low: 0x3, ref: 0xffff_ffff_ffff_fff0, want: 0x3},
		{low: 0xffff_fff0, ref: 0x2, want: 0xffff_ffff_ffff_fff0},
		// Exactly 2^31 away counts as behind (serial-number convention).
		{low: 0x8000_0000, ref: 0x5_0000_0000, want: 0x4_8000_0000},
		{low: 0x7fff_ffff, ref: 0x5_0000_0000, want: 0x5_7fff_ffff},
	} {
		if got := Expand(tc.low, tc.ref); got != tc.want {
			t.Errorf("Expand(%#x, %#x) = %#x, want %#x", tc.low, tc.ref, got, tc.want)
		}
	}
}

// Property: any 64-bit value within 2^31 of the reference is recovered
// exactly from its low 32 bits.
func TestExpandRecoversNearbyValues(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 100000; i++ {
		ref := DSN(r.Uint64())
		off := int64(r.Int31()) - int64(r.Int31())
		v := ref + DSN(off)
		if got := Expand(v.Low32(), ref); got != v {
			t.Fatalf("Expand(%#x, ref %#x) = %#x, want %#x", v.Low32(), ref, got, v)
		}
	}
}

func TestDSNOrder(t *testing.T) {
	a := DSN(0xffff_ffff_ffff_fffe)
	b := a.Add(4) // wraps to 2
	if !a.LessThan(b) || b.LessThan(a) || !a.LessThanEq(a) {
		t.Fatalf("order across 2^64 wrap is wrong: %#x vs %#x", a, b)
	}
	if a.Size(b) != 4 {
		t.Fatalf("Size = %d, want 4", a.Size(b))
	}
	if !DSN(1).InWindow(a, 5) || DSN(3).InWindow(a, 5) {
		t.Fatal("InWindow across wrap is wrong")
	}
}
