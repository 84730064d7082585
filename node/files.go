package node

import (
	"fmt"
	"path/filepath"

	"github.com/cohortserver/cohort/files"
)

// setupFiles wires the shared files: the replicated manifest, the blob
// exchange on the cluster port, the admin API and the background workers.
func (n *Node) setupFiles() error {
	fc := n.cfg.Files
	st, err := files.New(files.Config{
		NodeID:        n.cfg.NodeID,
		Dir:           filepath.Join(n.cfg.DataDir, "files"),
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
