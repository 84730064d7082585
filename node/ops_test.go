package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/testcluster"
)

// waitAnnounced waits until every running node is in the member table.
func waitAnnounced(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			for _, other := range c.Running() {
				if _, ok := nd.Node().Members().Get(other.ID); !ok {
					return false, other.ID + " not in " + nd.ID + "'s member table"
				}
			}
		}
		return true, ""
	})
}

func decode[T any](t *testing.T, code int, b []byte) T {
	t.Helper()
	var v T
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, b)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestMembersPingSnapshotEvents(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(t)
	f := c.Followers()[0]

	var view node.MembersView
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		code, b := f.Do(t, http.MethodGet, "/_cohort/api/members", nil)
		view = decode[node.MembersView](t, code, b)
		if len(view.Members) != 3 {
			return false, string(b)
		}
		for _, m := range view.Members {
			if !m.Reachable || !m.Healthy || m.HTTPAddress == "" {
				return false, string(b)
			}
		}
		return true, ""
	})
	if view.LeaderID != leader.ID || view.NodeID != f.ID {
		t.Fatalf("view leader %q node %q, want %q %q", view.LeaderID, view.NodeID, leader.ID, f.ID)
	}
	leaders := 0
	for _, m := range view.Members {
		if m.Leader {
			leaders++
			if m.RaftState != "leader" || m.ID != leader.ID {
				t.Errorf("leader member %+v", m)
			}
		}
		if m.Term == 0 || m.AppliedIndex == 0 || m.Load == nil || m.Version == "" {
			t.Errorf("member figures missing: %+v", m)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in %+v", leaders, view.Members)
	}

	t.Run("ping", func(t *testing.T) {
		code, b := f.Do(t, http.MethodPost, "/_cohort/api/nodes/"+leader.ID+"/ping?count=5", nil)
		p := decode[node.PingResult](t, code, b)
		if p.ID != leader.ID || len(p.Samples) != 5 || p.RTTMS <= 0 || p.MinMS > p.MaxMS {
			t.Fatalf("ping = %+v", p)
		}
		if code, b := f.Do(t, http.MethodPost, "/_cohort/api/nodes/nope/ping", nil); code != http.StatusNotFound {
			t.Fatalf("ping of unknown node: HTTP %d %s", code, b)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		code, b := f.Do(t, http.MethodPost, "/_cohort/api/snapshot", nil)
		v := decode[map[string]any](t, code, b)
		if v["index"].(float64) == 0 {
			t.Fatalf("snapshot = %s", b)
		}
		// Nothing new: still fine.
		if code, b := f.Do(t, http.MethodPost, "/_cohort/api/snapshot", nil); code != http.StatusOK {
			t.Fatalf("second snapshot: HTTP %d %s", code, b)
		}
	})

	t.Run("events", func(t *testing.T) {
		target := c.Followers()[len(c.Followers())-1]
		if code, b := leader.Do(t, http.MethodPost, "/_cohort/api/nodes/"+target.ID+"/drain", nil); code != http.StatusOK {
			t.Fatalf("drain: HTTP %d %s", code, b)
		}
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			code, b := f.Do(t, http.MethodGet, "/_cohort/api/events", nil)
			v := decode[struct{ Events []node.Event }](t, code, b)
			for _, e := range v.Events {
				if e.Kind == "state" && e.Node == target.ID && strings.Contains(e.Message, membership.StateDraining) {
					return true, ""
				}
			}
			return false, string(b)
		})
	})

	t.Run("auth", func(t *testing.T) {
		for _, p := range []string{"/_cohort/api/members", "/_cohort/metrics", "/_cohort/api/events", "/_cohort/api/backup"} {
			resp, err := http.Get(f.URL(p))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s without token: HTTP %d, want 401", p, resp.StatusCode)
			}
		}
	})
}

