package sessions

import (
	"sync/atomic"
	"time"
)

// leaderClockWindow is how long the best offset sample stands before a
// lower one may replace it (a new leader with another clock, say).
const leaderClockWindow = 10 * time.Second

// leaderClock is this node's estimate of the leader's clock, the clock
// every replicated time (creation, last use, expiry) is written in. Reads
// decide "has this session expired?" locally; with the node's own clock a
// node running an hour fast would find every session idle and answer as if
// it did not exist. Each applied entry carries the time the leader stamped
// it with, which is never later than the leader's clock when the entry is
// applied here: entry time minus local time bounds the offset from below,
// and the largest recent bound is the estimate (a few milliseconds low when
// clocks agree). Until entries arrive the local clock stands. Replaying an
// old log after a restart gives a low estimate, which makes sessions look
// younger here, never older: the leader's sweep still ends them on time,
// and the next entry applied corrects the estimate.
type leaderClock struct {
	local  func() time.Time
	offset atomic.Int64 // leader clock minus local clock, nanoseconds

	// Written by the apply goroutine only.
	best   int64
	bestAt int64
	has    bool
}

// observe takes the leader time of an entry being applied.
func (c *leaderClock) observe(entry time.Time) {
	if entry.IsZero() {
		return
	}
	local := c.local().UnixNano()
	sample := entry.UnixNano() - local
	if !c.has || sample >= c.best || time.Duration(local-c.bestAt) > leaderClockWindow {
		c.best, c.bestAt, c.has = sample, local, true
		c.offset.Store(sample)
	}
}

// now is the estimated leader time, in unix nanoseconds.
func (c *leaderClock) now() int64 { return c.local().UnixNano() + c.offset.Load() }
