package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // the dev-mode business database, pure Go

	"github.com/cohortserver/cohort/raft"
)

// Dialects of the business database.
const (
	DialectMySQL  = "mysql"  // MySQL or MariaDB through go-sql-driver/mysql
	DialectSQLite = "sqlite" // embedded SQLite (dev mode)
)

// Errors of the business database.
var (
	// ErrNotConfigured means no DSN was given and none is replicated.
	ErrNotConfigured = errors.New("no business database is configured (start a node with --db-dsn)")
	// ErrUnavailable wraps every error of a database that does not answer.
	ErrUnavailable = errors.New("business database unreachable")
	// ErrBadDSN means --db-dsn does not parse or lacks a part.
	ErrBadDSN = errors.New("invalid DSN")
	// ErrBadMigration means a migration set cannot be registered.
	ErrBadMigration = errors.New("invalid migration")
	// ErrLocked means another session holds the migration lock.
	ErrLocked = errors.New("migration lock busy")
	// ErrStarted means a registration came after Start.
	ErrStarted = errors.New("the business database is already started")
)

// Log is what the business database needs from the replicated log;
// *raft.Cluster implements it (every package names this interface Log).
type Log interface {
	Register(name string, sm raft.StateMachine, types ...string) error
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	OnLeader(fn func(ctx context.Context, term uint64))
}

var _ Log = (*raft.Cluster)(nil)

// Config configures the business database of one node.
type Config struct {
	// NodeID names this node in schema_migrations and the logs.
	NodeID string
	// DSN is this node's MySQL DSN (go-sql-driver format). Empty: use the
	// DSN replicated by the cluster, or SQLitePath.
	DSN string
	// SQLitePath, when DSN is empty, opens an embedded SQLite file there
	// instead (dev mode); the replicated DSN is then ignored.
	SQLitePath string
	// Pool limits; zero means database/sql's default (no limit, 2 idle).
	MaxOpen, MaxIdle                 int
	ConnMaxLifetime, ConnMaxIdleTime time.Duration
	// Timeouts used when the DSN does not set its own.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// HealthTTL is how long one ping result is reused by Check (default 1 s).
	HealthTTL time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Database is the business database of one node: the pool, its health and
// the migrations. Build it with New, then Start.
type Database struct {
	cfg     Config
	log     *slog.Logger
	nodeID  string
	dialect string
	cluster Log
	sm      *fsm
	sql     *sql.DB

	migrations []Migration
	started    atomic.Bool

	myMu   sync.Mutex
	myDSN  string
	myConn driver.Connector

	healthMu  sync.Mutex
	healthAt  time.Time // when healthErr was recorded
	healthErr error
	pingSince time.Time // when the ping in flight started; zero if none
	probing   bool      // the background prober runs

	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New builds the business database and registers its "db" state machine
// with cluster. It does no I/O: no connection is opened before first use.
func New(cfg Config, cluster Log) (*Database, error) {
	d := &Database{cfg: cfg, nodeID: cfg.NodeID, cluster: cluster, sm: &fsm{}}
	d.log = cfg.Logger
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "db")
	if d.cfg.HealthTTL <= 0 {
		d.cfg.HealthTTL = time.Second
	}
	switch {
	case cfg.DSN != "":
		if err := CheckDSN(cfg.DSN); err != nil {
			return nil, err
		}
		d.dialect = DialectMySQL
		d.sql = sql.OpenDB(&connector{d: d})
	case cfg.SQLitePath != "":
		d.dialect = DialectSQLite
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Set("_txlock", "immediate")
		var err error
		if d.sql, err = sql.Open("sqlite", "file:"+cfg.SQLitePath+"?"+q.Encode()); err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", cfg.SQLitePath, err)
		}
	default:
		// A replicated DSN may arrive later; until then Check says so.
		d.dialect = DialectMySQL
		d.sql = sql.OpenDB(&connector{d: d})
	}
	d.sql.SetMaxOpenConns(cfg.MaxOpen)
	d.sql.SetMaxIdleConns(cfg.MaxIdle)
	d.sql.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	d.sql.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)
	if d.dialect == DialectSQLite && (cfg.MaxOpen == 0 || cfg.MaxOpen > 8) {
		d.sql.SetMaxOpenConns(8) // one writer at a time anyway
	}
	d.sm.onDSN = d.replicatedDSNChanged
	if cluster != nil {
		if err := cluster.Register("db", d.sm, cmdSettings, cmdMigrated, cmdFailed); err != nil {
			return nil, fmt.Errorf("register db state machine: %w", err)
		}
		cluster.OnLeader(d.leaderMigrations)
	}
	return d, nil
}

