package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// forwardMany writes n distinct commands through the follower at once and
// returns the payloads that were acknowledged and any error other than an
// unknown outcome.
func forwardMany(ctx context.Context, follower *Cluster, n int, tag string) (acked [][]byte, unknown int, err error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := fmt.Appendf(nil, "<%s %d>", tag, i)
			_, err := follower.Apply(ctx, "mem.put", w)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				acked = append(acked, w)
			case errors.Is(err, ErrOutcomeUnknown):
				unknown++
			default:
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	return acked, unknown, errors.Join(errs...)
}

// Commands a follower forwards travel over the forward channel, many at
// once on one connection, not as an HTTP request each; every one is
// applied on the leader and, before its Apply returns, on the follower.
func TestForwardedCommandsUseTheForwardChannel(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.FollowerCatchUp = true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	acked, unknown, err := forwardMany(ctx, follower, 200, "fwd")
	if err != nil {
		t.Fatalf("forwarded writes: %v", err)
	}
	if unknown > 0 && leader.IsLeader() {
		t.Fatalf("%d forwarded writes ended with an unknown outcome while the leader stayed", unknown)
	}
	for _, w := range acked {
		if !bytes.Contains(memOf(follower).get(), w) {
			t.Fatalf("%s acknowledged on the follower before it applied it", w)
		}
		if !bytes.Contains(memOf(leader).get(), w) {
			t.Fatalf("%s acknowledged but not applied on the leader", w)
		}
	}
	if got := leader.httpApplies.Load(); got != 0 {
		t.Errorf("the leader took %d forwarded commands over HTTP, want none", got)
	}
	if got := leader.fwdCommands.Load(); got < int64(len(acked)) {
		t.Errorf("the leader took %d commands over the forward channel, want at least %d", got, len(acked))
	}
}

// A leader of the previous version refuses the forward channel in the
// handshake: the follower then forwards over HTTP, and nothing is lost.
func TestForwardFallsBackToHTTPForAnOlderLeader(t *testing.T) {
	cs := startTestCluster(t, 3, func(c *Cluster) { c.noForwardChan = true }, func(c *Config) { c.FollowerCatchUp = true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	acked, _, err := forwardMany(ctx, follower, 20, "old")
	if err != nil {
		t.Fatalf("forwarded writes: %v", err)
	}
	if len(acked) == 0 {
		t.Fatal("no forwarded write was acknowledged")
	}
	if leader.fwdCommands.Load() != 0 {
		t.Fatal("a leader refusing the forward channel took commands over it")
	}
	if leader.httpApplies.Load() < int64(len(acked)) {
		t.Fatalf("the leader took %d commands over HTTP, want at least %d", leader.httpApplies.Load(), len(acked))
	}
}

// A forward connection cut while commands are in flight ends every call:
// acknowledged, retried on a new connection, or an unknown outcome — none
// waits out its context, and every acknowledged one is applied.
func TestForwardConnectionCutMidFlight(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.FollowerCatchUp = true })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	leader, follower := leaderOf(cs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			follower.fwd.mu.Lock()
			conns := make([]*fwdConn, 0, len(follower.fwd.conns))
			for _, fc := range follower.fwd.conns {
				conns = append(conns, fc)
			}
			follower.fwd.mu.Unlock()
			for _, fc := range conns {
				fc.conn.Close() // as a network failure would
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	acked, unknown, err := forwardMany(ctx, follower, 300, "cut")
	<-done
	if err != nil {
		t.Fatalf("forwarded writes: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("forwarded writes waited out their context (%v)", time.Since(start))
	}
	t.Logf("%d acknowledged, %d unknown outcomes", len(acked), unknown)
	for _, w := range acked {
		if !bytes.Contains(memOf(leader).get(), w) {
			t.Fatalf("%s acknowledged but not applied on the leader", w)
		}
	}
}