// TestMetricsParse scrapes /_cohort/metrics and checks it parses as the
// Prometheus text format (what promtool check metrics does) and holds the
// Raft, process, Go and DB pool figures.
func TestMetricsParse(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(t)
	waitAnnounced(t, c)
	// Some applies so the latency histogram has samples.
	for _, action := range []string{"drain", "enable", "disable", "enable"} {
		if code, b := leader.Do(t, http.MethodPost, "/_cohort/api/nodes/"+leader.ID+"/"+action, nil); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d %s", action, code, b)
		}
	}
	for _, nd := range c.Nodes() {
		req, _ := http.NewRequest(http.MethodGet, nd.URL("/_cohort/metrics"), nil)
		req.Header.Set("Authorization", "Bearer "+c.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := new(bytes.Buffer)
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d %s", nd.ID, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: Content-Type %q", nd.ID, ct)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(body.Bytes()))
		if err != nil {
			t.Fatalf("%s: metrics do not parse: %v\n%s", nd.ID, err, body)
		}
		for _, name := range []string{
			"cohort_raft_term", "cohort_raft_commit_index", "cohort_raft_applied_index", "cohort_raft_last_contact_seconds",
			"cohort_raft_state", "cohort_raft_leader_changes_total", "cohort_raft_servers",
			"go_goroutines", "process_resident_memory_bytes",
			"cohort_sessions_sessions", "cohort_sessions_commits_total", "cohort_files_files", "cohort_files_catchup_running",
			"cohort_front_inflight_requests", "go_sql_open_connections",
		} {
			if _, ok := fams[name]; !ok {
				t.Errorf("%s: metric %s missing", nd.ID, name)
			}
		}
		if f, ok := fams["cohort_raft_term"]; ok && f.GetMetric()[0].GetGauge().GetValue() < 1 {
			t.Errorf("%s: term %v", nd.ID, f.GetMetric()[0].GetGauge().GetValue())
		}
		if nd.ID == leader.ID {
			h, ok := fams["cohort_raft_apply_duration_seconds"]
			if !ok || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
				t.Errorf("leader: apply latency histogram empty or missing")
			}
			for _, m := range fams["cohort_raft_state"].GetMetric() {
				if m.GetLabel()[0].GetValue() == "leader" && m.GetGauge().GetValue() != 1 {
					t.Errorf("leader: cohort_raft_state{state=leader} = %v", m.GetGauge().GetValue())
				}
			}
		}
		// Every sample line is NAME{labels} VALUE: a second check with the
		// lint rules promtool applies (HELP and TYPE before samples).
		sc := bufio.NewScanner(bytes.NewReader(body.Bytes()))
		typed := map[string]bool{}
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
				typed[strings.Fields(rest)[0]] = true
				continue
			}
			if strings.HasPrefix(line, "#") || line == "" {
				continue
			}
			name := strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !typed[name] && !typed[base] {
				t.Errorf("%s: sample %s before its TYPE line", nd.ID, name)
			}
		}
	}
}

