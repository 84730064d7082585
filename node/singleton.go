package node

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cohortserver/cohort/appproc"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/metrics"
	"github.com/cohortserver/cohort/raft"
)

// singletons runs the --singleton processes on the leader (docs/jobs.md,
// "Jobs and singletons for any app"). Each runs once leadership is
// confirmed (raft.Cluster.OnLeader, after Barrier) with its fencing token
// (the leader's term, which only grows) in COHORT_FENCE, is restarted with
// backoff while this node leads, and is stopped — SIGTERM, then SIGKILL
// after --singleton-stop-grace — the moment leadership is lost.
//
// A singleton with a --singleton-nodes preference list runs instead on the
// node its committed Placement names (node/singletonplace.go), fenced by
// the placement's log index.
type singletons struct {
	mu      sync.Mutex
	running map[string]*singletonRun
	placed  *placements
}

type singletonRun struct {
	sup     *appproc.Supervisor
	fence   uint64
	started time.Time
}

// SingletonStatus is one singleton as this node sees it.
type SingletonStatus struct {
	Name string `json:"name"`
	// Nodes is its preference list (empty: it runs on the leader).
	Nodes []string `json:"nodes,omitempty"`
	// Placed is the node its committed placement names, and PlacedFence
	// that placement's token (preference lists only).
	Placed      string `json:"placed_on,omitempty"`
	PlacedFence uint64 `json:"placed_fence,omitempty"`
	// RunsOn is where it should run now: its placement, or the leader.
	RunsOn  string          `json:"runs_on,omitempty"`
	Here    bool            `json:"running_here"`
	Fence   uint64          `json:"fence,omitempty"`
	Since   *time.Time      `json:"since,omitempty"`
	Process *appproc.Status `json:"process,omitempty"`
}

func (n *Node) setupSingletons() error {
	n.singles = &singletons{running: map[string]*singletonRun{}, placed: &placements{m: map[string]Placement{}}}
	// Registered on every node: the log may hold placements although this
	// node runs no singleton.
	if err := n.cluster.Register("singletons", n.singles.placed, cmdSingletonAssign); err != nil {
		return fmt.Errorf("register singleton placements: %w", err)
	}
	var onLeader, placed []config.Singleton
	for _, s := range n.cfg.App.Singletons {
		if len(s.Nodes) > 0 {
			placed = append(placed, s)
		} else {
			onLeader = append(onLeader, s)
		}
	}
	if len(n.cfg.App.Singletons) == 0 {
		return nil
	}
	if len(placed) > 0 {
		n.cluster.OnLeader(func(ctx context.Context, _ uint64) { n.placeLoop(ctx, placed) })
		done := make(chan struct{})
		n.OnStart(func(ctx context.Context) error {
			go func() {
				defer close(done)
				n.holdLoop(ctx, placed)
			}()
			return nil
		}, func() error { <-done; return nil })
	}
	grace := raft.StepDown(n.cfg.RaftTimeoutScale)
	n.cluster.OnLeader(func(ctx context.Context, term uint64) {
		// As the scheduler does (StartGrace): give a partitioned old
		// leader time to step down and stop its copy.
		select {
		case <-ctx.Done():
			return
		case <-time.After(grace):
		}
		var wg sync.WaitGroup
		for _, s := range onLeader {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.runSingleton(ctx, s, term)
			}()
		}
		wg.Wait()
	})
	n.HandleAdmin("GET /_cohort/api/singletons", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, n.Singletons())
	})
	return nil
}

// runSingleton runs one singleton with fencing token term until ctx (this
// node's leadership, or its placement here) ends.
func (n *Node) runSingleton(ctx context.Context, s config.Singleton, term uint64) {
	log := n.log.With("singleton", s.Name)
	sup, err := appproc.New(appproc.Config{
		Command: s.Command,
		Dir:     n.cfg.App.Dir,
		Env: append(append([]string(nil), n.appEnvironment()...),
			"COHORT_SINGLETON="+s.Name, "COHORT_NODE="+n.cfg.NodeID, "COHORT_FENCE="+strconv.FormatUint(term, 10)),
		Instance:  filepath.Join(appInstance(n.cfg.DataDir), "singleton", s.Name),
		StopGrace: n.cfg.App.SingletonStopGrace,
		Logger:    log,
	})
	if err != nil {
		log.Error("singleton not started", "err", err)
		return
	}
	if err := sup.Start(ctx); err != nil {
		log.Error("singleton not started", "err", err)
		return
	}
	log.Info("singleton started", "fence", term)
	n.singles.mu.Lock()
	n.singles.running[s.Name] = &singletonRun{sup: sup, fence: term, started: time.Now()}
	n.singles.mu.Unlock()
	<-ctx.Done()
	_ = sup.Close()
	n.singles.mu.Lock()
	delete(n.singles.running, s.Name)
	n.singles.mu.Unlock()
	log.Info("singleton stopped", "fence", term)
}

// Singletons lists the --singleton processes and whether they run here.
func (n *Node) Singletons() []SingletonStatus {
	out := []SingletonStatus{}
	if n.singles == nil {
		return out
	}
	n.singles.mu.Lock()
	defer n.singles.mu.Unlock()
	for _, s := range n.cfg.App.Singletons {
		st := SingletonStatus{Name: s.Name, Nodes: s.Nodes}
		if len(s.Nodes) > 0 {
			p := n.singles.placed.get(s.Name)
			st.Placed, st.PlacedFence, st.RunsOn = p.Node, p.Token, p.Node
		} else {
			st.RunsOn, _ = n.cluster.Leader()
		}
		if r := n.singles.running[s.Name]; r != nil {
			ps := r.sup.Status()
			since := r.started
			st.Here, st.Fence, st.Since, st.Process = true, r.fence, &since, &ps
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b SingletonStatus) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// singletonMetrics exposes cohort_singleton_* by name.
func (n *Node) singletonMetrics() *metrics.Func {
	return metrics.NewFunc("singleton", []metrics.Figure{
		{Name: "running", Help: "1 while the singleton runs on this node.", Labels: []string{"name"}},
		{Name: "fence", Help: "Fencing token of the singleton running here.", Labels: []string{"name"}},
		{Name: "placement_fence", Help: "Token of the committed placement of a singleton with a preference list (0 otherwise).", Labels: []string{"name"}},
		{Name: "restarts_total", Help: "Restarts of the singleton since this node took it.", Labels: []string{"name"}, Counter: true},
	}, func(emit metrics.Emit) {
		for _, s := range n.Singletons() {
			emit("running", metrics.Bool(s.Here && s.Process != nil && s.Process.PID != 0), s.Name)
			emit("fence", float64(s.Fence), s.Name)
			emit("placement_fence", float64(s.PlacedFence), s.Name)
			if s.Process != nil {
				emit("restarts_total", float64(s.Process.Restarts), s.Name)
			}
		}
	})
}
