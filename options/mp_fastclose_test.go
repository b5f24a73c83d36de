package options

// fastcloseVectors follow RFC 8684 §3.5, Figure 14.
var fastcloseVectors = []vector{
	{name: "MP_FASTCLOSE", raw: hx("1e 0c 70 00 11 12 13 14 15 16 17 18"), want: MPFastclose{Key: testKeyB}},
}

var fastcloseBad = []badVector{
	{"MP_FASTCLOSE length 4", hx("1e 04 70 00"), ErrBadLength},
	{"MP_FASTCLOSE length 20", hx("1e 14 70 00 11 12 13 14 15 16 17 18 01 02 03 04 05 06 07 08"), ErrBadLength},
}
