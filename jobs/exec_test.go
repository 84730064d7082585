//go:build unix

package jobs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
)

func TestCommandActionEnvAndGroupKill(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	run := Run{Job: "echo", Key: "echo@2026-01-01T00:00:00Z", Fence: Fence{3, 42}, Node: "n1", ScheduledAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	fn := CommandAction{Argv: []string{"/bin/sh", "-c", `echo "$COHORT_RUN_KEY $COHORT_FENCE $COHORT_NODE" >> ` + out}}.Func()
	if err := fn(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if got := strings.TrimSpace(string(b)); got != "echo@2026-01-01T00:00:00Z 42 n1" {
		t.Fatalf("command saw %q", got)
	}

	// A shell with a background child: cancelling kills the whole group.
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- CommandAction{Argv: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + pidFile + "; wait"}}.Func()(ctx, run)
	}()
	var child int
	poll.Until(t, 10*time.Second, func() (bool, string) {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			child = atoi(strings.TrimSpace(string(b)))
		}
		return child != 0, "the command never wrote its child's pid"
	})
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("cancelled command reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled command did not return")
	}
	poll.Until(t, 10*time.Second, func() (bool, string) {
		return syscall.Kill(child, 0) != nil, fmt.Sprintf("child %d of the cancelled command still runs", child)
	})
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestHTTPAction(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ok     bool
	}{{"2xx is success", http.StatusNoContent, true}, {"5xx fails", http.StatusBadGateway, false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fence string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fence = r.Header.Get("X-Cohort-Fence")
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			err := HTTPAction{URL: srv.URL}.Func()(context.Background(), Run{Job: "h", Key: "h@x", Fence: Fence{1, 7}})
			if (err == nil) != tt.ok || fence != "7" {
				t.Fatalf("err %v fence %q", err, fence)
			}
		})
	}
}
