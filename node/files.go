package node

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/files/mount"
)

// setupFiles wires the shared files: the replicated manifest, the blob
// exchange on the cluster port, the admin API and the background workers.
func (n *Node) setupFiles() error {
	fc := n.cfg.Files
	st, err := files.New(files.Config{
		NodeID:        n.cfg.NodeID,
		Dir:           filesDir(n.cfg.DataDir),
		Log:           n.cluster,
		Healthy:       n.members.Healthy,
		Logger:        n.log,
		MaxBytes:      fc.MaxBytes,
		MaxFileBytes:  fc.MaxFileBytes,
		MirrorDir:     fc.MirrorDir,
		GCGrace:       fc.GCGrace,
		ScrubInterval: fc.ScrubInterval,
		ScrubRate:     fc.ScrubRate,
	})
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	n.files = st
	n.OnStart(st.Start, st.Close)
	n.HandleAdmin("GET /_cohort/api/files", st.HandleList)
	n.HandleAdmin("/_cohort/api/files/{path...}", st.HandleFile)
	n.HandleAdmin("GET /_cohort/api/files-status", st.HandleStatus)
	n.HandleAdmin("POST /_cohort/api/files-scrub", st.HandleScrub)
	return nil
}

// Files returns the shared files of this node.
func (n *Node) Files() *files.Store { return n.files }

// setupFilesMount wires --files-mount: FUSE is checked and a stale mount
// cleared at Start (a clear error when /dev/fuse is missing); the tree is
// mounted once the node has caught up with the cluster, so a program never
// sees an old tree; /_cohort/ready waits for the mount and status reports
// it; Close unmounts it before the store closes.
func (n *Node) setupFilesMount() error {
	dir := n.cfg.Files.Mount
	if dir == "" {
		return nil
	}
	m, err := mount.New(mount.Config{
		Dir:     dir,
		Store:   n.files,
		TempDir: filepath.Join(n.cfg.DataDir, "files-mount"),
		Logger:  n.log,
		Bound:   func(ctx context.Context) context.Context { return n.cluster.Bounded(ctx, "files-mount") },
	})
	if err != nil {
		return err
	}
	n.filesMount = m
	n.OnStart(func(ctx context.Context) error {
		if err := m.Prepare(); err != nil {
			return err
		}
		n.goBackground(func() {
			select {
			case <-n.caughtUp:
			case <-ctx.Done():
				return
			}
			if err := m.Start(ctx); err != nil && ctx.Err() == nil {
				n.log.Error("files mount failed", "dir", m.Dir(), "err", err)
			}
		})
		return nil
	}, m.Close)
	n.AddReadyCheck(func(context.Context) error { return m.Ready() })
	return nil
}

// FilesMount returns the FUSE mount of the shared files, nil without
// --files-mount.
func (n *Node) FilesMount() *mount.Mount { return n.filesMount }

// filesDir is where a node's blob store lives in its data dir.
func filesDir(dataDir string) string { return filepath.Join(dataDir, "files") }
