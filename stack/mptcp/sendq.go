package mptcp

import "gvisor.dev/gvisor/pkg/buffer"

// sendQueue is a connection's data-level send buffer (RFC 8684 §3.3.2:
// data stays until the Data ACK covers it). The bytes are copied in once,
// into pooled gVisor views of at most one subflow chunk each; a subflow
// gets a clone of the view (a reference, not a copy) and the queue drops
// its own reference when the data level is acknowledged. A view is sealed
// once a reference is handed out: nothing is appended to it afterwards.
type sendQueue struct {
	chunks []sendChunk // live from head on, oldest first
	head   int
	n      int // bytes held
	limit  int
}

type sendChunk struct {
	v      *buffer.View // the bytes not yet acknowledged at the data level
	handed int          // leading bytes of v already mapped onto a subflow
	sealed bool
}

func newSendQueue(limit int) *sendQueue { return &sendQueue{limit: limit} }

// Len returns the bytes held; Free how many more Write accepts.
func (q *sendQueue) Len() int  { return q.n }
func (q *sendQueue) Free() int { return max(q.limit-q.n, 0) }

// Write copies as much of p as the limit allows, filling chunks of at most
// chunkCap bytes, and returns the count.
func (q *sendQueue) Write(p []byte, chunkCap int) int {
	total := 0
	for len(p) > 0 && q.Free() > 0 {
		var c *sendChunk
		if l := len(q.chunks); l > q.head && !q.chunks[l-1].sealed && q.chunks[l-1].v.Size() < chunkCap {
			c = &q.chunks[l-1]
		} else {
			q.push(sendChunk{v: buffer.NewView(chunkCap)})
			c = &q.chunks[len(q.chunks)-1]
		}
		k := min(len(p), chunkCap-c.v.Size(), q.Free())
		old := c.v.Size()
		c.v.Grow(k)
		copy(c.v.AsSlice()[old:], p[:k])
		p, total, q.n = p[k:], total+k, q.n+k
	}
	return total
}

func (q *sendQueue) push(c sendChunk) {
	if q.head > 0 && len(q.chunks) == cap(q.chunks) {
		n := copy(q.chunks, q.chunks[q.head:])
		clear(q.chunks[n:])
		q.chunks, q.head = q.chunks[:n], 0
	}
	q.chunks = append(q.chunks, c)
}

// Next returns a reference to at most max of the oldest bytes not yet
// handed out (never more than one chunk), or nil. The caller owns the
// returned view; Unhand gives the bytes back if the subflow refused them.
func (q *sendQueue) Next(max int) *buffer.View {
	for i := q.head; i < len(q.chunks); i++ {
		c := &q.chunks[i]
		rest := c.v.Size() - c.handed
		if rest == 0 {
			continue
		}
		k := min(rest, max)
		if k <= 0 {
			return nil
		}
		c.sealed = true
		v := c.v.Clone()
		v.TrimFront(c.handed)
		v.CapLength(k)
		c.handed += k
		return v
	}
	return nil
}

// At returns a reference to at most max bytes starting off bytes after
// the oldest byte held (never more than one chunk), for a retransmission
// of bytes already handed out; nil if off is not held. The caller owns the
// returned view.
func (q *sendQueue) At(off, max int) *buffer.View {
	if off < 0 || max <= 0 {
		return nil
	}
	for i := q.head; i < len(q.chunks); i++ {
		c := &q.chunks[i]
		size := c.v.Size()
		if off >= size {
			off -= size
			continue
		}
		c.sealed = true
		v := c.v.Clone()
		v.TrimFront(off)
		v.CapLength(min(size-off, max))
		return v
	}
	return nil
}

// Unhand returns the last k bytes handed out by Next to the unsent part.
func (q *sendQueue) Unhand(k int) {
	for i := len(q.chunks) - 1; i >= q.head && k > 0; i-- {
		c := &q.chunks[i]
		d := min(k, c.handed)
		c.handed -= d
		k -= d
	}
}

// Discard drops the oldest n bytes (acknowledged at the data level).
func (q *sendQueue) Discard(n int) {
	n = min(n, q.n)
	q.n -= n
	for n > 0 && q.head < len(q.chunks) {
		c := &q.chunks[q.head]
		size := c.v.Size()
		if n < size {
			c.v.TrimFront(n)
			c.handed = max(c.handed-n, 0)
			return
		}
		n -= size
		c.v.Release()
		q.chunks[q.head] = sendChunk{}
		q.head++
	}
	if q.head == len(q.chunks) {
		q.chunks, q.head = q.chunks[:0], 0
	}
}

// Release drops every reference the queue holds.
func (q *sendQueue) Release() {
	for i := q.head; i < len(q.chunks); i++ {
		q.chunks[i].v.Release()
	}
	q.chunks, q.head, q.n = nil, 0, 0
}
