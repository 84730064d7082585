package files

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cohortserver/cohort/raft"
)

// Errors of the shared files. Errors that cross Raft (a refused command
// proposed on another node) are mapped back to these by their code.
var (
	// ErrBadPath is a path that is not valid (see CleanPath).
	ErrBadPath = errors.New("invalid path")
	// ErrNotFound is a path that holds no file (never written or deleted).
	ErrNotFound = errors.New("no such file")
	// ErrVersionMismatch is a compare-and-set whose expected version is
	// not the file's current version.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrFileTooLarge is a file over the per-file limit (--files-max-file-bytes).
	ErrFileTooLarge = errors.New("file too large")
	// ErrQuotaExceeded is a write that would take the shared directory over
	// its total limit (--files-max-bytes).
	ErrQuotaExceeded = errors.New("shared files quota exceeded")
	// ErrNoQuorum is a write whose content could not be stored on a
	// quorum of nodes; nothing was committed.
	ErrNoQuorum = errors.New("the file could not be stored on a quorum of nodes")
	// ErrCorrupt is a blob whose content does not match its SHA-256.
	ErrCorrupt = errors.New("blob content does not match its sha-256")
	// ErrUnavailable is a file whose content no reachable node holds.
	ErrUnavailable = errors.New("no reachable node holds the file's content")
	// ErrConflict is a path that collides with the tree: a file where a
	// directory of other files is, or a directory where a file is.
	ErrConflict = errors.New("path conflicts with an existing file or directory")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("files store is closed")
	// ErrDiskFull is a write this node's disk cannot take: less than
	// diskReserve free before the write, or ENOSPC while storing content.
	// It names the node and its directory and wraps syscall.ENOSPC;
	// nothing was committed. HTTP answers it with 507.
	ErrDiskFull = errors.New("disk full")
)

var codes = map[string]error{
	"files.bad_path":  ErrBadPath,
	"files.not_found": ErrNotFound,
	"files.version":   ErrVersionMismatch,
	"files.too_large": ErrFileTooLarge,
	"files.quota":     ErrQuotaExceeded,
	"files.conflict":  ErrConflict,
}

// noSpace adds to an ENOSPC error which node and directory ran out of
// space and what to do.
func (s *Store) noSpace(err error) error {
	if err == nil || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrDiskFull) {
		return err
	}
	return fmt.Errorf("%w: node %s, %s: %w; free space on that disk", ErrDiskFull, s.cfg.NodeID, s.cfg.Dir, err)
}

// diskReserve is the free space a node needs to take a write through it:
// room for the Raft log entry (bbolt grows its file in steps) and for the
// blob of a small file.
const diskReserve = 1 << 20

// checkSpace refuses, before any byte is read or anything is committed, a
// write of size bytes (negative: unknown) that this node's disk cannot
// take. Without it a small file proposed through a full node would be
// committed by the others while this node could not apply it.
func (s *Store) checkSpace(size int64) error {
	free, ok := freeSpace(s.cfg.Dir)
	if !ok {
		return nil
	}
	need := int64(diskReserve) + max(size, 0)
	if free >= need {
		return nil
	}
	return fmt.Errorf("%w: node %s has %d bytes free in %s, a write through it needs at least %d: %w; free space on that disk, or write through another node",
		ErrDiskFull, s.cfg.NodeID, free, s.cfg.Dir, need, syscall.ENOSPC)
}

// codedError carries a sentinel through raft.ApplyError.
type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string     { return e.err.Error() }
func (e *codedError) Unwrap() error     { return e.err }
func (e *codedError) ApplyCode() string { return e.code }

var _ raft.CodedError = (*codedError)(nil)

func refuse(code, format string, args ...any) error {
	return &codedError{code: code, err: fmt.Errorf("%w: "+format, append([]any{codes[code]}, args...)...)}
}

// fromApply maps an *raft.ApplyError back to this package's sentinels.
func fromApply(err error) error {
	var ae *raft.ApplyError
	if errors.As(err, &ae) {
		if s, ok := codes[ae.Code]; ok {
			return &codedError{code: ae.Code, err: fmt.Errorf("%w%s", s, trimPrefix(ae.Message, s.Error()))}
		}
	}
	return err
}

func trimPrefix(msg, p string) string {
	if len(msg) >= len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return ": " + msg
}
