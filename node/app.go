package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"time"

	"github.com/cohortserver/cohort/db"
	"github.com/cohortserver/cohort/demo"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/jobs"
)

// setupApp wires the business database (pool, replicated settings,
// migrations, the ready check, GET /_cohort/api/db) and the demo
// application unless --no-demo (or, with --app-upstream, unless
// --app-demo).
func (n *Node) setupApp() error {
	cfg := db.Config{
		NodeID:          n.cfg.NodeID,
		DSN:             n.cfg.DBDSN,
		MaxOpen:         n.cfg.DB.MaxOpen,
		MaxIdle:         n.cfg.DB.MaxIdle,
		ConnMaxLifetime: n.cfg.DB.ConnMaxLifetime,
		ConnMaxIdleTime: n.cfg.DB.ConnMaxIdleTime,
		DialTimeout:     n.cfg.DB.DialTimeout,
		ReadTimeout:     n.cfg.DB.ReadTimeout,
		WriteTimeout:    n.cfg.DB.WriteTimeout,
		Logger:          n.log,
	}
	if n.cfg.Dev && n.cfg.DBDSN == "" {
		cfg.SQLitePath = filepath.Join(n.cfg.DataDir, "business.db")
	}
	d, err := db.New(cfg, n.cluster)
	if err != nil {
		return fmt.Errorf("business database: %w", err)
	}
	n.db = d
	n.AddReadyCheck(d.Ready)
	n.OnStart(d.Start, d.Close)
	n.HandleAdmin("GET /_cohort/api/db", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, d.Status(r.Context()))
	})
	n.HandleAdmin("PUT /_cohort/api/db", n.handleSetDSN)
	if !n.cfg.NoDemo && (n.cfg.App.Upstream == "" || n.cfg.App.Demo) {
		if err := n.setupDemo(); err != nil {
			return fmt.Errorf("demo application: %w", err)
		}
	}
	return nil
}

// handleSetDSN sets the cluster-wide DSN: PUT /_cohort/api/db {"dsn": "..."}.
func (n *Node) handleSetDSN(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DSN string `json:"dsn"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := n.db.SetDSN(ctx, req.DSN); err != nil {
		if errors.Is(err, db.ErrBadDSN) {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeClusterErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, n.db.Status(r.Context()))
}

// DB returns the business database pool. It is never nil; while no
// database is configured its queries fail with db.ErrNotConfigured.
func (n *Node) DB() *sql.DB { return n.db.SQL() }

// Database returns the business database: the pool, its health, the
// dialect and the migrations.
func (n *Node) Database() *db.Database { return n.db }

// AddMigrations registers an application's ordered SQL migrations (the
// *.sql files at the root of fsys, in name order) under set. The leader
// runs them once for the cluster. Call it before Start.
func (n *Node) AddMigrations(set string, fsys fs.FS) error { return n.db.AddMigrations(set, fsys) }

// setupDemo mounts the demo application (package demo): its page at /,
// its API under /demo/api/ (the session counter and login among it), its
// migrations and its demo-tick job.
func (n *Node) setupDemo() error {
	if err := n.db.AddMigrations("demo", demo.Migrations()); err != nil {
		return err
	}
	b := &demo.Backend{
		NodeID:   n.cfg.NodeID,
		DB:       n.db,
		Members:  n.demoMembers,
		IsLeader: n.cluster.IsLeader,
		Logger:   n.log,
	}
	// setupSessions, setupFiles and setupJobs ran before setupApp.
	b.Files = demoFiles{n.files}
	b.Session = n.sessions
	app := &demo.App{NodeID: n.cfg.NodeID, Sessions: n.sessions, Logger: n.log.With("component", "demo")}
	app.Mount(n.HandleApp)
	tick := func(ctx context.Context, run jobs.Run) error {
		return b.Tick(ctx, demo.TickRun{ID: run.Key, Node: run.Node, Token: run.FencingToken()})
	}
	if err := n.jobs.Register(demo.TickJob, demo.TickSchedule, tick,
		jobs.WithDescription("demo: writes a row (run, node, fencing token, time) to the business database"),
		jobs.WithTimeout(10*time.Second)); err != nil {
		return fmt.Errorf("register %s: %w", demo.TickJob, err)
	}
	b.Routes(func(pattern string, h http.Handler) { n.HandleApp(pattern, h) })
	return nil
}

// demoMembers lists the members for the demo page.
func (n *Node) demoMembers(ctx context.Context) []demo.Member {
	st := n.Status(ctx)
	out := make([]demo.Member, 0, len(st.Members))
	for _, m := range st.Members {
		out = append(out, demo.Member{ID: m.ID, HTTPAddress: m.HTTPAddress, State: m.State, Healthy: m.Healthy, Leader: m.Leader})
	}
	return out
}

// demoFiles adapts the shared files to what the demo needs.
type demoFiles struct{ s *files.Store }

func (f demoFiles) Put(ctx context.Context, path string, r io.Reader) (int64, string, error) {
	in, err := f.s.Create(ctx, path, r, nil)
	return in.Size, in.SHA256, err
}

func (f demoFiles) Get(ctx context.Context, path string) (io.ReadCloser, int64, error) {
	fl, err := f.s.Open(ctx, path)
	if err != nil {
		return nil, 0, err
	}
	return fl, fl.Info().Size, nil
}
