//go:build !linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Mount is the shared files tree mounted as a FUSE file system. Only Linux
// has it: elsewhere (a developer's macOS running cohort dev, say) every
// other part of cohort works and --files-mount fails with ErrNoFUSE.
type Mount struct {
	cfg Config
	err error
}

// New returns a Mount. It does no I/O.
func New(cfg Config) (*Mount, error) {
	if cfg.Dir == "" || cfg.Store == nil || cfg.TempDir == "" {
		return nil, errors.New("files mount: Dir, Store and TempDir are required")
	}
	return &Mount{cfg: cfg, err: Available()}, nil
}

// SetCommitTimeout changes Config.CommitTimeout.
func (m *Mount) SetCommitTimeout(d time.Duration) { m.cfg.CommitTimeout = d }

// SetCacheTimeout changes Config.CacheTimeout.
func (m *Mount) SetCacheTimeout(d time.Duration) { m.cfg.CacheTimeout = d }

// Dir is the mount point.
func (m *Mount) Dir() string { return m.cfg.Dir }

// Prepare fails: there is no FUSE mount on this system.
func (m *Mount) Prepare() error { return m.err }

// Available reports why this system cannot mount the tree.
func Available() error {
	return fmt.Errorf("%w: --files-mount needs Linux (the kernel's FUSE device); use the HTTP API or run cohort on Linux or in Docker with --device /dev/fuse --cap-add SYS_ADMIN", ErrNoFUSE)
}

// Start fails: there is no FUSE mount on this system.
func (m *Mount) Start(context.Context) error { return m.err }

// Fail records err as the reason the mount is not there.
func (m *Mount) Fail(err error) { m.err = err }

// Status reports that the tree is not mounted, and why.
func (m *Mount) Status() Status {
	return Status{Dir: m.cfg.Dir, Error: m.err.Error(), ApplyLease: "none"}
}

// Ready returns why the tree is not mounted.
func (m *Mount) Ready() error { return m.err }

// Close does nothing: nothing was mounted.
func (m *Mount) Close() error { return nil }

// ClearStale does nothing: no cohort mount can be left here.
func ClearStale(string, *slog.Logger) error { return nil }
