package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortserver/cohort/testcluster"
)

// TestBackupSaysWhatItOmits: a backup holds the files' metadata but not
// their contents; the node says so in a header and cohort backup says so
// on stderr, with how much is left out.
func TestBackupSaysWhatItOmits(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.WaitLeader(t)
	c.WaitReady(t)
	nd.PutFile(t, "docs/a.txt", []byte("hello"))
	file := filepath.Join(t.TempDir(), "backup.snap")
	code, out, errs := cliRun(t, "backup", file, "--addr", nd.HTTPAddr, "--token-file", c.TokenFile())
	if code != ExitOK {
		t.Fatalf("backup: exit %d: %s%s", code, errs, out)
	}
	if !strings.Contains(errs, "WARNING") || !strings.Contains(errs, "not their contents") || !strings.Contains(errs, "1 files, 5 bytes") {
		t.Fatalf("backup did not say it leaves the file contents out; stderr:\n%s", errs)
	}
}
