package raft

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
)

// leaseCluster starts three nodes whose "mem.put" commands are leased, and
// whose followers learn a commit only when told directly (a commit timeout
// of an hour, no background commit pushes): a holder that applied a
// command by its acknowledgement was pushed it by the leader's wait.
func leaseCluster(t *testing.T, faults *Faults) (leader, holder, other *Cluster) {
	t.Helper()
	cs := startTestCluster(t, 3, func(c *Cluster) {
		c.noPush = true
		c.LeaseCommands("mem.put")
	}, func(c *Config) {
		c.FollowerCatchUp = true
		c.CommitTimeout = time.Hour
		c.Faults = faults
	})
	for _, c := range cs {
		switch {
		case c.IsLeader():
			leader = c
		case holder == nil:
			holder = c
		default:
			other = c
		}
	}
	poll.Until(t, 30*time.Second, func() (bool, string) {
		return holder.LeaseHeld(), "the follower got no apply lease"
	})
	return leader, holder, other
}

// Once a leased command is acknowledged, through the leader or forwarded
// by another follower, a follower that holds an apply lease has applied
// it: a read it answers from its own state afterwards sees it.
func TestLeaseHolderAppliedEveryAcknowledgedCommand(t *testing.T) {
	leader, holder, other := leaseCluster(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	held := 0
	const writes = 40
	for i := range writes {
		via := leader
		if i%2 == 1 {
			via = other
		}
		res, err := via.Apply(ctx, "mem.put", fmt.Appendf(nil, "<%d>", i))
		if err != nil {
			t.Fatal(err)
		}
		// LeaseHeld after the acknowledgement: a lease that ran out in
		// between (a slow -race run) promises nothing.
		if !holder.LeaseHeld() {
			continue
		}
		held++
		if got := holder.AppliedIndex(); got < res.Index {
			t.Fatalf("write %d (through %s) acknowledged as entry %d while the lease holder %s had applied only %d",
				i, via.NodeID(), res.Index, holder.NodeID(), got)
		}
	}
	if held < writes/2 {
		t.Fatalf("the follower held its lease after only %d of %d writes", held, writes)
	}
}

// A holder cut off from the leader holds up the leader's acknowledgements
// only until its lease ends, and stops answering from its own state by
// then; healed, it gets a lease again.
func TestLeaseHolderCutOffLosesItsLease(t *testing.T) {
	faults := NewFaults()
	leader, holder, _ := leaseCluster(t, faults)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	faults.Cut(leader.NodeID(), holder.NodeID())
	// While the cut lasts the holder must stop trusting its state within a
	// lease; keep noting demand, as reads would.
	poll.Until(t, 10*time.Second, func() (bool, string) {
		return !holder.LeaseHeld(), "the cut-off follower still holds its lease"
	})
	for i := range 5 {
		if _, err := leader.Apply(ctx, "mem.put", fmt.Appendf(nil, "<cut %d>", i)); err != nil {
			t.Fatalf("write while a lease holder is cut off: %v", err)
		}
	}
	if holder.LeaseHeld() {
		t.Fatal("the cut-off follower holds a lease")
	}
	faults.MendAll()
	poll.Until(t, 30*time.Second, func() (bool, string) {
		return holder.LeaseHeld(), "the healed follower got no lease again"
	})
	res, err := leader.Apply(ctx, "mem.put", []byte("<healed>"))
	if err != nil {
		t.Fatal(err)
	}
	if holder.LeaseHeld() && holder.AppliedIndex() < res.Index {
		t.Fatalf("entry %d acknowledged before the healed holder applied it (applied %d)", res.Index, holder.AppliedIndex())
	}
}

// Commands of types that are not leased never wait for holders, and no
// follower holds a lease when nothing is leased.
func TestNoLeaseWithoutLeasedCommands(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.FollowerCatchUp = true })
	_, follower := leaderOf(cs)
	for range 10 {
		if follower.LeaseHeld() {
			t.Fatal("a follower holds an apply lease though no command is leased")
		}
	}
}

// A holder that keeps asking for its lease while the leader cannot reach
// it (a one-way partition: its calls arrive, the leader's pushes and
// appends do not) is refused a new lease once a command waited a lease
// for it, so writes go on without it instead of waiting as long as that
// lasts.
func TestUnreachableLeaseHolderIsRefusedAndWritesGoOn(t *testing.T) {
	leader, holder, _ := leaseCluster(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // reads keep wanting the lease
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				holder.LeaseHeld()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	leader.failLeasePush.Store(true)
	for i := range 3 {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := leader.Apply(wctx, "mem.put", fmt.Appendf(nil, "<unreachable %d>", i))
		wcancel()
		if err != nil {
			t.Fatalf("write %d while a lease holder cannot be reached: %v", i, err)
		}
		if holder.LeaseHeld() && holder.AppliedIndex() < res.Index {
			t.Fatalf("entry %d acknowledged while the unreachable holder held its lease (applied %d)", res.Index, holder.AppliedIndex())
		}
	}
}
