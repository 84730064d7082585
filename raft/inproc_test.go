package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/cohortserver/cohort/internal/poll"
)

// startTestCluster starts n in-process nodes with a "mem" machine owning
// "mem.put", after setup(c) on each, and returns them once one leads and
// its Barrier ran.
func startTestCluster(t *testing.T, n int, setup func(c *Cluster), opts ...func(*Config)) []*Cluster {
	t.Helper()
	var lns []net.Listener
	var peers []Peer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i+1), Address: ln.Addr().String()})
	}
	var cs []*Cluster
	for i, p := range peers {
		cfg := Config{NodeID: p.ID, DataDir: t.TempDir(), BindAddr: p.Address, Key: []byte("0123456789abcdef0123"),
			Peers: peers, Listener: lns[i], TimeoutScale: 4}
		for _, o := range opts {
			o(&cfg)
		}
		c := New(cfg)
		if setup != nil {
			setup(c)
		}
		if err := c.Register("mem", &memMachine{}, "mem.put"); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	poll.Until(t, 30*time.Second, func() (bool, string) {
		for _, c := range cs {
			if c.IsLeader() && c.barrierDone.Load() > 0 {
				return true, ""
			}
		}
		return false, "no leader with its barrier done"
	})
	return cs
}

// leaderOf returns the leader among cs and one follower.
func leaderOf(cs []*Cluster) (leader, follower *Cluster) {
	for _, c := range cs {
		if c.IsLeader() {
			leader = c
		} else if follower == nil {
			follower = c
		}
	}
	return leader, follower
}

func memOf(c *Cluster) *memMachine { return c.router.machines["mem"].(*memMachine) }

// With a commit timeout of an hour, a follower learns a commit from Raft
// only with the leader's next append. A write it forwarded, and a read
// index it asked for, must still be applied here at once, from its own log
// (router.catchUp): without that both would wait out their context.
func TestFollowerAppliesWithoutWaitingForTheNextAppend(t *testing.T) {
	cs := startTestCluster(t, 3, func(c *Cluster) { c.noPush = true }, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, true })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// A leader change on a loaded machine makes an outcome unknown (the
	// write may or may not have committed); try again, with whoever
	// follows then.
	apply := func(onLeader bool, w []byte) (*Cluster, Result) {
		for {
			leader, follower := leaderOf(cs)
			c := follower
			if onLeader {
				c = leader
			}
			if c == nil || leader == nil {
				if ctx.Err() != nil {
					t.Fatal("no leader")
				}
				select { // poll for a leader until ctx's deadline
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			res, err := c.Apply(ctx, "mem.put", w)
			if errors.Is(err, ErrOutcomeUnknown) && ctx.Err() == nil {
				continue
			}
			if err != nil {
				t.Fatalf("write %q: %v", w, err)
			}
			return c, res
		}
	}
	for i := range 5 {
		w := fmt.Appendf(nil, "<forwarded %d>", i)
		follower, res := apply(false, w)
		if !bytes.Contains(memOf(follower).get(), w) || follower.AppliedIndex() < res.Index {
			t.Fatalf("write %d returned on the follower before it applied it (applied %d, index %d)", i, follower.AppliedIndex(), res.Index)
		}
	}
	w := []byte("<on the leader>")
	apply(true, w)
	_, follower := leaderOf(cs)
	if err := follower.ReadIndex(ctx); err != nil {
		t.Fatalf("read index on the follower: %v", err)
	}
	if !bytes.Contains(memOf(follower).get(), w) {
		t.Fatal("after a read index the follower's state misses the leader's acknowledged write")
	}
}

// With a commit timeout of an hour, followers learn of a write on the
// leader only from the leader's commit push (pushCommits); without it they
// would apply the write only with the next write.
func TestLeaderPushesCommitsToFollowers(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, true })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w := []byte("<pushed>")
	var res Result
	var err error
	for {
		leader, _ := leaderOf(cs)
		res, err = leader.Apply(ctx, "mem.put", w)
		if !errors.Is(err, ErrOutcomeUnknown) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := c.WaitApplied(ctx, res.Index); err != nil {
			t.Fatalf("%s never applied the leader's write: %v", c.NodeID(), err)
		}
		if !bytes.Contains(memOf(c).get(), w) {
			t.Fatalf("%s applied index %d but misses the write", c.NodeID(), res.Index)
		}
	}
}

