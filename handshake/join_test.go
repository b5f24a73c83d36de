package handshake

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestJoinHandshake plays both ends of an MP_JOIN: each side computes its own
// HMAC with its own key and nonce first and checks the peer's with the peer's
// first (RFC 8684 §3.2).
func TestJoinHandshake(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		keyA, keyB := rng.Uint64(), rng.Uint64() // A initiates the join, B listens
		rA, rB := rng.Uint32(), rng.Uint32()

		synack := JoinSYNACKHMAC(keyB, keyA, rB, rA) // B -> A
		if !VerifyJoinSYNACK(keyB, keyA, rB, rA, synack) {
			t.Fatal("A rejects B's SYN/ACK HMAC")
		}
		ack := JoinACKHMAC(keyA, keyB, rA, rB) // A -> B
		if !VerifyJoinACK(keyA, keyB, rA, rB, ack) {
			t.Fatal("B rejects A's ACK HMAC")
		}

		// Independent construction of both MACs from the definition.
		msgBA := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, rB), rA)
		if want := stdHMAC(keyB, keyA, msgBA); synack != binary.BigEndian.Uint64(want[:8]) {
			t.Fatalf("SYN/ACK HMAC %#x, want leftmost 64 bits of %x", synack, want)
		}
		msgAB := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, rA), rB)
		if want := stdHMAC(keyA, keyB, msgAB); string(ack[:]) != string(want[:20]) {
			t.Fatalf("ACK HMAC %x, want leftmost 160 bits of %x", ack, want)
		}

		// The two directions are different MACs: a reflected HMAC, or one
		// computed with the roles swapped, must not verify.
		if keyA != keyB || rA != rB {
			if VerifyJoinSYNACK(keyA, keyB, rA, rB, synack) {
				t.Fatal("SYN/ACK HMAC verifies with the roles swapped")
			}
			if VerifyJoinACK(keyB, keyA, rB, rA, ack) {
				t.Fatal("ACK HMAC verifies with the roles swapped")
			}
			if VerifyJoinSYNACK(keyB, keyA, rB, rA, binary.BigEndian.Uint64(ack[:8])) {
				t.Fatal("A's ACK HMAC, truncated, verifies as B's SYN/ACK HMAC")
			}
		}
	}
}

// TestJoinVerifyRejectsBitFlips flips every bit of every input in turn.
func TestJoinVerifyRejectsBitFlips(t *testing.T) {
	const keyA, keyB = 0x0123456789abcdef, 0xfedcba9876543210
	const rA, rB = 0x11223344, 0x55667788
	synack := JoinSYNACKHMAC(keyB, keyA, rB, rA)
	ack := JoinACKHMAC(keyA, keyB, rA, rB)

	for bit := range 64 {
		f := uint64(1) << bit
		if VerifyJoinSYNACK(keyB, keyA, rB, rA, synack^f) {
			t.Errorf("SYN/ACK HMAC with bit %d flipped verifies", bit)
		}
		if VerifyJoinSYNACK(keyB^f, keyA, rB, rA, synack) || VerifyJoinSYNACK(keyB, keyA^f, rB, rA, synack) {
			t.Errorf("SYN/ACK HMAC verifies with key bit %d flipped", bit)
		}
		if VerifyJoinACK(keyA^f, keyB, rA, rB, ack) || VerifyJoinACK(keyA, keyB^f, rA, rB, ack) {
			t.Errorf("ACK HMAC verifies with key bit %d flipped", bit)
		}
	}
	for bit := range 32 {
		f := uint32(1) << bit
		if VerifyJoinSYNACK(keyB, keyA, rB^f, rA, synack) || VerifyJoinSYNACK(keyB, keyA, rB, rA^f, synack) {
			t.Errorf("SYN/ACK HMAC verifies with nonce bit %d flipped", bit)
		}
		if VerifyJoinACK(keyA, keyB, rA^f, rB, ack) || VerifyJoinACK(keyA, keyB, rA, rB^f, ack) {
			t.Errorf("ACK HMAC verifies with nonce bit %d flipped", bit)
		}
	}
	for bit := range 8 * JoinACKHMACLen {
		bad := ack
		bad[bit/8] ^= 1 << (bit % 8)
		if VerifyJoinACK(keyA, keyB, rA, rB, bad) {
			t.Errorf("ACK HMAC with bit %d flipped verifies", bit)
		}
	}
}
