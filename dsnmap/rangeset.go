package dsnmap

import "sort"

// span is a half-open range [start, end) of unwrapped offsets.
type span struct{ start, end uint64 }

// rangeSet is a sorted list of disjoint, non-adjacent spans, at most max of
// them: the runs of out-of-order bytes a Reassembler holds. Lookups are
// binary searches; inserting or removing a span moves at most max spans, a
// bounded cost. The backing array grows on demand up to max and is then
// reused, so a receiver that never sees reordering never allocates it.
type rangeSet struct {
	s   []span
	max int
}

func (r *rangeSet) len() int    { return len(r.s) }
func (r *rangeSet) empty() bool { return len(r.s) == 0 }
func (r *rangeSet) first() span { return r.s[0] }
func (r *rangeSet) last() span  { return r.s[len(r.s)-1] }

// touching returns the index of the first span that ends at or after x:
// the first one [x, ...) could overlap or touch.
func (r *rangeSet) touching(x uint64) int {
	return sort.Search(len(r.s), func(i int) bool { return r.s[i].end >= x })
}

// canAdd reports whether add(start, end) would succeed: it merges with a
// span, or there is room for one more.
func (r *rangeSet) canAdd(start, end uint64) bool {
	if len(r.s) < r.max {
		return true
	}
	i := r.touching(start)
	return i < len(r.s) && r.s[i].start <= end
}

// add inserts [start, end), merging it with the spans it overlaps or
// touches. It reports false, changing nothing, when that needs more than
// max spans.
func (r *rangeSet) add(start, end uint64) bool {
	if start >= end {
		return true
	}
	i := r.touching(start)
	j := i
	for j < len(r.s) && r.s[j].start <= end {
		j++
	}
	if i == j {
		if len(r.s) >= r.max {
			return false
		}
		r.s = append(r.s, span{})
		copy(r.s[i+1:], r.s[i:])
		r.s[i] = span{start, end}
		return true
	}
	r.s[i] = span{min(start, r.s[i].start), max(end, r.s[j-1].end)}
	r.s = append(r.s[:i+1], r.s[j:]...)
	return true
}

// dropFirst removes the first span.
func (r *rangeSet) dropFirst() {
	copy(r.s, r.s[1:])
	r.s = r.s[:len(r.s)-1]
}

// gaps calls fn for each run of [start, end) that no span covers, in order.
func (r *rangeSet) gaps(start, end uint64, fn func(a, b uint64)) {
	cur := start
	for i := r.touching(start + 1); i < len(r.s) && cur < end; i++ {
		sp := r.s[i]
		if sp.start >= end {
			break
		}
		if sp.start > cur {
			fn(cur, sp.start)
		}
		cur = max(cur, sp.end)
	}
	if cur < end {
		fn(cur, end)
	}
}

// covered returns how many bytes of [start, end) the spans cover.
func (r *rangeSet) covered(start, end uint64) uint64 {
	var n uint64
	for i := r.touching(start + 1); i < len(r.s) && r.s[i].start < end; i++ {
		n += min(r.s[i].end, end) - max(r.s[i].start, start)
	}
	return n
}
