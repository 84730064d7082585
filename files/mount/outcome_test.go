//go:build linux

package mount_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/syncbuf"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

// unknownLine is what a mount logs when it finds out the outcome of a
// change that raft reported as unknown.
const unknownLine = "outcome of a change unknown"

// TestMountUnknownOutcome makes the Raft outcome of changes through the
// mount unknown (raft.ErrOutcomeUnknown) while the cluster stays
// reachable: every call must find out what happened and succeed, never
// fail with EIO.
func TestMountUnknownOutcome(t *testing.T) {
	var logs syncbuf.Buffer
	c, dirs := mountedCluster(t, 3, nil, testcluster.WithLogWriter(&logs),
		testcluster.WithNodeSetup(func(n *node.Node) { n.FilesMount().SetCacheTimeout(time.Hour) }))
	c.WaitReady(t)

	// The leader applies the change made through a follower's mount and
	// answers, but the answer never arrives: the link is cut while the
	// answer waits in an injected delay (and mended at once).
	t.Run("the leader's answer to a follower is lost", func(t *testing.T) {
		leader := c.WaitLeader(t).ID
		f := c.Followers()[0].ID
		L, F := dirs[leader], dirs[f]
		for _, tc := range []struct {
			name  string
			setup func(dir string) // in the leader's mount
			op    func(dir string) error
			check func(dir string) string // on the leader's mount: "" when right
		}{
			{"unlink",
				func(d string) { writeFile(t, filepath.Join(d, "f"), []byte("x")) },
				func(d string) error { return os.Remove(filepath.Join(d, "f")) },
				func(d string) string { return gone(filepath.Join(d, "f")) }},
			{"rmdir",
				func(d string) { must(t, os.Mkdir(filepath.Join(d, "e"), 0o755)) },
				func(d string) error { return syscall.Rmdir(filepath.Join(d, "e")) },
				func(d string) string { return gone(filepath.Join(d, "e")) }},
			{"rename",
				func(d string) { writeFile(t, filepath.Join(d, "a"), []byte("moved")) },
				func(d string) error { return os.Rename(filepath.Join(d, "a"), filepath.Join(d, "b")) },
				func(d string) string { return gone(filepath.Join(d, "a")) + is(filepath.Join(d, "b"), "moved") }},
			{"mkdir", nil,
				func(d string) error { return os.Mkdir(filepath.Join(d, "e"), 0o755) },
				func(d string) string { return isDir(filepath.Join(d, "e")) }},
			{"create-excl", nil,
				func(d string) error {
					f, err := os.OpenFile(filepath.Join(d, "f"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
					if err == nil {
						err = f.Close()
					}
					return err
				},
				func(d string) string { return is(filepath.Join(d, "f"), "") }},
			{"close",
				func(d string) { writeFile(t, filepath.Join(d, "f"), []byte("old")) },
				func(d string) error { return os.WriteFile(filepath.Join(d, "f"), []byte("new"), 0o644) },
				func(d string) string { return is(filepath.Join(d, "f"), "new") }},
			{"chmod",
				func(d string) { writeFile(t, filepath.Join(d, "f"), []byte("x")) },
				func(d string) error { return os.Chmod(filepath.Join(d, "f"), 0o600) },
				func(d string) string {
					if m := fstat(t, filepath.Join(d, "f")).Mode(); m != 0o600 {
						return "mode " + m.String()
					}
					return ""
				}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// On a loaded machine the fault can miss the answer (the
				// answer left before the cut): the change then succeeded
				// plainly, and the case is run again in a fresh directory.
				for attempt := 1; ; attempt++ {
					rel := fmt.Sprintf("lost/%s/%d", tc.name, attempt)
					must(t, os.MkdirAll(filepath.Join(L, rel), 0o755))
					if tc.setup != nil {
						tc.setup(filepath.Join(L, rel))
					}
					before := strings.Count(logs.String(), unknownLine)
					err := loseAnswer(t, c, leader, f, rel+"/", func() error { return tc.op(filepath.Join(F, rel)) })
					if err != nil {
						t.Fatalf("%s through %s whose answer from the leader was lost: %v, want success", tc.name, f, err)
					}
					if bad := tc.check(filepath.Join(L, rel)); bad != "" {
						t.Fatalf("%s: on the leader afterwards: %s", tc.name, bad)
					}
					if strings.Count(logs.String(), unknownLine) > before {
						return
					}
					if attempt == premiseAttempts {
						t.Fatalf("%s: the outcome was never unknown in %d attempts (the fault missed the answer)", tc.name, attempt)
					}
					t.Logf("%s: attempt %d: the fault missed the answer; again", tc.name, attempt)
				}
			})
		}
	})

	// The leader is cut off from both followers with an unlink through its
	// own mount in flight: it cannot commit it and steps down, so the
	// unlink's outcome is unknown; the partition heals at once and the
	// unlink finds out (the delete may land through the next leader or
	// not at all, and is then sent again).
	t.Run("the leader steps down with an unlink in flight", func(t *testing.T) {
		// On a loaded machine the unlink can reach raft only after the
		// step-down (it is then forwarded to the next leader, its outcome
		// known): the case is run again with another file.
		for attempt := 1; ; attempt++ {
			leader := c.WaitLeader(t)
			name := fmt.Sprintf("deposed-%d.txt", attempt)
			p := filepath.Join(dirs[leader.ID], name)
			writeFile(t, p, []byte("x"))
			before := strings.Count(logs.String(), unknownLine)
			for _, f := range c.Followers() {
				c.Faults().Cut(leader.ID, f.ID)
			}
			done := make(chan error, 1)
			go func() { done <- os.Remove(p) }()
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				return !leader.Node().Cluster().IsLeader(), leader.ID + " still leads"
			})
			c.Faults().MendAll()
			if err := <-done; err != nil {
				t.Fatalf("unlink through %s, which lost its leadership meanwhile: %v, want success", leader.ID, err)
			}
			for _, nd := range c.Nodes() {
				if bad := gone(filepath.Join(dirs[nd.ID], name)); bad != "" {
					t.Fatalf("%s after the unlink returned: %s", nd.ID, bad)
				}
			}
			if strings.Count(logs.String(), unknownLine) > before {
				return
			}
			if attempt == premiseAttempts {
				t.Fatalf("the unlink's outcome was never unknown in %d attempts (it reached raft after the step-down)", attempt)
			}
			t.Logf("attempt %d: the unlink reached raft after the step-down; again", attempt)
		}
	})
}

