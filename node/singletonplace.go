package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/raft"
)

// cmdSingletonAssign places a singleton of a --singleton-nodes preference
// list on one node (node/singletonplace.go).
const cmdSingletonAssign = "singleton.assign"

// Placement is where a singleton with a preference list runs, as committed
// through Raft. Token is the log index of the assignment: every
// reassignment has a greater one, and it is the COHORT_FENCE of the
// process on Node.
type Placement struct {
	Node  string    `json:"node"`
	Token uint64    `json:"token"`
	Since time.Time `json:"since"` // leader's clock when committed
}

type assignCmd struct {
	Name string `json:"name"`
	Node string `json:"node"`
	Prev uint64 `json:"prev"` // token the leader saw; refused if no longer current
}

// placements is the replicated table name -> Placement. It is its own
// state machine so that its snapshot section stays small and separate.
type placements struct {
	mu sync.RWMutex
	m  map[string]Placement
}

var _ raft.StateMachine = (*placements)(nil)

// Apply implements raft.StateMachine. An assignment whose Prev is not the
// current token lost a race with another and is refused.
func (p *placements) Apply(e raft.Entry) ([]byte, error) {
	var c assignCmd
	if err := json.Unmarshal(e.Payload, &c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", e.Type, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.m[c.Name]; cur.Token != c.Prev {
		return nil, &raft.ApplyError{Code: "stale", Message: fmt.Sprintf("singleton %s: token %d is no longer current (%d)", c.Name, c.Prev, cur.Token)}
	}
	p.m[c.Name] = Placement{Node: c.Node, Token: e.Index, Since: e.Time}
	return nil, nil
}

func (p *placements) get(name string) Placement {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.m[name]
}

// Snapshot implements raft.StateMachine.
func (p *placements) Snapshot() (raft.Snapshot, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	b, err := json.Marshal(p.m)
	if err != nil {
		return nil, fmt.Errorf("encode singleton placements: %w", err)
	}
	return bytesSnap(b), nil
}

// Restore implements raft.StateMachine.
func (p *placements) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read singleton placements: %w", err)
	}
	m := map[string]Placement{}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("decode singleton placements: %w", err)
		}
	}
	p.mu.Lock()
	p.m = m
	p.mu.Unlock()
	return nil
}

type bytesSnap []byte

func (b bytesSnap) Persist(w io.Writer) error {
	_, err := w.Write(b)
	return err
}

func (bytesSnap) Release() {}

