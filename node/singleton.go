package node

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cohortserver/cohort/appproc"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/metrics"
)

// singletons runs the --singleton processes on the leader (docs/jobs.md,
// "Jobs and singletons for any app"). Each runs once leadership is
// confirmed (raft.Cluster.OnLeader, after Barrier) with its fencing token
// (the leader's term, which only grows) in COHORT_FENCE, is restarted with
// backoff while this node leads, and is stopped — SIGTERM, then SIGKILL
// after --singleton-stop-grace — the moment leadership is lost.
type singletons struct {
	mu      sync.Mutex
	running map[string]*singletonRun
}

type singletonRun struct {
	sup     *appproc.Supervisor
	fence   uint64
	started time.Time
}

// SingletonStatus is one singleton as this node sees it.
type SingletonStatus struct {
	Name    string          `json:"name"`
	Here    bool            `json:"running_here"`
	Fence   uint64          `json:"fence,omitempty"`
	Since   *time.Time      `json:"since,omitempty"`
	Process *appproc.Status `json:"process,omitempty"`
}

func (n *Node) setupSingletons() error {
	specs := n.cfg.App.Singletons
	if len(specs) == 0 {
		return nil
	}
	n.singles = &singletons{running: map[string]*singletonRun{}}
	n.cluster.OnLeader(func(ctx context.Context, term uint64) {
		var wg sync.WaitGroup
		for _, s := range specs {
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

// runSingleton runs one singleton until ctx (this node's leadership) ends.
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
	log.Info("singleton started on the leader", "fence", term)
	n.singles.mu.Lock()
	n.singles.running[s.Name] = &singletonRun{sup: sup, fence: term, started: time.Now()}
	n.singles.mu.Unlock()
	<-ctx.Done()
	_ = sup.Close()
	n.singles.mu.Lock()
	delete(n.singles.running, s.Name)
	n.singles.mu.Unlock()
	log.Info("singleton stopped: leadership lost", "fence", term)
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
		st := SingletonStatus{Name: s.Name}
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
		{Name: "restarts_total", Help: "Restarts of the singleton since this node took it.", Labels: []string{"name"}, Counter: true},
	}, func(emit metrics.Emit) {
		for _, s := range n.Singletons() {
			emit("running", metrics.Bool(s.Here && s.Process != nil && s.Process.PID != 0), s.Name)
			emit("fence", float64(s.Fence), s.Name)
			if s.Process != nil {
				emit("restarts_total", float64(s.Process.Restarts), s.Name)
			}
		}
	})
}
