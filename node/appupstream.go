package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/cohortserver/cohort/appproc"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/metrics"
	"github.com/cohortserver/cohort/proxy"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/upstream"
)

// setupUpstream wires the upstream mode (docs/apps.md): application
// requests the Go handlers do not claim go to the app beside this node
// (package upstream), which cohort starts and supervises when
// --app-command is set (package appproc). It runs before setupJobs (jobs
// with an http path call the app) and setupFront (the front's LocalUp).
func (n *Node) setupUpstream() error {
	c := n.cfg.App
	if c.Upstream == "" {
		return nil
	}
	network, addr, err := c.UpstreamTarget()
	if err != nil {
		return fmt.Errorf("--app-upstream: %w", err)
	}
	up, err := upstream.New(upstream.Config{
		Network: network, Addr: addr, Display: c.Upstream,
		NodeID:                n.cfg.NodeID,
		CookieName:            n.cfg.SessionCookie,
		SelfRoute:             func() string { return n.members.Route(n.cfg.NodeID) },
		AppSessionCookie:      c.SessionCookie,
		HealthPath:            c.Health,
		CheckConnect:          c.Command != "",
		HealthInterval:        c.HealthInterval,
		HealthTimeout:         c.HealthTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		IsHop:                 func(ctx context.Context) bool { return raft.PeerID(ctx) != "" },
		UnreadyHeader:         proxy.UnreadyHeader,
		Logger:                n.log,
	})
	if err != nil {
		return fmt.Errorf("app upstream: %w", err)
	}
	n.upstream = up
	n.HandleApp("/", up)
	n.AddReadyCheck(up.Ready)
	if c.Command != "" {
		sup, err := appproc.New(appproc.Config{
			Command:   c.Command,
			Dir:       c.Dir,
			Env:       n.appEnvironment(),
			Instance:  appInstance(n.cfg.DataDir),
			StopGrace: c.StopGrace,
			OnExit:    func(err error) { up.Fail("the app exited (" + err.Error() + ")") },
			Logger:    n.log,
		})
		if err != nil {
			return fmt.Errorf("--app-command: %w", err)
		}
		n.appProc = sup
		// Registered before the health loop: its stop runs after the
		// loop's (close hooks run in reverse), once the front drained.
		n.OnStart(func(ctx context.Context) error {
			if err := sup.Start(ctx); err != nil {
				return fmt.Errorf("--app-command: %w", err)
			}
			return nil
		}, sup.Close)
	}
	n.OnStart(func(ctx context.Context) error {
		n.goBackground(func() { up.Run(ctx) })
		return nil
	}, up.Close)
	n.cluster.HandleInternal("POST /_internal/app/restart", http.HandlerFunc(n.handleLocalAppRestart))
	n.HandleAdmin("POST /_cohort/api/app/restart", n.handleAppRestart)
	n.HandleAdmin("GET /_cohort/api/app", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, n.AppStatus())
	})
	return nil
}

// appInstance is the marker of this node's app processes: the absolute
// data dir, so two nodes on one machine never take each other's app for a
// leftover, whatever their working directories.
func appInstance(dataDir string) string {
	if abs, err := filepath.Abs(dataDir); err == nil {
		return abs
	}
	return filepath.Clean(dataDir)
}

// appEnvironment is what a supervised app gets besides cohort's own
// environment: contract v2's PORT and COHORT_* variables, then --app-env
// (which may override them).
func (n *Node) appEnvironment() []string {
	env := []string{"COHORT_NODE_ID=" + n.cfg.NodeID}
	if p := n.cfg.App.Port(); p != "" {
		env = append(env, "PORT="+p)
	}
	if n.cfg.DBDSN != "" {
		env = append(env, "COHORT_DB_DSN="+n.cfg.DBDSN)
	}
	if n.cfg.Files.Mount != "" {
		// The mount is in place before the node is ready, so before the
		// app gets its first request; an app that writes there while it
		// starts may write under the mount point before it is mounted.
		env = append(env, "COHORT_FILES_DIR="+n.cfg.Files.Mount)
	}
	if a := dialable(n.cfg.KV.RedisAddr); a != "" {
		env = append(env, "COHORT_REDIS_ADDR="+a)
	}
	if a := dialable(n.cfg.KV.MemcachedAddr); a != "" {
		env = append(env, "COHORT_MEMCACHED_ADDR="+a)
	}
	return append(env, n.cfg.App.Env...)
}

