package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	hraft "github.com/hashicorp/raft"
)

// ReadLease is how long after its last contact with the leader a follower
// may still serve a local read as current; the leader steps down after the
// same time without a quorum, so no other node can have committed a write
// the lease holder misses (modulo clock rate drift, as every lease).
func (c *Cluster) ReadLease() time.Duration {
	_, _, lease := Timing(c.cfg.TimeoutScale)
	return lease
}

// LeaseContact reports whether this node holds a read lease by contact:
// it is a leader that finished its term's Barrier, or a follower that heard
// from the leader within ReadLease.
func (c *Cluster) LeaseContact() bool {
	r, err := c.running()
	if err != nil {
		return false
	}
	if r.State() == hraft.Leader {
		return c.barrierDone.Load() == r.CurrentTerm()
	}
	last := r.LastContact()
	_, leader := r.LeaderWithID()
	return leader != "" && !last.IsZero() && time.Since(last) < c.ReadLease()
}

// LeaseFresh reports whether this node may serve a local read without a
// round trip: it holds the lease by contact (LeaseContact) and, as a
// follower, applied the commit index it learned at that contact, so a
// write or claim committed before then is visible. (After a no-op or
// configuration entry the applied index of commands trails the commit
// index until the next command; reads take the read-index path meanwhile.)
func (c *Cluster) LeaseFresh() bool {
	if !c.LeaseContact() {
		return false
	}
	if c.IsLeader() {
		return true
	}
	r, err := c.running()
	return err == nil && c.router.applied.get() >= r.CommitIndex()
}

// ReadIndex makes a linearizable read possible on this node: it asks the
// leader for the index of the last command the leader applied (every
// acknowledged write was applied on the leader before it was acknowledged),
// after the leader confirmed with a quorum that it still leads, and waits
// until this node applied that index. It fails with ErrNoLeader when no
// leader can be reached before ctx ends.
func (c *Cluster) ReadIndex(ctx context.Context) error {
	if _, err := c.running(); err != nil {
		return err
	}
	backoff := 10 * time.Millisecond
	for {
		var idx uint64
		var err error
		if c.IsLeader() {
			idx, err = c.leaderReadIndex(ctx)
		} else {
			idx, err = c.forwardReadIndex(ctx)
		}
		if err == nil {
			return c.WaitApplied(ctx, idx)
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("read index: %w (%w)", ErrNoLeader, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// leaderReadIndex confirms leadership and returns the applied index.
func (c *Cluster) leaderReadIndex(ctx context.Context) (uint64, error) {
	r, err := c.running()
	if err != nil {
		return 0, err
	}
	// Entries of earlier terms must be applied here first (Barrier as new
	// leader), or the applied index could miss writes the old leader acked.
	for c.barrierDone.Load() != r.CurrentTerm() {
		if !c.IsLeader() {
			return 0, errRetry
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	idx := c.router.applied.get()
	if err := r.VerifyLeader().Error(); err != nil {
		return 0, errRetry
	}
	return idx, nil
}

type readIndexAnswer struct {
	Index uint64 `json:"index"`
}

func (c *Cluster) forwardReadIndex(ctx context.Context) (uint64, error) {
	_, addr := c.Leader()
	if addr == "" {
		return 0, errRetry
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/_internal/raft/readindex", nil)
	if err != nil {
		return 0, fmt.Errorf("read index: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("read index: %w (%w)", ErrNoLeader, ctx.Err())
		}
		return 0, errRetry
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return 0, errRetry
	}
	var a readIndexAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&a); err != nil {
		return 0, fmt.Errorf("read index answer: %w", err)
	}
	return a.Index, nil
}

func (c *Cluster) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	if !c.IsLeader() {
		http.Error(w, "not the leader", codeNotLeader)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	idx, err := c.leaderReadIndex(ctx)
	if err != nil {
		http.Error(w, "leadership not confirmed", codeNotLeader)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(readIndexAnswer{Index: idx})
}
