// Package leaderclock estimates the Raft leader's clock on any node, the
// clock every replicated time (expiry, idle times) is written in.
package leaderclock

import (
	"sync/atomic"
	"time"
)

// window is how long the best offset sample stands before a lower one may
// replace it (a new leader with another clock, say).
const window = 10 * time.Second

// Clock estimates the leader's clock from the stamps of applied entries:
// an entry's stamp is never later than the leader's clock when the entry
// is applied here, so stamp minus local time bounds the offset from below,
// and the largest bound of the last 10 s is the estimate (low by the apply
// lag, a few milliseconds, when clocks agree). Until entries arrive the
// local clock stands. Observe is called by the apply goroutine only; Now
// from anywhere.
type Clock struct {
	local  func() time.Time
	offset atomic.Int64 // leader clock minus local clock, nanoseconds

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

// Observe takes the leader time of an entry being applied.
func (c *Clock) Observe(entry time.Time) {
	if entry.IsZero() {
		return
	}
	local := c.local().UnixNano()
	sample := entry.UnixNano() - local
	if !c.has || sample >= c.best || time.Duration(local-c.bestAt) > window {
		c.best, c.bestAt, c.has = sample, local, true
		c.offset.Store(sample)
	}
}

// Now is the estimated leader time, in unix nanoseconds.
func (c *Clock) Now() int64 { return c.local().UnixNano() + c.offset.Load() }

// Local is the node's own clock.
func (c *Clock) Local() time.Time { return c.local() }
