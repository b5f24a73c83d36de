package tcp

import "sync"

// block is the storage unit of the send buffer. Blocks are pooled across
// endpoints so that steady-state sending does not allocate.
type block [MaxChunk + 1]byte

var blockPool = sync.Pool{New: func() any { return new(block) }}

// chunk is a run of queued bytes sharing one metadata value. A segment never
// spans two chunks (the extension's mapping must describe every byte of a
// segment, RFC 8684 §3.3.1).
type chunk struct {
	off  uint64 // sequence offset (relative to ISS) of data[0]
	data []byte // queued bytes; aliases blk
	blk  *block
	meta any
	// plain chunks (from Write) may grow by appending.
	plain bool
}

func (c *chunk) end() uint64 { return c.off + uint64(len(c.data)) }

// sendBuffer holds the bytes from the application between queueing and
// cumulative acknowledgement, as a deque of chunks. Offsets are sequence
// offsets relative to the ISS (the first data byte is offset 1).
type sendBuffer struct {
	chunks []chunk
	head   int    // index of the first live chunk
	una    uint64 // first unacknowledged offset
	end    uint64 // offset after the last queued byte
	limit  int
}

func (b *sendBuffer) init(limit int) {
	b.una, b.end, b.limit = 1, 1, limit
}

// queued is the number of bytes held (unacknowledged, sent or not).
func (b *sendBuffer) queued() int { return int(b.end - b.una) }

// free is the room left under the limit.
func (b *sendBuffer) free() int { return max(0, b.limit-b.queued()) }

func (b *sendBuffer) live() []chunk { return b.chunks[b.head:] }

func (b *sendBuffer) push(c chunk) {
	if b.head > 0 && len(b.chunks) == cap(b.chunks) {
		n := copy(b.chunks, b.chunks[b.head:])
		clear(b.chunks[n:])
		b.chunks = b.chunks[:n]
		b.head = 0
	}
	b.chunks = append(b.chunks, c)
}

// write copies as much of p as fits into plain chunks and returns the count.
func (b *sendBuffer) write(p []byte) int {
	n := 0
	for n < len(p) && b.free() > 0 {
		want := min(len(p)-n, b.free())
		if l := b.live(); len(l) > 0 {
			t := &l[len(l)-1]
			if t.plain && len(t.data) < MaxChunk {
				k := min(want, MaxChunk-len(t.data))
				t.data = append(t.data, p[n:n+k]...)
				n += k
				b.end += uint64(k)
				continue
			}
		}
		blk := blockPool.Get().(*block)
		k := min(want, MaxChunk)
		c := chunk{off: b.end, blk: blk, data: blk[:0], plain: true}
		c.data = append(c.data, p[n:n+k]...)
		b.push(c)
		n += k
		b.end += uint64(k)
	}
	return n
}

// enqueue copies p as one chunk with metadata meta. The caller has checked
// the size and the limit.
func (b *sendBuffer) enqueue(p []byte, meta any) {
	blk := blockPool.Get().(*block)
	c := chunk{off: b.end, blk: blk, data: append(blk[:0], p...), meta: meta}
	b.push(c)
	b.end += uint64(len(p))
}

// ack releases everything below off.
func (b *sendBuffer) ack(off uint64) {
	if off > b.end {
		off = b.end
	}
	if off <= b.una {
		return
	}
	b.una = off
	for b.head < len(b.chunks) {
		c := &b.chunks[b.head]
		if c.end() > off {
			break
		}
		blockPool.Put(c.blk)
		*c = chunk{}
		b.head++
	}
	if b.head == len(b.chunks) {
		b.chunks = b.chunks[:0]
		b.head = 0
	}
}

// find returns the chunk holding offset off, or nil.
func (b *sendBuffer) find(off uint64) *chunk {
	l := b.live()
	lo, hi := 0, len(l)
	for lo < hi {
		m := (lo + hi) / 2
		if l[m].end() <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(l) && l[lo].off <= off {
		return &l[lo]
	}
	return nil
}

// release returns every block to the pool (endpoint closed).
func (b *sendBuffer) release() {
	for i := b.head; i < len(b.chunks); i++ {
		blockPool.Put(b.chunks[i].blk)
	}
	b.chunks, b.head = nil, 0
	b.una = b.end
}