// Under a steady stream of writes every append tells the followers of the
// commit before it, so the leader pushes (almost) no commit of its own:
// one HTTP request per write and follower, twice the Raft traffic, would
// otherwise be the cost of a commit push (pushCommits, appendsSeen).
func TestNoCommitPushesUnderLoad(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, _ := leaderOf(cs)
	const writes = 300
	before := leader.pushes.Load()
	var last Result
	for i := range writes {
		res, err := leader.Apply(ctx, "mem.put", fmt.Appendf(nil, "<%d>", i))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		last = res
	}
	pushed := leader.pushes.Load() - before
	// The last write needs its push; keepalives add one per follower every
	// commitPushKeepalive.
	if pushed > writes/20 {
		t.Errorf("the leader pushed %d commits during %d writes in a row, want almost none", pushed, writes)
	}
	for _, c := range cs {
		if err := c.WaitApplied(ctx, last.Index); err != nil {
			t.Fatalf("%s never applied the last write: %v", c.NodeID(), err)
		}
	}
	t.Logf("%d commit pushes during %d writes", pushed, writes)
}

// A follower that restarts while no write moves the commit index learns of
// the commits in its log from the leader's commit push, which tells every
// follower again each commitPushKeepalive: with a commit timeout of an
// hour, Raft would tell it only with the next write.
func TestRestartedFollowerCatchesUpWithoutAWrite(t *testing.T) {
	cs := startTestCluster(t, 3, nil, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, true })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var want []byte
	var last Result
	for i := range 5 {
		w := fmt.Appendf(nil, "<%d>", i)
		for {
			leader, _ := leaderOf(cs)
			if leader == nil {
				t.Fatal("no leader")
			}
			res, err := leader.Apply(ctx, "mem.put", w)
			if errors.Is(err, ErrOutcomeUnknown) && ctx.Err() == nil {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			last = res
			break
		}
		want = append(want, w...)
	}
	_, f := leaderOf(cs)
	if err := f.WaitApplied(ctx, last.Index); err != nil {
		t.Fatalf("%s before the restart: %v", f.NodeID(), err)
	}
	cfg := f.cfg
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	poll.Until(t, 10*time.Second, func() (bool, string) {
		var err error
		ln, err = net.Listen("tcp", cfg.BindAddr)
		return err == nil, fmt.Sprintf("listen again on %s: %v", cfg.BindAddr, err)
	})
	cfg.Listener = ln
	f = New(cfg)
	if err := f.Register("mem", &memMachine{}, "mem.put"); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := f.WaitApplied(ctx, last.Index); err != nil {
		t.Fatalf("%s after its restart never applied the entries in its log: %v", f.NodeID(), err)
	}
	if got := memOf(f).get(); !bytes.Equal(got, want) {
		t.Fatalf("%s after its restart holds %q, want %q", f.NodeID(), got, want)
	}
}

// keepMachine keeps every payload it is given, as sessions keep values.
type keepMachine struct{ kept [][]byte }

func (m *keepMachine) Apply(e Entry) ([]byte, error) {
	m.kept = append(m.kept, e.Payload)
	return nil, nil
}
func (m *keepMachine) Snapshot() (Snapshot, error) { return memSnap(nil), nil }
func (m *keepMachine) Restore(io.Reader) error     { return nil }

