package node

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cohortserver/cohort/config"
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

// Restore seeds an empty data dir with a backup (GET /_cohort/api/backup)
// as a new one-node cluster of cfg.NodeID at its advertised cluster
// address. A node started on the data dir restores the backed-up state
// and elects itself; more nodes join it with --join.
func Restore(cfg config.Config, r io.Reader) (raft.BackupMeta, error) {
	n := &Node{cfg: cfg}
	if err := n.prepareDataDir(); err != nil {
		return raft.BackupMeta{}, err
	}
	addr := cfg.AdvertiseAddr
	if addr == "" {
		addr = cfg.ClusterAddr
	}
	return raft.SeedFromBackup(raft.Config{
		NodeID: cfg.NodeID, DataDir: cfg.DataDir, BindAddr: cfg.ClusterAddr, Advertise: addr, Logger: cfg.Logger,
	}, r)
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
