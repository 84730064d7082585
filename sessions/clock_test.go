package sessions

import (
	"testing"
	"time"
)

func TestLeaderClockEstimate(t *testing.T) {
	local := time.Unix(1_000_000, 0)
	c := leaderClock{local: func() time.Time { return local }}
	if got := c.now(); got != local.UnixNano() {
		t.Fatalf("before any entry: %d, want the local clock", got)
	}
	// The leader runs an hour behind this node; entries arrive 2 ms after
	// they were stamped, one a little later.
	leader := local.Add(-time.Hour)
	c.observe(leader.Add(-2 * time.Millisecond))
	c.observe(leader.Add(-30 * time.Millisecond))
	if got := time.Duration(c.now() - leader.UnixNano()); got != -2*time.Millisecond {
		t.Fatalf("estimate off by %v, want -2ms (the freshest bound)", got)
	}
	// An old entry replayed after a restart lowers nothing...
	c.observe(leader.Add(-48 * time.Hour))
	if got := time.Duration(c.now() - leader.UnixNano()); got != -2*time.Millisecond {
		t.Fatalf("after an old entry: off by %v", got)
	}
	// ...but once the best bound is older than the window, a new leader
	// with another clock takes over.
	local = local.Add(leaderClockWindow + time.Second)
	other := local.Add(-2 * time.Hour) // lower than the standing bound
	c.observe(other)
	if got := time.Duration(c.now() - other.UnixNano()); got != 0 {
		t.Fatalf("after a leader change: off by %v", got)
	}
	c.observe(time.Time{}) // entries without a time are ignored
	if got := time.Duration(c.now() - other.UnixNano()); got != 0 {
		t.Fatalf("a zero time moved the estimate by %v", got)
	}
}
