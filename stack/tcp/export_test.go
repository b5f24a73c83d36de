package tcp

import "fmt"

// CheckScoreboard verifies the retransmission queue's invariants: records
// in order, contiguous, covering [SND.UNA, SND.NXT) once established, and
// counters that match the flags.
func (e *Endpoint) CheckScoreboard() error {
	q := &e.rtx
	var r rtxQueue
	next := e.sndUna
	for i := 0; i < q.n(); i++ {
		s := q.at(i)
		if s.start != next || s.end <= s.start {
			return fmt.Errorf("record %d [%d,%d) after %d (una %d nxt %d)", i, s.start, s.end, next, e.sndUna, e.sndNxt)
		}
		if s.flags&segRetrans != 0 && s.flags&segEverRetrans == 0 {
			return fmt.Errorf("record %d retransmitted but not ever", i)
		}
		if s.skip > 0 {
			for k := i; k < i+int(s.skip) && k < q.n(); k++ {
				if q.at(k).flags&segSACKed == 0 {
					return fmt.Errorf("record %d skips over unSACKed record %d", i, k)
				}
			}
		}
		r.count(s, 1)
		next = s.end
	}
	if q.n() > 0 && next != e.sndNxt {
		return fmt.Errorf("records end at %d, SND.NXT %d", next, e.sndNxt)
	}
	if q.n() == 0 && e.state.synchronized() && e.state != StateTimeWait && e.sndNxt > e.sndUna && e.sndUna > 0 {
		return fmt.Errorf("no records for [%d,%d)", e.sndUna, e.sndNxt)
	}
	if r.sacked != q.sacked || r.sackedSegs != q.sackedSegs || r.inflight != q.inflight || r.lost != q.lost || r.retransN != q.retransN {
		return fmt.Errorf("counters %+v, recomputed %+v", *q, r)
	}
	if i := e.nextLost(); q.lost > 0 && i < 0 {
		return fmt.Errorf("%d bytes lost but none found from hint %d", q.lost, e.lostHint)
	}
	return nil
}
