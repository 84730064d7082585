package files

import (
	"errors"
	"fmt"

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
)

var codes = map[string]error{
	"files.bad_path":  ErrBadPath,
	"files.not_found": ErrNotFound,
	"files.version":   ErrVersionMismatch,
	"files.too_large": ErrFileTooLarge,
	"files.quota":     ErrQuotaExceeded,
	"files.conflict":  ErrConflict,
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