// TestBackupUnderLoadRestore takes a backup while writes flow, restores it
// into a fresh one-node cluster and checks the restored state is exactly
// the state at the backup's index: every write at or below it, none after.
func TestBackupUnderLoadRestore(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	leader := c.WaitLeader(t)
	f := c.Followers()[0]
	drained := c.Followers()[1].ID
	waitAnnounced(t, c)
	if code, b := leader.Do(t, http.MethodPost, "/_cohort/api/nodes/"+drained+"/drain", nil); code != http.StatusOK {
		t.Fatalf("drain: HTTP %d %s", code, b)
	}

	// State of every capability before the load: sessions (through the
	// demo's counter), shared files, and job history accumulating.
	for range 5 {
		resp, err := http.Post(f.URL("/demo/api/counter"), "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("demo counter: HTTP %d", resp.StatusCode)
		}
	}
	for i := range 3 {
		if _, err := f.Node().Files().Create(context.Background(), fmt.Sprintf("docs/f%d.txt", i), strings.NewReader(strings.Repeat("x", 100*(i+1))), nil); err != nil {
			t.Fatalf("create file: %v", err)
		}
	}
	if len(f.Node().Jobs().Jobs()) > 0 {
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			total := 0
			for _, j := range f.Node().Jobs().Jobs() {
				runs, _ := f.Node().Jobs().Runs(j.Name)
				total += len(runs)
			}
			return total >= 2, fmt.Sprintf("%d job runs", total)
		})
	}
	srcSessions := f.Node().Sessions().Stats().Total
	if srcSessions < 5 {
		t.Fatalf("%d sessions on %s, want 5", srcSessions, f.ID)
	}

	// Load: three writers through every node until the backup is taken.
	var (
		mu      sync.Mutex
		written = map[string]uint64{} // key -> index
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for w, nd := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				res, err := testcluster.Put(context.Background(), nd.Node(), key, "v-"+key)
				if err != nil {
					continue // an unknown outcome is not counted either way
				}
				mu.Lock()
				written[key] = res.Index
				mu.Unlock()
			}
		}()
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(written) >= 100, fmt.Sprintf("%d writes", len(written))
	})
	code, backup := f.Do(t, http.MethodGet, "/_cohort/api/backup", nil)
	if code != http.StatusOK {
		t.Fatalf("backup: HTTP %d %s", code, backup)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(written) >= 300, fmt.Sprintf("%d writes", len(written))
	})
	stop.Store(true)
	wg.Wait()

	meta, err := raft.ReadBackupHeader(bufio.NewReader(bytes.NewReader(backup)))
	if err != nil {
		t.Fatal(err)
	}
	if len(meta.Servers) != 3 || meta.Index == 0 {
		t.Fatalf("backup meta %+v", meta)
	}
	before, after := 0, 0
	for _, idx := range written {
		if idx <= meta.Index {
			before++
		} else {
			after++
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("backup at index %d is not under load: %d writes before, %d after", meta.Index, before, after)
	}
	t.Logf("backup at index %d, %d bytes: %d writes before it, %d after", meta.Index, meta.Size, before, after)

	kvOpt2, kvs2 := testcluster.WithKV()
	r := testcluster.NewRestored(t, backup, kvOpt2)
	rn := r.WaitLeader(t)
	kv := kvs2.On(rn.ID)
	src := kvs.On(f.ID)
	for key, idx := range written {
		got, ok := kv.Get(key)
		switch {
		case idx <= meta.Index && (!ok || got != "v-"+key):
			t.Errorf("key %s (index %d ≤ %d) lost in the restore", key, idx, meta.Index)
		case idx > meta.Index && ok:
			t.Errorf("key %s (index %d > %d) present: the backup is not a point in time", key, idx, meta.Index)
		}
	}
	if kv.Len() != before {
		t.Errorf("restored %d keys, want %d (source now holds %d)", kv.Len(), before, src.Len())
	}
	// Sessions, the files manifest and the job history came back.
	if got := rn.Node().Sessions().Stats().Total; got != srcSessions {
		t.Errorf("restored %d sessions, want %d", got, srcSessions)
	}
	srcFiles, err := f.Node().Files().List(context.Background(), "docs/")
	if err != nil {
		t.Fatal(err)
	}
	gotFiles, err := rn.Node().Files().List(context.Background(), "docs/")
	if err != nil {
		t.Fatal(err)
	}
	if len(gotFiles) != 3 || len(srcFiles) != 3 {
		t.Errorf("files: restored %v, source %v", gotFiles, srcFiles)
	}
	for i := range min(len(gotFiles), len(srcFiles)) {
		g, w := gotFiles[i], srcFiles[i]
		if g.Path != w.Path || g.Size != w.Size || g.SHA256 != w.SHA256 || g.Version != w.Version {
			t.Errorf("file %d: restored %+v, source %+v", i, g, w)
		}
	}
	runsUpTo := func(n *node.Node) map[string]bool {
		out := map[string]bool{}
		for _, j := range n.Jobs().Jobs() {
			runs, err := n.Jobs().Runs(j.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range runs {
				if r.Fence.Index <= meta.Index {
					out[r.Key] = true
				}
			}
		}
		return out
	}
	srcRuns, gotRuns := runsUpTo(f.Node()), runsUpTo(rn.Node())
	if fmt.Sprint(srcRuns) != fmt.Sprint(gotRuns) {
		t.Errorf("job runs up to index %d: restored %v, source %v", meta.Index, gotRuns, srcRuns)
	}
	t.Logf("restored %d sessions, %d files, %d job runs", srcSessions, len(gotFiles), len(gotRuns))
	// The replicated member table came back too (the drained node's state).
	m, ok := rn.Node().Members().Get(drained)
	if !ok || m.State != membership.StateDraining {
		t.Errorf("member %s after restore: %+v, %v", drained, m, ok)
	}
	// The restored cluster takes writes and grows.
	testcluster.MustPut(t, rn.Node(), "after-restore", "yes")
	n2 := r.AddNode(t)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		v, ok := kvs2.On(n2.ID).Get("after-restore")
		return ok && v == "yes" && kvs2.On(n2.ID).Len() == before+1, fmt.Sprintf("n2 holds %d keys", kvs2.On(n2.ID).Len())
	})
}

