//go:build linux

package mount_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files/mount"
	"github.com/cohortserver/cohort/testcluster"
)

// needFUSE skips the test where FUSE cannot be mounted, unless CI is set
// (CI must run these tests: scripts/test.sh installs fuse3).
func needFUSE(t *testing.T) {
	t.Helper()
	if err := mount.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but FUSE is not usable: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// mountDir is where node id's tree is mounted in a test cluster.
func mountDir(cfg *config.Config) string { return cfg.DataDir + ".mnt" }

// mountedCluster starts n nodes, each mounting the tree, and waits until
// every mount is there.
func mountedCluster(t *testing.T, n int, tweak func(*config.Config), opts ...testcluster.Option) (*testcluster.Cluster, map[string]string) {
	t.Helper()
	needFUSE(t)
	dirs := map[string]string{}
	opts = append(opts, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Files.Mount = mountDir(cfg)
		if tweak != nil {
			tweak(cfg)
		}
	}))
	c := testcluster.New(t, n, opts...)
	for _, nd := range c.Nodes() {
		dirs[nd.ID] = filepath.Join(c.Dir(), nd.ID+".mnt")
	}
	waitMounted(t, c)
	return c, dirs
}

func waitMounted(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			n := nd.Node()
			if n == nil || n.FilesMount() == nil {
				return false, nd.ID + " has no mount"
			}
			if err := n.FilesMount().Ready(); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
}
