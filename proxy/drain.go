package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/raft"
)

// Shutdown takes this node out of the traffic before it leaves the
// cluster: it marks the node draining (no new sessions anywhere in the
// cluster), then disabled (peers stop forwarding its sessions, and this
// front forwards what still enters here: the sessions fail over to live
// nodes, where they are replicated), and waits until no request runs the
// application here, at most DrainTimeout or until ctx ends. Requests this
// front is merely forwarding finish while the public server shuts down.
// The state it replaced is remembered in StateFile and restored by the
// next Start. Call it while the cluster port is still up.
func (f *Front) Shutdown(ctx context.Context) error {
	if f.rt.Load() == nil {
		return ErrNotStarted
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.DrainTimeout)
	defer cancel()
	self := f.cfg.SelfID
	prev := f.state(self)
	var errs []error
	_, known := f.cfg.Members.Get(self)
	if !known {
		// Not yet in the member table: no node routes here, nothing to mark.
		f.log.Info("node not announced yet; draining without a state change")
	}
	if known && prev != membership.StateDisabled {
		if f.cfg.StateFile != "" {
			if err := os.WriteFile(f.cfg.StateFile, []byte(prev+"\n"), 0o600); err != nil {
				errs = append(errs, fmt.Errorf("remember state: %w", err))
			}
		}
		for _, st := range []string{membership.StateDraining, membership.StateDisabled} {
			if prev == membership.StateDraining && st == membership.StateDraining {
				continue
			}
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			err := f.cfg.Members.SetState(sctx, self, st)
			scancel()
			if errors.Is(err, membership.ErrUnknownNode) || errors.Is(err, raft.ErrRemoved) {
				// Removed from the cluster meanwhile (the table's entry,
				// or the node from Raft's configuration, which may leave
				// its own table stale): nobody routes here.
				f.log.Info("node no longer in the member table; draining without a state change")
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("mark %s %s: %w", self, st, err))
				break
			}
			f.log.Info("front state changed for shutdown", "state", st)
		}
	}
	if !f.WaitIdle(ctx) {
		f.log.Warn("drain timed out with requests in flight", "serving", f.serving.Load())
		return errors.Join(errs...)
	}
	f.log.Info("front drained")
	return errors.Join(errs...)
}

// WaitIdle waits until no request runs the application here (Serving is
// 0) and reports whether that happened before ctx ended.
func (f *Front) WaitIdle(ctx context.Context) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for f.serving.Load() > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// restoreState puts back the state Shutdown replaced, once this node is in
// the member table again and still shows the state Shutdown left.
func (f *Front) restoreState(ctx context.Context) {
	if f.cfg.StateFile == "" {
		return
	}
	b, err := os.ReadFile(f.cfg.StateFile)
	if err != nil {
		return
	}
	prev := strings.TrimSpace(string(b))
	f.goRun(func() {
		backoff := 100 * time.Millisecond
		for {
			// Decide only on a member table that has caught up: right
			// after a restart it may not hold the drain's own change yet,
			// and reading the state from before it would drop the file
			// and leave the node disabled.
			caughtUp := f.cfg.Ready == nil || f.cfg.Ready()
			m, ok := f.cfg.Members.Get(f.cfg.SelfID)
			switch {
			case !caughtUp:
			case prev != membership.StateActive && prev != membership.StateDraining,
				ok && (m.State == prev || m.State == membership.StateActive):
				_ = os.Remove(f.cfg.StateFile) // nothing to restore, or changed meanwhile
				return
			case ok:
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := f.cfg.Members.SetState(sctx, f.cfg.SelfID, prev)
				cancel()
				if err == nil {
					f.log.Info("front state restored after restart", "state", prev)
					_ = os.Remove(f.cfg.StateFile)
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
				backoff = min(2*backoff, 2*time.Second)
			}
		}
	})
}