// SQL returns the connection pool. It is never nil; while no database is
// configured every query fails with ErrNotConfigured.
func (d *Database) SQL() *sql.DB { return d.sql }

// Dialect is DialectMySQL or DialectSQLite.
func (d *Database) Dialect() string { return d.dialect }

// Configured reports whether this node has a database to talk to: its own
// DSN, the replicated one, or SQLite.
func (d *Database) Configured() bool { return d.dsn() != "" || d.dialect == DialectSQLite }

// dsn is the MySQL DSN in use: this node's own, else the replicated one.
func (d *Database) dsn() string {
	if d.cfg.DSN != "" {
		return d.cfg.DSN
	}
	if d.dialect == DialectSQLite {
		return ""
	}
	return d.sm.dsn()
}

// Source says where the DSN in use comes from: "flag", "replicated",
// "sqlite" or "none".
func (d *Database) Source() string {
	switch {
	case d.cfg.DSN != "":
		return "flag"
	case d.dialect == DialectSQLite:
		return "sqlite"
	case d.sm.dsn() != "":
		return "replicated"
	}
	return "none"
}

// Describe names the database in use for people, password redacted:
// "SQLite data/dev/business.db", "MySQL u:***@tcp(h:3306)/app (--db-dsn)",
// or "none".
func (d *Database) Describe() string {
	switch d.Source() {
	case "sqlite":
		return "SQLite " + d.cfg.SQLitePath
	case "flag":
		return "MySQL " + Redact(d.dsn()) + " (--db-dsn)"
	case "replicated":
		return "MySQL " + Redact(d.dsn()) + " (replicated from the cluster)"
	}
	return "none (start with --db-dsn to use one)"
}

// AddMigrations registers the *.sql files at the root of fsys, in file
// name order, as the migrations of set (e.g. "demo"). Sets run in the order
// they were added. Call it before Start.
func (d *Database) AddMigrations(set string, fsys fs.FS) error {
	if d.started.Load() {
		return fmt.Errorf("add migrations %s: %w", set, ErrStarted)
	}
	ms, err := LoadMigrations(set, fsys)
	if err != nil {
		return err
	}
	for _, m := range ms {
		for _, have := range d.migrations {
			if have.Name == m.Name {
				return fmt.Errorf("migration %s registered twice: %w", m.Name, ErrBadMigration)
			}
		}
	}
	d.migrations = append(d.migrations, ms...)
	return nil
}

// Start begins background work: a node started with its own DSN publishes
// it to the cluster (so nodes that join without --db-dsn use it).
func (d *Database) Start(ctx context.Context) error {
	d.started.Store(true)
	ctx, d.cancel = context.WithCancel(ctx)
	d.healthMu.Lock()
	d.probing = true
	d.healthMu.Unlock()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.probeLoop(ctx)
	}()
	if d.cfg.DSN != "" && d.cluster != nil {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			d.publishDSN(ctx)
		}()
	}
	return nil
}

