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

// ReadLease is how long a node may serve local reads after a read index
// started: a quarter of the heartbeat timeout, while a quorum that
// confirmed the leader elects nobody else for a full heartbeat timeout
// (modulo clock rate drift, as every lease). See node's sessionReads.
func (c *Cluster) ReadLease() time.Duration {
	_, _, lease := Timing(c.cfg.TimeoutScale)
	return lease
}

// readIndex is ReadIndex without the wait budget (quorum.go).
func (c *Cluster) readIndex(ctx context.Context) error {
	return c.waitIndex(ctx, "read index", func() (uint64, uint64, error) {
		if c.IsLeader() {
			idx, _, err := c.leaderReadIndex(ctx)
			return idx, 0, err
		}
		return c.forwardReadIndex(ctx)
	})
}

// waitIndex asks index for an index to wait for (and the term of its
// entry; 0 when not known, or on the leader) until it answers other than
// errRetry, backing off meanwhile, and waits until this node applied that
// index. what names the wait in errors.
func (c *Cluster) waitIndex(ctx context.Context, what string, index func() (idx, term uint64, err error)) error {
	if _, err := c.running(); err != nil {
		return err
	}
	backoff := 10 * time.Millisecond
	for {
		idx, term, err := index()
		if err == nil {
			if !c.cfg.FollowerCatchUp {
				term = 0 // wait for Raft to apply it here
			}
			if werr := c.waitWritable(ctx, idx, term); werr != nil {
				return fmt.Errorf("%s: %w", what, werr)
			}
			return nil
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%w)", what, ErrNoLeader, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// leaderReadIndex confirms leadership and returns the applied index and
// the term of its entry (0 when not known).
func (c *Cluster) leaderReadIndex(ctx context.Context) (index, term uint64, err error) {
	r, err := c.running()
	if err != nil {
		return 0, 0, err
	}
	// Entries of earlier terms must be applied here first (Barrier as new
	// leader), or the applied index could miss writes the old leader acked.
	for c.barrierDone.Load() != r.CurrentTerm() {
		if !c.IsLeader() {
			return 0, 0, errRetry
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	idx, term := c.router.applied.getTerm()
	if err := verifyLeader(ctx, r); err != nil {
		return 0, 0, errRetry
	}
	return idx, term, nil
}

// verifyLeader waits for r.VerifyLeader until ctx ends. hashicorp/raft
// answers a verification queued just before it shuts down never, so an
// unbounded wait held a node's Close forever; the waiting goroutine left
// behind then ends with the process.
func verifyLeader(ctx context.Context, r *hraft.Raft) error {
	f := r.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type readIndexAnswer struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term,omitempty"` // of the entry at Index; absent from older nodes
}

// readIndexCall is the leader call of a follower's read index.
const readIndexCall = "raft.readindex"

// answerReadIndex answers a follower's read index on the leader: the
// applied index and its entry's term, as uvarints.
func (c *Cluster) answerReadIndex(ctx context.Context, _ []byte) ([]byte, error) {
	idx, term, err := c.leaderReadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("leadership not confirmed: %w (%w)", ErrNoLeader, err)
	}
	return encodeIndexTerm(idx, term), nil
}

// forwardReadIndex asks the leader for its read index: over the call
// channel, or over HTTP to a leader of an older version.
func (c *Cluster) forwardReadIndex(ctx context.Context) (index, term uint64, err error) {
	_, addr := c.Leader()
	if addr == "" {
		return 0, 0, errRetry
	}
	out, err := c.CallLeader(ctx, readIndexCall, nil)
	switch {
	case err == nil:
		return decodeIndexTerm(out, "read index answer")
	case errors.Is(err, ErrLeaderCallRefused):
		return c.forwardReadIndexHTTP(ctx, addr)
	case ctx.Err() != nil:
		return 0, 0, fmt.Errorf("read index: %w (%w)", ErrNoLeader, ctx.Err())
	default:
		return 0, 0, errRetry
	}
}

// forwardReadIndexHTTP asks a leader of an older version for its read
// index over HTTP.
func (c *Cluster) forwardReadIndexHTTP(ctx context.Context, addr string) (index, term uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/_internal/raft/readindex", nil)
	if err != nil {
		return 0, 0, fmt.Errorf("read index: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("read index: %w (%w)", ErrNoLeader, ctx.Err())
		}
		return 0, 0, errRetry
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return 0, 0, errRetry
	}
	var a readIndexAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&a); err != nil {
		return 0, 0, fmt.Errorf("read index answer: %w", err)
	}
	return a.Index, a.Term, nil
}

func (c *Cluster) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	c.httpReadIndexes.Add(1)
	if !c.IsLeader() {
		http.Error(w, "not the leader", codeNotLeader)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	idx, term, err := c.leaderReadIndex(ctx)
	if err != nil {
		http.Error(w, "leadership not confirmed", codeNotLeader)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(readIndexAnswer{Index: idx, Term: term})
}