// TestQuorumLossRecovery destroys two of three nodes with their data,
// recovers the survivor offline into a one-node cluster, and grows it back
// to three.
func TestQuorumLossRecovery(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt)
	leader := c.WaitLeader(t)
	for i := range 50 {
		testcluster.MustPut(t, leader.Node(), fmt.Sprintf("k%d", i), "v")
	}
	survivor := c.Followers()[0]
	cfg := survivor.Node().Config()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		return kvs.On(survivor.ID).Len() == 50, fmt.Sprint(kvs.On(survivor.ID).Len())
	})
	var lost []string
	for _, nd := range c.Nodes() {
		if nd.ID != survivor.ID {
			c.Kill(nd.ID)
			if err := os.RemoveAll(filepath.Join(c.Dir(), nd.ID)); err != nil {
				t.Fatal(err)
			}
			lost = append(lost, nd.ID)
		}
	}
	// The survivor alone has no quorum: writes fail.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := testcluster.Put(ctx, survivor.Node(), "no-quorum", "x")
	cancel()
	if err == nil {
		t.Fatal("a write succeeded without quorum")
	}
	c.Kill(survivor.ID)

	// Recover: the survivor's configuration becomes itself alone. The
	// recovery builds the node's state machines through node.New, so the
	// test KV must be registered as in the running node: recover through
	// a cluster-level call with the same registration.
	rcfg := cfg
	rcfg.Peers = nil
	if err := recoverWithKV(rcfg, []config.Peer{{ID: survivor.ID, Address: survivor.ClusterAddr}}); err != nil {
		t.Fatalf("recover: %v", err)
	}
	c.Restart(survivor.ID)
	nl := c.WaitLeader(t)
	if nl.ID != survivor.ID {
		t.Fatalf("leader after recovery %s, want %s", nl.ID, survivor.ID)
	}
	if got := kvs.On(survivor.ID).Len(); got != 50 {
		t.Fatalf("survivor holds %d keys after recovery, want 50", got)
	}
	testcluster.MustPut(t, nl.Node(), "after-recovery", "yes")

	// Grow back to three.
	a := c.AddNode(t)
	b := c.AddNode(t)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		servers, err := nl.Node().Cluster().Servers()
		if err != nil || len(servers) != 3 {
			return false, fmt.Sprintf("%v %v", servers, err)
		}
		for _, id := range []string{a.ID, b.ID} {
			if kvs.On(id) == nil || kvs.On(id).Len() != 51 {
				return false, id + " not caught up"
			}
		}
		return true, ""
	})
	// And it tolerates the loss of one node again.
	c.Kill(survivor.ID)
	nl = c.WaitLeader(t)
	testcluster.MustPut(t, nl.Node(), "after-failover", "yes")
	t.Logf("lost %v, recovered %s, grew back with %s and %s; leader now %s", lost, survivor.ID, a.ID, b.ID, nl.ID)
}

// recoverWithKV runs the offline recovery with the test KV registered, as
// testcluster.WithKV registers it on running nodes.
func recoverWithKV(cfg config.Config, peers []config.Peer) error {
	return node.RecoverWith(cfg, peers, testcluster.RegisterKV)
}
