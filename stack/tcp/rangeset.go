package tcp

// span is a half-open range [start, end) of unwrapped sequence offsets.
type span struct{ start, end uint64 }

// rangeSet is a sorted list of disjoint, non-adjacent spans with a bound on
// their number. It backs the receiver's out-of-order map. The backing array
// grows as needed, up to the bound.
type rangeSet struct {
	s   []span
	max int
}

func newRangeSet(max int) rangeSet { return rangeSet{max: max} }

// search returns the index of the first span whose end is at or above off
// (the span holding or touching off, if any), or len.
func (r *rangeSet) search(off uint64) int {
	lo, hi := 0, len(r.s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.s[m].end < off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// overlap returns the first part of [start, end) the set covers, if any.
func (r *rangeSet) overlap(start, end uint64) (span, bool) {
	i := r.search(start + 1)
	if i < len(r.s) {
		if a, b := max(r.s[i].start, start), min(r.s[i].end, end); a < b {
			return span{a, b}, true
		}
	}
	return span{}, false
}

// holding returns the index of the span holding off, or -1.
func (r *rangeSet) holding(off uint64) int {
	i := r.search(off + 1)
	if i < len(r.s) && r.s[i].start <= off {
		return i
	}
	return -1
}

func (r *rangeSet) len() int      { return len(r.s) }
func (r *rangeSet) empty() bool   { return len(r.s) == 0 }
func (r *rangeSet) clear()        { r.s = r.s[:0] }
func (r *rangeSet) at(i int) span { return r.s[i] }
func (r *rangeSet) spans() []span { return r.s }
func (r *rangeSet) first() span   { return r.s[0] }
func (r *rangeSet) last() span    { return r.s[len(r.s)-1] }

// add inserts [start, end), merging with overlapping or adjacent spans. It
// reports false, changing nothing, when the insertion would need more than
// max spans.
func (r *rangeSet) add(start, end uint64) bool {
	if start >= end {
		return true
	}
	// The first span whose end >= start (it may merge).
	i := r.search(start)
	j := i
	for j < len(r.s) && r.s[j].start <= end {
		j++
	}
	// Spans i..j-1 overlap or touch [start, end).
	if i == j {
		if len(r.s) >= r.max {
			return false
		}
		r.s = append(r.s, span{})
		copy(r.s[i+1:], r.s[i:])
		r.s[i] = span{start, end}
		return true
	}
	ns := span{min(start, r.s[i].start), max(end, r.s[j-1].end)}
	r.s[i] = ns
	r.s = append(r.s[:i+1], r.s[j:]...)
	return true
}

// trimBelow removes everything below off.
func (r *rangeSet) trimBelow(off uint64) {
	i := 0
	for i < len(r.s) && r.s[i].end <= off {
		i++
	}
	if i > 0 {
		r.s = append(r.s[:0], r.s[i:]...)
	}
	if len(r.s) > 0 && r.s[0].start < off {
		r.s[0].start = off
	}
}
