package tcp

import "gvisor.dev/gvisor/pkg/buffer"

// chunk is a run of queued bytes sharing one metadata value. A segment never
// spans two chunks (the extension's mapping must describe every byte of a
// segment, RFC 8684 §3.3.1).
//
// The bytes live in a gVisor buffer.View (pooled chunks of 64 KiB, so that
// steady-state sending does not allocate), so that an output can take a
// reference to a segment's payload instead of copying it
// (OutSegment.ClonePayload). Queued bytes never change, and acknowledged
// chunks are released whole (a reference keeps the memory alive). A plain
// chunk grows by appending into its spare capacity only until a reference
// to it is handed out (sealed): gVisor copies a shared chunk whole when it
// must (copy-on-write), which would read what an append writes. Segments
// of a chunk that may still grow are handed out as copies instead.
type chunk struct {
	off  uint64       // sequence offset (relative to ISS) of data[0]
	data []byte       // queued bytes: v's contents
	v    *buffer.View // storage, capacity at least MaxChunk
	meta any
	// plain chunks (from Write) may grow by appending, until sealed.
	plain  bool
	sealed bool
}

// newChunk returns a chunk at offset off holding a copy of p (at most
// MaxChunk bytes).
func newChunk(off uint64, p []byte, meta any, plain bool) chunk {
	c := chunk{off: off, v: buffer.NewView(MaxChunk), meta: meta, plain: plain}
	c.append(p)
	return c
}

// append copies p to the end of the chunk; the caller keeps len(c.data)
// within MaxChunk.
func (c *chunk) append(p []byte) {
	old := c.v.Size()
	// Grow stays within the capacity and does not copy, even when a clone
	// shares the memory: the clone does not cover the grown region.
	c.v.Grow(len(p))
	c.data = c.v.AsSlice()
	copy(c.data[old:], p)
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
	// plainMax is the size at which a plain chunk is closed: a whole number
	// of segments (see segmentSize), so that segments, and TSO
	// super-segments, do not end short at chunk boundaries.
	plainMax int
}

func (b *sendBuffer) init(limit int) {
	b.una, b.end, b.limit = 1, 1, limit
	b.plainMax = MaxChunk
}

// segmentSize tells the buffer the sender's segment size: plain chunks are
// closed at the largest multiple of mss that fits in MaxChunk.
func (b *sendBuffer) segmentSize(mss int) {
	if mss <= 0 || mss >= MaxChunk {
		b.plainMax = MaxChunk
		return
	}
	b.plainMax = MaxChunk - MaxChunk%mss
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
			if t.plain && !t.sealed && len(t.data) < b.plainMax {
				k := min(want, b.plainMax-len(t.data))
				t.append(p[n : n+k])
				n += k
				b.end += uint64(k)
				continue
			}
		}
		k := min(want, b.plainMax)
		b.push(newChunk(b.end, p[n:n+k], nil, true))
		n += k
		b.end += uint64(k)
	}
	return n
}

// enqueue copies p as one chunk with metadata meta. The caller has checked
// the size and the limit.
func (b *sendBuffer) enqueue(p []byte, meta any) {
	b.push(newChunk(b.end, p, meta, false))
	b.end += uint64(len(p))
}

// enqueueView queues v's bytes as one sealed chunk, owning v.
func (b *sendBuffer) enqueueView(v *buffer.View, meta any) {
	n := v.Size()
	b.push(chunk{off: b.end, v: v, data: v.AsSlice(), meta: meta, sealed: true})
	b.end += uint64(n)
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
		c.v.Release()
		*c = chunk{}
		b.head++
	}
	if b.head == len(b.chunks) {
		b.chunks = b.chunks[:0]
		b.head = 0
	}
}

// share reports whether a segment's payload from c may be handed out by
// reference, and seals c if so; a plain chunk that may still grow is not
// shared (see chunk).
func (b *sendBuffer) share(c *chunk) bool {
	if c.plain && !c.sealed && len(c.data) < b.plainMax {
		return false
	}
	c.sealed = true
	return true
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
		b.chunks[i].v.Release()
	}
	b.chunks, b.head = nil, 0
	b.una = b.end
}
