package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/testcluster"
)

// cliRun runs one command in-process and returns its exit code and output.
func cliRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// jsonOf runs a command that must succeed with --json and decodes it.
func jsonOf[T any](t *testing.T, args ...string) T {
	t.Helper()
	code, out, errs := cliRun(t, append(args, "--json")...)
	if code != ExitOK {
		t.Fatalf("cohort %s: exit %d: %s%s", strings.Join(args, " "), code, errs, out)
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("cohort %s --json: not JSON (%v):\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// TestOperationsCommands runs every operations command against a real
// three-node cluster, with --json, and checks the exit codes of failures.
func TestOperationsCommands(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(t)
	f := c.Followers()[0]
	tokenFile := filepath.Join(c.Dir(), "admin.token")
	api := func(nd *testcluster.Node) []string { return []string{"--addr", nd.HTTPAddr, "--token-file", tokenFile} }
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		return len(f.Node().Members().All()) == 3, "members not announced"
	})
	other := c.Followers()[1]

	t.Run("members", func(t *testing.T) {
		v := jsonOf[node.MembersView](t, append([]string{"members"}, api(f)...)...)
		if len(v.Members) != 3 || v.LeaderID != leader.ID {
			t.Fatalf("members = %+v", v)
		}
		code, out, _ := cliRun(t, append([]string{"members"}, api(f)...)...)
		if code != ExitOK || !strings.Contains(out, "LAST CONTACT") || !strings.Contains(out, leader.ID) {
			t.Fatalf("members table: exit %d\n%s", code, out)
		}
	})

	t.Run("states", func(t *testing.T) {
		for _, tt := range []struct{ cmd, want string }{{"drain", "draining"}, {"disable", "disabled"}, {"enable", "active"}} {
			v := jsonOf[map[string]string](t, append([]string{tt.cmd, other.ID}, api(f)...)...)
			if v["state"] != tt.want || v["id"] != other.ID {
				t.Fatalf("%s = %v", tt.cmd, v)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		v := jsonOf[node.PingResult](t, append([]string{"ping", leader.ID, "--count", "4"}, api(f)...)...)
		if v.ID != leader.ID || len(v.Samples) != 4 || v.RTTMS <= 0 {
			t.Fatalf("ping = %+v", v)
		}
	})

	t.Run("transfer-leader", func(t *testing.T) {
		v := jsonOf[map[string]any](t, append([]string{"transfer-leader", f.ID}, api(other)...)...)
		if v["leader_id"] != f.ID {
			t.Fatalf("transfer-leader %s = %v", f.ID, v)
		}
		v = jsonOf[map[string]any](t, append([]string{"transfer-leader"}, api(other)...)...)
		if v["leader_id"] == f.ID || v["leader_id"] == "" {
			t.Fatalf("transfer-leader (any) = %v", v)
		}
		c.WaitLeader(t)
	})

	t.Run("jobs", func(t *testing.T) {
		code, out, errs := cliRun(t, append([]string{"jobs", "--json"}, api(f)...)...)
		switch code {
		case ExitOK:
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("jobs --json: %v\n%s", err, out)
			}
		case ExitNotFound:
			t.Logf("jobs API not in this tree: %s", errs)
		default:
			t.Fatalf("jobs: exit %d %s", code, errs)
		}
		if code, _, _ := cliRun(t, append([]string{"jobs", "run", "no-such-job"}, api(f)...)...); code != ExitNotFound {
			t.Errorf("jobs run no-such-job: exit %d, want %d", code, ExitNotFound)
		}
	})

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	t.Run("backup and restore", func(t *testing.T) {
		v := jsonOf[struct {
			File string
			Meta raft.BackupMeta
		}](t, append([]string{"backup", file}, api(f)...)...)
		if v.Meta.Index == 0 || len(v.Meta.Servers) != 3 {
			t.Fatalf("backup = %+v", v)
		}
		st, err := os.Stat(file)
		if err != nil || st.Size() <= v.Meta.Size {
			t.Fatalf("backup file: %v %v", st, err)
		}
		data := filepath.Join(dir, "r1")
		r := jsonOf[map[string]any](t, "restore", file, "--data-dir", data, "--node-id", "r1", "--cluster-addr", "127.0.0.1:19698")
		if r["node_id"] != "r1" {
			t.Fatalf("restore = %v", r)
		}
		if code, _, errs := cliRun(t, "restore", file, "--data-dir", data, "--node-id", "r1"); code != ExitFailure || !strings.Contains(errs, "already holds raft state") {
			t.Errorf("restore into a used data dir: exit %d %s", code, errs)
		}
		if code, _, _ := cliRun(t, "restore", filepath.Join(dir, "missing")); code != ExitUsage {
			t.Errorf("restore without --node-id: exit %d", code)
		}
		garbage := filepath.Join(dir, "garbage")
		_ = os.WriteFile(garbage, []byte("not a backup"), 0o600)
		if code, _, errs := cliRun(t, "restore", garbage, "--data-dir", filepath.Join(dir, "g"), "--node-id", "g1"); code != ExitFailure || !strings.Contains(errs, "not a cohort backup") {
			t.Errorf("restore of garbage: exit %d %s", code, errs)
		}
		// recover works offline on the restored (stopped) data dir.
		rc := jsonOf[map[string]any](t, "recover", "--data-dir", data, "--node-id", "r1", "--peers", "r1=127.0.0.1:19697")
		if rc["node_id"] != "r1" {
			t.Fatalf("recover = %v", rc)
		}
		if code, _, errs := cliRun(t, "recover", "--data-dir", filepath.Join(dir, "none"), "--node-id", "x1", "--peers", "x1=127.0.0.1:1"); code != ExitFailure {
			t.Errorf("recover of an empty data dir: exit %d %s", code, errs)
		}
	})

	t.Run("remove", func(t *testing.T) {
		victim := c.Followers()[0]
		c.Kill(victim.ID)
		via := c.Running()[0]
		v := jsonOf[map[string]string](t, append([]string{"remove", victim.ID}, api(via)...)...)
		if v["removed"] != victim.ID {
			t.Fatalf("remove = %v", v)
		}
		m := jsonOf[node.MembersView](t, append([]string{"members"}, api(via)...)...)
		if len(m.Members) != 2 {
			t.Fatalf("members after remove: %+v", m.Members)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		via := c.Running()[0]
		tests := []struct {
			name string
			args []string
			want int
		}{
			{"unknown node", append([]string{"drain", "nope"}, api(via)...), ExitNotFound},
			{"ping unknown node", append([]string{"ping", "nope"}, api(via)...), ExitNotFound},
			{"unreachable", []string{"members", "--addr", "127.0.0.1:1", "--token-file", tokenFile}, ExitUnavailable},
			{"missing argument", append([]string{"drain"}, api(via)...), ExitUsage},
			{"wrong token", []string{"members", "--addr", via.HTTPAddr, "--token-file", writeFile(t, "wrong-token-0123456789")}, ExitFailure},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if code, out, errs := cliRun(t, tt.args...); code != tt.want {
					t.Errorf("exit %d, want %d: %s%s", code, tt.want, out, errs)
				}
			})
		}
	})
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
