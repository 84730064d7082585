package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// internalExists answers whether a path names a live file or a directory
// in the leader's applied state.
const internalExists = "/_internal/files/exists"

// exists reports whether p names a live file or a directory in this
// node's applied state, and the version of its entry (a tombstone's
// too; 0 when there is none).
func (s *Store) exists(p string) (bool, uint64) {
	in, ok := s.state.get(p)
	if ok && !in.Deleted {
		return true, in.Version
	}
	return s.IsDir(p), in.Version
}

func (s *Store) handleExists(w http.ResponseWriter, r *http.Request) {
	p, err := CleanPath(r.URL.Query().Get("path"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ok, v := s.exists(p)
	writeJSON(w, http.StatusOK, map[string]any{"exists": ok, "version": v})
}

// AbsentAtLeader reports whether the leader confirms that path (clean)
// names neither a live file nor a directory and that its entry there (a
// tombstone, or none) is the one this node holds, without waiting for
// this node to apply the leader's commit index. Every write whose commit
// has returned to its caller is applied on the leader (a forwarded write
// returns only after the leader applied it), so a confirmed absence is
// what a read barrier followed by a local lookup would have answered, and
// this node's entry for path is then current (a later compare-and-set on
// it starts from the right version), at the cost of one round trip
// instead of a round trip plus the wait for this node's next append. On
// the leader it answers from the local state. It returns false, nil when
// the path exists or the entries differ, and an error when the leader
// could not be asked; in both cases catch up (CatchUp) and look locally.
func (s *Store) AbsentAtLeader(ctx context.Context, path string, limit time.Duration) (bool, error) {
	here, version := s.exists(path)
	if here {
		return false, nil
	}
	if s.cfg.Log.IsLeader() {
		return true, nil
	}
	_, addr := s.cfg.Log.Leader()
	client := s.cfg.Log.Client()
	if addr == "" || client == nil {
		return false, errors.New("no leader known")
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+internalExists+"?path="+url.QueryEscape(path), nil)
	if err != nil {
		return false, fmt.Errorf("ask the leader about %s: %w", path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("ask the leader about %s: %w", path, err)
	}
	defer resp.Body.Close()
	var ans struct {
		Exists  bool   `json:"exists"`
		Version uint64 `json:"version"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ans) != nil {
		return false, fmt.Errorf("ask the leader about %s: it answered %s", path, resp.Status)
	}
	return !ans.Exists && ans.Version == version, nil
}
