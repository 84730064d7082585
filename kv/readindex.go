package kv

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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
	// Visible is the leader's visible index (raft.Cluster.VisibleIndex):
	// a read shows no entry above it. Only in the call channel's answer to
	// a follower of this version, which says so by sending its request
	// (readIndexRequest); noGate when the leader sent none (a leader of
	// the previous version, whose followers hold no gated lease).
	Visible uint64 `json:"-"`
}

// noGate is the visible index of a leader that gates nothing.
const noGate = math.MaxUint64

// readIndexRequest is what a follower of this version sends with its read
// index call: the index it applied (the leader counts it for its apply
// lease, raft.Cluster.NoteHolderApplied) and the index it needs visible
// (0: none, answer at once).
func readIndexRequest(applied, need uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, applied), need)
}

func decodeReadIndexRequest(b []byte) (applied, need uint64, ok bool) {
	applied, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, false
	}
	need, m := binary.Uvarint(b[n:])
	return applied, need, m > 0 && n+m == len(b)
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

// answerReadIndex is the leader's answer to a follower's read index. With
// need > 0 it first waits until the entry at need is visible.
func (s *Store) answerReadIndex(ctx context.Context, need uint64) (readIndexAnswer, error) {
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
	visible := s.cluster.VisibleIndex()
	if need > visible {
		ctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		var err error
		if visible, err = s.cluster.AwaitVisible(ctx, need); err != nil {
			return readIndexAnswer{}, fmt.Errorf("wait for entry %d to be visible: %w", need, err)
		}
	}
	return readIndexAnswer{Index: idx, Now: s.clock.Local().UnixNano(), Term: s.cluster.Term(), EntryTerm: entryTerm, Visible: visible}, nil
}

// callReadIndex answers the leader call: index, now (its bits), term and
// the entry's term as uvarints, and the visible index to a follower that
// sent a request (one of this version).
func (s *Store) callReadIndex(ctx context.Context, payload []byte) ([]byte, error) {
	var need uint64
	gated := len(payload) > 0
	if gated {
		applied, n, ok := decodeReadIndexRequest(payload)
		if !ok {
			return nil, errors.New("malformed read index request")
		}
		s.cluster.NoteHolderApplied(raft.PeerID(ctx), applied)
		need = n
	}
	a, err := s.answerReadIndex(ctx, need)
	if err != nil {
		return nil, err
	}
	return encodeReadIndexAnswer(a, gated), nil
}

func encodeReadIndexAnswer(a readIndexAnswer, gated bool) []byte {
	b := binary.AppendUvarint(nil, a.Index)
	b = binary.AppendUvarint(b, uint64(a.Now))
	b = binary.AppendUvarint(b, a.Term)
	b = binary.AppendUvarint(b, a.EntryTerm)
	if gated {
		b = binary.AppendUvarint(b, a.Visible)
	}
	return b
}

// handleReadIndex answers a node of the previous version, which asks
// over HTTP.
func (s *Store) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	a, err := s.answerReadIndex(r.Context(), 0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a)
}

// commitReadIndex returns the leader's confirmed commit index, the term
// of its entry and the visible index, asking the leader over the cluster
// port when this node is a follower; it retries while no leader answers,
// until ctx ends.
func (s *Store) commitReadIndex(ctx context.Context) (index, entryTerm, visible uint64, err error) {
	backoff := 10 * time.Millisecond
	for {
		if s.cluster.IsLeader() {
			// The leader applies its own commits as Raft hands them on
			// (no catch-up from its log: its Apply callers wait on them).
			index, _, err = s.leaderCommitIndex(ctx)
			entryTerm, visible = 0, s.cluster.VisibleIndex()
		} else {
			index, entryTerm, visible, err = s.askLeader(ctx, 0)
		}
		if err == nil {
			return index, entryTerm, visible, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, 0, fmt.Errorf("read index: %w (%w)", err, ctx.Err())
		case <-s.stop:
			return 0, 0, 0, fmt.Errorf("read index: the store is closed")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// askLeader asks the leader for its read index, once the entry at need is
// visible (0: at once): over the call channel, or over HTTP to a leader of
// the previous version (whose answer gates nothing: noGate).
func (s *Store) askLeader(ctx context.Context, need uint64) (index, entryTerm, visible uint64, err error) {
	out, err := s.cluster.CallLeader(ctx, readIndexCall, readIndexRequest(s.cluster.AppliedIndex(), need))
	var a readIndexAnswer
	switch {
	case errors.Is(err, raft.ErrLeaderCallRefused):
		if a, err = s.askLeaderHTTP(ctx); err != nil {
			return 0, 0, 0, err
		}
		a.Visible = noGate
	case err != nil:
		return 0, 0, 0, err
	default:
		if a, err = decodeReadIndexAnswer(out); err != nil {
			return 0, 0, 0, err
		}
	}
	if a.Now != 0 {
		s.clock.Report(time.Unix(0, a.Now), a.Term)
	}
	if a.Visible != noGate {
		s.cluster.NoteVisible(a.Visible)
	}
	return a.Index, a.EntryTerm, a.Visible, nil
}

// decodeReadIndexAnswer reads an answer of four numbers (a leader of the
// previous version: Visible is noGate) or five.
func decodeReadIndexAnswer(b []byte) (readIndexAnswer, error) {
	var f [5]uint64 // index, now, term, entry term, visible
	n := 0
	for ; n < len(f) && len(b) > 0; n++ {
		v, m := binary.Uvarint(b)
		if m <= 0 {
			return readIndexAnswer{}, errors.New("read index answer: malformed")
		}
		f[n], b = v, b[m:]
	}
	switch {
	case len(b) != 0:
		return readIndexAnswer{}, errors.New("read index answer: trailing bytes")
	case n == 4:
		f[4] = noGate
	case n != 5:
		return readIndexAnswer{}, errors.New("read index answer: malformed")
	}
	return readIndexAnswer{Index: f[0], Now: int64(f[1]), Term: f[2], EntryTerm: f[3], Visible: f[4]}, nil
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
