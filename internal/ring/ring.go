// Package ring is a bounded byte ring buffer that grows on demand: the
// send buffer of an MPTCP connection (data kept until the Data ACK) and
// the in-order queue of its reassembler. Bytes are copied in once and out
// once; nothing is moved while the buffer is in use, except when it grows
// (doubling, so the cost is amortised), and nothing is allocated per
// write.
package ring

// minGrow is the smallest backing array allocated.
const minGrow = 64 << 10

// Buffer is a FIFO of bytes holding at most Max bytes. The zero value
// holds nothing; set the bound with New or SetMax. Not safe for
// concurrent use.
type Buffer struct {
	buf  []byte
	head int // index of the first byte in buf
	n    int // bytes held
	max  int
}

// New returns an empty buffer bounded to max bytes. Memory is allocated as
// bytes arrive.
func New(max int) *Buffer { return &Buffer{max: max} }

// Len returns the number of bytes held.
func (b *Buffer) Len() int { return b.n }

// Max returns the bound.
func (b *Buffer) Max() int { return b.max }

// SetMax changes the bound; bytes already held are kept even above it.
func (b *Buffer) SetMax(max int) { b.max = max }

// Free returns how many more bytes Write accepts.
func (b *Buffer) Free() int { return max(b.max-b.n, 0) }

// Write appends as much of p as the bound allows and returns the count.
func (b *Buffer) Write(p []byte) int {
	k := min(len(p), b.Free())
	if k == 0 {
		return 0
	}
	b.reserve(b.n + k)
	tail := b.head + b.n
	if tail >= len(b.buf) {
		tail -= len(b.buf)
	}
	c := copy(b.buf[tail:], p[:k])
	copy(b.buf, p[c:k])
	b.n += k
	return k
}

// reserve makes the backing array hold at least need bytes.
func (b *Buffer) reserve(need int) {
	if need <= len(b.buf) {
		return
	}
	size := max(len(b.buf)*2, minGrow)
	for size < need {
		size *= 2
	}
	size = min(size, max(b.max, need))
	nb := make([]byte, size)
	x, y := b.Peek(0, b.n)
	copy(nb[copy(nb, x):], y)
	b.buf, b.head = nb, 0
}

// Peek returns views of the bytes [off, off+n) of the buffer, in order:
// the second is non-empty only when the range wraps. The views are valid
// until the next Write or Discard.
func (b *Buffer) Peek(off, n int) (first, second []byte) {
	if off < 0 || n < 0 || off+n > b.n {
		panic("ring: Peek out of range")
	}
	if n == 0 {
		return nil, nil
	}
	start := b.head + off
	if start >= len(b.buf) {
		start -= len(b.buf)
	}
	end := start + n
	if end <= len(b.buf) {
		return b.buf[start:end], nil
	}
	return b.buf[start:], b.buf[:end-len(b.buf)]
}

// Discard drops the first n bytes (n is capped at Len).
func (b *Buffer) Discard(n int) {
	n = min(n, b.n)
	b.head += n
	if b.head >= len(b.buf) {
		b.head -= len(b.buf)
	}
	b.n -= n
	if b.n == 0 {
		b.head = 0
	}
}

// Read copies the first bytes into p, drops them, and returns the count.
func (b *Buffer) Read(p []byte) int {
	x, y := b.Peek(0, min(len(p), b.n))
	n := copy(p, x)
	n += copy(p[n:], y)
	b.Discard(n)
	return n
}
