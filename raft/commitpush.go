package raft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
)

const (
	// commitPushInterval is the shortest time between two commit pushes to
	// a follower: under load it bounds their rate (each append Raft sends
	// carries the commit index anyway).
	commitPushInterval = 2 * time.Millisecond
	// commitPushKeepalive is how often a follower that confirmed the
	// leader's newest commit is told it again. It finds a follower that
	// restarted (its applied index fell back to its snapshot) while no
	// write moved the commit, should Raft's own next append (which carries
	// the commit index, CommitTimeout later) not tell it first: the
	// backstop, so one small request every two seconds per follower.
	commitPushKeepalive = 2 * time.Second
	// commitPushMaxBackoff bounds the wait before a push is retried to a
	// follower that did not confirm one (down, or behind by more than its
	// log holds).
	commitPushMaxBackoff = time.Second
	// commitWaitLog bounds how long a follower waits for its log to hold
	// a pushed commit's entry (the push can overtake the append).
	commitWaitLog = 500 * time.Millisecond
	// commitPushDelay is how long a follower may stay behind the leader's
	// commit before it is pushed: longer than the append of the next write
	// (which carries the commit index) takes to be answered, two fdatasyncs
	// and a round trip, so that under load no push is sent (appendsSeen).
	// Only the last write before a pause needs one, and reads that need it
	// sooner ask for a read index.
	commitPushDelay = 20 * time.Millisecond
)

// commitPushPath is where a follower takes a pushed commit.
const commitPushPath = "/_internal/raft/commit"

// pushTarget is what the leader knows of one follower's commit pushes.
type pushTarget struct {
	acked    uint64    // newest index the follower confirmed applied
	inflight bool      // a push is under way
	fails    int       // pushes in a row the follower did not confirm
	next     time.Time // no push before this (spacing, backoff)
	last     time.Time // when the last push was sent
	behind   time.Time // since when acked is below the leader's commit and still (zero: it is not)
}

// appendsSeen records, for each follower address, the newest index that
// an append it answered successfully told it was committed: the request's
// commit index, capped at the last entry the follower then held (a follower
// applies min(commit index, last log index) on such an append). The commit
// push reads it so as not to push what Raft's own appends already said.
type appendsSeen struct {
	mu sync.Mutex
	m  map[hraft.ServerAddress]uint64
}

// note records what a successful append to target told the follower.
func (s *appendsSeen) note(target hraft.ServerAddress, req *hraft.AppendEntriesRequest, resp *hraft.AppendEntriesResponse) {
	if s == nil || req == nil || resp == nil || !resp.Success {
		return
	}
	held := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		held = req.Entries[n-1].Index
	}
	known := min(req.LeaderCommitIndex, held)
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[hraft.ServerAddress]uint64)
	}
	s.m[target] = max(s.m[target], known)
	s.mu.Unlock()
}

// get is the newest index target was told was committed (0: none).
func (s *appendsSeen) get(target string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[hraft.ServerAddress(target)]
}

// pushDone is the outcome of one push.
type pushDone struct {
	addr  string
	index uint64
	ok    bool // the follower applied index
	old   bool // the follower does not know pushes (an older version)
}

