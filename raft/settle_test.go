package raft

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gate holds the state machine of one node inside Apply of a "hold"
// command until released: the command is committed and not yet applied
// there, as under load.
type gate struct {
	node    atomic.Value // string: the node whose Apply waits
	entered chan struct{}
	release chan struct{}
	once    sync.Once // of entered
	opened  sync.Once // of release
}

func (g *gate) open() { g.opened.Do(func() { close(g.release) }) }

type gateMachine struct {
	id string
	g  *gate
	memMachine
}

func (m *gateMachine) Apply(e Entry) ([]byte, error) {
	if string(e.Payload) == "hold" && m.g.node.Load() == m.id {
		m.g.once.Do(func() { close(m.g.entered) })
		<-m.g.release
	}
	return m.memMachine.Apply(e)
}

func (m *gateMachine) Restore(r io.Reader) error { return m.memMachine.Restore(r) }

// gateCluster starts three nodes with a "gate" machine owning "gate.put",
// its gate on the leader.
func gateCluster(t *testing.T) (leader, follower *Cluster, g *gate, faults *Faults) {
	t.Helper()
	g = &gate{entered: make(chan struct{}), release: make(chan struct{})}
	faults = NewFaults()
	machines := map[string]*gateMachine{}
	var mu sync.Mutex
	cs := startTestCluster(t, 3, func(c *Cluster) {
		m := &gateMachine{id: c.cfg.NodeID, g: g}
		mu.Lock()
		machines[c.cfg.NodeID] = m
		mu.Unlock()
		if err := c.Register("gate", m, "gate.put"); err != nil {
			t.Fatal(err)
		}
	}, func(c *Config) { c.Faults = faults })
	leader, follower = leaderOf(cs)
	g.node.Store(leader.NodeID())
	t.Cleanup(g.open)
	return leader, follower, g, faults
}

func gateOf(c *Cluster) *gateMachine { return c.router.machines["gate"].(*gateMachine) }

// releaseLater opens the gate after d: a settle that returns before then
// returned while the command was still on its way.
func releaseLater(g *gate, d time.Duration) {
	time.AfterFunc(d, g.open)
}

// applyHeld applies "hold" through c and returns once the gated node's
// Apply holds it; the channel gets the Apply's error.
func applyHeld(t *testing.T, ctx context.Context, c *Cluster, g *gate) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Apply(ctx, "gate.put", []byte("hold"))
		errc <- err
	}()
	select {
	case <-g.entered:
	case err := <-errc:
		t.Fatalf("the command ended (%v) before the leader applied it", err)
	}
	return errc
}

// A follower's forwarded command is committed and inside the leader's
// Apply when the forward connection breaks: its outcome is unknown, and
// the leader's applied index does not cover it yet. Settle must not
// return before the command is applied on the follower, or a caller
// concludes it did not land and sends it again (the mount's mkdir then
// failed with EEXIST against its own directory).
func TestSettleCoversAForwardedCommandStillBeingApplied(t *testing.T) {
	leader, follower, g, faults := gateCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	errc := applyHeld(t, ctx, follower, g)
	faults.Cut(leader.NodeID(), follower.NodeID())
	err := <-errc
	faults.MendAll()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("forwarded command whose connection broke: %v, want ErrOutcomeUnknown", err)
	}

	releaseLater(g, 300*time.Millisecond)
	if err := follower.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gateOf(follower).get(); !bytes.Equal(got, []byte("hold")) {
		t.Fatalf("settled on %s, which holds %q: the command landed later (want %q)", follower.NodeID(), got, "hold")
	}
}

// The leader's own command, whose caller stopped waiting while it was
// being applied, is covered by the leader's Settle as well.
func TestSettleCoversTheLeadersOwnCommandStillBeingApplied(t *testing.T) {
	leader, _, g, _ := gateCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	actx, acancel := context.WithCancel(ctx)
	errc := applyHeld(t, actx, leader, g)
	acancel()
	if err := <-errc; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("command whose caller stopped waiting: %v, want ErrOutcomeUnknown", err)
	}

	releaseLater(g, 300*time.Millisecond)
	if err := leader.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gateOf(leader).get(); !bytes.Equal(got, []byte("hold")) {
		t.Fatalf("settled on the leader, which holds %q: the command landed later (want %q)", got, "hold")
	}
}

// A command a follower gave up on (its context ended) may still wait in
// the leader's socket, unread: the leader must close that connection
// before answering the settle, or the command lands after the follower
// concluded it never would. The leader's reader is held before it reads
// the command, and let go only after the settle reached the leader.
func TestSettleFencesACommandNotYetRead(t *testing.T) {
	var armed atomic.Bool
	var parked sync.Once
	park, unpark := make(chan struct{}), make(chan struct{})
	var opened sync.Once
	unparkOnce := func() { opened.Do(func() { close(unpark) }) }
	var followerID atomic.Value
	cs := startTestCluster(t, 3, func(c *Cluster) {
		c.fwdReadGate = func(origin string) {
			if armed.Load() && origin == followerID.Load() {
				parked.Do(func() { close(park) })
				<-unpark
			}
		}
	})
	t.Cleanup(unparkOnce) // before the nodes close: a parked reader holds Close
	leader, follower := leaderOf(cs)
	followerID.Store(follower.NodeID())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// The forward connection is open and its reader waiting for a frame;
	// the next command is read, and the reader then waits before the one
	// after.
	if _, err := follower.Apply(ctx, "mem.put", nil); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if _, err := follower.Apply(ctx, "mem.put", []byte("<read>")); err != nil {
		t.Fatal(err)
	}
	<-park
	actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := follower.Apply(actx, "mem.put", []byte("<late>"))
	acancel()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a command left unread by the leader: %v, want ErrOutcomeUnknown", err)
	}

	time.AfterFunc(300*time.Millisecond, unparkOnce)
	if err := follower.Settle(ctx); err != nil {
		t.Fatalf("settle: %v", err)
	}
	settled := memOf(follower).get()
	armed.Store(false)
	res, err := follower.Apply(ctx, "mem.put", []byte("<after>"))
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitApplied(ctx, res.Index); err != nil {
		t.Fatal(err)
	}
	if got := memOf(follower).get(); !bytes.Equal(got, append(bytes.Clone(settled), "<after>"...)) {
		t.Fatalf("settled holding %q, and afterwards %s holds %q: a command landed after the settle", settled, follower.NodeID(), got)
	}
}

// A leader of an older version does not know the settle call: Settle
// then falls back to a read index instead of asking again until its
// context ends.
func TestSettleFallsBackToAReadIndexOnAnOlderLeader(t *testing.T) {
	cs := startTestCluster(t, 3, nil)
	leader, follower := leaderOf(cs)
	leader.mu.Lock()
	delete(leader.callFns, settleCall)
	leader.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := follower.Settle(ctx); err != nil {
		t.Fatalf("settle through a leader without the call: %v", err)
	}
}