// publishDSN replicates this node's DSN when the cluster holds another one,
// retrying until it is recorded or ctx ends.
func (d *Database) publishDSN(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for d.sm.dsn() != d.cfg.DSN {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.apply(actx, cmdSettings, settingsCmd{DSN: d.cfg.DSN})
		cancel()
		if err == nil {
			d.log.Info("business database DSN replicated to the cluster", "dsn", Redact(d.cfg.DSN))
			return
		}
		d.log.Debug("replicating the DSN not yet possible", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// SetDSN records dsn as the cluster's business database, from any node:
// every node without its own --db-dsn uses it from then on. The DSN is
// checked first; errors never contain it.
func (d *Database) SetDSN(ctx context.Context, dsn string) error {
	if err := CheckDSN(dsn); err != nil {
		return err
	}
	if d.cluster == nil {
		return fmt.Errorf("set DSN: %w", ErrNotConfigured)
	}
	if err := d.apply(ctx, cmdSettings, settingsCmd{DSN: dsn}); err != nil {
		return fmt.Errorf("replicate the DSN: %w", err)
	}
	d.log.Info("business database DSN set for the cluster", "dsn", Redact(dsn))
	return nil
}

// Close stops background work and closes the pool. It is idempotent.
func (d *Database) Close() error {
	if d.cancel != nil {
		d.cancel()
	}
	d.bg.Wait()
	if err := d.sql.Close(); err != nil {
		return fmt.Errorf("close business database: %w", err)
	}
	return nil
}

func (d *Database) apply(ctx context.Context, typ string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	_, err = d.cluster.Apply(ctx, typ, b)
	return err
}

func (d *Database) replicatedDSNChanged(dsn string) {
	if d.cfg.DSN == "" && d.dialect == DialectMySQL {
		d.log.Info("using the cluster's business database DSN", "dsn", Redact(dsn))
		d.healthMu.Lock()
		d.healthAt = time.Time{}
		d.healthMu.Unlock()
	}
}

// scrubErr renders err without the DSN's password.
func (d *Database) scrubErr(err error) string {
	if err == nil {
		return ""
	}
	return scrub(err.Error(), d.dsn())
}

// pingTimeout bounds one health ping; hungAfter is how long a ping may go
// unanswered before Check reports the database unreachable without
// waiting for the ping to time out.
const (
	pingTimeout = 2 * time.Second
	hungAfter   = 1500 * time.Millisecond
)

// Check reports whether the database answers. After Start a background
// prober pings it every HealthTTL and Check only reads the last result (so
// ready probes and request guards never wait on the database); a ping
// unanswered for 1.5 s already counts as unreachable. Before Start, Check
// pings inline, reusing a result younger than HealthTTL. The error wraps
// ErrNotConfigured or ErrUnavailable and never holds the password.
func (d *Database) Check(ctx context.Context) error {
	if !d.Configured() {
		return ErrNotConfigured
	}
	d.healthMu.Lock()
	fresh := !d.healthAt.IsZero() && (d.probing || time.Since(d.healthAt) < d.cfg.HealthTTL)
	err, since := d.healthErr, d.pingSince
	d.healthMu.Unlock()
	if !since.IsZero() && time.Since(since) > hungAfter {
		return fmt.Errorf("%w: no answer to a ping for %s", ErrUnavailable, time.Since(since).Round(100*time.Millisecond))
	}
	if fresh {
		return err
	}
	return d.ping(ctx)
}

// ping pings now and records the result.
func (d *Database) ping(ctx context.Context) error {
	d.healthMu.Lock()
	if d.pingSince.IsZero() {
		d.pingSince = time.Now()
	}
	d.healthMu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	err := d.sql.PingContext(pctx)
	cancel()
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	d.pingSince = time.Time{}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: %s", ErrUnavailable, d.scrubErr(ctx.Err())) // the caller gave up: do not record
	}
	prev := d.healthErr
	d.healthAt = time.Now()
	d.healthErr = nil
	if err != nil {
		d.healthErr = fmt.Errorf("%w: %s", ErrUnavailable, d.scrubErr(err))
	}
	switch {
	case err != nil && prev == nil:
		d.log.Warn("business database unreachable", "err", d.scrubErr(err))
	case err == nil && prev != nil:
		d.log.Info("business database reachable again")
	}
	return d.healthErr
}

// probeLoop keeps the health result fresh while the node runs.
func (d *Database) probeLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.HealthTTL)
	defer t.Stop()
	for {
		if d.Configured() {
			_ = d.ping(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Recheck pings now, ignoring the recorded result: call it when a query
// failed, to tell "the database is down" from "the query was refused".
func (d *Database) Recheck(ctx context.Context) error {
	if !d.Configured() {
		return ErrNotConfigured
	}
	return d.ping(ctx)
}

// Ready is the /_cohort/ready condition: nil when no database is
// configured, or when it answers and every registered migration is
// recorded as applied in Raft.
func (d *Database) Ready(ctx context.Context) error {
	if !d.Configured() {
		return nil
	}
	if err := d.Check(ctx); err != nil {
		return err
	}
	st := d.sm.view()
	if f := st.Failure; f != nil {
		return fmt.Errorf("business database migration %s failed at statement %q: %s (rollout stopped; fix the migration and restart the leader)",
			f.Migration, shorten(f.Statement, 200), f.Error)
	}
	done := 0
	next := ""
	for _, m := range d.migrations {
		if _, ok := st.Applied[m.Name]; ok {
			done++
		} else if next == "" {
			next = m.Name
		}
	}
	if done < len(d.migrations) {
		return fmt.Errorf("waiting for the leader to apply business database migrations: %d of %d applied (next %s)", done, len(d.migrations), next)
	}
	return nil
}

// Status is a view of the business database for the admin API.
type Status struct {
	Configured bool               `json:"configured"`
	Dialect    string             `json:"dialect"`
	Source     string             `json:"source"`        // flag, replicated, sqlite or none
	DSN        string             `json:"dsn,omitempty"` // password redacted
	Healthy    bool               `json:"healthy"`
	Error      string             `json:"error,omitempty"`
	Registered []string           `json:"registered"`
	Applied    map[string]Applied `json:"applied"`
	Failure    *Failure           `json:"failure,omitempty"`
	Pool       sql.DBStats        `json:"pool"`
}

// Status reports the configuration, health, migrations and pool figures.
func (d *Database) Status(ctx context.Context) Status {
	st := d.sm.view()
	s := Status{Configured: d.Configured(), Dialect: d.dialect, Source: d.Source(), DSN: Redact(d.dsn()),
		Applied: st.Applied, Failure: st.Failure, Pool: d.sql.Stats(), Registered: []string{}}
	if s.Applied == nil {
		s.Applied = map[string]Applied{}
	}
	for _, m := range d.migrations {
		s.Registered = append(s.Registered, m.Name)
	}
	if err := d.Ready(ctx); err != nil {
		s.Error = err.Error()
	}
	s.Healthy = s.Configured && d.Check(ctx) == nil
	return s
}

// Require wraps a handler that needs the database: while it is down or not
// configured the request gets 503 with a JSON {"error": ...} that says so.
func (d *Database) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := d.Check(r.Context()); err != nil {
			WriteUnavailable(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteUnavailable answers 503 with the API's error shape for a database
// error (as returned by Check).
func WriteUnavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "2")
	msg := err.Error()
	if errors.Is(err, ErrUnavailable) {
		msg += "; this request needs it, try again shortly"
	}
	httpapi.WriteError(w, http.StatusServiceUnavailable, msg)
}

// connector opens MySQL connections with the DSN in use at connect time,
// so a DSN replicated after start is picked up without a new pool.
type connector struct{ d *Database }

var _ driver.Connector = (*connector)(nil)

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	dsn := c.d.dsn()
	if dsn == "" {
		return nil, ErrNotConfigured
	}
	c.d.myMu.Lock()
	if c.d.myDSN != dsn || c.d.myConn == nil {
		mc, err := mysqlConfig(dsn, c.d.cfg.DialTimeout, c.d.cfg.ReadTimeout, c.d.cfg.WriteTimeout)
		if err != nil {
			c.d.myMu.Unlock()
			return nil, err
		}
		mc.Logger = driverLogger{c.d.log}
		conn, err := mysql.NewConnector(mc)
		if err != nil {
			c.d.myMu.Unlock()
			return nil, fmt.Errorf("mysql connector: %s: %w", scrub(err.Error(), dsn), ErrBadDSN)
		}
		c.d.myDSN, c.d.myConn = dsn, conn
	}
	conn := c.d.myConn
	c.d.myMu.Unlock()
	return conn.Connect(ctx)
}

func (c *connector) Driver() driver.Driver { return &mysql.MySQLDriver{} }

// driverLogger sends the MySQL driver's own messages (such as "closing bad
// idle connection") to the node's log instead of stderr.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Debug("mysql driver", "msg", fmt.Sprint(v...)) }