// dialable turns a listen address into one the app can dial: a listener on
// every address (":6380", "0.0.0.0:6380", "[::]:6380") is reached on
// loopback.
func dialable(addr string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// appUp reports whether the local app can serve (true without upstream).
func (n *Node) appUp() bool { return n.upstream == nil || n.upstream.Healthy() }

// AppStatus is the state of the app beside this node, as /_cohort/status
// and GET /_cohort/api/app show it.
type AppStatus struct {
	Upstream   string          `json:"upstream"`
	Healthy    bool            `json:"healthy"`
	Reason     string          `json:"reason,omitempty"`
	Checks     int64           `json:"health_checks"`
	Failed     int64           `json:"health_checks_failed"`
	Errors     int64           `json:"proxy_errors"`
	Supervised bool            `json:"supervised"`
	Process    *appproc.Status `json:"process,omitempty"`
	// Events is the delivery of cluster events (--app-events-path).
	Events *AppEventsStatus `json:"events,omitempty"`
}

// AppStatus returns the state of the app beside this node; nil without
// --app-upstream.
func (n *Node) AppStatus() *AppStatus {
	if n.upstream == nil {
		return nil
	}
	run, failed := n.upstream.Checks()
	st := &AppStatus{Upstream: n.cfg.App.Upstream, Healthy: n.upstream.Healthy(), Reason: n.upstream.Reason(),
		Checks: run, Failed: failed, Errors: n.upstream.Errors(), Supervised: n.appProc != nil}
	if n.appProc != nil {
		ps := n.appProc.Status()
		st.Process = &ps
	}
	st.Events = n.appEventsStatus()
	return st
}

// AppRestartStep is one node's part of a rolling restart.
type AppRestartStep struct {
	ID      string  `json:"id"`
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// AppRestartResult is the answer of POST /_cohort/api/app/restart.
type AppRestartResult struct {
	Nodes []AppRestartStep `json:"nodes"`
	Error string           `json:"error,omitempty"`
}

// handleAppRestart runs a rolling restart of the app on every member, one
// at a time in id order, through each node's cluster port. It stops at
// the first node whose app does not come back healthy; the nodes after it
// keep their running app.
func (n *Node) handleAppRestart(w http.ResponseWriter, r *http.Request) {
	var req appRestartRequest
	if r.ContentLength != 0 && !decodeJSON(w, r, &req) {
		return
	}
	ids := make([]string, 0, 3)
	for _, m := range n.members.All() {
		if m.Address != "" {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	var res AppRestartResult
	for i, id := range ids {
		m, ok := n.members.Get(id)
		if !ok || m.State == membership.StateDisabled || !n.members.Healthy(id) {
			res.Nodes = append(res.Nodes, AppRestartStep{ID: id, Error: "skipped: node disabled or unreachable"})
			n.log.Warn("rolling app restart skips a node", "node", id)
			continue
		}
		start := time.Now()
		n.log.Info("rolling app restart: restarting", "node", id, "step", i+1, "of", len(ids))
		err := n.restartAppOn(r.Context(), m.Address, req)
		step := AppRestartStep{ID: id, OK: err == nil, Seconds: time.Since(start).Seconds()}
		if err != nil {
			step.Error = err.Error()
			res.Nodes = append(res.Nodes, step)
			rest := ids[i+1:]
			res.Error = fmt.Sprintf("stopped at node %s: %v; the other nodes keep serving (not restarted: %v)", id, err, rest)
			n.log.Error("rolling app restart stopped", "node", id, "err", err, "not_restarted", rest)
			WriteJSON(w, http.StatusBadGateway, res)
			return
		}
		res.Nodes = append(res.Nodes, step)
		n.log.Info("rolling app restart: node back", "node", id, "seconds", step.Seconds)
	}
	WriteJSON(w, http.StatusOK, res)
}

// appRestartRequest is the optional body of a rolling restart.
type appRestartRequest struct {
	// Command, if set, replaces --app-command from this restart on (until
	// the node's next start, which reads its flags again).
	Command string `json:"command,omitempty"`
}

// restartAppOn asks the node at a cluster address to restart its app.
func (n *Node) restartAppOn(ctx context.Context, addr string, body appRestartRequest) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/_internal/app/restart", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := n.cluster.Client().Do(req)
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	defer res.Body.Close()
	b, _ = io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("HTTP %d", res.StatusCode)
	}
	return nil
}

// handleLocalAppRestart restarts this node's app (cluster port only).
func (n *Node) handleLocalAppRestart(w http.ResponseWriter, r *http.Request) {
	var req appRestartRequest
	if r.ContentLength != 0 && !decodeJSON(w, r, &req) {
		return
	}
	if err := n.RestartApp(r.Context(), req.Command); err != nil {
		WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"id": n.cfg.NodeID})
}

// RestartApp restarts the app beside this node without failing a request:
// the node is disabled (its sessions fail over, peers stop sending it
// requests) and held unready (what still arrives is sent on unserved),
// in-flight requests finish (at most --drain-timeout), the app is stopped
// (SIGTERM, SIGKILL after --app-stop-grace) and started again, and once it
// passes its health check (at most --app-start-timeout) the node takes
// its previous state again. If the app does not come back the node stays
// disabled and RestartApp says why. A non-empty command replaces
// --app-command from this start on.
func (n *Node) RestartApp(ctx context.Context, command string) error {
	if n.appProc == nil {
		return errors.New("this node does not start its app (no --app-command)")
	}
	if !n.appRestarting.CompareAndSwap(false, true) {
		return errors.New("a restart of this node's app is already running")
	}
	defer n.appRestarting.Store(false)
	self := n.cfg.NodeID
	prev := membership.StateActive
	if m, ok := n.members.Get(self); ok && m.State != "" {
		prev = m.State
	}
	if prev != membership.StateDisabled {
		if err := n.setStateRetrying(ctx, membership.StateDisabled); err != nil {
			return fmt.Errorf("disable %s before restarting its app: %w", self, err)
		}
	}
	n.upstream.Hold("restarting the app")
	// Whatever happens next, the health check decides again; a node whose
	// app failed to come back stays disabled for the operator to enable.
	defer n.upstream.Release()
	n.waitServing(ctx, n.cfg.Front.DrainTimeout)
	n.log.Info("restarting the app", "in_flight", n.front.Serving())
	if command != "" {
		n.appProc.SetCommand(command)
	}
	if err := n.appProc.Restart(ctx); err != nil {
		return fmt.Errorf("restart the app of %s: %w; the node stays disabled", self, err)
	}
	hctx, cancel := context.WithTimeout(ctx, n.cfg.App.StartTimeout)
	err := n.upstream.WaitHealthy(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("the app of %s did not come back healthy within --app-start-timeout %s (%w); the node stays disabled", self, n.cfg.App.StartTimeout, err)
	}
	n.upstream.Release()
	if prev != membership.StateDisabled {
		if err := n.setStateRetrying(ctx, prev); err != nil {
			return fmt.Errorf("set %s %s again after restarting its app: %w", self, prev, err)
		}
	}
	n.log.Info("app restarted; node serving again", "state", prev)
	return nil
}

// setStateRetrying sets this node's state, retrying for up to 20 s: an
// election under way, or an outcome lost with a leader change, passes
// (setting a state is idempotent).
func (n *Node) setStateRetrying(ctx context.Context, state string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	backoff := 50 * time.Millisecond
	for {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		err := n.members.SetState(sctx, n.cfg.NodeID, state)
		scancel()
		if err == nil || errors.Is(err, membership.ErrUnknownNode) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		}
	}
}

