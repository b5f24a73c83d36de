package options

// prioVectors follow RFC 8684 §3.3.8, Figure 11.
var prioVectors = []vector{
	{name: "MP_PRIO backup", raw: hx("1e 03 51"), want: MPPrio{Backup: true}},
	{name: "MP_PRIO regular", raw: hx("1e 03 50"), want: MPPrio{}},
}

var prioBad = []badVector{
	{"MP_PRIO RFC 6824 form with address ID", hx("1e 04 51 02"), ErrBadLength},
	{"MP_PRIO length 5", hx("1e 05 51 00 00"), ErrBadLength},
}
