package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/testport"
)

func freePort(t *testing.T) string {
	t.Helper()
	return testport.Addr(t)
}

// TestServeRefusesBadInputWithOneLine runs `cohort serve` in-process with
// bad flags and files: each must exit non-zero with one line naming the key.
func TestServeRefusesBadInputWithOneLine(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "missing.key")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	otherDir := filepath.Join(dir, "other")
	if err := os.MkdirAll(otherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(otherDir, "node-id"), []byte("n7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("node-id: n1\nnot-a-key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantKey  string
	}{
		{"unknown flag", []string{"serve", "--node-idd", "n1"}, ExitUsage, "node-idd"},
		{"missing node id with peers", []string{"serve", "--peers", "n1=127.0.0.1:1", "--cluster-key-file", key}, ExitUsage, "--node-id"},
		{"unreadable key file", []string{"serve", "--node-id", "n1", "--cluster-key-file", unreadable}, ExitUsage, "--cluster-key-file"},
		{"unknown config key", []string{"serve", "--config", badConfig, "--cluster-key-file", key}, ExitUsage, "not-a-key"},
		{"port in use", []string{"serve", "--node-id", "n1", "--data-dir", filepath.Join(dir, "n1"), "--http-addr", busy.Addr().String(), "--cluster-addr", freePort(t), "--cluster-key-file", key}, ExitFailure, "--http-addr"},
		{"data dir of another node", []string{"serve", "--node-id", "n1", "--data-dir", otherDir, "--http-addr", freePort(t), "--cluster-addr", freePort(t), "--cluster-key-file", key}, ExitFailure, "--node-id"},
		{"unknown command", []string{"serv"}, ExitUsage, "serv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			code := Run(ctx, tt.args, &out, &errb)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, errb.String())
			}
			first := strings.SplitN(errb.String(), "\n", 2)[0]
			if !strings.Contains(first, tt.wantKey) {
				t.Fatalf("first line %q does not name %q", first, tt.wantKey)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), []string{"version"}, &out, &out); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "cohort ") || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("version output %q", out.String())
	}
}
