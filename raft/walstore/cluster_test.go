package walstore

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/internal/syncbuf"
	"github.com/cohortserver/cohort/internal/testport"
)

// listFSM is a state machine that keeps the commands it applied.
type listFSM struct {
	mu       sync.Mutex
	cmds     []string
	restores int
}

func (f *listFSM) Apply(l *hraft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return len(f.cmds)
}

func (f *listFSM) Snapshot() (hraft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.cmds)), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = cmds
	f.restores++
	return nil
}

func (f *listFSM) state() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds), f.restores
}

type listSnapshot []string

func (s listSnapshot) Persist(sink hraft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// raftNode is one member of the test cluster. Its stable store (term and
// vote) is in memory but survives the node's restarts, as a file would.
type raftNode struct {
	id, addr, dir string
	stable        *hraft.InmemStore
	fsm           *listFSM
	store         *Store
	trans         *hraft.NetworkTransport
	r             *hraft.Raft
}

type raftCluster struct {
	t     *testing.T
	logs  *syncbuf.Buffer
	nodes []*raftNode
}

func (c *raftCluster) start(n *raftNode) {
	t := c.t
	t.Helper()
	var err error
	if n.store, err = Open(filepath.Join(n.dir, "wal"), Options{SegmentSize: 64 << 10}); err != nil {
		t.Fatalf("%s: %v", n.id, err)
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: n.id, Output: c.logs, Level: hclog.Info})
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(n.dir, 2, hl)
	if err != nil {
		t.Fatal(err)
	}
	if n.trans, err = hraft.NewTCPTransportWithLogger(n.addr, nil, 3, 2*time.Second, hl); err != nil {
		t.Fatalf("%s: transport: %v", n.id, err)
	}
	cfg := hraft.DefaultConfig()
	cfg.LocalID = hraft.ServerID(n.id)
	cfg.Logger = hl
	cfg.HeartbeatTimeout = 500 * time.Millisecond
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.LeaderLeaseTimeout = 250 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.TrailingLogs = 20
	cfg.SnapshotThreshold = 1 << 40 // snapshots when the test asks
	cfg.SnapshotInterval = time.Hour
	n.fsm = &listFSM{}
	if n.r, err = hraft.NewRaft(cfg, n.fsm, n.store, n.stable, snaps, n.trans); err != nil {
		t.Fatalf("%s: NewRaft: %v", n.id, err)
	}
}

func (c *raftCluster) stop(n *raftNode) {
	c.t.Helper()
	if n.r == nil {
		return
	}
	if err := n.r.Shutdown().Error(); err != nil {
		c.t.Errorf("%s: shutdown: %v", n.id, err)
	}
	n.trans.CloseStreams() // Close leaves pooled connections open
	n.trans.Close()
	if err := n.store.Close(); err != nil {
		c.t.Errorf("%s: close store: %v", n.id, err)
	}
	n.r = nil
}

func (c *raftCluster) leader() *raftNode {
	c.t.Helper()
	var l *raftNode
	poll.Until(c.t, 15*time.Second, func() (bool, string) {
		var states []string
		for _, n := range c.nodes {
			if n.r == nil {
				continue
			}
			if n.r.State() == hraft.Leader {
				l = n
				return true, ""
			}
			states = append(states, n.id+" "+n.r.State().String())
		}
		return false, strings.Join(states, ", ")
	})
	return l
}

// apply commits commands from..to ("cmd-i") through the leader.
func (c *raftCluster) apply(from, to int) {
	c.t.Helper()
	for i := from; i <= to; {
		l := c.leader()
		err := l.r.Apply([]byte(fmt.Sprintf("cmd-%d", i)), 5*time.Second).Error()
		if err == hraft.ErrNotLeader || err == hraft.ErrLeadershipLost {
			continue
		}
		if err != nil {
			c.t.Fatalf("apply cmd-%d on %s: %v", i, l.id, err)
		}
		i++
	}
}