// A state machine may keep the payload it was given; catching up from a
// real log store must not hand it bytes the next entry overwrites.
func TestCatchUpPayloadsStayIntact(t *testing.T) {
	r := newRouter()
	m := &keepMachine{}
	if err := r.register("keep", m, "keep.put"); err != nil {
		t.Fatal(err)
	}
	disk, err := openLogStore(t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	store := disk.log
	var want []string
	var entries []*hraft.Log
	for i := uint64(1); i <= 4; i++ {
		p := strings.Repeat(string(rune('a'+i)), 16)
		want = append(want, p)
		entries = append(entries, &hraft.Log{Index: i, Term: 1, Type: hraft.LogCommand,
			Data: encodeEnvelope("keep.put", "n1", time.Unix(0, 0), []byte(p))})
	}
	if err := store.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	if !r.catchUp(store, 4, 1) {
		t.Fatal("no catch-up")
	}
	for i, p := range m.kept {
		if string(p) != want[i] {
			t.Fatalf("payload %d is %q after the catch-up, want %q", i+1, p, want[i])
		}
	}
}

// catchUp applies from the log only when the entry at the index has the
// term the leader reported, and Raft's later Apply of the same entries is
// skipped.
func TestRouterCatchUpChecksTheTerm(t *testing.T) {
	r := newRouter()
	m := &memMachine{}
	if err := r.register("mem", m, "mem.put"); err != nil {
		t.Fatal(err)
	}
	logs := hraft.NewInmemStore()
	var entries []*hraft.Log
	for i := uint64(1); i <= 3; i++ {
		entries = append(entries, &hraft.Log{Index: i, Term: 1, Type: hraft.LogCommand,
			Data: encodeEnvelope("mem.put", "n1", time.Unix(0, 0), fmt.Appendf(nil, "%d", i))})
	}
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	if r.catchUp(logs, 3, 2) || r.applied.get() != 0 || len(m.get()) != 0 {
		t.Fatalf("caught up on a term mismatch: applied %d, state %q", r.applied.get(), m.get())
	}
	if r.catchUp(logs, 4, 1) || r.catchUp(logs, 3, 0) {
		t.Fatal("caught up to an entry not in the log, or with no term")
	}
	if !r.catchUp(logs, 2, 1) || string(m.get()) != "12" {
		t.Fatalf("catch up to 2: state %q", m.get())
	}
	// Raft would label this snapshot with index 0 while it holds 1 and 2.
	if _, err := r.Snapshot(); !errors.Is(err, errAhead) {
		t.Fatalf("snapshot while ahead of raft: err %v, want errAhead", err)
	}
	for _, e := range entries {
		r.Apply(e)
	}
	if s, err := r.Snapshot(); err != nil {
		t.Fatalf("snapshot once raft caught up: %v", err)
	} else {
		s.Release()
	}
	if string(m.get()) != "123" || r.applied.get() != 3 {
		t.Fatalf("raft's apply after a catch-up: state %q applied %d, want 123 and 3", m.get(), r.applied.get())
	}
}

func (m *memMachine) get() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data)
}

// A write the leader committed whose wait to be applied on the follower
// that forwarded it ends (its context, the wait budget, a cut-off) has
// happened: the error must say the outcome is unknown, or a caller takes
// it for a refusal (a 503 "retry") and a client retries a write that
// committed. Without the catch-up and the commit push, and with a commit
// timeout of an hour, the follower cannot apply it before its context ends.
func TestACommittedWriteWhoseApplyWaitEndsIsAnUnknownOutcome(t *testing.T) {
	var cancelAtForwarded atomic.Pointer[context.CancelFunc]
	cs := startTestCluster(t, 3, func(c *Cluster) {
		c.noPush = true
		c.stages = func(stage string, _ uint64) {
			if stage == stageForwarded {
				if f := cancelAtForwarded.Load(); f != nil {
					(*f)()
				}
			}
		}
	}, func(c *Config) { c.CommitTimeout, c.FollowerCatchUp = time.Hour, false })
	leader, follower := leaderOf(cs)
	if leader == nil || follower == nil {
		t.Fatal("no leader")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cancelAtForwarded.Store(&cancel)
	res, err := follower.Apply(ctx, "mem.put", []byte("<committed>"))
	cancelAtForwarded.Store(nil)
	if err == nil {
		t.Fatal("the follower applied the write although Raft had not told it of the commit")
	}
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a committed write whose apply wait ended answered %v, which does not say its outcome is unknown", err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := leader.WaitApplied(wctx, res.Index); err != nil || !bytes.Contains(memOf(leader).get(), []byte("<committed>")) {
		t.Fatalf("the write was not committed on the leader (index %d): %v", res.Index, err)
	}
}

// A node removed from the configuration gets no more appends, so a write
// it forwarded could never be applied there: the leader refuses it before
// proposing it (ErrRemoved), instead of committing it and leaving the
// removed node waiting for its apply until its context ends (which failed
// a removed node's shutdown, when its front marked itself draining).
func TestRemovedNodesWritesAreRefused(t *testing.T) {
	cs := startTestCluster(t, 3, nil)
	leader, follower := leaderOf(cs)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := follower.Apply(ctx, "mem.put", []byte("<before>")); err != nil {
		t.Fatalf("write before the removal: %v", err)
	}
	if err := leader.RemoveServer(ctx, follower.cfg.NodeID); err != nil {
		t.Fatalf("remove %s: %v", follower.cfg.NodeID, err)
	}
	before := leader.AppliedIndex()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	_, err := follower.Apply(wctx, "mem.put", []byte("<after>"))
	if !errors.Is(err, ErrRemoved) {
		t.Fatalf("write through the removed %s: %v, want ErrRemoved", follower.cfg.NodeID, err)
	}
	if bytes.Contains(memOf(leader).get(), []byte("<after>")) || leader.AppliedIndex() != before {
		t.Fatalf("the removed node's write was committed (applied %d → %d)", before, leader.AppliedIndex())
	}
}
