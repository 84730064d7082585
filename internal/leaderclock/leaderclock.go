// Package leaderclock estimates the Raft leader's clock on any node, the
// clock every replicated time (expiry, idle times) is written in.
package leaderclock

import (
	"sync"
	"sync/atomic"
	"time"
)

// window is how long the best offset sample stands before a lower one may
// replace it (a new leader with another clock, say).
const window = 10 * time.Second

// Clock estimates the leader's clock from the stamps of applied entries
// and from times the leader reported (a read index's answer): such a time
// is never later than the leader's clock when it arrives here, so time
// minus local time bounds the offset from below, and the largest bound of
// the last 10 s is the estimate (low by the apply lag or a one-way trip, a
// few milliseconds, when clocks agree). An entry applied long after it was
// stamped (a node that learned of its commit late) gives a bound far too
// low; a fresher one replaces it, which is why the leader's answers count
// too. Each time carries the term of the leader that read it: a newer
// term's first time replaces the estimate at once (another leader,
// another clock), an older term's is ignored. Until a time arrives the
// local clock stands; on the leader it stands again from its election on
// (Lead), since it stamps entries with it. All methods are safe from any
// goroutine.
type Clock struct {
	local    func() time.Time
	offset   atomic.Int64 // leader clock minus local clock, nanoseconds
	reported atomic.Int64 // local time of the newest Report of term (0: none)

	mu     sync.Mutex
	term   uint64 // of the leader whose clock best is a bound of
	best   int64
	bestAt int64
	has    bool
}

// New returns a clock over local (time.Now when nil).
func New(local func() time.Time) *Clock {
	if local == nil {
		local = time.Now
	}
	return &Clock{local: local}
}

// Observe takes a time of the clock of the leader of term: the stamp of an
// entry being applied (and the entry's term), or a time the leader
// reported. Term 0 means unknown: the time counts as one of the current
// leader's.
func (c *Clock) Observe(leader time.Time, term uint64) {
	if leader.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observe(leader, term)
}

func (c *Clock) observe(leader time.Time, term uint64) (local int64, ok bool) {
	if term != 0 && term < c.term {
		return 0, false // an earlier leader's clock; a later one's is known
	}
	local = c.local().UnixNano()
	sample := leader.UnixNano() - local
	if term > c.term {
		c.reported.Store(0) // of another leader
	}
	if term > c.term || !c.has || sample >= c.best || time.Duration(local-c.bestAt) > window {
		c.best, c.bestAt, c.has = sample, local, true
		c.term = max(c.term, term)
		c.offset.Store(sample)
	}
	return local, true
}

// Report is Observe for a time the leader of term read from its clock and
// sent here (a read index answer): unlike an entry's stamp, which a node
// that learned of the entry late applies long after, it is low only by
// the one-way trip. It also keeps the standing estimate, a bound of the
// same leader's clock, from expiring for another window.
func (c *Clock) Report(leader time.Time, term uint64) {
	if leader.IsZero() || term == 0 {
		c.Observe(leader, term)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if local, ok := c.observe(leader, term); ok && term == c.term {
		c.bestAt = local
		c.reported.Store(local)
	}
}

// Reported reports whether the leader of the newest term known reported
// its clock (Report) less than within ago: the estimate is then low by at
// most that report's one-way trip. Without one, an estimate may rest on
// the stamps of entries this node applied late (cut off while they
// committed, or a new leader's first entries applied only after a
// partition healed): a follower that answers reads without asking the
// leader (an apply lease) asks it first then.
func (c *Clock) Reported(within time.Duration) bool {
	at := c.reported.Load()
	return at != 0 && time.Duration(c.local().UnixNano()-at) <= within
}

// Lead makes the local clock the leader's: call it when this node becomes
// the leader of term, whose stamps are its own clock's from then on. An
// estimate of the previous leader's clock may be far off (this node may
// have applied that leader's last entries only now, as it took over).
func (c *Clock) Lead(term uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if term < c.term {
		return
	}
	c.term, c.best, c.bestAt, c.has = term, 0, c.local().UnixNano(), true
	c.reported.Store(c.bestAt) // its own clock, exactly
	c.offset.Store(0)
}

// Now is the estimated leader time, in unix nanoseconds.
func (c *Clock) Now() int64 { return c.local().UnixNano() + c.offset.Load() }

// Local is the node's own clock.
func (c *Clock) Local() time.Time { return c.local() }
