package options

import (
	"net/netip"
	"testing"
)

const testAddHMAC = 0x0123456789abcdef // "01 23 45 67 89 ab cd ef"

// addAddrVectors follow RFC 8684 §3.4.1, Figure 12: [kind][len][3|rsv|E]
// [addr ID][address 4/16][port 2, optional][truncated HMAC 8, iff E = 0].
var addAddrVectors = []vector{
	{name: "ADD_ADDR v4 echo", raw: hx("1e 08 31 01 c0 a8 01 02"),
		want: AddAddr{Echo: true, AddrID: 1, Addr: netip.MustParseAddr("192.168.1.2")}},
	{name: "ADD_ADDR v4 echo port", raw: hx("1e 0a 31 01 c0 a8 01 02 1f 90"),
		want: AddAddr{Echo: true, AddrID: 1, Addr: netip.MustParseAddr("192.168.1.2"), HasPort: true, Port: 8080}},
	{name: "ADD_ADDR v4 HMAC", raw: hx("1e 10 30 02 0a 00 00 02 01 23 45 67 89 ab cd ef"),
		want: AddAddr{AddrID: 2, Addr: netip.MustParseAddr("10.0.0.2"), HMAC: testAddHMAC}},
	{name: "ADD_ADDR v4 HMAC port", raw: hx("1e 12 30 02 0a 00 00 02 1f 90 01 23 45 67 89 ab cd ef"),
		want: AddAddr{AddrID: 2, Addr: netip.MustParseAddr("10.0.0.2"), HasPort: true, Port: 8080, HMAC: testAddHMAC}},
	{name: "ADD_ADDR v6 echo", raw: hx("1e 14 31 03 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01"),
		want: AddAddr{Echo: true, AddrID: 3, Addr: netip.MustParseAddr("2001:db8::1")}},
	{name: "ADD_ADDR v6 echo port", raw: hx("1e 16 31 03 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 01 bb"),
		want: AddAddr{Echo: true, AddrID: 3, Addr: netip.MustParseAddr("2001:db8::1"), HasPort: true, Port: 443}},
	{name: "ADD_ADDR v6 HMAC", raw: hx("1e 1c 30 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 01 23 45 67 89 ab cd ef"),
		want: AddAddr{AddrID: 4, Addr: netip.MustParseAddr("2001:db8::1"), HMAC: testAddHMAC}},
	{name: "ADD_ADDR v6 HMAC port", raw: hx("1e 1e 30 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 00 01 23 45 67 89 ab cd ef"),
		want: AddAddr{AddrID: 4, Addr: netip.MustParseAddr("2001:db8::1"), HasPort: true, Port: 0, HMAC: testAddHMAC}},
	{name: "ADD_ADDR v4-mapped v6 stays v6", raw: hx("1e 14 31 09 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01"),
		want: AddAddr{Echo: true, AddrID: 9, Addr: netip.MustParseAddr("::ffff:10.0.0.1")}},
}

var addAddrBad = []badVector{
	{"ADD_ADDR echo with HMAC length (v4 16)", hx("1e 10 31 02 0a 00 00 02 01 23 45 67 89 ab cd ef"), ErrBadLength},
	{"ADD_ADDR echo with HMAC length (v6 30)", hx("1e 1e 31 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 00 01 23 45 67 89 ab cd ef"), ErrBadLength},
	{"ADD_ADDR no echo without HMAC (v4 8)", hx("1e 08 30 01 c0 a8 01 02"), ErrBadLength},
	{"ADD_ADDR no echo without HMAC (v6 22)", hx("1e 16 30 03 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 01 bb"), ErrBadLength},
	{"ADD_ADDR length 3", hx("1e 03 31"), ErrBadLength},
	{"ADD_ADDR length 4", hx("1e 04 31 01"), ErrBadLength},
	{"ADD_ADDR echo length 12", hx("1e 0c 31 01 c0 a8 01 02 1f 90 00 00"), ErrBadLength},
	{"ADD_ADDR length 17", hx("1e 11 30 02 0a 00 00 02 00 01 23 45 67 89 ab cd ef"), ErrBadLength},
}

// TestAddAddrAllLengths checks the length rule exhaustively: with E = 1 the
// accepted lengths are 8, 10, 20, 22; with E = 0, 16, 18, 28, 30.
func TestAddAddrAllLengths(t *testing.T) {
	ok := map[bool]map[int]bool{
		true:  {8: true, 10: true, 20: true, 22: true},
		false: {16: true, 18: true, 28: true, 30: true},
	}
	for _, echo := range []bool{true, false} {
		for n := 3; n <= 40; n++ {
			opt := make([]byte, n)
			opt[0], opt[1], opt[2] = 30, byte(n), 0x30
			if echo {
				opt[2] |= 1
			}
			a, err := ParseAddAddr(opt)
			if ok[echo][n] != (err == nil) {
				t.Errorf("echo=%v length %d: err %v", echo, n, err)
				continue
			}
			if err == nil && (a.Len() != n || a.Addr.Is6() != (n >= 20)) {
				t.Errorf("echo=%v length %d: decoded %+v, Len %d", echo, n, a, a.Len())
			}
		}
	}
}

func TestAddAddrZeroAddrEncodesNothing(t *testing.T) {
	a := AddAddr{AddrID: 1, HMAC: 5}
	if a.Len() != 0 || len(a.Append(nil)) != 0 {
		t.Errorf("zero Addr: Len %d, Append % x", a.Len(), a.Append(nil))
	}
}
