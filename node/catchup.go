package node

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// watchCatchUp closes n.caughtUp once the node is ready for the first time
// since Start: it knows a leader and has applied the leader's commit index.
// Until then a restarted node's state machines may still lack entries that
// other nodes acknowledged, and must not serve application reads.
//
// The commit index a follower holds right after a restart proves nothing:
// hashicorp/raft's heartbeats carry no commit index, so a heartbeat makes
// the leader known and the contact fresh while the follower's commit and
// applied indexes are still 0, and cluster.Ready alone would pass. So the
// node also completes one read index: the leader confirms its leadership
// with a quorum and names its applied index, and this node applies up to it.
func (n *Node) watchCatchUp(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if ok, _ := n.cluster.Ready(); ok {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := n.cluster.ReadIndex(rctx)
			cancel()
			if err == nil {
				close(n.caughtUp)
				n.log.Info("caught up with the cluster; serving application requests", "applied", n.cluster.AppliedIndex())
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isCaughtUp reports whether the node has been ready once since start;
// the front sends forwarded requests elsewhere until then.
func (n *Node) isCaughtUp() bool {
	select {
	case <-n.caughtUp:
		return true
	default:
		return false
	}
}

// catchUpGate holds application requests until the node has caught up
// once since start, so a restarted node never answers from stale state.
// The wait is one of the request's waits on the cluster (raft.Bounded):
// a node cut off from its quorum refuses at once, any other gives up when
// the wait budget is spent; either answers 503 with Retry-After. The admin
// surface (/_cohort/) is not behind it.
func (n *Node) catchUpGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-n.caughtUp:
			next.ServeHTTP(w, r)
			return
		default:
		}
		ctx := n.cluster.Bounded(r.Context(), "app")
		err := n.cluster.Within(ctx, "catch-up", func(ctx context.Context) error {
			select {
			case <-n.caughtUp:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("this node has not caught up with the cluster yet (no leader, or still applying the log): %w", ctx.Err())
			}
		})
		switch {
		case err == nil:
			next.ServeHTTP(w, r.WithContext(ctx))
		case r.Context().Err() != nil: // the client left
		default:
			writeUnavailable(w, err)
		}
	})
}

// boundRequests marks every application request for the wait budget
// (raft.Cluster.Bounded): whatever it waits on in the cluster (a session's
// read index or claim, a commit) is refused at once while this node is cut
// off from its quorum, and ends within the budget. It sits inside the
// sticky front, so requests forwarded here from another node are bounded
// here too.
func (n *Node) boundRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(n.cluster.Bounded(r.Context(), "app")))
	})
}

// writeUnavailable answers a request the cluster could not serve: 503 with
// Retry-After, and for a refusal for lack of quorum the message that says
// so (and whether a write's outcome is unknown).
func writeUnavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", raft.RetryAfter)
	msg, ok := raft.RefusalMessage(err)
	if !ok {
		msg = err.Error()
	}
	WriteError(w, http.StatusServiceUnavailable, msg)
}

// drainGraceMax bounds how long a draining node keeps answering with
// Connection: close before it stops accepting.
const drainGraceMax = 1500 * time.Millisecond

// closeWhileDraining adds Connection: close to every answer while the node
// drains, so clients drop their keep-alive connections after a complete
// response instead of having an idle connection closed under a request.
func (n *Node) closeWhileDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// drainGrace keeps the front serving for a short while after draining
// started, long enough for active keep-alive clients to receive a
// Connection: close answer and move on.
func (n *Node) drainGrace(ctx context.Context) {
	grace := min(drainGraceMax, n.cfg.ShutdownTimeout/4)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// refuseDotSegments answers 400 to a path with a "." or ".." segment
// instead of letting the router redirect it elsewhere: such a path is a
// traversal attempt or a client bug, and either deserves a clear error.
func refuseDotSegments(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasDotSegment(r.URL.Path) {
			WriteError(w, http.StatusBadRequest, "the path contains a '.' or '..' segment; use a plain path")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hasDotSegment(p string) bool {
	for len(p) > 0 {
		var seg string
		seg, p, _ = strings.Cut(strings.TrimPrefix(p, "/"), "/")
		if seg == "." || seg == ".." {
			return true
		}
		if p != "" {
			p = "/" + p
		}
	}
	return false
}
