package mptcp

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Scheduler decides which subflow carries the next chunk of data (RFC 8684
// §3.3.8 leaves the policy to the implementation). It is called with the
// connection's driver lock held and must not call back into the
// connection except through the candidates' accessors.
type Scheduler interface {
	// Pick returns the subflow to map the next chunk on, among cands (the
	// connection's subflows that can carry data now: established, joined,
	// not closing; backup ones included, see SubflowState.Backup), or nil
	// to send nothing now.
	Pick(cands []*Subflow) *Subflow
}

// SchedulerFunc adapts a function to Scheduler.
type SchedulerFunc func(cands []*Subflow) *Subflow

// Pick implements Scheduler.
func (f SchedulerFunc) Pick(cands []*Subflow) *Subflow { return f(cands) }

var (
	schedMu    sync.Mutex
	schedulers = map[string]func() Scheduler{
		"default":    func() Scheduler { return minLinger{} },
		"roundrobin": func() Scheduler { return &roundRobin{} },
	}
)

// DefaultScheduler names the scheduler used when Config.Scheduler is
// empty.
const DefaultScheduler = "default"

// RegisterScheduler makes a scheduler available by name (for
// Config.Scheduler); new is called once per connection.
func RegisterScheduler(name string, new func() Scheduler) {
	schedMu.Lock()
	defer schedMu.Unlock()
	schedulers[name] = new
}

// Schedulers returns the registered names, sorted.
func Schedulers() []string {
	schedMu.Lock()
	defer schedMu.Unlock()
	names := make([]string, 0, len(schedulers))
	for n := range schedulers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewScheduler returns a new instance of the named scheduler.
func NewScheduler(name string) (Scheduler, error) {
	if name == "" {
		name = DefaultScheduler
	}
	schedMu.Lock()
	f := schedulers[name]
	schedMu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("mptcp: unknown scheduler %q (have %v)", name, Schedulers())
	}
	return f(), nil
}

// minLinger is the default scheduler, the Linux kernel's: among the
// subflows that are not backups, the one whose queued bytes would take
// the least time to leave at its current sending rate (cwnd/srtt); backup
// subflows only when no other subflow is usable at all; a subflow whose
// queue is full is passed over.
type minLinger struct{}

var _ Scheduler = minLinger{}

func (minLinger) Pick(cands []*Subflow) *Subflow {
	var best [2]*Subflow // by backup
	var bestLinger [2]time.Duration
	active := 0
	for _, s := range cands {
		b := 0
		if s.Backup() {
			b = 1
		} else {
			active++
		}
		if !s.CanTake() {
			continue
		}
		l := s.Linger()
		if best[b] == nil || l < bestLinger[b] {
			best[b], bestLinger[b] = s, l
		}
	}
	if active > 0 {
		return best[0]
	}
	return best[1]
}

// roundRobin hands chunks to the usable non-backup subflows in turn
// (backups only when no other exists).
type roundRobin struct{ next int }

func (r *roundRobin) Pick(cands []*Subflow) *Subflow {
	var pool []*Subflow
	for _, s := range cands {
		if !s.Backup() {
			pool = append(pool, s)
		}
	}
	if len(pool) == 0 {
		pool = cands
	}
	for i := range pool {
		s := pool[(r.next+i)%len(pool)]
		if s.CanTake() {
			r.next = (r.next + i + 1) % len(pool)
			return s
		}
	}
	return nil
}
