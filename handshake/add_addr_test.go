package handshake

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var (
	testAddr4 = netip.MustParseAddr("10.0.0.1")
	testAddr6 = netip.MustParseAddr("2001:db8::1")
)

// Vectors computed outside Go with Python's hmac module:
// hmac.new(key1||key2, id||addr||port, sha256), rightmost 8 bytes.
func TestAddAddrHMACVectors(t *testing.T) {
	const sender, receiver = 0x0102030405060708, 0xa1a2a3a4a5a6a7a8
	for _, v := range []struct {
		id   uint8
		addr string
		port uint16
		want uint64
	}{
		// 8b58f118a3d1198dcbedb915fb2693c303c1fc5ef220d2debe5438d13aa1426b
		{7, "10.0.0.1", 8080, 0xbe5438d13aa1426b},
		// f17721f2e7fc8054c9d084b4258b3f3267682d7aed137b812adc4e2ad0788ba8
		{7, "10.0.0.1", 0, 0x2adc4e2ad0788ba8},
		{7, "::ffff:10.0.0.1", 0, 0x2adc4e2ad0788ba8}, // IPv4-mapped: hashed as IPv4
		// fa88bbd378d8c20a32bd8fc8161af66acc415aa268eee3fd14acdb5c4e5e41df
		{9, "2001:db8::1", 0, 0x14acdb5c4e5e41df},
		{9, "2001:db8::1%eth0", 0, 0x14acdb5c4e5e41df}, // zone is not hashed
	} {
		addr := netip.MustParseAddr(v.addr)
		if got := AddAddrHMAC(sender, receiver, v.id, addr, v.port); got != v.want {
			t.Errorf("AddAddrHMAC(id %d, %s, port %d) = %#x, want %#x", v.id, v.addr, v.port, got, v.want)
		}
		if !VerifyAddAddr(sender, receiver, v.id, addr, v.port, v.want) {
			t.Errorf("VerifyAddAddr(id %d, %s, port %d) rejects %#x", v.id, v.addr, v.port, v.want)
		}
	}
}

// TestAddAddrHMACMessage checks the message layout against crypto/hmac for
// random inputs: id (1) || address (4 or 16) || port (2, big-endian), keyed
// sender||receiver, rightmost 64 bits.
func TestAddAddrHMACMessage(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		ks, kr := rng.Uint64(), rng.Uint64()
		id := uint8(rng.Uint32())
		port := uint16(rng.Uint32())
		var a16 [16]byte
		for i := range a16 {
			a16[i] = byte(rng.Uint32())
		}
		for _, addr := range []netip.Addr{netip.AddrFrom4([4]byte(a16[:4])), netip.AddrFrom16(a16)} {
			msg := append([]byte{id}, addr.AsSlice()...)
			msg = binary.BigEndian.AppendUint16(msg, port)
			want := stdHMAC(ks, kr, msg)
			if got := AddAddrHMAC(ks, kr, id, addr, port); got != binary.BigEndian.Uint64(want[24:]) {
				t.Fatalf("AddAddrHMAC(%#x, %#x, %d, %s, %d) = %#x, want rightmost 64 bits of %x", ks, kr, id, addr, port, got, want)
			}
		}
	}
}

func TestVerifyAddAddrRejects(t *testing.T) {
	const ks, kr = 0x0123456789abcdef, 0x1122334455667788
	const id, port = 3, 443
	for _, addr := range []netip.Addr{testAddr4, testAddr6} {
		mac := AddAddrHMAC(ks, kr, id, addr, port)
		if !VerifyAddAddr(ks, kr, id, addr, port, mac) {
			t.Fatalf("%s: correct HMAC rejected", addr)
		}
		if VerifyAddAddr(kr, ks, id, addr, port, mac) {
			t.Errorf("%s: verifies with sender and receiver keys swapped", addr)
		}
		for bit := range 64 {
			f := uint64(1) << bit
			if VerifyAddAddr(ks, kr, id, addr, port, mac^f) {
				t.Errorf("%s: HMAC with bit %d flipped verifies", addr, bit)
			}
			if VerifyAddAddr(ks^f, kr, id, addr, port, mac) || VerifyAddAddr(ks, kr^f, id, addr, port, mac) {
				t.Errorf("%s: verifies with key bit %d flipped", addr, bit)
			}
		}
		for bit := range 8 {
			if VerifyAddAddr(ks, kr, id^(1<<bit), addr, port, mac) {
				t.Errorf("%s: verifies with address ID bit %d flipped", addr, bit)
			}
		}
		for bit := range 16 {
			if VerifyAddAddr(ks, kr, id, addr, port^(1<<bit), mac) {
				t.Errorf("%s: verifies with port bit %d flipped", addr, bit)
			}
		}
		b := addr.AsSlice()
		for bit := range 8 * len(b) {
			c := append([]byte(nil), b...)
			c[bit/8] ^= 1 << (bit % 8)
			other, _ := netip.AddrFromSlice(c)
			if VerifyAddAddr(ks, kr, id, other, port, mac) {
				t.Errorf("%s: verifies for %s (bit %d flipped)", addr, other, bit)
			}
		}
	}
	// An IPv4 address and the IPv6 address with the same last 4 bytes
	// differ in length on the wire, so in the HMAC.
	v4 := AddAddrHMAC(ks, kr, id, testAddr4, port)
	if VerifyAddAddr(ks, kr, id, netip.MustParseAddr("::10.0.0.1"), port, v4) {
		t.Error("IPv4-compatible IPv6 address verifies with the IPv4 HMAC")
	}
	if VerifyAddAddr(ks, kr, id, netip.Addr{}, port, AddAddrHMAC(ks, kr, id, netip.Addr{}, port)) {
		t.Error("the invalid zero Addr verifies")
	}
}
