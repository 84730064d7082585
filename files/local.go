package files

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// This file is the local view a file system mount (package files/mount)
// needs: answers from this node's applied state without a read barrier,
// the barrier itself, and an attribute change that re-commits the
// current content without sending it again.

// Barrier waits until this node applied the leader's commit index (at
// most 2 s; without a reachable leader it returns at once), so what the
// local view answers afterwards includes every acknowledged write.
func (s *Store) Barrier(ctx context.Context) { s.barrier(ctx) }

// CatchUp is Barrier bounded by limit instead of 2 s, and it says why it
// could not confirm that this node is current (then the local view may
// be stale). On a loaded node the 2 s of Barrier can pass before an apply
// that is on its way.
func (s *Store) CatchUp(ctx context.Context, limit time.Duration) error {
	return s.catchUp(ctx, limit)
}

// Current reports whether this node's applied state already holds every
// write whose commit returned to its caller before the call: on the
// leader (a write returns only once the leader applied it), and on a
// follower holding an apply lease (raft.Cluster.LeaseHeld: the leader
// acknowledges no files command before every holder applied it). Then
// what the local view answers afterwards needs no barrier. On another
// follower it answers false, and asking keeps it asking the leader for a
// lease while it asks.
func (s *Store) Current() bool {
	return s.cfg.Log.IsLeader() || s.cfg.Log.LeaseHeld()
}

// LeaseStatus says how this node answers from its local view, without
// noting a demand as Current does: "leader", "held" (a follower holding
// an apply lease) or "none"; on the leader, holders is how many followers
// hold a lease.
func (s *Store) LeaseStatus() (state string, holders int) {
	held, holders := s.cfg.Log.LeaseStatus()
	switch {
	case s.cfg.Log.IsLeader():
		return "leader", holders
	case held:
		return "held", 0
	}
	return "none", 0
}

// Settle waits until this node applied every command committed before
// the call, and every command this node proposed whose outcome was
// unknown (raft.ErrOutcomeUnknown) if it is to land at all
// (raft.Cluster.Settle): after it, the local view tells whether such a
// write landed, and one that is not in it never will. Unlike Barrier it
// waits for a leader to be elected. (A command forwarded over HTTP, larger
// than the forward channel carries or to a leader of an older version,
// is only covered as far as a read index goes: a caller that sends a
// write again keeps it a compare-and-set.) With a context marked by
// raft.Cluster.Bounded it gives up when the wait budget runs out or this
// node is cut off from its quorum.
func (s *Store) Settle(ctx context.Context) error {
	if err := s.cfg.Log.Settle(ctx); err != nil {
		return fmt.Errorf("files: settle: %w", err)
	}
	return nil
}

// Local returns this node's applied metadata of path (tombstones
// included) without a read barrier. path must be clean (see CleanPath).
func (s *Store) Local(path string) (Info, bool) { return s.state.get(path) }

// IsDir reports whether dir ("" is the root) holds at least one live file
// in this node's applied state.
func (s *Store) IsDir(dir string) bool {
	if dir == "" {
		return true
	}
	s.state.mu.RLock()
	defer s.state.mu.RUnlock()
	return s.state.dirs[dir] > 0
}

// Children returns the live files directly in dir ("" is the root) and
// the names of its subdirectories, from this node's applied state.
func (s *Store) Children(dir string) (files []Info, dirs []string) {
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	s.state.mu.RLock()
	defer s.state.mu.RUnlock()
	for p, in := range s.state.files {
		if in.Deleted || !strings.HasPrefix(p, prefix) || strings.Contains(p[len(prefix):], "/") {
			continue
		}
		files = append(files, *in)
	}
	for d := range s.state.dirs {
		if strings.HasPrefix(d, prefix) && !strings.Contains(d[len(prefix):], "/") {
			dirs = append(dirs, d[len(prefix):])
		}
	}
	return files, dirs
}

// SetAttr commits a new mode and modification time for path, keeping its
// content: the command names the current blob and holders, so nothing is
// sent again. It is a compare-and-set on the version in cur (the caller's
// view of the file); a zero mtime keeps the current one.
func (s *Store) SetAttr(ctx context.Context, cur Info, mode fs.FileMode, mtime time.Time) (Info, error) {
	if cur.Deleted || cur.SHA256 == "" {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, cur.Path)
	}
	if mtime.IsZero() {
		mtime = cur.ModTime
	}
	v := cur.Version
	cmd := putCmd{Path: cur.Path, SHA256: cur.SHA256, Size: cur.Size, Mode: uint32(mode.Perm()),
		IfVersion: &v, Holders: cur.Holders, MaxBytes: s.cfg.MaxBytes, MTime: &mtime}
	return s.apply(ctx, cmdPut, cmd)
}
