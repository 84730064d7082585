package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// readIndexPath is the store's own read index on the cluster port.
//
// raft.Cluster.ReadIndex answers the leader's *applied* index. A follower
// may already have applied (and served) entries the leader committed but
// has not applied yet, so a read that waits only for the leader's applied
// index can return an older value after another node returned a newer
// one (found by the RESP porcupine checker: 7 of 180 schedules illegal).
// The store's read index is the leader's *commit* index, read after the
// leader confirmed its leadership (raft.Cluster.ReadIndex: Barrier of its
// term, then a quorum round): every entry any node applied is at or below
// it.
const readIndexPath = "/_internal/kv/readindex"

type readIndexAnswer struct {
	Index uint64 `json:"index"`
	// Now is the leader's clock when it answered (unix nanoseconds): the
	// asking node's estimate of that clock (leaderclock) takes it, so a
	// read never judges expiry by an entry it applied late. 0 from an
	// older leader.
	Now int64 `json:"now,omitempty"`
	// Term is the leader's term, whose clock Now is.
	Term uint64 `json:"term,omitempty"`
}

// leaderCommitIndex confirms this node's leadership and returns its commit
// index.
func (s *Store) leaderCommitIndex(ctx context.Context) (uint64, error) {
	if err := s.cluster.ReadIndex(ctx); err != nil {
		return 0, err
	}
	if !s.cluster.IsLeader() {
		return 0, errNotLeader
	}
	return s.cluster.CommitIndex(), nil
}

var errNotLeader = errors.New("not the leader")

func (s *Store) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	if !s.cluster.IsLeader() {
		http.Error(w, "not the leader", http.StatusServiceUnavailable)
		return
	}
	now := time.Now().UnixNano()
	s.readDemand.Note(now) // followers' reads keep the lease fresh too
	var idx uint64
	if s.leaseHolds(now) {
		// Within its lease the leader's leadership stands confirmed,
		// as for its own reads (Sync): its commit index now is at or past
		// every entry any node applied, with no quorum round.
		s.leaseReads.Add(1)
		idx = s.cluster.CommitIndex()
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		var err error
		if idx, err = s.leaderCommitIndex(ctx); err != nil {
			http.Error(w, "leadership not confirmed", http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(readIndexAnswer{Index: idx, Now: s.clock.Local().UnixNano(), Term: s.cluster.Term()})
}

// commitReadIndex returns the leader's confirmed commit index, asking the
// leader over the cluster port when this node is a follower; it retries
// while no leader answers, until ctx ends.
func (s *Store) commitReadIndex(ctx context.Context) (uint64, error) {
	backoff := 10 * time.Millisecond
	for {
		var idx uint64
		var err error
		if s.cluster.IsLeader() {
			idx, err = s.leaderCommitIndex(ctx)
		} else {
			idx, err = s.askLeader(ctx)
		}
		if err == nil {
			return idx, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("read index: %w (%w)", err, ctx.Err())
		case <-s.stop:
			return 0, fmt.Errorf("read index: the store is closed")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (s *Store) askLeader(ctx context.Context) (uint64, error) {
	_, addr := s.cluster.Leader()
	if addr == "" {
		return 0, errors.New("no leader known")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+readIndexPath, nil)
	if err != nil {
		return 0, fmt.Errorf("read index: %w", err)
	}
	resp, err := s.cluster.Client().Do(req)
	if err != nil {
		return 0, fmt.Errorf("read index from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("read index from %s: %s", addr, resp.Status)
	}
	var a readIndexAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&a); err != nil {
		return 0, fmt.Errorf("read index answer: %w", err)
	}
	if a.Now != 0 {
		s.clock.Observe(time.Unix(0, a.Now), a.Term)
	}
	return a.Index, nil
}
