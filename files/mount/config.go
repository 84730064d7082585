package mount

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cohortserver/cohort/files"
)

// Errors of the mount.
var (
	// ErrNoFUSE is a host without /dev/fuse (or without the rights to
	// mount): the error names what to do.
	ErrNoFUSE = errors.New("FUSE is not available")
	// ErrBusy is a mount point where something other than a cohort mount
	// is mounted.
	ErrBusy = errors.New("mount point is in use")
)

// fsName is the file system type the kernel shows ("fuse.cohort").
const fsName = "cohort"

// Config configures a Mount.
type Config struct {
	// Dir is the mount point; created when missing. Required.
	Dir string
	// Store is this node's shared files. Required.
	Store *files.Store
	// TempDir holds the files being written (one temp file per open
	// handle). Required; emptied at Start.
	TempDir string
	// Logger receives the mount's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// CommitTimeout bounds each commit (close, fsync, create, rename,
	// unlink...); when it expires without a quorum the call fails with
	// EIO and nothing changes. If 0, 15 s.
	CommitTimeout time.Duration
	// Bound, if set, marks a commit's context with the cluster's wait
	// budget (raft.Cluster.Bounded), so that a close on a node cut off
	// from its quorum fails with EIO at once instead of after
	// CommitTimeout.
	Bound func(context.Context) context.Context
	// CacheTimeout is how long the kernel may cache names and attributes
	// before asking again; changes applied on this node invalidate them
	// at once. If 0, 1 s.
	CacheTimeout time.Duration
	// NoPassthrough reads large files through this process even where the
	// kernel offers FUSE passthrough (passthrough.go), as on kernels
	// before 6.9.
	NoPassthrough bool
}

// Status is the state of the mount, for /_cohort/status.
type Status struct {
	Dir     string `json:"dir"`
	Mounted bool   `json:"mounted"`
	Error   string `json:"error,omitempty"`
	// ApplyLease is how this node answers lookups and opens: "leader" and
	// "held" (a follower with an apply lease) from its own state, "none"
	// after asking the leader (a follower whose mount was idle for 1 s,
	// or cut off).
	ApplyLease string `json:"apply_lease"`
	// LeaseHolders, on the leader, is how many followers hold an apply
	// lease: files writes wait for them to apply.
	LeaseHolders int `json:"lease_holders,omitempty"`
	// Passthrough says whether the kernel reads large files' blobs itself
	// (FUSE passthrough, kernel 6.9 and root) instead of through cohort.
	Passthrough bool `json:"passthrough"`
	// PassthroughOpens counts the read handles the kernel read itself;
	// InodeSwaps the names given a new inode so that an open could not
	// conflict with the passthrough handles of the old one.
	PassthroughOpens uint64 `json:"passthrough_opens"`
	InodeSwaps       uint64 `json:"inode_swaps"`
}