// premiseAttempts bounds how often a case whose fault missed its moment
// is run again.
const premiseAttempts = 3

// loseAnswer runs op, a change through follower f's mount, while every
// write between f and the leader waits 200 ms, and severs their link (then
// mends it) once the leader applied a change under prefix: f's forwarded
// command is committed and its answer lost on the way.
func loseAnswer(t *testing.T, c *testcluster.Cluster, leader, f, prefix string, op func() error) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	changes, err := c.Node(leader).Node().Files().Watch(ctx, prefix)
	must(t, err)
	c.Delay(leader, f, 200*time.Millisecond)
	defer c.Faults().Mend(leader, f)
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case <-changes:
		c.Faults().Cut(leader, f)
		c.Faults().Mend(leader, f)
	case err := <-done:
		t.Fatalf("the change ended (%v) before the leader applied it", err)
	}
	return <-done
}

// gone is "" when p does not exist.
func gone(p string) string {
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		return p + " still there: " + errName(err)
	}
	return ""
}

// is is "" when p holds content.
func is(p, content string) string {
	b, err := os.ReadFile(p)
	if err != nil || string(b) != content {
		return p + ": " + errName(err) + " " + string(b) + ", want " + content
	}
	return ""
}

// isDir is "" when p is a directory.
func isDir(p string) string {
	fi, err := os.Stat(p)
	if err != nil || !fi.IsDir() {
		return p + " is no directory: " + errName(err)
	}
	return ""
}
