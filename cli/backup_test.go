package cli

import (
	"context"
	"net/http"
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
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, nd.URL("/_cohort/api/files/docs/a.txt"), strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer "+c.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("put a file: HTTP %d", resp.StatusCode)
	}
	file := filepath.Join(t.TempDir(), "backup.snap")
	code, out, errs := cliRun(t, "backup", file, "--addr", nd.HTTPAddr, "--token-file", c.TokenFile())
	if code != ExitOK {
		t.Fatalf("backup: exit %d: %s%s", code, errs, out)
	}
	if !strings.Contains(errs, "WARNING") || !strings.Contains(errs, "not their contents") || !strings.Contains(errs, "1 files, 5 bytes") {
		t.Fatalf("backup did not say it leaves the file contents out; stderr:\n%s", errs)
	}
}