// waitServing waits until no request runs the application here, at most d.
func (n *Node) waitServing(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if !n.front.WaitIdle(ctx) {
		n.log.Warn("app restart: requests still in flight after --drain-timeout", "serving", n.front.Serving())
	}
}

// appMetrics exposes the app's health and process figures
// (cohort_app_*), read at scrape time.
func (n *Node) appMetrics() *metrics.Func {
	return metrics.NewFunc("app", []metrics.Figure{
		{Name: "healthy", Help: "1 while the app beside this node passes its health check and is not held down."},
		{Name: "health_checks_total", Help: "Health checks of the app run.", Counter: true},
		{Name: "health_checks_failed_total", Help: "Health checks of the app failed.", Counter: true},
		{Name: "proxy_errors_total", Help: "Requests the app did not answer (502/503 sent).", Counter: true},
		{Name: "process_up", Help: "1 while the supervised app process runs."},
		{Name: "process_restarts_total", Help: "Starts of the supervised app after the first.", Counter: true},
		{Name: "process_exits_total", Help: "Exits of the supervised app cohort did not ask for.", Counter: true},
		{Name: "process_crash_loop", Help: "1 when the supervised app exited three or more times within a minute."},
		{Name: "events_delivered_total", Help: "Cluster events delivered to --app-events-path.", Counter: true},
		{Name: "events_failed_total", Help: "Cluster events given up after retrying.", Counter: true},
		{Name: "events_pending", Help: "Cluster events waiting for the app."},
	}, func(emit metrics.Emit) {
		st := n.AppStatus()
		emit("healthy", metrics.Bool(st.Healthy))
		emit("health_checks_total", float64(st.Checks))
		emit("health_checks_failed_total", float64(st.Failed))
		emit("proxy_errors_total", float64(st.Errors))
		if p := st.Process; p != nil {
			emit("process_up", metrics.Bool(p.PID != 0))
			emit("process_restarts_total", float64(p.Restarts))
			emit("process_exits_total", float64(p.Exits))
			emit("process_crash_loop", metrics.Bool(p.CrashLoop))
		}
		if e := st.Events; e != nil {
			emit("events_delivered_total", float64(e.Delivered))
			emit("events_failed_total", float64(e.Failed+e.Dropped))
			emit("events_pending", float64(e.Pending))
		}
	})
}
