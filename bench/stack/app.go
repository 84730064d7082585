package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/alexedwards/scs/v2"
)

// counterKey is the session key of the counter, as in cohort's demo.
const counterKey = "demo.count"

// Config configures one application server of the stack.
type Config struct {
	// Name is reported as "node" in every answer (like cohort's node id).
	Name string
	// Addr is the listen address host:port.
	Addr string
	// Redis is the Redis address host:port.
	Redis string
	// Logger receives the server's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

type reply struct {
	Count int64  `json:"count"`
	Node  string `json:"node"`
}

// Handler returns the counter routes behind scs's LoadAndSave:
// GET /demo/api/counter reads the session (no write), POST increments it
// and commits to Redis before answering. The session has a lifetime but
// no idle timeout, so a read never writes (scs would write on every
// request with one).
func Handler(name string, sm *scs.SessionManager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /demo/api/counter", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, reply{Count: int64(sm.GetInt(r.Context(), counterKey)), Node: name})
	})
	mux.HandleFunc("POST /demo/api/counter", func(w http.ResponseWriter, r *http.Request) {
		n := sm.GetInt(r.Context(), counterKey) + 1
		sm.Put(r.Context(), counterKey, n)
		writeJSON(w, reply{Count: int64(n), Node: name})
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	return sm.LoadAndSave(mux)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// Serve runs one application server until ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	store := NewRedisStore(cfg.Redis, 512)
	defer store.Close()
	sm := scs.New()
	sm.Store = store
	sm.Lifetime = 24 * time.Hour
	sm.Cookie.Name = "session"
	sm.Cookie.HttpOnly = true
	sm.Cookie.SameSite = http.SameSiteLaxMode
	sm.ErrorFunc = func(w http.ResponseWriter, r *http.Request, err error) {
		cfg.Logger.Warn("session error", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	srv := &http.Server{
		Addr:              cfg.Addr,
		Handler:           Handler(cfg.Name, sm),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    1 << 20,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("stack app %s: %w", cfg.Name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stack app %s shutdown: %w", cfg.Name, err)
	}
	return nil
}
