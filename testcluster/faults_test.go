package testcluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

func TestPausedLeaderIsReplacedAndCannotCommitAfterResume(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	old := c.WaitLeader(t)
	testcluster.MustPut(t, old.Node(), "before", "1")

	c.Pause(old.ID)
	// A write proposed on the paused leader cannot be acknowledged.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stale := make(chan error, 1)
	go func() {
		_, err := testcluster.Put(ctx, old.Node(), "stale", "from-paused-leader")
		stale <- err
	}()
	var nl *testcluster.Node
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		for _, f := range c.Running() {
			if f.ID != old.ID && f.Node().Cluster().IsLeader() {
				nl = f
				return true, ""
			}
		}
		return false, "no new leader among the others"
	})
	testcluster.MustPut(t, nl.Node(), "after", "2")
	c.Resume(old.ID)
	if err := <-stale; err == nil {
		// Committed only if the old leader still led a quorum, which it could
		// not while paused: the entry must then be on the new leader too.
		if v, ok := kvs.On(nl.ID).Get("stale"); !ok || v != "from-paused-leader" {
			t.Fatal("paused leader acknowledged a write the majority does not have")
		}
	}
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		v, ok := kvs.On(old.ID).Get("after")
		return ok && v == "2" && !old.Node().Cluster().IsLeader(), fmt.Sprintf("old leader: after=%q leader=%v", v, old.Node().Cluster().IsLeader())
	})
}

func TestOneWayCutFromLeaderCausesNewElection(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	old := c.WaitLeader(t)
	for _, f := range c.Followers() {
		c.CutOneWay(old.ID, f.ID)
	}
	var nl *testcluster.Node
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		for _, f := range c.Running() {
			if f.ID != old.ID && f.Node().Cluster().IsLeader() {
				nl = f
				return true, ""
			}
		}
		return false, "followers still follow the muted leader"
	})
	testcluster.MustPut(t, nl.Node(), "k", "v")
	c.Heal()
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		_, ok := kvs.On(old.ID).Get("k")
		return ok, "old leader has not caught up after heal"
	})
}

func TestWritesSurviveDelayAndDrops(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	c.WaitLeader(t)
	c.DelayAll(15 * time.Millisecond)
	c.DropAll(0.02)
	acked := 0
	for i := 0; i < 40; i++ {
		nd := c.Running()[i%3]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := testcluster.Put(ctx, nd.Node(), fmt.Sprintf("k%d", i), "v")
		cancel()
		if err == nil {
			acked++
		}
	}
	c.Heal()
	if acked < 30 {
		t.Fatalf("only %d of 40 writes acknowledged under 15 ms delay and 2%% drops", acked)
	}
	final := testcluster.MustPut(t, c.WaitLeader(t).Node(), "final", "x")
	for _, nd := range c.Running() {
		if err := nd.Node().Cluster().WaitApplied(context.Background(), final.Index); err != nil {
			t.Fatal(err)
		}
	}
	// All nodes converge on the same data.
	want := kvs.On("n1").Len()
	for _, nd := range c.Running() {
		if got := kvs.On(nd.ID).Len(); got != want {
			t.Fatalf("%s holds %d keys, n1 %d", nd.ID, got, want)
		}
	}
}
