package options

// failVectors follow RFC 8684 §3.7, Figure 16.
var failVectors = []vector{
	{name: "MP_FAIL", raw: hx("1e 0c 60 00 00 00 00 02 aa bb cc dd"), want: MPFail{DSN: 0x2aabbccdd}},
	{name: "MP_FAIL max DSN", raw: hx("1e 0c 60 00 ff ff ff ff ff ff ff ff"), want: MPFail{DSN: ^uint64(0)}},
}

var failBad = []badVector{
	{"MP_FAIL length 11", hx("1e 0b 60 00 00 00 00 02 aa bb cc"), ErrBadLength},
	{"MP_FAIL length 13", hx("1e 0d 60 00 00 00 00 02 aa bb cc dd ee"), ErrBadLength},
	{"MP_FAIL length 3", hx("1e 03 60"), ErrBadLength},
}
