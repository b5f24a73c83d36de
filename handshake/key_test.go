package handshake

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// Vectors computed outside Go: printf '<8 key bytes>' | sha256sum. The token
// is the first 4 bytes of the digest, the IDSN the last 8.
var keyVectors = []struct {
	key   uint64
	token uint32
	idsn  uint64
}{
	// af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc
	{0, 0xaf5570f5, 0xe5b2328de0e83dfc},
	// 66840dda154e8a113c31dd0ad32f7f3a366a80e8136979d8f5a101d3d29d6f72
	{0x0102030405060708, 0x66840dda, 0xf5a101d3d29d6f72},
	// 18f9781b1b2c2d85dc80ea6af8a7acf9bf1911a768411d39280818bf0fa7e28e
	{0xfedcba9876543210, 0x18f9781b, 0x280818bf0fa7e28e},
	// The two keys of testdata/kernel_join.pcap, with the token and IDSN
	// that tshark's MPTCP dissector derives from them
	// (mptcp.expected_token, mptcp.expected_idsn).
	{0x20e229270121ee7c, 1319149333, 16533152075091657872},
	{0x9ca977f23f31d51f, 2574732973, 8549867339406534555},
}

func TestTokenAndIDSN(t *testing.T) {
	for _, v := range keyVectors {
		tk, id := TokenAndIDSN(v.key)
		if tk != v.token || id != v.idsn {
			t.Errorf("TokenAndIDSN(%#x) = %#x, %#x; want %#x, %#x", v.key, tk, id, v.token, v.idsn)
		}
		if got := Token(v.key); got != v.token {
			t.Errorf("Token(%#x) = %#x, want %#x", v.key, got, v.token)
		}
		if got := IDSN(v.key); got != v.idsn {
			t.Errorf("IDSN(%#x) = %#x, want %#x", v.key, got, v.idsn)
		}
	}
}

// seqReader yields the given 8-byte keys in order, then io.EOF, and counts
// the bytes read.
type seqReader struct {
	buf bytes.Buffer
	n   int
}

func keysReader(keys ...uint64) *seqReader {
	r := new(seqReader)
	for _, k := range keys {
		r.buf.Write(binary.BigEndian.AppendUint64(nil, k))
	}
	return r
}

func (r *seqReader) Read(p []byte) (int, error) {
	n, err := r.buf.Read(p)
	r.n += n
	return n, err
}

func TestNewKey(t *testing.T) {
	t.Run("first key when nothing in use", func(t *testing.T) {
		r := keysReader(0x1111, 0x2222)
		k, err := NewKey(r, nil)
		if err != nil || k != 0x1111 {
			t.Fatalf("NewKey = %#x, %v; want 0x1111", k, err)
		}
		if r.n != 8 {
			t.Errorf("read %d bytes, want 8", r.n)
		}
	})
	t.Run("skips zero and used tokens", func(t *testing.T) {
		used := map[uint32]bool{Token(0x1111): true, Token(0x2222): true}
		var asked []uint32
		inUse := func(tok uint32) bool { asked = append(asked, tok); return used[tok] }
		k, err := NewKey(keysReader(0, 0x1111, 0x2222, 0x3333, 0x4444), inUse)
		if err != nil || k != 0x3333 {
			t.Fatalf("NewKey = %#x, %v; want 0x3333", k, err)
		}
		want := []uint32{Token(0x1111), Token(0x2222), Token(0x3333)}
		if len(asked) != len(want) {
			t.Fatalf("inUse asked for %#x, want %#x", asked, want)
		}
		for i := range want {
			if asked[i] != want[i] {
				t.Fatalf("inUse asked for %#x, want %#x", asked, want)
			}
		}
	})
	t.Run("gives up after MaxKeyAttempts", func(t *testing.T) {
		keys := make([]uint64, MaxKeyAttempts+5)
		for i := range keys {
			keys[i] = uint64(i + 1)
		}
		r := keysReader(keys...)
		k, err := NewKey(r, func(uint32) bool { return true })
		if !errors.Is(err, ErrNoUniqueKey) || k != 0 {
			t.Fatalf("NewKey = %#x, %v; want ErrNoUniqueKey", k, err)
		}
		if r.n != 8*MaxKeyAttempts {
			t.Errorf("read %d bytes, want %d", r.n, 8*MaxKeyAttempts)
		}
	})
	t.Run("only zero keys", func(t *testing.T) {
		k, err := NewKey(keysReader(make([]uint64, MaxKeyAttempts)...), nil)
		if !errors.Is(err, ErrNoUniqueKey) || k != 0 {
			t.Fatalf("NewKey = %#x, %v; want ErrNoUniqueKey", k, err)
		}
	})
	t.Run("short read", func(t *testing.T) {
		_, err := NewKey(bytes.NewReader([]byte{1, 2, 3}), nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("NewKey on a 3-byte reader: %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("crypto/rand", func(t *testing.T) {
		seen := map[uint64]bool{}
		for range 100 {
			k, err := NewKey(nil, nil)
			if err != nil || k == 0 || seen[k] {
				t.Fatalf("NewKey(nil, nil) = %#x, %v (seen before: %v)", k, err, seen[k])
			}
			seen[k] = true
		}
	})
}

func TestNewNonce(t *testing.T) {
	n, err := NewNonce(bytes.NewReader([]byte{0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}))
	if err != nil || n != 0xdeadbeef {
		t.Fatalf("NewNonce = %#x, %v; want 0xdeadbeef (zero skipped)", n, err)
	}
	if _, err := NewNonce(bytes.NewReader(make([]byte, 4*MaxKeyAttempts))); !errors.Is(err, ErrZeroNonce) {
		t.Fatalf("NewNonce on zeros: %v, want ErrZeroNonce", err)
	}
	if _, err := NewNonce(bytes.NewReader([]byte{1})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("NewNonce on a 1-byte reader: %v, want io.ErrUnexpectedEOF", err)
	}
	if n, err := NewNonce(nil); err != nil || n == 0 {
		t.Fatalf("NewNonce(nil) = %#x, %v", n, err)
	}
}

// TestTokenIsDigestPrefix cross-checks the split of the digest for many keys
// against crypto/sha256 directly.
func TestTokenIsDigestPrefix(t *testing.T) {
	for i := range 1000 {
		key := uint64(i) * 0x9e3779b97f4a7c15
		d := sha256.Sum256(binary.BigEndian.AppendUint64(nil, key))
		tk, id := TokenAndIDSN(key)
		if tk != binary.BigEndian.Uint32(d[:4]) || id != binary.BigEndian.Uint64(d[24:]) {
			t.Fatalf("key %#x: got %#x %#x, digest %x", key, tk, id, d)
		}
	}
}
