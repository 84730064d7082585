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
	c.Observe(leader.Add(-3*time.Millisecond), 0) // an entry stamped 3 ms ago, applied now
	if d := time.Unix(0, c.Now()).Sub(leader); d > 0 || d < -5*time.Millisecond {
		t.Fatalf("estimate off by %s from the leader's clock", d)
	}
	c.Observe(leader.Add(-time.Second), 0) // an older stamp (a replayed entry) does not lower it
	if d := time.Unix(0, c.Now()).Sub(leader); d < -5*time.Millisecond {
		t.Fatalf("an older stamp lowered the estimate by %s", d)
	}
}

func TestEstimateWindowAndReplays(t *testing.T) {
	local := time.Unix(1_000_000, 0)
	c := New(func() time.Time { return local })
	if got := c.Now(); got != local.UnixNano() {
		t.Fatalf("before any entry: %d, want the local clock", got)
	}
	// The leader runs an hour behind this node; entries arrive 2 ms after
	// they were stamped, one a little later.
	leader := local.Add(-time.Hour)
	c.Observe(leader.Add(-2*time.Millisecond), 0)
	c.Observe(leader.Add(-30*time.Millisecond), 0)
	if got := time.Duration(c.Now() - leader.UnixNano()); got != -2*time.Millisecond {
		t.Fatalf("estimate off by %v, want -2ms (the freshest bound)", got)
	}
	// An old entry replayed after a restart lowers nothing...
	c.Observe(leader.Add(-48*time.Hour), 0)
	if got := time.Duration(c.Now() - leader.UnixNano()); got != -2*time.Millisecond {
		t.Fatalf("after an old entry: off by %v", got)
	}
	// ...but once the best bound is older than the window, a new leader
	// with another clock takes over.
	local = local.Add(window + time.Second)
	other := local.Add(-2 * time.Hour) // lower than the standing bound
	c.Observe(other, 0)
	if got := time.Duration(c.Now() - other.UnixNano()); got != 0 {
		t.Fatalf("after a leader change: off by %v", got)
	}
	c.Observe(time.Time{}, 0) // entries without a time are ignored
	if got := time.Duration(c.Now() - other.UnixNano()); got != 0 {
		t.Fatalf("a zero time moved the estimate by %v", got)
	}
}

// A new leader with a slower clock takes over at its first time, not a
// window later; a time of an earlier leader changes nothing after that;
// and a node that led takes its own clock while it leads.
func TestEstimateFollowsTheTerm(t *testing.T) {
	local := time.Unix(1_000_000, 0)
	c := New(func() time.Time { return local })
	c.Lead(2) // this node led term 2: its own clock
	if got := c.Now(); got != local.UnixNano() {
		t.Fatalf("leading: %d, want the local clock", got)
	}
	slow := local.Add(-time.Hour) // the leader of term 3 runs an hour behind
	c.Observe(slow, 3)
	if got := time.Duration(c.Now() - slow.UnixNano()); got != 0 {
		t.Fatalf("after term 3's first stamp: off by %v from its clock, want 0", got)
	}
	c.Observe(local, 2) // a late entry of term 2, stamped by this node's clock
	if got := time.Duration(c.Now() - slow.UnixNano()); got != 0 {
		t.Fatalf("an earlier term's stamp moved the estimate by %v", got)
	}
	c.Lead(1) // a stale notice of an older term
	if got := time.Duration(c.Now() - slow.UnixNano()); got != 0 {
		t.Fatalf("an older term's leadership moved the estimate by %v", got)
	}
}

// TestReportedOnlyForTheLeadersOwnReport: entry stamps never count as a
// report (a node may apply them long after they were stamped); a report
// of the current leader does for its window of freshness, a newer term's
// first stamp ends it, and a node that leads reports its own clock.
func TestReportedOnlyForTheLeadersOwnReport(t *testing.T) {
	local := time.Unix(1_000_000, 0)
	c := New(func() time.Time { return local })
	c.Observe(local.Add(-time.Millisecond), 2)
	if c.Reported(time.Second) {
		t.Fatal("an entry's stamp counted as the leader's report")
	}
	c.Report(local.Add(-time.Millisecond), 2)
	if !c.Reported(time.Second) {
		t.Fatal("the leader's report did not count")
	}
	local = local.Add(2 * time.Second)
	if c.Reported(time.Second) {
		t.Fatal("a report 2 s old counted as fresh within 1 s")
	}
	c.Report(local.Add(-time.Millisecond), 2)
	// A new leader's first entry, applied 1.5 s after it was stamped:
	// the estimate rests on it alone, so no report stands.
	c.Observe(local.Add(-1500*time.Millisecond), 3)
	if c.Reported(time.Second) {
		t.Fatal("the previous leader's report still counted after a newer term's entry")
	}
	c.Report(local.Add(-time.Millisecond), 3)
	if got := time.Duration(c.Now() - local.UnixNano()); got != -time.Millisecond || !c.Reported(time.Second) {
		t.Fatalf("after the new leader's report: off by %v, reported %v; want -1ms, true", got, c.Reported(time.Second))
	}
	c.Report(local.Add(-time.Millisecond), 2) // an older term's answer, arriving late
	if !c.Reported(time.Second) {
		t.Fatal("an older term's report undid the current one")
	}
	c.Lead(4)
	if !c.Reported(time.Second) {
		t.Fatal("the leader's own clock did not count as reported")
	}
}

// TestReportKeepsTheEstimateOfTheSameLeader: a report lower than the
// standing estimate (a slower trip) keeps that estimate alive past its
// window, so a late entry's stamp cannot replace it while reports come.
func TestReportKeepsTheEstimateOfTheSameLeader(t *testing.T) {
	local := time.Unix(1_000_000, 0)
	c := New(func() time.Time { return local })
	c.Observe(local.Add(-time.Millisecond), 2)
	local = local.Add(window - time.Second)
	c.Report(local.Add(-5*time.Millisecond), 2)
	local = local.Add(2 * time.Second) // the entry's bound is older than the window now
	c.Observe(local.Add(-1500*time.Millisecond), 2)
	if got := time.Duration(c.Now() - local.UnixNano()); got != -time.Millisecond {
		t.Fatalf("estimate off by %v; want -1ms (the standing bound)", got)
	}
}
