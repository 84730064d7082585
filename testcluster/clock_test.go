package testcluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/sessions"
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

// TestSkewedNodeJudgesSessionExpiryByTheLeadersClock: a node whose clock
// runs an hour fast must not find a session idle that the leader's clock
// says was used a moment ago (it would answer as if the session did not
// exist, and the client would start over with an empty one), and one an
// hour slow must still see it. The session is owned by the unskewed leader
// and the cookie's route names the skewed node, as after a failover, so
// the skewed node judges the session from replicated times alone.
func TestSkewedNodeJudgesSessionExpiryByTheLeadersClock(t *testing.T) {
	skew := testcluster.WithClockSkew(map[string]time.Duration{"n2": time.Hour, "n3": -time.Hour})
	idle := testcluster.WithConfig(func(cfg *config.Config) { cfg.Sessions.IdleTimeout = 10 * time.Minute })
	c := testcluster.New(t, 3, skew, idle, testcluster.WithNodeSetup(mountLinHandlers))
	leader := c.WaitLeader(t)
	if leader.ID != "n1" {
		if code, body := leader.Do(t, "POST", "/_cohort/api/leader/transfer", map[string]string{"to": "n1"}); code != 200 {
			t.Fatalf("transfer to n1: %d %s", code, body)
		}
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			l := c.Leader()
			return l != nil && l.ID == "n1", fmt.Sprintf("leader %v", l)
		})
	}
	n1 := c.Node("n1")
	cookieName := n1.Node().Config().SessionCookie
	for _, via := range []string{"n2", "n3"} {
		ck := &sharedCookie{name: cookieName}
		want := "for-" + via
		if _, err := linDo(context.Background(), n1, http.MethodPost, "/lin/put?k=x&v="+want, ck); err != nil {
			t.Fatalf("write through n1: %v", err)
		}
		token, _, err := sessions.ParseCookie(ck.get())
		if err != nil {
			t.Fatal(err)
		}
		// Every node applied the write before the read below (read-your-
		// writes is per node; this test is about clocks, not lag).
		idx := n1.Node().Cluster().AppliedIndex()
		if err := c.Node(via).Node().Cluster().WaitApplied(t.Context(), idx); err != nil {
			t.Fatal(err)
		}
		ck.value = sessions.FormatCookie(token, n1.Node().Members().Route(via))
		got, served, err := linDoServed(context.Background(), c.Node(via), http.MethodGet, "/lin/get?k=x", ck)
		if err != nil || got != want || served != via {
			t.Fatalf("read through %s (served by %s): %q, %v; want %q served there", via, served, got, err, want)
		}
	}
}
