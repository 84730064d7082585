//go:build !linux

package walstore

import "os"

// preallocate sizes f as a sparse file: without fallocate, appends
// allocate as they go (and may fail with ENOSPC, which StoreLogs handles).
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }

// datasync flushes f (fsync: no fdatasync here).
func datasync(f *os.File) error { return f.Sync() }

// nextData returns off: without SEEK_DATA everything counts as data.
func nextData(_ *os.File, off, _ int64) int64 { return off }

// nextHole returns end.
func nextHole(_ *os.File, _, end int64) int64 { return end }

// lockFile does nothing: no advisory lock here.
func lockFile(*os.File) error { return nil }
