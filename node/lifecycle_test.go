package node

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/testport"
)

// TestCloseAfterFailedStart: when a start hook fails, Start rolls back the
// hooks that started, once; a later Close neither drains nor closes
// components that never started, and closes nothing twice.
func TestCloseAfterFailedStart(t *testing.T) {
	cfg := config.Dev()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = testport.Addr(t)
	cfg.ClusterAddr = testport.Addr(t)
	// Not Dev's fixed Redis port: other packages' tests run beside this
	// one (the app package's Example listens there).
	cfg.KV.RedisAddr = testport.Addr(t)
	cfg.Peers = []config.Peer{{ID: cfg.NodeID, Address: cfg.ClusterAddr}}
	cfg.NoDemo = true
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var closed []string
	drains := 0
	boom := errors.New("boom")
	n.OnStart(nil, func() error { closed = append(closed, "started"); return nil })
	n.OnStart(func(context.Context) error { return boom }, func() error { closed = append(closed, "failed"); return nil })
	n.OnStart(nil, func() error { closed = append(closed, "never started"); return nil })
	n.OnDrain(func(context.Context) error { drains++; return nil })
	started := make(chan error, 1)
	go func() { started <- n.Start(context.Background()) }()
	select {
	case err := <-started:
		if !errors.Is(err, boom) {
			t.Fatalf("Start = %v, want the failing hook's error", err)
		}
	case <-time.After(60 * time.Second):
		// Rolling back a component while its start context still runs
		// (the front's Close waits for goroutines bound to it) hangs.
		t.Fatal("Start did not return within 60 s after a start hook failed")
	}
	if !slices.Equal(closed, []string{"started"}) {
		t.Fatalf("after the failed Start closed %v, want only the hook that started", closed)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close after a failed Start = %v, want nil", err)
	}
	if !slices.Equal(closed, []string{"started"}) || drains != 0 {
		t.Fatalf("after Close: closed %v and %d drains, want each started hook closed once and no drain", closed, drains)
	}
}
