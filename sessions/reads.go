package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortserver/cohort/raft"
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
	if err := m.claim(ctx, id); err != nil {
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

// claim commits this node's claim on session id. A claim is idempotent
// (committing it twice leaves the same owner), so when its outcome is
// unknown — the old owner was also the leader and died with the claim in
// flight, the commonest failover — it is proposed again, to the next
// leader, until ctx ends: the read that needs it waits out the election
// instead of failing.
func (m *Manager) claim(ctx context.Context, id string) error {
	payload := encodeIDs([]string{id})
	backoff := 20 * time.Millisecond
	for {
		m.claims.Add(1)
		_, err := m.cluster.Apply(ctx, cmdClaim, payload)
		if err == nil || !errors.Is(err, raft.ErrOutcomeUnknown) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}
