package walstore

import (
	"errors"
	"fmt"
)

// Errors of the package. Each is returned wrapped with context; test with
// errors.Is.
var (
	// ErrCorrupt is data on disk that fails its checks where no crash can
	// explain it: a bad record in a sealed segment, a bad record in the
	// last segment followed by a later write, a gap between segments, a
	// bad segment header or meta file. Open returns a *CorruptError
	// wrapping it and changes nothing on disk.
	ErrCorrupt = errors.New("raft log corrupt")

	// ErrNotContiguous is a StoreLogs whose entries do not follow the last
	// stored index, or do not follow each other.
	ErrNotContiguous = errors.New("raft log entries not contiguous")

	// ErrRange is a DeleteRange that is neither a head (it starts at or
	// below the first index) nor a tail (it ends at or above the last):
	// hashicorp/raft never asks for one.
	ErrRange = errors.New("raft log delete range neither head nor tail")

	// ErrClosed is any call after Close.
	ErrClosed = errors.New("raft log store closed")

	// ErrLocked is Open of a directory another Store (in this or another
	// process) holds open.
	ErrLocked = errors.New("raft log directory in use")

	// ErrNeedsReopen is a write after a tail truncation failed half way
	// (an I/O error, not a full disk): the on-disk state is only known to
	// recovery, so the Store refuses writes until it is closed and opened
	// again. Reads keep working.
	ErrNeedsReopen = errors.New("raft log store must be reopened")
)

// CorruptError is what Open (and GetLog, for a record that fails its
// checksum when read) returns for data that fails its checks: the file,
// the byte offset of the bad data in it, and what is wrong. It wraps
// ErrCorrupt.
type CorruptError struct {
	Path   string // the file
	Offset int64  // byte offset of the bad data in Path
	Reason string // what is wrong, in words
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: %s at offset %d: %s", ErrCorrupt, e.Path, e.Offset, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }
