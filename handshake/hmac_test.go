package handshake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

// The Linux kernel's MPTCP HMAC vectors (net/mptcp/crypto_test.c). The
// kernel test reads each key and message string as raw ASCII bytes: the
// first 8 characters of key are key1 (big-endian), the next 8 key2, and the
// message's two 4-character halves are nonce1 and nonce2. So the HMAC key is
// literally the 16 ASCII bytes of the key string and the message the 8 ASCII
// bytes of the msg string.
var kernelHMACVectors = []struct {
	key, msg, result string
}{
	{"0b0b0b0b0b0b0b0b", "48692054", "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"},
	{"aaaaaaaaaaaaaaaa", "dddddddd", "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"},
	{"0102030405060708", "cdcdcdcd", "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"},
}

func TestHMACKernelVectors(t *testing.T) {
	for _, v := range kernelHMACVectors {
		t.Run(v.key+"/"+v.msg, func(t *testing.T) {
			key1 := binary.BigEndian.Uint64([]byte(v.key[:8]))
			key2 := binary.BigEndian.Uint64([]byte(v.key[8:]))
			nonce1 := binary.BigEndian.Uint32([]byte(v.msg[:4]))
			nonce2 := binary.BigEndian.Uint32([]byte(v.msg[4:]))
			want, err := hex.DecodeString(v.result)
			if err != nil {
				t.Fatal(err)
			}

			if got := HMAC(key1, key2, []byte(v.msg)); hex.EncodeToString(got[:]) != v.result {
				t.Errorf("HMAC = %x, want %s", got, v.result)
			}
			// The join HMACs are this primitive over nonce1||nonce2,
			// truncated on the left.
			if got := JoinACKHMAC(key1, key2, nonce1, nonce2); string(got[:]) != string(want[:20]) {
				t.Errorf("JoinACKHMAC = %x, want %x", got, want[:20])
			}
			if got, w := JoinSYNACKHMAC(key1, key2, nonce1, nonce2), binary.BigEndian.Uint64(want[:8]); got != w {
				t.Errorf("JoinSYNACKHMAC = %#x, want %#x", got, w)
			}
			if !VerifyJoinACK(key1, key2, nonce1, nonce2, [20]byte(want[:20])) {
				t.Error("VerifyJoinACK rejects the kernel's HMAC")
			}
			if !VerifyJoinSYNACK(key1, key2, nonce1, nonce2, binary.BigEndian.Uint64(want[:8])) {
				t.Error("VerifyJoinSYNACK rejects the kernel's truncated HMAC")
			}
		})
	}
}

// stdHMAC is the reference: crypto/hmac with the 16-byte key key1||key2.
func stdHMAC(key1, key2 uint64, msg []byte) []byte {
	k := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, key1), key2)
	m := hmac.New(sha256.New, k)
	m.Write(msg)
	return m.Sum(nil)
}

func TestHMACMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	msg := make([]byte, 100)
	for n := 0; n <= len(msg); n++ { // both the stack path (<= 32) and the fallback
		for range 20 {
			key1, key2 := rng.Uint64(), rng.Uint64()
			for i := range msg[:n] {
				msg[i] = byte(rng.Uint32())
			}
			got := HMAC(key1, key2, msg[:n])
			if want := stdHMAC(key1, key2, msg[:n]); string(got[:]) != string(want) {
				t.Fatalf("HMAC(%#x, %#x, %x) = %x, crypto/hmac says %x", key1, key2, msg[:n], got, want)
			}
		}
	}
}

func TestNoAllocs(t *testing.T) {
	var sink uint64
	for name, f := range map[string]func(){
		"Token":            func() { sink += uint64(Token(sink)) },
		"TokenAndIDSN":     func() { tk, id := TokenAndIDSN(sink); sink += uint64(tk) + id },
		"JoinSYNACKHMAC":   func() { sink += JoinSYNACKHMAC(sink, 2, 3, 4) },
		"JoinACKHMAC":      func() { m := JoinACKHMAC(sink, 2, 3, 4); sink += uint64(m[0]) },
		"VerifyJoinSYNACK": func() { _ = VerifyJoinSYNACK(sink, 2, 3, 4, 5) },
		"VerifyJoinACK":    func() { _ = VerifyJoinACK(sink, 2, 3, 4, [20]byte{}) },
		"AddAddrHMAC/v6":   func() { sink += AddAddrHMAC(sink, 2, 3, testAddr6, 80) },
		"VerifyAddAddr/v4": func() { _ = VerifyAddAddr(sink, 2, 3, testAddr4, 0, 5) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}

func BenchmarkToken(b *testing.B) {
	var sink uint32
	for i := 0; b.Loop(); i++ {
		sink += Token(uint64(i))
	}
	_ = sink
}

func BenchmarkJoinACKHMAC(b *testing.B) {
	var sink byte
	for i := 0; b.Loop(); i++ {
		m := JoinACKHMAC(uint64(i), 0x0102030405060708, 0xa1a2a3a4, uint32(i))
		sink += m[0]
	}
	_ = sink
}

// BenchmarkJoinACKHMACStdlib is the same computation with crypto/hmac, to
// justify the hand-rolled primitive.
func BenchmarkJoinACKHMACStdlib(b *testing.B) {
	var sink byte
	var msg [8]byte
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint32(msg[:4], 0xa1a2a3a4)
		binary.BigEndian.PutUint32(msg[4:], uint32(i))
		m := stdHMAC(uint64(i), 0x0102030405060708, msg[:])
		sink += m[0]
	}
	_ = sink
}
