package leaderclock

import (
	"testing"
	"time"
)

func TestEstimateFollowsTheLeadersClockNotTheLocalOne(t *testing.T) {
	leader := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	local := leader.Add(time.Hour) // this node runs an hour fast
	c := New(func() time.Time { return local })
	if got := time.Unix(0, c.Now()); !got.Equal(local) {
		t.Fatalf("before any entry: %s, want the local clock %s", got, local)
	}
	c.Observe(leader.Add(-3 * time.Millisecond)) // an entry stamped 3 ms ago, applied now
	if d := time.Unix(0, c.Now()).Sub(leader); d > 0 || d < -5*time.Millisecond {
		t.Fatalf("estimate off by %s from the leader's clock", d)
	}
	c.Observe(leader.Add(-time.Second)) // an older stamp (a replayed entry) does not lower it
	if d := time.Unix(0, c.Now()).Sub(leader); d < -5*time.Millisecond {
		t.Fatalf("an older stamp lowered the estimate by %s", d)
	}
}
