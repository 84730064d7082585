package node

import (
	"context"
	"net/http"
	"time"

	"github.com/cohortserver/cohort/sessions"
)

// readGuardTimeout bounds how long a request may wait to be served
// consistently before it is refused.
const readGuardTimeout = 5 * time.Second

// setupReadGuard wires the guard that keeps local session reads
// linearizable. It sits inside the sticky front and outside the sessions
// middleware, so it sees exactly the requests this node will serve.
func (n *Node) setupReadGuard() error {
	n.WrapApp(n.readGuard)
	return nil
}

// readGuard decides whether this node may answer a session request from its
// local state, which is what makes reads cheap:
//
//   - the session's owner (the cookie's route names this node) serves
//     locally while its read lease is fresh (it leads, or heard from the
//     leader within the lease); a stale lease costs one read-index round
//     trip to the leader;
//   - any other node (a failover or takeover) first waits until the owner's
//     lease must have run out since the owner was first seen failing, then
//     reads through the leader's read index, so it cannot answer from
//     state older than what the owner acknowledged;
//   - a node that cannot reach a leader refuses with 503 rather than answer
//     from stale state.
//
// Requests without a session cookie pass straight through.
func (n *Node) readGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(n.cfg.SessionCookie)
		if err != nil || c.Value == "" {
			next.ServeHTTP(w, r)
			return
		}
		_, route, err := sessions.ParseCookie(c.Value)
		if err != nil {
			next.ServeHTTP(w, r) // the sessions middleware starts a fresh session
			return
		}
		owner := ""
		if m, ok := n.members.ByRoute(route); ok {
			owner = m.ID
		}
		if owner == n.cfg.NodeID && n.leaseSynced() {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readGuardTimeout)
		defer cancel()
		if owner != "" && owner != n.cfg.NodeID {
			if !n.waitOwnerLease(ctx, owner) {
				writeUnavailable(w)
				return
			}
		}
		epoch := n.leaseEpoch.Load()
		if err := n.cluster.ReadIndex(ctx); err != nil {
			n.log.Warn("session request refused: no consistent read possible", "owner", owner, "err", err)
			writeUnavailable(w)
			return
		}
		if owner == n.cfg.NodeID {
			n.syncedEpoch.Store(epoch)
		}
		next.ServeHTTP(w, r)
	})
}

// waitOwnerLease waits until owner's read lease must have expired, counted
// from when this node first saw it fail (or from now when it looks alive,
// e.g. disabled), with a margin for clock rate differences.
func (n *Node) waitOwnerLease(ctx context.Context, owner string) bool {
	since := n.members.FailingSince(owner)
	if since.IsZero() {
		since = time.Now()
	}
	lease := n.cluster.ReadLease()
	wait := time.Until(since.Add(lease + lease/10 + 20*time.Millisecond))
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// leaseSynced reports whether the owner may read locally: its lease is
// fresh and it passed a read index since the lease last lapsed (or since
// start). After a lapse, other nodes may have taken over its sessions and
// written; one read index brings this node past those writes.
func (n *Node) leaseSynced() bool {
	return n.cluster.LeaseFresh() && n.syncedEpoch.Load() == n.leaseEpoch.Load()
}

// watchLease bumps the lease epoch each time the read lease lapses.
func (n *Node) watchLease(ctx context.Context) {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	fresh := false
	for {
		now := n.cluster.LeaseFresh()
		if fresh && !now {
			n.leaseEpoch.Add(1)
		}
		fresh = now
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func writeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	WriteError(w, http.StatusServiceUnavailable, "this node cannot reach the cluster's leader, so it cannot serve your session consistently; retry, or use another node")
}
