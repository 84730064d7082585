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
// too. Until a bound arrives the local clock stands; on the leader it
// stands again from its election on (Lead), since it stamps entries with
// it. Now is safe from any goroutine, as are Observe and Lead.
type Clock struct {
	local  func() time.Time
	offset atomic.Int64 // leader clock minus local clock, nanoseconds

	mu     sync.Mutex
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

// Observe takes a time of the leader's clock: the stamp of an entry being
// applied, or a time the leader reported.
func (c *Clock) Observe(leader time.Time) {
	if leader.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	local := c.local().UnixNano()
	sample := leader.UnixNano() - local
	if !c.has || sample >= c.best || time.Duration(local-c.bestAt) > window {
		c.best, c.bestAt, c.has = sample, local, true
		c.offset.Store(sample)
	}
}

// Lead makes the local clock the leader's: call it when this node becomes
// the leader, whose stamps are its own clock's from then on. An estimate
// of the previous leader's clock may be far off (this node may have
// applied that leader's last entries only now, as it took over).
func (c *Clock) Lead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.best, c.bestAt, c.has = 0, c.local().UnixNano(), true
	c.offset.Store(0)
}

// Now is the estimated leader time, in unix nanoseconds.
func (c *Clock) Now() int64 { return c.local().UnixNano() + c.offset.Load() }

// Local is the node's own clock.
func (c *Clock) Local() time.Time { return c.local() }
