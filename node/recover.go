package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/raft"
)

// Recover rewrites the Raft configuration held in cfg.DataDir to peers,
// offline, after a quorum loss (hashicorp/raft's peers.json procedure):
// the node's state machines are built exactly as New builds them, the
// latest snapshot and the log after it are applied to them, and a new
// snapshot carrying the new configuration replaces the old one. The node
// must be stopped and its data intact; peers must name it. Start it
// afterwards with `cohort serve` (its --peers are ignored) and grow the
// cluster with --join.
func Recover(cfg config.Config, peers []config.Peer) error {
	return RecoverWith(cfg, peers, nil)
}

// RecoverWith is Recover with setup run on the node after New, for
// programs (and tests) that register extra state machines on their nodes
// the way they do before Start: the recovery must apply the log with the
// same machines.
func RecoverWith(cfg config.Config, peers []config.Peer, setup func(*Node) error) error {
	if err := ownedDataDir(cfg); err != nil {
		return err
	}
	self := false
	for _, p := range peers {
		self = self || p.ID == cfg.NodeID
	}
	if !self {
		return fmt.Errorf("--peers: the new configuration must name this node %q", cfg.NodeID)
	}
	n, err := New(cfg)
	if err != nil {
		return err
	}
	if setup != nil {
		if err := setup(n); err != nil {
			return fmt.Errorf("recover: setup: %w", err)
		}
	}
	return n.cluster.Recover(toRaftPeers(peers))
}

// RestoreResult is what Restore put into a data dir.
type RestoreResult struct {
	raft.BackupMeta
	// Blobs counts the file contents written to the blob store.
	Blobs files.BackupSummary `json:"blobs"`
	// NoContents is set for a backup in the old format (COHORT-BACKUP 1),
	// which holds the files' metadata but not their contents.
	NoContents bool `json:"no_contents,omitempty"`
}

// Restore seeds an empty data dir with a backup (GET /_cohort/api/backup)
// as a new one-node cluster of cfg.NodeID at its advertised cluster
// address, and writes the files' contents the backup holds into the data
// dir's blob store (each verified against its SHA-256). A node started on
// the data dir restores the backed-up state and elects itself; more nodes
// join it with --join and fetch the contents from it. A backup of the old
// format restores the state without contents (NoContents). When the blob
// section fails, the data dir holds a partial restore: empty it and retry.
func Restore(cfg config.Config, r io.Reader) (RestoreResult, error) {
	var res RestoreResult
	n := &Node{cfg: cfg}
	if err := n.prepareDataDir(); err != nil {
		return res, err
	}
	addr := cfg.AdvertiseAddr
	if addr == "" {
		addr = cfg.ClusterAddr
	}
	br := bufio.NewReaderSize(r, 256<<10)
	meta, err := raft.SeedFromBackup(raft.Config{
		NodeID: cfg.NodeID, DataDir: cfg.DataDir, BindAddr: cfg.ClusterAddr, Advertise: addr, Logger: cfg.Logger,
	}, br)
	res.BackupMeta = meta
	if err != nil {
		return res, err
	}
	switch meta.Tail {
	case "":
		res.NoContents = true
		return res, nil
	case files.BackupTail:
	default:
		return res, fmt.Errorf("backup holds %q after its state, which this version cannot read: restore it with a newer cohort", meta.Tail)
	}
	res.Blobs, err = files.RestoreBlobs(context.Background(), filesDir(cfg.DataDir), br)
	if err != nil {
		return res, fmt.Errorf("restore file contents into %s (the data dir now holds a partial restore: empty it before retrying): %w", cfg.DataDir, err)
	}
	return res, nil
}

// ownedDataDir checks that cfg.DataDir exists and belongs to cfg.NodeID.
func ownedDataDir(cfg config.Config) error {
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "raft", "raft.db")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--data-dir %s holds no raft state to recover", cfg.DataDir)
		}
		return fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	n := &Node{cfg: cfg}
	return n.prepareDataDir()
}
