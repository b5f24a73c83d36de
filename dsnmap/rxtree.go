package dsnmap

import "math/rand/v2"

// rxEntry is a run of subflow bytes mapped one to one onto data sequence
// numbers: subflow bytes [start, start+n) carry DSNs [dsn, dsn+n). Subflow
// positions are unwrapped to 64 bits (see RxMap.unwrap), so entries
// compare as plain integers.
//
// With DSS checksums an entry is one mapping exactly as received, the unit
// its checksum covers: ssn32, csumLen and csum are the pseudo-header and
// checksum to verify it with (RFC 8684 §3.3.1). csumLen is the data-level
// length of the version whose checksum was kept, which differs from n+fin
// when the DATA_FIN was added by a later copy of the mapping.
type rxEntry struct {
	start uint64
	n     uint64
	dsn   DSN
	fin   bool // the DATA_FIN occupies dsn+n

	ssn32   uint32
	csumLen uint16
	csum    uint16
}

func (e *rxEntry) end() uint64 { return e.start + uint64(e.n) }

// dsnAt is the DSN of subflow byte x (which e must cover, or end at).
func (e *rxEntry) dsnAt(x uint64) DSN { return e.dsn.Add(x - e.start) }

// dsnEnd is the DSN after e's last byte: where a DATA_FIN of e sits.
func (e *rxEntry) dsnEnd() DSN { return e.dsn.Add(uint64(e.n)) }

// sameOffset reports whether e and o map every subflow byte they both
// could cover to the same DSN.
func (e *rxEntry) sameOffset(o *rxEntry) bool { return e.dsn-o.dsn == DSN(e.start-o.start) }

// entryTree is an ordered set of non-overlapping rxEntry keyed by start: a
// treap whose nodes live in one slice and are recycled through a free list,
// so that steady-state operation does not allocate, and whose random
// priorities keep every operation O(log n) expected whatever order a peer
// sends mappings in. The pool grows up to the number of entries ever held
// at once, which RxMap bounds.
type entryTree struct {
	nodes []treeNode
	free  int32 // first free node, linked through left; nilNode if none
	root  int32
	n     int
	rng   uint64
}

type treeNode struct {
	e           rxEntry
	left, right int32
	prio        uint32
}

const nilNode = -1

func newEntryTree() entryTree {
	// Priorities come from a per-table random seed: a peer choosing the
	// order of its mappings cannot predict the tree's shape.
	return entryTree{free: nilNode, root: nilNode, rng: rand.Uint64() | 1}
}

func (t *entryTree) len() int { return t.n }

// prio returns the next pseudo-random priority (xorshift64*).
func (t *entryTree) prio() uint32 {
	t.rng ^= t.rng >> 12
	t.rng ^= t.rng << 25
	t.rng ^= t.rng >> 27
	return uint32((t.rng * 2685821657736338717) >> 32)
}

func (t *entryTree) alloc(e rxEntry) int32 {
	var i int32
	if t.free != nilNode {
		i = t.free
		t.free = t.nodes[i].left
	} else {
		t.nodes = append(t.nodes, treeNode{})
		i = int32(len(t.nodes) - 1)
	}
	t.nodes[i] = treeNode{e: e, left: nilNode, right: nilNode, prio: t.prio()}
	t.n++
	return i
}

func (t *entryTree) release(i int32) {
	t.nodes[i] = treeNode{left: t.free}
	t.free = i
	t.n--
}

// at returns the entry of node i for reading or in-place changes that keep
// the order (no overlap with the neighbours).
func (t *entryTree) at(i int32) *rxEntry { return &t.nodes[i].e }

// split cuts the subtree at i into the entries with start < key and the
// rest.
func (t *entryTree) split(i int32, key uint64) (l, r int32) {
	if i == nilNode {
		return nilNode, nilNode
	}
	nd := &t.nodes[i]
	if nd.e.start < key {
		a, b := t.split(nd.right, key)
		t.nodes[i].right = a
		return i, b
	}
	a, b := t.split(nd.left, key)
	t.nodes[i].left = b
	return a, i
}

// merge joins two subtrees whose entries are all ordered l before r.
func (t *entryTree) merge(l, r int32) int32 {
	switch {
	case l == nilNode:
		return r
	case r == nilNode:
		return l
	case t.nodes[l].prio > t.nodes[r].prio:
		t.nodes[l].right = t.merge(t.nodes[l].right, r)
		return l
	default:
		t.nodes[r].left = t.merge(l, t.nodes[r].left)
		return r
	}
}

// insert adds e, which must not overlap any entry.
func (t *entryTree) insert(e rxEntry) {
	i := t.alloc(e)
	l, r := t.split(t.root, e.start)
	t.root = t.merge(t.merge(l, i), r)
}

// remove deletes the entry starting at start, if any.
func (t *entryTree) remove(start uint64) {
	l, r := t.split(t.root, start)
	m, r := t.split(r, start+1)
	if m != nilNode {
		t.releaseAll(m)
	}
	t.root = t.merge(l, r)
}

// removeFrom deletes every entry starting at or after start.
func (t *entryTree) removeFrom(start uint64) {
	l, r := t.split(t.root, start)
	t.releaseAll(r)
	t.root = l
}

func (t *entryTree) releaseAll(i int32) {
	if i == nilNode {
		return
	}
	t.releaseAll(t.nodes[i].left)
	t.releaseAll(t.nodes[i].right)
	t.release(i)
}

// first returns the node of the lowest entry, or nilNode.
func (t *entryTree) first() int32 {
	i := t.root
	if i == nilNode {
		return nilNode
	}
	for t.nodes[i].left != nilNode {
		i = t.nodes[i].left
	}
	return i
}

// last returns the node of the highest entry, or nilNode.
func (t *entryTree) last() int32 {
	i := t.root
	if i == nilNode {
		return nilNode
	}
	for t.nodes[i].right != nilNode {
		i = t.nodes[i].right
	}
	return i
}

// endAfter returns the node of the lowest entry ending after x (the entry
// covering x, or else the first one beyond it), or nilNode. Entries do not
// overlap, so their ends are ordered like their starts.
func (t *entryTree) endAfter(x uint64) int32 {
	best := int32(nilNode)
	for i := t.root; i != nilNode; {
		if t.nodes[i].e.end() > x {
			best = i
			i = t.nodes[i].left
		} else {
			i = t.nodes[i].right
		}
	}
	return best
}

// startBefore returns the node of the highest entry starting before x, or
// nilNode.
func (t *entryTree) startBefore(x uint64) int32 {
	best := int32(nilNode)
	for i := t.root; i != nilNode; {
		if t.nodes[i].e.start < x {
			best = i
			i = t.nodes[i].right
		} else {
			i = t.nodes[i].left
		}
	}
	return best
}

// next returns the node of the entry following the one at node i, or
// nilNode.
func (t *entryTree) next(i int32) int32 {
	return t.endAfter(t.nodes[i].e.end())
}
