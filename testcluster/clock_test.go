package testcluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

// TestSkewedFollowerClockNeverReachesTheLog: the leader stamps every
// command, so followers whose clocks are an hour off in either direction
// cannot move the times state machines decide with (expiry, schedules,
// history) when they propose writes.
func TestSkewedFollowerClockNeverReachesTheLog(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	skew := testcluster.WithClockSkew(map[string]time.Duration{"n2": time.Hour, "n3": -time.Hour})
	c := testcluster.New(t, 3, kvOpt, skew)
	// Make the unskewed node lead, so both skewed ones are followers.
	leader := c.WaitLeader(t)
	if leader.ID != "n1" {
		code, body := leader.Do(t, "POST", "/_cohort/api/leader/transfer", map[string]string{"to": "n1"})
		if code != 200 {
			t.Fatalf("transfer to n1: %d %s", code, body)
		}
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			l := c.Leader()
			return l != nil && l.ID == "n1", fmt.Sprintf("leader %v", l)
		})
	}
	for _, id := range []string{"n2", "n3"} {
		before := time.Now()
		res := testcluster.MustPut(t, c.Node(id).Node(), "from-"+id, "v")
		after := time.Now()
		for _, nd := range c.Running() {
			if err := nd.Node().Cluster().WaitApplied(t.Context(), res.Index); err != nil {
				t.Fatal(err)
			}
			got := kvs.On(nd.ID).Time("from-" + id)
			if got.Before(before.Add(-time.Second)) || got.After(after.Add(time.Second)) {
				t.Fatalf("%s's write (clock skewed) carries %v on %s, outside the leader's [%v, %v]", id, got, nd.ID, before, after)
			}
		}
	}
}
