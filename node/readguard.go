package node

import (
	"context"
	"time"
)

// sessionReads tells the sessions package when this node may answer a
// session from local state (sessions.Reads): as the session's owner, while
// its read lease is fresh and synced; otherwise after a read index; and a
// node taking a session over waits out two read leases after its claim.
type sessionReads struct{ n *Node }

// OwnerFresh reports whether the read lease is fresh and synced.
func (s sessionReads) OwnerFresh() bool { return s.n.leaseSynced() }

// Sync passes the leader's read index and marks the lease synced.
func (s sessionReads) Sync(ctx context.Context) error {
	epoch := s.n.leaseEpoch.Load()
	if err := s.n.cluster.ReadIndex(ctx); err != nil {
		return err
	}
	s.n.syncedEpoch.Store(epoch)
	return nil
}

// ClaimWait is two read leases plus a margin for clock rate differences:
// by then the old owner applied the claim or its lease ran out.
func (s sessionReads) ClaimWait() time.Duration {
	lease := s.n.cluster.ReadLease()
	return 2*lease + lease/10 + 10*time.Millisecond
}

// leaseSynced reports whether the owner may read locally: its lease is
// fresh and it passed a read index since the lease last lapsed (or since
// start). After a lapse other nodes may have taken sessions over; one read
// index brings this node past their claims.
func (n *Node) leaseSynced() bool {
	return n.cluster.LeaseFresh() && n.syncedEpoch.Load() == n.leaseEpoch.Load()
}

// watchLease bumps the lease epoch each time the read lease lapses.
func (n *Node) watchLease(ctx context.Context) {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	fresh := false
	for {
		now := n.cluster.LeaseContact()
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