// pushCommits tells each follower of the newest index the leader applied,
// with its term, once what it knows stopped moving for commitPushDelay (at most
// once per commitPushInterval, one push in flight per follower), so that
// it applies it from its own log (router.catchUp) soon: hashicorp/raft
// tells a follower of a commit only with its next append, which for the
// last write before a pause comes CommitTimeout later. A follower that an
// answered append already told (appendsSeen) is not pushed: under load,
// each write's append tells of the one before. A push the follower
// does not confirm (it is down, or its log does not reach the entry) is
// retried with backoff until it is; a follower that confirmed is told
// again every commitPushKeepalive, which finds one that restarted. It runs
// while this node leads (ctx). A follower of an older version answers 404:
// it learns the commit from Raft as before and is only kept alive.
func (c *Cluster) pushCommits(ctx context.Context, r *hraft.Raft) {
	targets := make(map[string]*pushTarget) // follower address -> state
	done := make(chan pushDone)
	inflight := 0
	defer func() { // let the pushes under way end before leaderWG is waited on
		for ; inflight > 0; inflight-- {
			<-done
		}
	}()
	var serversAt time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if now.Sub(serversAt) > time.Second {
			if f := r.GetConfiguration(); f.Error() == nil {
				serversAt = now
				seen := make(map[string]bool)
				for _, s := range f.Configuration().Servers {
					addr := string(s.Address)
					if string(s.ID) == c.cfg.NodeID {
						continue
					}
					seen[addr] = true
					if targets[addr] == nil {
						targets[addr] = &pushTarget{}
					}
				}
				for addr, t := range targets {
					if !seen[addr] && !t.inflight {
						delete(targets, addr)
					}
				}
			}
		}
		idx, term, appliedCh := c.router.applied.waitChTerm()
		wake := now.Add(commitPushKeepalive)
		for addr, t := range targets {
			if t.inflight {
				continue
			}
			if known := c.appends.get(addr); known > t.acked {
				t.acked, t.behind = known, time.Time{} // it moves: wait again
			}
			due := t.last.Add(commitPushKeepalive)
			if t.acked >= idx {
				t.behind = time.Time{}
			} else if term != 0 {
				if t.behind.IsZero() {
					t.behind = now
				}
				if soon := later(t.next, t.behind.Add(commitPushDelay)); soon.Before(due) {
					due = soon
				}
			}
			if due.After(now) {
				if due.Before(wake) {
					wake = due
				}
				continue
			}
			if term == 0 {
				continue
			}
			t.inflight, t.last = true, now
			inflight++
			go func() {
				done <- c.pushCommit(ctx, addr, idx, term)
			}()
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return
		case d := <-done:
			inflight--
			t := targets[d.addr]
			if t == nil {
				continue
			}
			t.inflight = false
			switch {
			case d.ok:
				t.acked = max(t.acked, d.index)
				t.fails, t.next = 0, time.Now().Add(commitPushInterval)
			case d.old:
				t.acked = max(t.acked, d.index) // Raft tells it; do not insist
				t.fails, t.next = 0, time.Now().Add(commitPushKeepalive)
			default:
				t.fails++
				t.next = time.Now().Add(min(commitPushInterval<<min(t.fails, 10), commitPushMaxBackoff))
			}
		case <-appliedCh:
		case <-timer.C:
		}
	}
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pushCommit sends one commit to the follower at addr and reports whether
// it applied it. Failures are only logged at debug: Raft tells the
// follower all the same, later, and the push is retried.
func (c *Cluster) pushCommit(ctx context.Context, addr string, index, term uint64) pushDone {
	d := pushDone{addr: addr, index: index}
	c.pushes.Add(1)
	ctx, cancel := context.WithTimeout(ctx, commitWaitLog+time.Second)
	defer cancel()
	body := encodeIndexTerm(index, term)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+commitPushPath, bytes.NewReader(body))
	if err != nil {
		return d
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			c.log.Debug("push commit", "to", addr, "err", err)
		}
		return d
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	d.ok = resp.StatusCode == http.StatusNoContent
	d.old = resp.StatusCode == http.StatusNotFound
	return d
}

// handleCommit takes a pushed commit: index is committed and its entry has
// term; apply this node's log up to it once the log holds that entry. A
// commit from any leader, current or deposed, is safe to apply: committed
// entries never change. It answers 204 once this node applied index, 202
// when it could not within commitWaitLog (the leader pushes again).
func (c *Cluster) handleCommit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64))
	if err != nil {
		http.Error(w, "read commit: "+err.Error(), http.StatusBadRequest)
		return
	}
	index, term, err := decodeIndexTerm(body, "commit")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !c.cfg.FollowerCatchUp {
		w.WriteHeader(http.StatusNotFound) // Raft tells this node, as before
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), commitWaitLog)
	defer cancel()
	if err := c.waitWritable(ctx, index, term); err != nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// encodeIndexTerm is an index and a term as two uvarints: a pushed commit,
// and the answers of the read index and commit index leader calls.
func encodeIndexTerm(index, term uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, index), term)
}

// decodeIndexTerm reverses encodeIndexTerm; what names what was decoded
// in its errors.
func decodeIndexTerm(b []byte, what string) (index, term uint64, err error) {
	index, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, fmt.Errorf("malformed %s: index", what)
	}
	term, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) {
		return 0, 0, fmt.Errorf("malformed %s: term", what)
	}
	return index, term, nil
}
