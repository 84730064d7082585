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

// commitPushInterval is the shortest time between two commit pushes to a
// follower: under load it bounds their rate (each append Raft sends carries
// the commit index anyway), and an idle cluster pushes nothing.
const commitPushInterval = 2 * time.Millisecond

// commitPushPath is where a follower takes a pushed commit.
const commitPushPath = "/_internal/raft/commit"

// pushCommits tells the followers of every index the leader applied, with
// its term, as soon as it moves (at most once per commitPushInterval), so
// that they apply it from their own logs (router.catchUp) at once.
// hashicorp/raft tells a follower of a commit only with its next append,
// which for the last write before a pause comes CommitTimeout later. It
// runs while this node leads (ctx). A follower of an older version answers
// 404, which is ignored: it learns the commit from Raft as before.
func (c *Cluster) pushCommits(ctx context.Context, r *hraft.Raft) {
	var sent uint64
	var mu sync.Mutex
	inflight := make(map[string]bool) // follower address -> push under way
	var servers []hraft.Server
	var serversAt time.Time
	for {
		cur, ch := c.router.applied.waitCh()
		if cur <= sent {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				continue
			}
		}
		if time.Since(serversAt) > time.Second {
			if f := r.GetConfiguration(); f.Error() == nil {
				servers, serversAt = f.Configuration().Servers, time.Now()
			}
		}
		idx, term := c.router.applied.getTerm()
		mu.Lock()
		for _, s := range servers {
			addr := string(s.Address)
			if string(s.ID) == c.cfg.NodeID || inflight[addr] || term == 0 {
				continue
			}
			inflight[addr] = true
			c.leaderWG.Add(1)
			go func() {
				defer c.leaderWG.Done()
				c.pushCommit(ctx, addr, idx, term)
				mu.Lock()
				delete(inflight, addr)
				mu.Unlock()
			}()
		}
		mu.Unlock()
		sent = idx
		select {
		case <-ctx.Done():
			return
		case <-time.After(commitPushInterval):
		}
	}
}

// pushCommit sends one commit to the follower at addr; failures are only
// logged at debug: Raft tells the follower all the same, later.
func (c *Cluster) pushCommit(ctx context.Context, addr string, index, term uint64) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	body := binary.AppendUvarint(binary.AppendUvarint(nil, index), term)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+commitPushPath, bytes.NewReader(body))
	if err != nil {
		return
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			c.log.Debug("push commit", "to", addr, "err", err)
		}
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
}

// handleCommit takes a pushed commit: index is committed and its entry has
// term; apply this node's log up to it if it holds that entry. A commit
// from any leader, current or deposed, is safe to apply: committed entries
// never change.
func (c *Cluster) handleCommit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64))
	if err != nil {
		http.Error(w, "read commit: "+err.Error(), http.StatusBadRequest)
		return
	}
	index, term, err := decodeCommit(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if c.cfg.FollowerCatchUp {
		c.router.catchUp(c.logs, index, term)
	}
	w.WriteHeader(http.StatusNoContent)
}

func decodeCommit(b []byte) (index, term uint64, err error) {
	index, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, fmt.Errorf("malformed commit: index")
	}
	term, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) {
		return 0, 0, fmt.Errorf("malformed commit: term")
	}
	return index, term, nil
}
