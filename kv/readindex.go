package kv

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// readIndexPath is the store's own read index on the cluster port, over
// HTTP for nodes of the previous version; others ask it as the leader call
// readIndexCall (raft.CallLeader), with no HTTP request.
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
	// EntryTerm is the term of the entry at Index (0: not known), with
	// which the asking node applies its own log up to Index at once
	// (raft.Cluster.CatchUp) rather than wait to learn of the commit.
	EntryTerm uint64 `json:"entry_term,omitempty"`
}

// leaderCommitIndex confirms this node's leadership and returns its commit
// index and the term of its entry.
func (s *Store) leaderCommitIndex(ctx context.Context) (index, term uint64, err error) {
	if err := s.cluster.ReadIndex(ctx); err != nil {
		return 0, 0, err
	}
	if !s.cluster.IsLeader() {
		return 0, 0, errNotLeader
	}
	index, term = s.cluster.CommitIndexTerm()
	return index, term, nil
}

var errNotLeader = errors.New("not the leader")

// readIndexCall is the store's read index as a leader call (raft.CallLeader).
const readIndexCall = "kv.readindex"

// answerReadIndex is the leader's answer to a follower's read index.
func (s *Store) answerReadIndex(ctx context.Context) (readIndexAnswer, error) {
	if !s.cluster.IsLeader() {
		return readIndexAnswer{}, fmt.Errorf("read index: %w", raft.ErrNoLeader)
	}
	now := time.Now().UnixNano()
	s.readDemand.Note(now) // followers' reads keep the lease fresh too
	var idx, entryTerm uint64
	if s.leaseHolds(now) {
		// Within its lease the leader's leadership stands confirmed,
		// as for its own reads (Sync): its commit index now is at or past
		// every entry any node applied, with no quorum round.
		s.leaseReads.Add(1)
		idx, entryTerm = s.cluster.CommitIndexTerm()
	} else {
		ctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		var err error
		if idx, entryTerm, err = s.leaderCommitIndex(ctx); err != nil {
			return readIndexAnswer{}, fmt.Errorf("leadership not confirmed: %w (%w)", raft.ErrNoLeader, err)
		}
	}
	return readIndexAnswer{Index: idx, Now: s.clock.Local().UnixNano(), Term: s.cluster.Term(), EntryTerm: entryTerm}, nil
}

// callReadIndex answers the leader call: index, now (its bits), term and
// the entry's term as uvarints.
func (s *Store) callReadIndex(ctx context.Context, _ []byte) ([]byte, error) {
	a, err := s.answerReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return encodeReadIndexAnswer(a), nil
}

func encodeReadIndexAnswer(a readIndexAnswer) []byte {
	b := binary.AppendUvarint(nil, a.Index)
	b = binary.AppendUvarint(b, uint64(a.Now))
	b = binary.AppendUvarint(b, a.Term)
	return binary.AppendUvarint(b, a.EntryTerm)
}

// handleReadIndex answers a node of the previous version, which asks
// over HTTP.
func (s *Store) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	a, err := s.answerReadIndex(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a)
}

// commitReadIndex returns the leader's confirmed commit index and the term
// of its entry, asking the leader over the cluster port when this node is
// a follower; it retries while no leader answers, until ctx ends.
func (s *Store) commitReadIndex(ctx context.Context) (index, entryTerm uint64, err error) {
	backoff := 10 * time.Millisecond
	for {
		if s.cluster.IsLeader() {
			// The leader applies its own commits as Raft hands them on
			// (no catch-up from its log: its Apply callers wait on them).
			index, _, err = s.leaderCommitIndex(ctx)
			entryTerm = 0
		} else {
			index, entryTerm, err = s.askLeader(ctx)
		}
		if err == nil {
			return index, entryTerm, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("read index: %w (%w)", err, ctx.Err())
		case <-s.stop:
			return 0, 0, fmt.Errorf("read index: the store is closed")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// askLeader asks the leader for its read index: over the call channel,
// or over HTTP to a leader of the previous version.
func (s *Store) askLeader(ctx context.Context) (index, entryTerm uint64, err error) {
	out, err := s.cluster.CallLeader(ctx, readIndexCall, nil)
	var a readIndexAnswer
	switch {
	case errors.Is(err, raft.ErrLeaderCallRefused):
		if a, err = s.askLeaderHTTP(ctx); err != nil {
			return 0, 0, err
		}
	case err != nil:
		return 0, 0, err
	default:
		if a, err = decodeReadIndexAnswer(out); err != nil {
			return 0, 0, err
		}
	}
	if a.Now != 0 {
		s.clock.Observe(time.Unix(0, a.Now), a.Term)
	}
	return a.Index, a.EntryTerm, nil
}

func decodeReadIndexAnswer(b []byte) (readIndexAnswer, error) {
	var f [4]uint64 // index, now, term, entry term
	for i := range f {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return readIndexAnswer{}, errors.New("read index answer: malformed")
		}
		f[i], b = v, b[n:]
	}
	if len(b) != 0 {
		return readIndexAnswer{}, errors.New("read index answer: trailing bytes")
	}
	return readIndexAnswer{Index: f[0], Now: int64(f[1]), Term: f[2], EntryTerm: f[3]}, nil
}

func (s *Store) askLeaderHTTP(ctx context.Context) (readIndexAnswer, error) {
	_, addr := s.cluster.Leader()
	if addr == "" {
		return readIndexAnswer{}, errors.New("no leader known")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+readIndexPath, nil)
	if err != nil {
		return readIndexAnswer{}, fmt.Errorf("read index: %w", err)
	}
	resp, err := s.cluster.Client().Do(req)
	if err != nil {
		return readIndexAnswer{}, fmt.Errorf("read index from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return readIndexAnswer{}, fmt.Errorf("read index from %s: %s", addr, resp.Status)
	}
	var a readIndexAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&a); err != nil {
		return readIndexAnswer{}, fmt.Errorf("read index answer: %w", err)
	}
	return a, nil
}
