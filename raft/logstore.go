package raft

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/cohortserver/cohort/raft/walstore"
)

// watchedStore is the Raft log (walstore) and stable store (bbolt) with a
// memory of whether its last log write failed: a full or failing disk.
// hashicorp/raft only logs such a failure (a follower rejects the
// entries, a leader steps down) and hides the cause behind %q, so the
// cluster asks this store instead: a node that cannot write its log
// refuses to propose commands it could not apply, and says why (see
// Cluster.LogWriteErr).
type watchedStore struct {
	*walstore.Store // FirstIndex, LastIndex, GetLog, DeleteRange, IsMonotonic
	stable          *raftboltdb.BoltStore
	path            string

	// onChange, if set, is called (on the goroutine that wrote) when log
	// writes start failing (true) and when they succeed again (false).
	onChange func(failing bool)
	stages   stageFn // test seam, set before Start

	mu     sync.Mutex
	grew   chan struct{} // closed by the next successful log write
	last   uint64        // last index of the last successful log write
	err    error         // cause of the last failed log write; nil once one succeeds
	since  time.Time     // first failure of the current run of failures
	failed chan struct{} // closed when writes start failing; replaced on success
}

var (
	_ hraft.LogStore          = (*watchedStore)(nil)
	_ hraft.StableStore       = (*watchedStore)(nil)
	_ hraft.MonotonicLogStore = (*watchedStore)(nil) // the log cache asks; a follower stalls after a snapshot install without it
)

func newWatchedStore(d *diskStores) *watchedStore {
	last, _ := d.log.LastIndex()
	return &watchedStore{Store: d.log, stable: d.stable, path: filepath.Join(d.dir, "wal"), failed: make(chan struct{}), last: last}
}

// Set implements hraft.StableStore.
func (s *watchedStore) Set(key, val []byte) error { return s.stable.Set(key, val) }

// Get implements hraft.StableStore.
func (s *watchedStore) Get(key []byte) ([]byte, error) { return s.stable.Get(key) }

// SetUint64 implements hraft.StableStore.
func (s *watchedStore) SetUint64(key []byte, val uint64) error {
	s.stages.mark(stageStableSet, val)
	return s.stable.SetUint64(key, val)
}

// GetUint64 implements hraft.StableStore.
func (s *watchedStore) GetUint64(key []byte) (uint64, error) { return s.stable.GetUint64(key) }

// StoreLog implements hraft.LogStore.
func (s *watchedStore) StoreLog(l *hraft.Log) error {
	return s.record(s.Store.StoreLogs([]*hraft.Log{l}), l.Index)
}

// StoreLogs implements hraft.LogStore.
func (s *watchedStore) StoreLogs(logs []*hraft.Log) error {
	if len(logs) == 0 {
		return s.record(s.Store.StoreLogs(logs), 0)
	}
	if s.stages != nil {
		s.stages.mark(stageStoreStart, logs[0].Index)
		defer s.stages.mark(stageStoreEnd, logs[len(logs)-1].Index)
	}
	return s.record(s.Store.StoreLogs(logs), logs[len(logs)-1].Index)
}

// record remembers the outcome of a log write whose last entry is last.
func (s *watchedStore) record(err error, last uint64) error {
	s.mu.Lock()
	if err == nil && last > 0 {
		s.last = last // a suffix rewritten after a conflict can be shorter
		if s.grew != nil {
			close(s.grew)
			s.grew = nil
		}
	}
	changed := (err != nil) != (s.err != nil)
	switch {
	case err != nil && s.err == nil:
		s.err, s.since = err, time.Now()
		close(s.failed)
	case err != nil:
		s.err = err
	case s.err != nil:
		s.err = nil
		s.failed = make(chan struct{})
	}
	s.mu.Unlock()
	if changed && s.onChange != nil {
		s.onChange(err != nil)
	}
	return err
}

// grewCh returns a channel closed by the next successful log write, and
// the last index of the last one (at Start: of the log).
func (s *watchedStore) grewCh() (<-chan struct{}, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew == nil {
		s.grew = make(chan struct{})
	}
	return s.grew, s.last
}

// state returns a channel closed once log writes fail, and the failure
// (nil when the last log write succeeded) as an error wrapping
// ErrLogUnwritable and the cause.
func (s *watchedStore) state() (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return s.failed, nil
	}
	return s.failed, fmt.Errorf("%w: %w (raft log %s, failing for %s); free space on that disk: the node catches up by itself once it can write again",
		ErrLogUnwritable, s.err, s.path, time.Since(s.since).Round(time.Second))
}
