package node

import (
	"database/sql"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"

	"github.com/cohortserver/cohort/db"
)

// setupApp wires the business database (pool, replicated settings,
// migrations, the ready check, GET /_cohort/api/db) and the demo
// application unless --no-demo.
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
	if !n.cfg.NoDemo {
		if err := n.setupDemo(); err != nil {
			return fmt.Errorf("demo application: %w", err)
		}
	}
	return nil
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

// setupDemo mounts the demo application (see package demo).
func (n *Node) setupDemo() error { return nil }
