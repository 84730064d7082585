package walstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	hraft "github.com/hashicorp/raft"
)

// migratingSuffix names the directory Upgrade migrates into.
const migratingSuffix = ".migrating"

// Upgrade opens the log in dir, first filling it from src when dir does
// not exist yet: the entries of src (a raft-boltdb store that held the
// log before) are copied with MigrateFrom into dir+".migrating", which is
// removed first if an earlier attempt left it, and renamed to dir once
// complete and closed; the parent directory is synced. An interrupted
// upgrade therefore leaves either no dir (the next start migrates again)
// or a complete one. Once dir exists, src is not read again: the log is
// in dir from then on, and src's log entries are stale (the caller may
// delete them to free their pages). A nil src, or an empty one, opens a
// new log in dir.
func Upgrade(dir string, opts Options, src hraft.LogStore) (*Store, error) {
	_, err := os.Stat(dir)
	if err == nil {
		return Open(dir, opts)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	if src != nil {
		if last, err := src.LastIndex(); err != nil {
			return nil, fmt.Errorf("upgrade raft log: last index of the old log: %w", err)
		} else if last > 0 {
			if err := migrateDir(dir, opts, src); err != nil {
				return nil, err
			}
		}
	}
	return Open(dir, opts)
}

// migrateDir copies src into dir+".migrating" and renames it to dir.
func migrateDir(dir string, opts Options, src hraft.LogStore) error {
	tmp := dir + migratingSuffix
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("upgrade raft log: remove an unfinished copy: %w", err)
	}
	s, err := Open(tmp, opts)
	if err != nil {
		return fmt.Errorf("upgrade raft log: %w", err)
	}
	if err := MigrateFrom(src, s); err != nil {
		s.Close()
		return fmt.Errorf("upgrade raft log into %s: %w", tmp, err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("upgrade raft log: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("upgrade raft log: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// migrateBatch bounds one StoreLogs of MigrateFrom: entries, and bytes of
// Data and Extensions.
const (
	migrateBatch      = 512
	migrateBatchBytes = 4 << 20
)

// MigrateFrom copies every entry of src (FirstIndex to LastIndex) into
// dst, so that dst then holds exactly src's log; src is only read.
//
// A log store that is not monotonic (raft-boltdb) can hold a gap: after a
// follower installed a snapshot, hashicorp/raft kept some entries below
// the snapshot and appended after it. Entries before the last gap are
// covered by that snapshot and are not copied: dst holds the contiguous
// run that ends at src's last index, as hashicorp/raft itself leaves a
// monotonic store after installing a snapshot.
//
// MigrateFrom may be interrupted and called again: when dst already holds
// the beginning of that run (as an interrupted call left it) it goes on
// from there; when dst holds anything else, it empties dst first. To make
// a data dir's switch atomic, migrate into a fresh directory and rename
// it into place once MigrateFrom returned nil and dst is closed (see the
// package example).
func MigrateFrom(src hraft.LogStore, dst *Store) error {
	first, err := src.FirstIndex()
	if err != nil {
		return fmt.Errorf("migrate raft log: first index of the source: %w", err)
	}
	last, err := src.LastIndex()
	if err != nil {
		return fmt.Errorf("migrate raft log: last index of the source: %w", err)
	}
	if last == 0 {
		return resetDst(dst)
	}
	next, err := resumeAt(src, dst, first, last)
	if err != nil {
		return err
	}
	var (
		batch []*hraft.Log
		size  int // bytes of Data and Extensions in batch
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := dst.StoreLogs(batch); err != nil {
			return fmt.Errorf("migrate raft log: store entries %d-%d: %w", batch[0].Index, batch[len(batch)-1].Index, err)
		}
		batch, size = batch[:0], 0
		return nil
	}
	for i := next; i <= last; i++ {
		l := new(hraft.Log)
		err := src.GetLog(i, l)
		if errors.Is(err, hraft.ErrLogNotFound) {
			// A gap: what came before it is superseded by a snapshot.
			batch, size = batch[:0], 0
			if err := resetDst(dst); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("migrate raft log: read entry %d: %w", i, err)
		}
		batch = append(batch, l)
		size += len(l.Data) + len(l.Extensions)
		if len(batch) >= migrateBatch || size >= migrateBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if got, _ := dst.LastIndex(); got != last {
		return fmt.Errorf("migrate raft log: the copy ends at %d, the source at %d", got, last)
	}
	return nil
}

// resumeAt returns the index MigrateFrom copies from: src's first index
// into an empty dst, or the one after dst's last when dst holds the start
// of a run of src (checked at both ends); otherwise it empties dst.
func resumeAt(src hraft.LogStore, dst *Store, first, last uint64) (uint64, error) {
	dFirst, err := dst.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("migrate raft log: %w", err)
	}
	dLast, err := dst.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("migrate raft log: %w", err)
	}
	if dLast == 0 {
		return first, nil
	}
	if dFirst >= first && dLast <= last && sameEntry(src, dst, dFirst) && sameEntry(src, dst, dLast) {
		var before hraft.Log
		if dFirst == first || errors.Is(src.GetLog(dFirst-1, &before), hraft.ErrLogNotFound) {
			return dLast + 1, nil
		}
	}
	return first, resetDst(dst)
}

// sameEntry reports whether src and dst hold the same entry at i.
func sameEntry(src hraft.LogStore, dst *Store, i uint64) bool {
	var a, b hraft.Log
	if src.GetLog(i, &a) != nil || dst.GetLog(i, &b) != nil {
		return false
	}
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions)
}

// resetDst empties dst.
func resetDst(dst *Store) error {
	first, err := dst.FirstIndex()
	if err != nil {
		return fmt.Errorf("migrate raft log: %w", err)
	}
	last, err := dst.LastIndex()
	if err != nil {
		return fmt.Errorf("migrate raft log: %w", err)
	}
	if last == 0 {
		return nil
	}
	if err := dst.DeleteRange(first, last); err != nil {
		return fmt.Errorf("migrate raft log: empty the destination: %w", err)
	}
	return nil
}
