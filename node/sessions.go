package node

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/cohortserver/cohort/sessions"
)

// setupSessions wires the replicated sessions: the state machine, the
// middleware around the application routes and the admin API. (The demo's
// counter and login routes are mounted with the rest of the demo, in
// setupDemo.)
func (n *Node) setupSessions() error {
	sc := n.cfg.Sessions
	n.sessionIgnore = sc.IgnoreRegexp()
	m, err := sessions.New(n.cluster, sessions.Config{
		NodeID:         n.cfg.NodeID,
		CookieName:     n.cfg.SessionCookie,
		Route:          func() string { return n.members.Route(n.cfg.NodeID) },
		IdleTimeout:    sc.IdleTimeout,
		Lifetime:       sc.Lifetime,
		MaxBytes:       sc.MaxBytes,
		MaxValueBytes:  sc.MaxValueBytes,
		MemoryBudget:   sc.MemoryBudget,
		MemorySessions: sc.MemorySessions,
		Dir:            filepath.Join(n.cfg.DataDir, "sessions"),
		Ignore:         n.sessionIgnore,
		SweepInterval:  sc.SweepInterval,
		Lock:           sc.Lock,
		LockWait:       sc.LockWait,
		Reads:          sessionReads{n},
		Now:            n.opts.now,
		Logger:         n.log,
	})
	if err != nil {
		return fmt.Errorf("sessions: %w", err)
	}
	n.sessions = m
	n.OnStart(m.Start, m.Close)
	n.WrapApp(m.Middleware)
	n.HandleAdmin("GET /_cohort/api/sessions", n.handleSessions)
	n.HandleAdmin("DELETE /_cohort/api/sessions", n.handleDestroySessions)
	return nil
}

// Sessions returns the node's replicated sessions.
func (n *Node) Sessions() *sessions.Manager { return n.sessions }

// handleSessions answers the counts of this node's copy of the sessions,
// and with ?principal=NAME that principal's sessions (short ids only).
func (n *Node) handleSessions(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"node": n.cfg.NodeID, "stats": n.sessions.Stats()}
	if p := r.URL.Query().Get("principal"); p != "" {
		list := n.sessions.PrincipalSessions(p)
		if list == nil {
			list = []sessions.Info{}
		}
		out["principal"] = p
		out["sessions"] = list
	}
	WriteJSON(w, http.StatusOK, out)
}

// handleDestroySessions ends every session of ?principal=NAME on every
// node (log a user out everywhere).
func (n *Node) handleDestroySessions(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("principal")
	if p == "" {
		WriteError(w, http.StatusBadRequest, "name the user: DELETE /_cohort/api/sessions?principal=NAME")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	count, err := n.sessions.DestroyPrincipal(ctx, p)
	if err != nil {
		writeClusterErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"principal": p, "destroyed": count})
}
