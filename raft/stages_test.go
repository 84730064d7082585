package raft

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
)

// stageEvent is one mark of the write path on one node.
type stageEvent struct {
	node, stage string
	index       uint64
	at          time.Time
}

// stageLog collects the marks of every node of an in-process cluster.
type stageLog struct {
	mu sync.Mutex
	ev []stageEvent
}

func (l *stageLog) fn(node string) stageFn {
	return func(stage string, index uint64) {
		l.mu.Lock()
		l.ev = append(l.ev, stageEvent{node, stage, index, time.Now()})
		l.mu.Unlock()
	}
}

// appended reports whether every node in nodes marked the end of a log
// append at or past index.
func (l *stageLog) appended(nodes []string, index uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range nodes {
		found := false
		for _, e := range l.ev {
			if e.node == n && e.stage == stageStoreEnd && e.index >= index {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (l *stageLog) take() []stageEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.ev
	l.ev = nil
	return ev
}

// writeStages is the per-stage split of one write, from the marks of all nodes.
func writeStages(ev []stageEvent, origin, leader string, index uint64) map[string]time.Duration {
	find := func(node, stage string, match func(uint64) bool) (time.Time, bool) {
		for _, e := range ev {
			if e.node == node && e.stage == stage && (match == nil || match(e.index)) {
				return e.at, true
			}
		}
		return time.Time{}, false
	}
	ge := func(i uint64) bool { return i >= index }
	le := func(i uint64) bool { return i <= index }
	eq := func(i uint64) bool { return i == index }
	out := map[string]time.Duration{}
	span := func(name string, a time.Time, aok bool, b time.Time, bok bool) {
		if aok && bok {
			out[name] = b.Sub(a)
		}
	}
	start, sok := find(origin, stageApply, nil)
	end, eok := find(origin, stageApplied, nil)
	span("total", start, sok, end, eok)
	prop, pok := find(leader, stagePropose, nil)
	if origin != leader {
		fwd, fok := find(origin, stageForward, nil)
		recv, rok := find(leader, stageLeaderRecv, nil)
		span("1 forward", fwd, fok, recv, rok)
		reply, yok := find(leader, stageLeaderReply, nil)
		got, gok := find(origin, stageForwarded, nil)
		span("8 answer", reply, yok, got, gok)
		span("9 follower apply wait", got, gok, end, eok)
	}
	ls, lsok := find(leader, stageStoreStart, le)
	le2, leok := find(leader, stageStoreEnd, ge)
	span("2 queue to leader log", prop, pok, ls, lsok)
	span("3 leader append", ls, lsok, le2, leok)
	// The first follower whose append of index ended commits it.
	var fs, fe time.Time
	var fok bool
	for _, e := range ev {
		if e.node != leader && e.stage == stageStoreEnd && e.index >= index && (!fok || e.at.Before(fe)) {
			if s, ok := find(e.node, stageStoreStart, le); ok {
				fs, fe, fok = s, e.at, true
			}
		}
	}
	span("4 replicate", le2, leok, fs, fok)
	span("5 follower append", fs, fok, fe, fok)
	fsm, mok := find(leader, stageFSM, eq)
	span("6 commit", fe, fok, fsm, mok)
	done, dok := find(leader, stageProposed, eq)
	span("7 leader apply+answer", fsm, mok, done, dok)
	if origin != leader {
		ofsm, ook := find(origin, stageFSM, eq)
		span("9a follower fsm after leader fsm", fsm, mok, ofsm, ook)
	}
	return out
}

// TestWriteStages measures where one sequential write spends its time, on
// the leader and through a follower (COHORT_LONG=1; it prints, asserts
// nothing about speed).
func TestWriteStages(t *testing.T) {
	if os.Getenv("COHORT_LONG") == "" {
		t.Skip("COHORT_LONG=1 runs the per-stage timing of a write")
	}
	log := &stageLog{}
	catchUp := os.Getenv("COHORT_RAFT_CATCHUP") != ""
	t.Logf("follower catch-up: %v (COHORT_RAFT_CATCHUP=1 turns it on)", catchUp)
	cs := startTestCluster(t, 3, func(c *Cluster) { c.stages = log.fn(c.cfg.NodeID) }, func(c *Config) { c.FollowerCatchUp = catchUp })
	var leader, follower *Cluster
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.cfg.NodeID)
		if c.IsLeader() {
			leader = c
		} else if follower == nil {
			follower = c
		}
	}
	payload := make([]byte, 1024)
	for _, origin := range []*Cluster{leader, follower} {
		stats := map[string][]time.Duration{}
		for i := range 300 {
			log.take()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := origin.Apply(ctx, "mem.put", payload)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			// Every node's append of this write has its marks before the
			// split is read.
			poll.Until(t, 10*time.Second, func() (bool, string) {
				return log.appended(ids, res.Index), "a node has not appended the write yet"
			})
			if i < 20 {
				continue // warm-up
			}
			for k, v := range writeStages(log.take(), origin.NodeID(), leader.NodeID(), res.Index) {
				stats[k] = append(stats[k], v)
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "write from the %s (%s):\n", map[bool]string{true: "leader", false: "follower"}[origin == leader], origin.NodeID())
		keys := make([]string, 0, len(stats))
		for k := range stats {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := stats[k]
			slices.Sort(v)
			fmt.Fprintf(&b, "  %-34s p50 %8s  p90 %8s  n=%d\n", k, v[len(v)/2].Round(time.Microsecond), v[len(v)*9/10].Round(time.Microsecond), len(v))
		}
		t.Log(b.String())
	}
}

// TestWriteThroughput64 prints the commits/s of 64 concurrent writers
// spread over the three nodes of an in-process cluster (COHORT_LONG=1; it
// asserts nothing about speed).
func TestWriteThroughput64(t *testing.T) {
	if os.Getenv("COHORT_LONG") == "" {
		t.Skip("COHORT_LONG=1 runs the 64-writer throughput")
	}
	cs := startTestCluster(t, 3, nil)
	payload := make([]byte, 1024)
	var wg sync.WaitGroup
	var n, fails sync.Map
	start := time.Now()
	stop := start.Add(5 * time.Second)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[w%len(cs)]
			count, failed := 0, 0
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := c.Apply(ctx, "mem.put", payload); err != nil {
					failed++
				} else {
					count++
				}
				cancel()
			}
			n.Store(w, count)
			fails.Store(w, failed)
		}()
	}
	wg.Wait()
	total, failed := 0, 0
	n.Range(func(_, v any) bool { total += v.(int); return true })
	fails.Range(func(_, v any) bool { failed += v.(int); return true })
	t.Logf("64 writers: %.0f commits/s (%d failed), pipeline depth %d", float64(total)/time.Since(start).Seconds(), failed, maxRPCsInFlight)
}
