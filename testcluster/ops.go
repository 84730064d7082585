package testcluster

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
)

// NewRestored starts a one-node cluster "n1" whose data dir was seeded
// from backup (node.Restore, as `cohort restore` does) instead of
// bootstrapping from --peers. Grow it with AddNode.
func NewRestored(t testing.TB, backup []byte, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, dir: t.TempDir(), faults: raft.NewFaults()}
	for _, o := range opts {
		o(c)
	}
	c.initSecrets(t)
	nd := c.newNode("n1")
	t.Cleanup(c.closeAll)
	cfg := nd.cfg
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	if _, err := node.Restore(cfg, bytes.NewReader(backup)); err != nil {
		t.Fatalf("restore n1 from backup: %v", err)
	}
	if err := nd.start(); err != nil {
		t.Fatalf("start restored n1: %v", err)
	}
	c.WaitLeader(t)
	return c
}

// initSecrets writes the cluster key and admin token files New writes.
func (c *Cluster) initSecrets(t testing.TB) {
	c.logger = slog.New(newTestHandler(t, nil))
	c.key = filepath.Join(c.dir, "cluster.key")
	c.token = "test-admin-token-0123456789abcdef"
	must(t, os.WriteFile(c.key, []byte("test-cluster-key-0123456789abcdef\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(c.dir, "admin.token"), []byte(c.token+"\n"), 0o600))
}

// RegisterKV registers a fresh test KV on n, as WithKV does on running
// nodes; offline tools (node.RecoverWith) need the same machines.
func RegisterKV(n *node.Node) error {
	return n.Cluster().Register("test-kv", newKV(), kvCmd)
}
