package raft

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// A follower's read index is a leader call on the call channel, not an
// HTTP request, and still makes the follower's state cover every write
// acknowledged before it started.
func TestFollowerReadIndexUsesTheCallChannel(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.FollowerCatchUp = true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	w := []byte("<before the read>")
	if _, err := leader.Apply(ctx, "mem.put", w); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- follower.ReadIndex(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("read index on the follower: %v", err)
		}
	}
	if !bytes.Contains(memOf(follower).get(), w) {
		t.Fatal("after a read index the follower misses the leader's acknowledged write")
	}
	if got := leader.httpReadIndexes.Load(); got != 0 {
		t.Errorf("the leader answered %d read indexes over HTTP, want none", got)
	}
	if got := leader.leaderCalls.Load(); got == 0 {
		t.Error("the leader took no leader call")
	}
}

// A leader of the previous version refuses the call channel in the
// handshake: the follower then asks for its read index over HTTP.
func TestReadIndexFallsBackToHTTPForAnOlderLeader(t *testing.T) {
	cs := startTestCluster(t, 3, func(c *Cluster) { c.noCallChan = true }, func(c *Config) { c.FollowerCatchUp = true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	w := []byte("<old leader>")
	if _, err := leader.Apply(ctx, "mem.put", w); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := follower.ReadIndex(ctx); err != nil {
			t.Fatalf("read index on the follower: %v", err)
		}
	}
	if !bytes.Contains(memOf(follower).get(), w) {
		t.Fatal("after a read index the follower misses the leader's acknowledged write")
	}
	if leader.leaderCalls.Load() != 0 {
		t.Fatal("a leader refusing the call channel took calls over it")
	}
	if got := leader.httpReadIndexes.Load(); got < 3 {
		t.Fatalf("the leader answered %d read indexes over HTTP, want at least 3", got)
	}
	if _, err := follower.CallLeader(ctx, readIndexCall, nil); !errors.Is(err, ErrLeaderCallRefused) {
		t.Fatalf("a call to a leader refusing the channel: %v, want ErrLeaderCallRefused", err)
	}
}

// A leader call's answer and errors reach the caller as they are: the
// handler's bytes, its error's text, an unknown name; on the leader the
// handler runs in place.
func TestLeaderCallAnswersAndErrors(t *testing.T) {
	var echo, fail LeaderCallFunc = func(_ context.Context, p []byte) ([]byte, error) {
		return append([]byte("echo:"), p...), nil
	}, func(context.Context, []byte) ([]byte, error) {
		return nil, errors.New("the handler failed")
	}
	cs := startTestCluster(t, 3, func(c *Cluster) {
		c.HandleLeaderCall("test.echo", echo)
		c.HandleLeaderCall("test.fail", fail)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	for _, c := range []*Cluster{leader, follower} {
		out, err := c.CallLeader(ctx, "test.echo", []byte("hi"))
		if err != nil || string(out) != "echo:hi" {
			t.Fatalf("%s: echo answered %q, %v", c.NodeID(), out, err)
		}
	}
	if _, err := follower.CallLeader(ctx, "test.fail", nil); err == nil || !strings.Contains(err.Error(), "the handler failed") {
		t.Fatalf("a failing handler: %v", err)
	}
	if _, err := follower.CallLeader(ctx, "test.nope", nil); err == nil || !strings.Contains(err.Error(), "unknown leader call") {
		t.Fatalf("an unknown call: %v", err)
	}
	if _, err := follower.CallLeader(ctx, "test.nope", nil); errors.Is(err, ErrNoLeader) {
		t.Fatalf("an unknown call reads as a missing leader: %v", err)
	}
}

// A follower told the leader's commit index and its entry's term
// (LeaderCommitIndex, as the files barrier asks it; a kv read index
// carries the same) applies its own log up to it at once: it needs neither
// Raft's next append nor the commit push, both off here (a commit timeout
// of an hour, no push).
func TestCatchUpToTheLeadersCommitIndex(t *testing.T) {
	cs := startTestCluster(t, 3, func(c *Cluster) { c.noPush = true }, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	w := []byte("<caught up>")
	if _, err := leader.Apply(ctx, "mem.put", w); err != nil {
		t.Fatal(err)
	}
	idx, term, err := follower.LeaderCommitIndex(ctx)
	if err != nil {
		t.Fatalf("the leader's commit index: %v", err)
	}
	if term == 0 {
		t.Fatalf("the leader knows no term for its commit index %d", idx)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := follower.CatchUp(wctx, idx, term); err != nil {
		t.Fatalf("catch up to %d (term %d): %v", idx, term, err)
	}
	if !bytes.Contains(memOf(follower).get(), w) {
		t.Fatal("caught up, but the follower misses the leader's acknowledged write")
	}
}