// converge waits until every running node applied n commands, the same.
func (c *raftCluster) converge(n int) {
	c.t.Helper()
	poll.Until(c.t, 20*time.Second, func() (bool, string) {
		var ref []string
		for _, nd := range c.nodes {
			if nd.r == nil {
				continue
			}
			cmds, _ := nd.fsm.state()
			if len(cmds) != n {
				return false, fmt.Sprintf("%s applied %d of %d", nd.id, len(cmds), n)
			}
			if ref == nil {
				ref = cmds
			} else if !slices.Equal(ref, cmds) {
				return false, fmt.Sprintf("%s applied other commands", nd.id)
			}
		}
		return true, ""
	})
}

// TestRaftCluster runs a real three-node hashicorp/raft cluster on TCP
// with its logs in Stores: writes, a snapshot with log compaction, a
// follower that restarts behind the compacted log (it installs the
// snapshot, and Raft empties its log: IsMonotonic), and a follower that
// restarts and replays its own log.
func TestRaftCluster(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := &raftCluster{t: t, logs: &syncbuf.Buffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("raft logs:\n" + c.logs.String())
		}
	})
	base := t.TempDir()
	var servers []hraft.Server
	for i := range 3 {
		n := &raftNode{id: fmt.Sprintf("n%d", i+1), addr: testport.Addr(t), stable: hraft.NewInmemStore()}
		n.dir = filepath.Join(base, n.id)
		c.nodes = append(c.nodes, n)
		servers = append(servers, hraft.Server{ID: hraft.ServerID(n.id), Address: hraft.ServerAddress(n.addr)})
	}
	defer func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	}()
	for _, n := range c.nodes {
		c.start(n)
	}
	if err := c.nodes[0].r.BootstrapCluster(hraft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	c.apply(1, 100)
	c.converge(100)

	// A follower stops; the log grows and is compacted past its end.
	lead := c.leader()
	var away *raftNode
	for _, n := range c.nodes {
		if n != lead {
			away = n
			break
		}
	}
	awayLast, _ := away.store.LastIndex()
	c.stop(away)
	c.apply(101, 250)
	for _, n := range c.nodes {
		if n.r != nil {
			if err := n.r.Snapshot().Error(); err != nil {
				t.Fatalf("%s: snapshot: %v", n.id, err)
			}
		}
	}
	lead = c.leader()
	if first, _ := lead.store.FirstIndex(); first <= awayLast+1 {
		t.Fatalf("the leader's log starts at %d after compaction; the stopped follower has up to %d", first, awayLast)
	}

	// It comes back on its own log: it needs the snapshot.
	c.start(away)
	c.converge(250)
	if _, restores := away.fsm.state(); restores == 0 {
		t.Fatalf("%s caught up without installing a snapshot", away.id)
	}
	// Raft empties the log after the FSM restored the snapshot, so the
	// state can converge a moment before the old entries are gone.
	poll.Until(t, 20*time.Second, func() (bool, string) {
		err := away.store.GetLog(awayLast, new(hraft.Log))
		return err == hraft.ErrLogNotFound, fmt.Sprintf("%s kept entry %d from before the snapshot: %v", away.id, awayLast, err)
	})

	// Another follower restarts and replays its own log.
	for _, n := range c.nodes {
		if n != lead && n != away {
			c.stop(n)
			c.apply(251, 300)
			c.start(n)
		}
	}
	c.apply(301, 350)
	c.converge(350)

	// Every node's log holds the same entries where they overlap.
	var lo, hi uint64 = 0, ^uint64(0)
	for _, n := range c.nodes {
		f, _ := n.store.FirstIndex()
		l, _ := n.store.LastIndex()
		lo, hi = max(lo, f), min(hi, l)
	}
	if lo > hi {
		t.Fatalf("the logs do not overlap (%d-%d)", lo, hi)
	}
	for i := lo; i <= hi; i++ {
		var ref hraft.Log
		for j, n := range c.nodes {
			var l hraft.Log
			if err := n.store.GetLog(i, &l); err != nil {
				t.Fatalf("%s: GetLog(%d): %v", n.id, i, err)
			}
			if j == 0 {
				ref = l
			} else if d := sameLog(&l, &ref); d != "" {
				t.Fatalf("%s and %s differ at %d: %s", n.id, c.nodes[0].id, i, d)
			}
		}
	}
}