// placeLoop runs on the leader while it leads: it keeps every singleton of
// a preference list assigned to a healthy node of its list. The holder
// keeps it while it is healthy (no move back when a node earlier in the
// list returns: that would stop a working instance for nothing). A
// holder that stopped answering is replaced only once the leader has not
// seen it for 2×lease + stop grace — by then it stopped itself (it stops
// after one lease without a leader) — and a new leader counts that time
// from its own start, not knowing when the holder last heard from the
// previous leader.
func (n *Node) placeLoop(ctx context.Context, specs []config.Singleton) {
	wait := 2*n.cfg.App.SingletonLease + n.cfg.App.SingletonStopGrace
	_, election, _ := raft.Timing(n.cfg.RaftTimeoutScale)
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		voters := map[string]bool{}
		if servers, err := n.cluster.Servers(); err == nil {
			for _, s := range servers {
				voters[s.ID] = s.Voter
			}
		}
		now := time.Now()
		// lastSeen is when the leader last heard from id over the cluster
		// port, but not before this leader took over.
		lastSeen := func(id string) time.Time {
			if t := n.cluster.LastHeard(id); t.After(start) {
				return t
			}
			return start
		}
		healthy := func(id string) bool {
			return voters[id] && now.Sub(n.cluster.LastHeard(id)) <= election && n.members.Healthy(id)
		}
		for _, s := range specs {
			cur := n.singles.placed.get(s.Name)
			if cur.Node != "" && healthy(cur.Node) && slices.Contains(s.Nodes, cur.Node) {
				continue
			}
			if cur.Node != "" {
				if now.Sub(lastSeen(cur.Node)) < wait {
					continue // the holder may still run it: wait out its lease
				}
			}
			i := slices.IndexFunc(s.Nodes, healthy)
			if i < 0 || s.Nodes[i] == cur.Node {
				continue
			}
			p, _ := json.Marshal(assignCmd{Name: s.Name, Node: s.Nodes[i], Prev: cur.Token})
			if _, err := n.cluster.Apply(ctx, cmdSingletonAssign, p); err != nil {
				n.log.Warn("singleton not placed", "singleton", s.Name, "node", s.Nodes[i], "err", err)
				continue
			}
			n.log.Info("singleton placed", "singleton", s.Name, "node", s.Nodes[i], "from", cur.Node)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// placementCurrent reports whether p is still the committed placement of
// name after a ReadIndex (everything committed before now is applied here).
func (n *Node) placementCurrent(ctx context.Context, name string, p Placement) bool {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.App.SingletonLease)
	defer cancel()
	if err := n.cluster.ReadIndex(rctx); err != nil {
		return false
	}
	cur := n.singles.placed.get(name)
	return cur.Node == p.Node && cur.Token == p.Token
}

// holdLoop runs on every node for its whole life: it runs each singleton
// of a preference list whose committed placement names this node, once a
// ReadIndex confirmed that placement is current, and while
// it has heard from a leader within the lease and is not cut off from its
// quorum; it stops it when the placement moves or that contact is lost.
func (n *Node) holdLoop(ctx context.Context, specs []config.Singleton) {
	type held struct {
		token  uint64
		cancel context.CancelFunc
		done   chan struct{}
	}
	runs := map[string]*held{}
	stop := func(name, why string) {
		h := runs[name]
		if h == nil {
			return
		}
		h.cancel()
		<-h.done
		delete(runs, name)
		n.log.Info("singleton stopped", "singleton", name, "fence", h.token, "why", why)
	}
	defer func() {
		for name := range runs {
			stop(name, "node stopping")
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ready, why := n.cluster.Ready()
		qc := n.cluster.QuorumContact()
		switch {
		case qc.CutOff:
			ready, why = false, qc.Reason
		case qc.SinceLeader > n.cfg.App.SingletonLease:
			ready, why = false, fmt.Sprintf("no contact with a leader for %s", qc.SinceLeader.Round(time.Millisecond))
		}
		// Stops first, all at once, so that a slow start below (its
		// ReadIndex) never delays one.
		type stopping struct{ name, why string }
		var stops []stopping
		for _, s := range specs {
			p := n.singles.placed.get(s.Name)
			h := runs[s.Name]
			switch {
			case h == nil:
			case p.Node != n.cfg.NodeID:
				stops = append(stops, stopping{s.Name, "placed on " + p.Node})
			case h.token != p.Token:
				stops = append(stops, stopping{s.Name, "placed again"})
			case !ready:
				stops = append(stops, stopping{s.Name, why})
			}
		}
		for _, st := range stops {
			runs[st.name].cancel()
		}
		for _, st := range stops {
			stop(st.name, st.why)
		}
		for _, s := range specs {
			p := n.singles.placed.get(s.Name)
			if !ready || p.Node != n.cfg.NodeID || runs[s.Name] != nil {
				continue
			}
			// A node back from a partition may think itself caught up
			// before it has even received the newer placement: confirm
			// with a linearizable read that this one is still current.
			if !n.placementCurrent(ctx, s.Name, p) {
				continue
			}
			rctx, cancel := context.WithCancel(ctx)
			h := &held{token: p.Token, cancel: cancel, done: make(chan struct{})}
			runs[s.Name] = h
			go func() {
				defer close(h.done)
				n.runSingleton(rctx, s, p.Token)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
