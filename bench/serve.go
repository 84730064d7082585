package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cohortserver/cohort/bench/stack"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/node"
)

// runStackApp is the "stack-app" command: one application server of the
// conventional stack.
func runStackApp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stack-app", flag.ContinueOnError)
	var cfg stack.Config
	fs.StringVar(&cfg.Name, "name", "s1", "name reported as node")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&cfg.Redis, "redis", "127.0.0.1:6379", "Redis address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("stack-app flags: %w", err)
	}
	return stack.Serve(ctx, cfg)
}

// runCohortNode is the "cohort-node" command: `cohort serve` built through
// the same node.New, plus two benchmark routes the demo lacks:
//
//   - POST /bench/blob stores the request body (1 KiB in the replicated
//     writes scenario) in the session and commits it through Raft;
//   - GET /bench/read reads the demo counter from the session and writes
//     it as plain text: a handler that does nothing but read its session;
//   - GET /bench/timing answers the p50/p99 of the time the node spent
//     inside its application chain (front, sessions middleware and the
//     handler) for GET /bench/read since the last call: the cost of a
//     session read as a handler sees it.
func runCohortNode(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	cfg, err := config.Load(false, args, os.Stderr)
	if err != nil {
		return fmt.Errorf("cohort-node config: %w", err)
	}
	cfg.Logger = cfg.NewLogger(os.Stderr)
	n, err := node.New(cfg)
	if err != nil {
		return fmt.Errorf("cohort-node: %w", err)
	}
	sm := n.Sessions()
	n.HandleApp("POST /bench/blob", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sm.Put(r.Context(), "bench.blob", b)
		if err := sm.Save(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"bytes":%d}`, len(b))
	}))
	n.HandleApp("GET /bench/read", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(strconv.AppendInt(nil, sm.GetInt64(r.Context(), "demo.count"), 10))
	}))
	tm := &timings{}
	n.WrapApp(tm.middleware) // added last: outermost, around the front
	n.Handle("GET /bench/timing", http.HandlerFunc(tm.serve))
	if err := n.Start(ctx); err != nil {
		return fmt.Errorf("cohort-node start: %w", err)
	}
	<-ctx.Done()
	if err := n.Close(); err != nil {
		return fmt.Errorf("cohort-node close: %w", err)
	}
	return nil
}

// timings records how long GET /bench/read spent in the node's
// application chain.
type timings struct {
	mu  sync.Mutex
	lat []time.Duration
}

func (t *timings) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/bench/read" {
			next.ServeHTTP(w, r)
			return
		}
		t0 := time.Now()
		next.ServeHTTP(w, r)
		d := time.Since(t0)
		t.mu.Lock()
		if len(t.lat) < 1<<20 {
			t.lat = append(t.lat, d)
		}
		t.mu.Unlock()
	})
}

// timingReply is the answer of GET /bench/timing.
type timingReply struct {
	Count int   `json:"count"`
	P50ns int64 `json:"p50_ns"`
	P99ns int64 `json:"p99_ns"`
}

func (t *timings) serve(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	lat := t.lat
	t.lat = nil
	t.mu.Unlock()
	slices.Sort(lat)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(timingReply{Count: len(lat),
		P50ns: int64(quantile(lat, 0.5)), P99ns: int64(quantile(lat, 0.99))})
}

// errUsage is a bad command line.
var errUsage = errors.New("usage")
