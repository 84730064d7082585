package testcluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/syncbuf"
	"github.com/cohortserver/cohort/testcluster"
)

// TestClusterKeyRotationWithoutDowntime rotates the cluster key in three
// rolling phases, as docs/security.md tells operators to, and writes
// through the cluster between every restart.
func TestClusterKeyRotationWithoutDowntime(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	c.WaitLeader(t)
	oldKey, err := os.ReadFile(c.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	newKey := "rotated-cluster-key-fedcba9876543210"
	phases := []string{
		string(bytes.TrimSpace(oldKey)) + "\n" + newKey, // accept the new key
		newKey + "\n" + string(bytes.TrimSpace(oldKey)), // dial with the new key
		newKey, // drop the old key
	}
	writes := 0
	for p, content := range phases {
		if err := os.WriteFile(c.KeyFile(), []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, nd := range c.Nodes() {
			c.Restart(nd.ID)
			c.WaitLeader(t)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			_, err := testcluster.Put(ctx, c.Leader().Node(), fmt.Sprintf("p%d-%s", p, nd.ID), "v")
			cancel()
			if err != nil {
				t.Fatalf("phase %d, after restarting %s: write failed: %v", p+1, nd.ID, err)
			}
			writes++
		}
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		for _, nd := range c.Nodes() {
			if kvs.On(nd.ID).Len() != writes {
				return false, fmt.Sprintf("%s holds %d of %d keys", nd.ID, kvs.On(nd.ID).Len(), writes)
			}
		}
		return true, ""
	})
}

func TestAdminTokenRotationAcceptsEveryListedToken(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Nodes()[0]
	second := "second-admin-token-0123456789abcdef"
	if err := os.WriteFile(c.TokenFile(), []byte(c.Token()+"\n"+second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Restart(nd.ID)
	c.WaitLeader(t)
	for _, tok := range []string{c.Token(), second} {
		req, _ := http.NewRequest(http.MethodGet, nd.URL("/_cohort/status"), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("token %s...: HTTP %d", tok[:6], resp.StatusCode)
		}
	}
}

func TestSecretsNeverInLogsOrStatus(t *testing.T) {
	var logs syncbuf.Buffer
	c := testcluster.New(t, 3, testcluster.WithLogWriter(&logs))
	leader := c.WaitLeader(t)
	key, _ := os.ReadFile(c.KeyFile())
	secrets := []string{strings.TrimSpace(string(key)), c.Token()}
	// Exercise the paths that log: a rejected connection, a bad token,
	// a leader kill and a restart.
	req, _ := http.NewRequest(http.MethodGet, leader.URL("/_cohort/status"), nil)
	req.Header.Set("Authorization", "Bearer wrong-token-wrong-token")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	code, status := leader.Do(t, http.MethodGet, "/_cohort/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status: HTTP %d", code)
	}
	c.Kill(leader.ID)
	c.WaitLeader(t)
	c.Restart(leader.ID)
	c.WaitLeader(t)
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Errorf("a secret (%s...) appears in the logs", s[:6])
		}
		if strings.Contains(string(status), s) {
			t.Errorf("a secret (%s...) appears in /_cohort/status", s[:6])
		}
	}
}
