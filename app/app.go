package app

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"net/http"
	"os"

	"github.com/cohortserver/cohort/broadcast"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/jobs"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/sessions"
)

// Message is one cluster-wide message delivered to Subscribe handlers.
type Message = broadcast.Message

// App is one node of your application's cluster.
type App struct {
	n *node.Node
}

// LoadConfig parses the flags, environment (COHORT_*) and --config file of
// `cohort serve` from args (without the program name) and validates them.
// With "--help" it prints the flags to stderr and returns config.ErrHelp.
func LoadConfig(args []string) (config.Config, error) {
	return config.Load(false, args, os.Stderr)
}

// DevConfig returns the configuration of `cohort dev`: one node on
// 127.0.0.1:8080 (cluster port 7070), data under ./data/dev, an embedded
// SQLite business database, generated secrets. Change fields before New.
func DevConfig() config.Config { return config.Dev() }

// New builds a node from cfg (validated first). It does no I/O; register
// handlers, migrations and jobs, then call Run.
func New(cfg config.Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	return &App{n: n}, nil
}

// Handle mounts h for pattern (net/http ServeMux patterns, e.g.
// "GET /orders/{id}") behind the sessions middleware and the sticky
// front. Call it before Run. With the demo mounted (unless --no-demo) the
// demo owns "/" and /demo/.
func (a *App) Handle(pattern string, h http.Handler) { a.n.HandleApp(pattern, h) }

// HandleFunc is Handle for a function.
func (a *App) HandleFunc(pattern string, fn func(http.ResponseWriter, *http.Request)) {
	a.n.HandleApp(pattern, http.HandlerFunc(fn))
}

// Sessions returns the replicated session manager; use it inside handlers
// (Get, Put, RenewToken, ...).
func (a *App) Sessions() *sessions.Manager { return a.n.Sessions() }

// Files returns the shared file store: a file written on one node is
// readable on every node once the write returns.
func (a *App) Files() *files.Store { return a.n.Files() }

// Jobs returns the job runner: jobs registered before Run run on the
// leader only, with a fencing token.
func (a *App) Jobs() *jobs.Runner { return a.n.Jobs() }

// DB returns the business database pool (MySQL from --db-dsn, or SQLite in
// dev mode). Queries fail while no database is configured.
func (a *App) DB() *sql.DB { return a.n.DB() }

// Migrations registers the *.sql files at the root of fsys, in file name
// order, as the migrations of set. The leader runs the pending ones once
// for the whole cluster; nodes report ready only after they ran. Call it
// before Run.
func (a *App) Migrations(set string, fsys fs.FS) error { return a.n.AddMigrations(set, fsys) }

// RequireDB wraps a handler that needs the business database: while the
// database is down the request gets 503 with a JSON error saying so.
func (a *App) RequireDB(h http.Handler) http.Handler { return a.n.Database().Require(h) }

// Publish sends payload on topic to the subscribers of every node, in the
// same order everywhere, from any node.
func (a *App) Publish(ctx context.Context, topic string, payload []byte) error {
	return a.n.Publish(ctx, topic, payload)
}

// Subscribe calls fn for every message on topic on this node; cancel stops
// the subscription.
func (a *App) Subscribe(topic string, fn func(Message)) (cancel func()) {
	return a.n.Subscribe(topic, fn)
}

// Bounded returns ctx bounded by the cluster wait budget
// (--cluster-wait-budget): the session, files and broadcast calls made
// with it (Sessions().Save, Files().Create, Publish, ...) fail at once
// with an error wrapping raft.ErrNoQuorum while this node is cut off from
// its quorum, and after the budget at the latest, instead of waiting for
// a leader as long as ctx lasts. Handlers need not call it: their request
// context is bounded already. raft.RefusalMessage gives the answer for
// such an error.
func (a *App) Bounded(ctx context.Context) context.Context {
	return a.n.Cluster().Bounded(ctx, "go-api")
}

// CutOff returns an error wrapping raft.ErrNoQuorum while this node knows
// it is cut off from its quorum (no leader heard for an election timeout
// and too few voters reachable), nil otherwise. It is cheap: call it
// before work that needs the cluster to refuse at once.
func (a *App) CutOff() error { return a.n.Cluster().CutOff() }

// ID is this node's id.
func (a *App) ID() string { return a.n.ID() }

// URL is the base URL of this node's public front (after Run started it).
func (a *App) URL() string { return "http://" + a.n.HTTPAddr() }

// Ready reports whether the node can serve (the check of /_cohort/ready)
// and, if not, why.
func (a *App) Ready(ctx context.Context) (bool, string) { return a.n.Ready(ctx) }

// Run starts the node, serves until ctx ends (e.g. on SIGTERM through
// signal.NotifyContext), then shuts down gracefully.
func (a *App) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return a.Close()
}

// Start starts the node and returns once it serves; pair it with Close
// when Run's blocking shape does not fit (tests, embedding).
func (a *App) Start(ctx context.Context) error {
	if err := a.n.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	return nil
}

// Close shuts the node down gracefully. It is idempotent.
func (a *App) Close() error {
	if err := a.n.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
