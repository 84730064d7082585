package demo

import (
	"context"
	"embed"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/db"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the demo's SQL migrations (portable between MySQL and
// SQLite), to register under the set name "demo".
func Migrations() fs.FS {
	sub, _ := fs.Sub(migrationFiles, "migrations") // cannot fail: the dir is embedded
	return sub
}

// FileStore is what the demo needs from cohort's shared files.
type FileStore interface {
	// Put stores r at path and returns its size and SHA-256 (hex) once the
	// content is durable on a quorum and visible on every node.
	Put(ctx context.Context, path string, r io.Reader) (size int64, sha256 string, err error)
	// Get opens path for reading.
	Get(ctx context.Context, path string) (io.ReadCloser, int64, error)
}

// SessionReader reads the visitor's session; *sessions.Manager implements it.
type SessionReader interface {
	GetString(ctx context.Context, key string) string
	GetInt64(ctx context.Context, key string) int64
}

// Member is one cluster member as the demo page shows it.
type Member struct {
	ID          string `json:"id"`
	HTTPAddress string `json:"http_address"`
	State       string `json:"state"`
	Healthy     bool   `json:"healthy"`
	Leader      bool   `json:"leader"`
}

// TickRun is one run of the demo-tick job as the jobs runner hands it.
type TickRun struct {
	ID    string // run id, unique per scheduled occurrence
	Node  string // node executing the run
	Token uint64 // fencing token, strictly increasing across runs and leaders
}

// Backend is what the page, the uploads and the demo-tick job need from the
// node. The session counter and log-in routes live beside it (counter.go,
// login.go).
type Backend struct {
	NodeID string
	// DB is the business database; the tick rows and the upload list live
	// there.
	DB *db.Database
	// Files is the shared file store; nil makes uploads answer 503.
	Files FileStore
	// Members lists the cluster members; nil shows none.
	Members func(ctx context.Context) []Member
	// Session reads the visitor's session (the counter and the user the
	// counter and login routes store) to render the page; nil shows none.
	Session SessionReader
	// IsLeader reports whether this node leads; nil means false.
	IsLeader func() bool
	// Logger; nil discards.
	Logger *slog.Logger

	pageOnce sync.Once
	page     *template.Template
	pageErr  error
}

func (b *Backend) log() *slog.Logger {
	if b.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Logger.With("component", "demo")
}

// Routes mounts the page and the demo's page, files, ticks and members
// endpoints with handle (node.HandleApp).
func (b *Backend) Routes(handle func(pattern string, h http.Handler)) {
	handle("GET /{$}", http.HandlerFunc(b.servePage))
	handle("GET /demo/api/files", b.DB.Require(http.HandlerFunc(b.listFiles)))
	handle("POST /demo/api/files", b.DB.Require(http.HandlerFunc(b.upload)))
	handle("GET /demo/api/files/{name}", http.HandlerFunc(b.download))
	handle("GET /demo/api/ticks", b.DB.Require(http.HandlerFunc(b.listTicks)))
	handle("GET /demo/api/members", http.HandlerFunc(b.listMembers))
}

func (b *Backend) members(ctx context.Context) []Member {
	if b.Members == nil {
		return []Member{}
	}
	ms := b.Members(ctx)
	if ms == nil {
		ms = []Member{}
	}
	return ms
}

func (b *Backend) leader() bool { return b.IsLeader != nil && b.IsLeader() }

func (b *Backend) listMembers(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"node": b.NodeID, "members": b.members(r.Context())})
}

// unixMS is how the demo stores times: portable between MySQL and SQLite.
func unixMS(t time.Time) int64 { return t.UnixMilli() }
