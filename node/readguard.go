package node

import (
	"context"
	"time"
)

// sessionReads tells the sessions package when this node may answer a
// session from local state (sessions.Reads): while its last successful
// read index *started* less than one read lease (a quarter heartbeat
// timeout) ago. On the leader a read index is a leadership confirmation by
// a quorum, which elects nobody else for a full heartbeat timeout; on a
// follower it is the leader's applied index, confirmed the same way and
// applied here. A claim (or any write) committed before that start is
// applied here; one committed after it is followed by the claimant's wait
// of two leases, by which time this sync is too old to serve from.
//
// Neither contact with the leader (heartbeats refresh it without telling a
// lagging follower the commit index) nor the leader's own belief that it
// leads (its step-down can run late on a loaded machine) is enough.
// syncLoop keeps the sync fresh on every node that serves session reads.
type sessionReads struct{ n *Node }

// OwnerFresh reports whether local reads of owned sessions are current.
func (s sessionReads) OwnerFresh() bool {
	n := s.n
	now := time.Now().UnixNano()
	n.noteReadDemand(now)
	start := n.syncStart.Load()
	return start != 0 && time.Duration(now-start) < n.cluster.ReadLease()
}

// Sync passes the leader's read index and records when it started.
func (s sessionReads) Sync(ctx context.Context) error {
	s.n.noteReadDemand(time.Now().UnixNano())
	return s.n.syncReads(ctx)
}

// ClaimWait is two read leases plus a margin for clock rate differences:
// by then the old owner applied the claim or its sync is too old.
func (s sessionReads) ClaimWait() time.Duration {
	lease := s.n.cluster.ReadLease()
	return 2*lease + lease/10 + 10*time.Millisecond
}

func (n *Node) syncReads(ctx context.Context) error {
	start := time.Now().UnixNano()
	if err := n.cluster.ReadIndex(ctx); err != nil {
		return err
	}
	for {
		old := n.syncStart.Load()
		if old >= start || n.syncStart.CompareAndSwap(old, start) {
			return nil
		}
	}
}

// syncIdleAfter is how long after the last session read syncLoop keeps
// refreshing the sync. An idle node stops (a read index every third of a
// lease on every node was most of an idle cluster's CPU) and parks its
// timer; the first read after a pause passes one read index itself.
const syncIdleAfter = 5 * time.Second

// noteReadDemand records that a session read wanted the sync at now (unix
// nanoseconds).
func (n *Node) noteReadDemand(now int64) { n.readDemand.Note(now) }

// syncLoop refreshes the read sync every third of a lease while session
// reads come, so an owner's reads stay local; a failed round just lets the
// sync age.
func (n *Node) syncLoop(ctx context.Context) {
	lease := n.cluster.ReadLease()
	n.readDemand.Refresh(ctx, lease/3, syncIdleAfter, func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, lease)
		_ = n.syncReads(rctx)
		cancel()
	})
}
