package cli

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortserver/cohort/testcluster"
)

// TestBackupRestoresFileContents: cohort backup holds the files' contents
// as well as their metadata. Restored into a fresh cluster (one node from
// the backup, two more joining it), every file reads back byte for byte
// through the files API of every node, including a file of several MiB,
// an empty one and two sharing one blob; a file deleted before the backup
// stays deleted.
func TestBackupRestoresFileContents(t *testing.T) {
	c := testcluster.New(t, 3)
	nd := c.WaitLeader(t)
	c.WaitReady(t)
	rng := rand.New(rand.NewPCG(17, 4))
	big := make([]byte, 3<<20+12345)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	want := map[string][]byte{
		"docs/a.txt":       []byte("hello"),
		"docs/same.txt":    []byte("hello"),
		"docs/empty":       {},
		"media/big.bin":    big,
		"media/medium.bin": bytes.Repeat([]byte("0123456789abcdef"), 10_000),
	}
	nodes := c.Nodes()
	i := 0
	for p, b := range want {
		nodes[i%len(nodes)].PutFile(t, p, b)
		i++
	}
	nd.PutFile(t, "docs/gone.txt", []byte("deleted before the backup"))
	if code, b := nd.Do(t, http.MethodDelete, "/_cohort/api/files/docs/gone.txt", nil); code >= 300 {
		t.Fatalf("delete: HTTP %d %s", code, b)
	}

	file := filepath.Join(t.TempDir(), "backup.snap")
	code, out, errs := cliRun(t, "backup", file, "--addr", nodes[1].HTTPAddr, "--token-file", c.TokenFile())
	if code != ExitOK {
		t.Fatalf("backup: exit %d: %s%s", code, errs, out)
	}
	if strings.Contains(errs, "WARNING") {
		t.Fatalf("a complete backup warned: %s", errs)
	}
	if !strings.Contains(out, "4 file contents of") {
		t.Fatalf("backup should count 4 distinct contents: %s", out)
	}
	backup, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup: %s (%d bytes)", strings.TrimSpace(out), len(backup))

	r := testcluster.NewRestored(t, backup)
	r.AddNode(t)
	r.AddNode(t)
	r.WaitReady(t)
	if got := len(r.Nodes()); got != 3 {
		t.Fatalf("restored cluster has %d nodes", got)
	}
	for _, n := range r.Nodes() {
		for p, b := range want {
			code, got := n.Do(t, http.MethodGet, "/_cohort/api/files/"+p, nil)
			if code != http.StatusOK || !bytes.Equal(got, b) {
				t.Errorf("%s on restored %s: HTTP %d, %d bytes (want %d): %s", p, n.ID, code, len(got), len(b), preview(got))
			}
		}
		if code, _ := n.Do(t, http.MethodGet, "/_cohort/api/files/docs/gone.txt", nil); code != http.StatusNotFound {
			t.Errorf("deleted file on restored %s: HTTP %d, want 404", n.ID, code)
		}
	}
}

func preview(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q...", b[:200])
	}
	return fmt.Sprintf("%q", b)
}
