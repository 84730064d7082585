package sessions

import (
	"context"
	"fmt"
	"time"
)

// claimTimeout bounds how long a request waits to take a session over.
const claimTimeout = 5 * time.Second

// ensureOwner makes a local read of session id linearizable before the
// handler sees it (see Reads). It returns the session as it stands after
// any sync or claim, or nil if it ended meanwhile.
func (m *Manager) ensureOwner(ctx context.Context, id string, x *session, now int64) (*session, error) {
	reads := m.cfg.Reads
	if reads == nil {
		return x, nil
	}
	if x.owner == m.cfg.NodeID {
		if reads.OwnerFresh() {
			// Read again: the lease must hold before the state is read, or a
			// sync completing in between (applying another node's claim)
			// would make an older copy look current.
			if x = m.lookup(id, now); x == nil || x.owner == m.cfg.NodeID {
				return x, nil
			}
		} else {
			if err := reads.Sync(ctx); err != nil {
				return nil, fmt.Errorf("read session: this node cannot confirm it is current (%w); retry", err)
			}
			if x = m.lookup(id, now); x == nil || x.owner == m.cfg.NodeID {
				return x, nil
			}
		}
	}
	// Another node owns it: claim it through Raft, then give the old owner
	// time to apply the claim or lose its read lease.
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	m.claims.Add(1)
	if _, err := m.cluster.Apply(ctx, cmdClaim, encodeIDs([]string{id})); err != nil {
		return nil, fmt.Errorf("take the session over from node %s: %w", x.owner, err)
	}
	t := time.NewTimer(reads.ClaimWait())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, fmt.Errorf("take the session over: %w", ctx.Err())
	}
	return m.lookup(id, now), nil
}
