package files

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// internalExists answers what the leader's applied state holds for a
// path: a live file or a directory there, and the version of its entry.
// Nodes ask it as the leader call existsCall; over HTTP only a leader of
// the previous version.
const internalExists = "/_internal/files/exists"

// existsCall is internalExists as a leader call (raft.CallLeader): the
// payload is the clean path, the answer encodeWire's.
const existsCall = "files.exists"

// Entry is what this node's applied state holds for a path, as a lookup
// sees it, read in one step (Store.Entry).
type Entry struct {
	// Info is the file at the path: live, a tombstone (Deleted), or the
	// zero Info when the path never held a file.
	Info Info
	// Dir is set when the path is a directory (live files sit under it).
	Dir bool
}

// Live reports whether the path holds a live file.
func (e Entry) Live() bool { return e.Info.Version != 0 && !e.Info.Deleted }

// wire is an Entry as the leader sends it: enough to tell whether two
// nodes answer a lookup alike.
type wire struct {
	Exists  bool   `json:"exists"`
	Dir     bool   `json:"dir"`
	Version uint64 `json:"version"` // the entry's, a tombstone's too; 0: none
}

func (e Entry) wire() wire {
	if e.Live() {
		return wire{Exists: true, Version: e.Info.Version}
	}
	return wire{Exists: e.Dir, Dir: e.Dir, Version: e.Info.Version}
}

// Entry returns this node's applied state for path (clean), the file and
// whether it is a directory read together, without a read barrier.
func (s *Store) Entry(path string) Entry {
	s.state.mu.RLock()
	defer s.state.mu.RUnlock()
	var e Entry
	if in := s.state.files[path]; in != nil {
		e.Info = *in
	}
	e.Dir = path == "" || s.state.dirs[path] > 0
	return e
}

// encodeWire is w as a leader call's answer: a flags byte (1: exists,
// 2: dir) and the version as a uvarint.
func encodeWire(w wire) []byte {
	var flags byte
	if w.Exists {
		flags |= 1
	}
	if w.Dir {
		flags |= 2
	}
	return binary.AppendUvarint([]byte{flags}, w.Version)
}

func decodeWire(b []byte) (wire, error) {
	if len(b) < 2 || b[0]&^3 != 0 {
		return wire{}, errors.New("malformed exists answer")
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 || 1+n != len(b) {
		return wire{}, errors.New("malformed exists answer: version")
	}
	return wire{Exists: b[0]&1 != 0, Dir: b[0]&2 != 0, Version: v}, nil
}

// callExists answers the leader call existsCall.
func (s *Store) callExists(_ context.Context, payload []byte) ([]byte, error) {
	p, err := CleanPath(string(payload))
	if err != nil {
		return nil, err
	}
	return encodeWire(s.Entry(p).wire()), nil
}

func (s *Store) handleExists(w http.ResponseWriter, r *http.Request) {
	s.httpExists.Add(1)
	p, err := CleanPath(r.URL.Query().Get("path"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.Entry(p).wire())
}

// SameAtLeader reports whether the leader holds for path (clean) the
// entry here (read with Entry) — the same version of a live file, or, as
// here, no live file with the same tombstone (or none) and a directory
// there or not — without waiting for this node to apply the leader's
// commit index. Every write whose commit has returned to its caller is
// applied on the leader (a forwarded write returns only after the leader
// applied it), so answering from a confirmed entry is what a read barrier
// followed by a local lookup would have answered, and a later
// compare-and-set on it starts from the right version, at the cost of one
// round trip instead of a round trip plus the wait for this node's next
// append. Answer from here itself, not from a new read of the local
// state: that may have moved meanwhile to a state the leader has already
// left (a directory made and removed, applied here half-way). On the
// leader it answers true at once. It returns false, nil when the entries
// differ, and an error when the leader could not be asked; in both cases
// catch up (CatchUp) and look locally.
func (s *Store) SameAtLeader(ctx context.Context, path string, here Entry, limit time.Duration) (bool, error) {
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
	out, err := s.cfg.Log.CallLeader(ctx, existsCall, []byte(path))
	var there wire
	switch {
	case errors.Is(err, raft.ErrLeaderCallRefused):
		if there, err = existsHTTP(ctx, client, addr, path); err != nil {
			return false, err
		}
	case err != nil:
		return false, fmt.Errorf("ask the leader about %s: %w", path, err)
	default:
		if there, err = decodeWire(out); err != nil {
			return false, fmt.Errorf("ask the leader about %s: %w", path, err)
		}
	}
	return there == here.wire(), nil
}

// existsHTTP asks a leader of the previous version what it holds for path.
func existsHTTP(ctx context.Context, client *http.Client, addr, path string) (wire, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+internalExists+"?path="+url.QueryEscape(path), nil)
	if err != nil {
		return wire{}, fmt.Errorf("ask the leader about %s: %w", path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return wire{}, fmt.Errorf("ask the leader about %s: %w", path, err)
	}
	defer resp.Body.Close()
	var there wire
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&there) != nil {
		return wire{}, fmt.Errorf("ask the leader about %s: it answered %s", path, resp.Status)
	}
	return there, nil
}
