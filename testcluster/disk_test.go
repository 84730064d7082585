package testcluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/testcluster"
)

// diskSize is each node's data dir in the disk-full tests: room for the
// Raft log, snapshots and the test files, small enough to fill fast.
const diskSize = 64 << 20

// diskRoutes mounts a session put and get on every node; X-Served-By names
// the node whose handler ran.
func diskRoutes(n *node.Node) {
	m := n.Sessions()
	n.HandleApp("POST /d/put", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", n.ID())
		m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
		fmt.Fprint(w, "ok")
	}))
	n.HandleApp("GET /d/get", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", n.ID())
		fmt.Fprint(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
	}))
}

// diskBrowser holds one session's token and sends each request to the
// node it is addressed to, with that node's route tag, so that node serves
// it.
type diskBrowser struct {
	token string
}

// diskAnswer is what a node said to one request.
type diskAnswer struct {
	code   int
	body   string
	served string
	took   time.Duration
}

func (b *diskBrowser) do(t *testing.T, nd *testcluster.Node, method, path string) (diskAnswer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, nd.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.token != "" {
		route := nd.Node().Members().Route(nd.ID)
		req.AddCookie(&http.Cookie{Name: nd.Node().Config().SessionCookie, Value: sessions.FormatCookie(b.token, route)})
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return diskAnswer{took: time.Since(start)}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := diskAnswer{code: resp.StatusCode, body: string(body), served: resp.Header.Get("X-Served-By"), took: time.Since(start)}
	for _, ck := range resp.Cookies() {
		if ck.Name == nd.Node().Config().SessionCookie && ck.MaxAge >= 0 {
			if tok, _, err := sessions.ParseCookie(ck.Value); err == nil {
				b.token = tok
			}
		}
	}
	return a, nil
}

// put writes key=value into the session through nd, which must serve and
// acknowledge it. An answer that leaves the outcome unknown (a leader
// change in flight) is retried: putting the same value again is harmless.
// Any other failure fails the test: a write through a healthy node must
// not be refused.
func (b *diskBrowser) put(t *testing.T, nd *testcluster.Node, key, value string) {
	t.Helper()
	path := "/d/put?" + url.Values{"k": {key}, "v": {value}}.Encode()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, err := b.do(t, nd, http.MethodPost, path)
		if err == nil && a.code == http.StatusOK && a.served == nd.ID {
			return
		}
		unknown := err == nil && a.code == http.StatusServiceUnavailable && strings.Contains(a.body, "outcome unknown")
		if !unknown || time.Now().After(deadline) {
			t.Fatalf("session write %s through healthy node %s not acknowledged after %s: HTTP %d %q served by %q, err %v",
				key, nd.ID, a.took.Round(time.Millisecond), a.code, a.body, a.served, err)
		}
		t.Logf("session write %s through %s: outcome unknown (%s); writing it again", key, nd.ID, a.body)
	}
}

// get reads key from the session through nd, which must serve it.
func (b *diskBrowser) get(t *testing.T, nd *testcluster.Node, key string) string {
	t.Helper()
	a, err := b.do(t, nd, http.MethodGet, "/d/get?"+url.Values{"k": {key}}.Encode())
	if err != nil || a.code != http.StatusOK || a.served != nd.ID {
		t.Fatalf("read %s through %s: HTTP %d %q served by %q, err %v", key, nd.ID, a.code, a.body, a.served, err)
	}
	return a.body
}

// diskWrites is every acknowledged session write: the session's browser and
// the keys written into it.
type diskWrites struct {
	b    *diskBrowser
	keys map[string]string
}

// checkAllReadable reads every acknowledged write through nd.
func checkAllReadable(t *testing.T, nd *testcluster.Node, writes map[string]*diskWrites) {
	t.Helper()
	n := 0
	for _, w := range writes {
		for k, v := range w.keys {
			if got := w.b.get(t, nd, k); got != v {
				t.Fatalf("%s reads %s = %q, the acknowledged write was %q", nd.ID, k, got, v)
			}
			n++
		}
	}
	t.Logf("all %d acknowledged session writes read back through %s", n, nd.ID)
}

// refusedFast asserts that a session write of key through the node whose
// disk is full fails at once with an error that says why.
func refusedFast(t *testing.T, c *testcluster.Cluster, b *diskBrowser, nd *testcluster.Node, key string) {
	t.Helper()
	a, err := b.do(t, nd, http.MethodPost, "/d/put?"+url.Values{"k": {key}, "v": {"never"}}.Encode())
	if err != nil {
		t.Fatalf("session write through full %s: %v after %s (it must answer, not hang)", nd.ID, err, a.took.Round(time.Millisecond))
	}
	if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "no space left on device") ||
		!strings.Contains(a.body, "cannot write its raft log") || a.took > 5*time.Second {
		t.Fatalf("session write through full %s: HTTP %d %q after %s; want a prompt 503 saying its raft log cannot be written: no space left on device",
			nd.ID, a.code, a.body, a.took.Round(time.Millisecond))
	}
	noSecrets(t, c, a.body)
	t.Logf("session write through full %s refused in %s: %s", nd.ID, a.took.Round(time.Millisecond), a.body)
}

// noSecrets fails the test if an error answer carries the cluster key or
// the admin token.
func noSecrets(t *testing.T, c *testcluster.Cluster, body string) {
	t.Helper()
	key, err := os.ReadFile(c.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{strings.TrimSpace(string(key)), c.Token()} {
		if strings.Contains(body, secret) {
			t.Fatalf("an error answer carries a secret: %s", body)
		}
	}
}

// diskUpload PUTs content at path through nd.
func diskUpload(t *testing.T, c *testcluster.Cluster, nd *testcluster.Node, path string, content []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, nd.URL("/_cohort/api/files/"+path), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upload %s through %s: %v (it must answer, not hang)", path, nd.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// diskFiles is a node's view of the shared files: path → sha256@version.
func diskFiles(t *testing.T, nd *testcluster.Node) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := nd.Node().Files().ListAll(ctx, "")
	if err != nil {
		t.Fatalf("list files on %s: %v", nd.ID, err)
	}
	out := make(map[string]string, len(infos))
	for _, in := range infos {
		out[in.Path] = fmt.Sprintf("%s@%d deleted=%v", in.SHA256, in.Version, in.Deleted)
	}
	return out
}

// diskTempFiles lists the temp files in a node's blob store: a refused
// upload must leave none behind (the garbage collector only removes them
// an hour later).
func diskTempFiles(t *testing.T, nd *testcluster.Node) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(nd.Node().Config().DataDir, "files", "tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// waitHealthy waits until nd has no log write failure, is ready, and has
// applied at least index.
func waitHealthy(t *testing.T, nd *testcluster.Node, index uint64, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	testcluster.WaitFor(t, timeout, func() (bool, string) {
		n := nd.Node()
		ok, reason := n.Ready(context.Background())
		applied := n.Cluster().AppliedIndex()
		return ok && applied >= index && n.Cluster().LogWriteErr() == nil,
			fmt.Sprintf("%s: ready=%v (%s), applied %d of %d", nd.ID, ok, reason, applied, index)
	})
	t.Logf("%s healthy, applied %d, %s after the wait started", nd.ID, index, time.Since(start).Round(time.Millisecond))
}

// commitMark commits a session write through nd and returns the leader's
// commit index right after, which every healthy node must reach.
func commitMark(t *testing.T, c *testcluster.Cluster, nd *testcluster.Node, w *diskWrites, key string) uint64 {
	t.Helper()
	w.b.put(t, nd, key, "x")
	w.keys[key] = "x"
	return c.WaitLeader(t).Node().Cluster().Info().CommitIndex
}

// writeUntilFull writes through every node of healthy, round after round,
// until the full node's Raft log writes fail (bbolt first reuses the pages
// it freed itself, so a full disk does not stop its log at once), then
// more rounds. Every write must be acknowledged (one whose outcome was
// unknown is written again; a refusal fails the test). It returns the
// slowest round's duration.
func writeUntilFull(t *testing.T, full *testcluster.Node, healthy []*testcluster.Node, writes map[string]*diskWrites, prefix string, more int) time.Duration {
	t.Helper()
	start := time.Now()
	var slowest time.Duration
	failedAt := -1
	for i := 0; failedAt < 0 || i < failedAt+more; i++ {
		if failedAt < 0 && full.Node().Cluster().LogWriteErr() != nil {
			failedAt = i
			t.Logf("%s failed a raft log write after %d rounds of writes through %d nodes", full.ID, i, len(healthy))
		}
		if failedAt < 0 && (i > 2000 || time.Since(start) > time.Minute) {
			t.Fatalf("%s still writes its raft log after %d rounds of writes (%s)", full.ID, i, time.Since(start).Round(time.Second))
		}
		round := time.Now()
		for _, nd := range healthy {
			k := fmt.Sprintf("%s-%s-%d", prefix, nd.ID, i)
			writes[nd.ID].b.put(t, nd, k, "v")
			writes[nd.ID].keys[k] = "v"
		}
		slowest = max(slowest, time.Since(round))
	}
	return slowest
}

// writeSessions starts one session through every node and writes five
// keys into each; the sessions are returned by node id.
func writeSessions(t *testing.T, c *testcluster.Cluster, prefix string) map[string]*diskWrites {
	t.Helper()
	writes := map[string]*diskWrites{}
	for _, nd := range c.Nodes() {
		w := &diskWrites{b: &diskBrowser{}, keys: map[string]string{}}
		for i := range 5 {
			k, v := fmt.Sprintf("%s-%s-%d", prefix, nd.ID, i), fmt.Sprintf("v%d", i)
			w.b.put(t, nd, k, v)
			w.keys[k] = v
		}
		writes[nd.ID] = w
	}
	return writes
}

// leaderLog records every leader change each node observes.
type leaderLog struct {
	mu  sync.Mutex
	obs []leaderSeen
}

type leaderSeen struct {
	at       time.Time
	observer string
	leader   string
}

// electedSince returns the times node id saw itself become leader after
// t. (Its own view: another node may see an old leader again late,
// legitimately, when a heartbeat sent before the step-down arrives.)
func (l *leaderLog) electedSince(t time.Time, id string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Time
	for _, o := range l.obs {
		if o.at.After(t) && o.observer == id && o.leader == id {
			out = append(out, o.at)
		}
	}
	return out
}

func newDiskCluster(t *testing.T) (*testcluster.Cluster, *leaderLog) {
	leaders := &leaderLog{}
	setup := func(n *node.Node) {
		diskRoutes(n)
		n.Cluster().OnLeaderChange(func(id string) {
			leaders.mu.Lock()
			leaders.obs = append(leaders.obs, leaderSeen{time.Now(), n.ID(), id})
			leaders.mu.Unlock()
		})
	}
	return testcluster.New(t, 3, testcluster.WithDiskLimit(diskSize), testcluster.WithNodeSetup(setup)), leaders
}

// TestDiskFullFollower fills one follower's data dir to ENOSPC. Session
// writes through the other nodes keep being acknowledged; writes and
// uploads through the full node are refused at once with an error naming
// the full disk, and commit nothing; uploads through the healthy nodes are
// held by the two of them. Once space returns the node catches up by
// itself, reads every acknowledged write and holds the same file tree, and
// is a healthy member again after a restart.
func TestDiskFullFollower(t *testing.T) {
	c, _ := newDiskCluster(t)
	leader := c.WaitLeader(t)
	full := c.Followers()[0]
	var healthy []*testcluster.Node
	for _, nd := range c.Nodes() {
		if nd.ID != full.ID {
			healthy = append(healthy, nd)
		}
	}
	t.Logf("leader %s, full follower %s", leader.ID, full.ID)

	// Before: a session written through every node, a file.
	writes := writeSessions(t, c, "before")
	content := map[string][]byte{"before.txt": []byte("written before the disk filled\n")}
	if code, body := diskUpload(t, c, leader, "before.txt", content["before.txt"]); code != http.StatusCreated {
		t.Fatalf("upload before.txt: %d %s", code, body)
	}

	c.FillDisk(full.ID)

	// Uploads through the full node, first thing (its Raft log has not
	// failed yet): refused with 507 before anything is committed. Were
	// the small file proposed, the others would commit it.
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: streamed to peers, not inline
	small := []byte("small file, carried in the raft log\n")
	for _, f := range []struct {
		name string
		data []byte
	}{{"refused/small.txt", small}, {"refused/big.bin", big}} {
		code, body := diskUpload(t, c, full, f.name, f.data)
		if code != http.StatusInsufficientStorage || !strings.Contains(body, "node "+full.ID) ||
			!strings.Contains(body, "no space left on device") || !strings.Contains(body, "free space") {
			t.Fatalf("upload %s through full %s: HTTP %d %s; want 507 naming the node's full disk and what to do", f.name, full.ID, code, body)
		}
		noSecrets(t, c, body)
		t.Logf("upload %s through full %s: %d %s", f.name, full.ID, code, body)
	}

	// Writes through the healthy nodes are acknowledged; the full node's
	// log writes fail meanwhile.
	writeUntilFull(t, full, healthy, writes, "during", 10)
	if err := full.Node().Cluster().LogWriteErr(); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("log write error of the full node: %v", err)
	}
	if ok, reason := full.Node().Ready(context.Background()); ok || !strings.Contains(reason, "no space left on device") {
		t.Fatalf("full node ready=%v (%s); want not ready because its disk is full", ok, reason)
	}

	// A session write through the full node: refused at once.
	refusedFast(t, c, writes[full.ID].b, full, "refused-session-write")

	// Through the healthy nodes: uploads succeed, held by those two.
	for i, nd := range healthy {
		for name, data := range map[string][]byte{
			fmt.Sprintf("during/big-%d.bin", i):   append(bytes.Clone(big), byte(i)),
			fmt.Sprintf("during/small-%d.txt", i): fmt.Appendf(nil, "small %d\n", i),
		} {
			code, body := diskUpload(t, c, nd, name, data)
			if code != http.StatusCreated {
				t.Fatalf("upload %s through healthy %s: %d %s", name, nd.ID, code, body)
			}
			var in files.Info
			if err := json.Unmarshal([]byte(body), &in); err != nil {
				t.Fatal(err)
			}
			if len(data) > files.InlineMax && slices.Contains(in.Holders, full.ID) {
				t.Fatalf("%s lists the full node %s as a holder: %v", name, full.ID, in.Holders)
			}
			content[name] = data
		}
	}
	for _, nd := range healthy {
		got := diskFiles(t, nd)
		for p := range got {
			if strings.HasPrefix(p, "refused/") {
				t.Fatalf("%s lists %s, whose upload was refused", nd.ID, p)
			}
		}
	}

	// Space returns: the node catches up by itself.
	c.FreeDisk(full.ID)
	final := commitMark(t, c, healthy[0], writes[healthy[0].ID], "after-free")
	waitHealthy(t, full, final, 45*time.Second)
	checkAllReadable(t, full, writes)
	if got := writes[full.ID].b.get(t, full, "refused-session-write"); got != "" {
		t.Fatalf("the refused session write is visible through %s: %q", full.ID, got)
	}
	checkSameFiles(t, c, content)
	for _, nd := range c.Nodes() {
		if l := diskTempFiles(t, nd); len(l) > 0 {
			t.Fatalf("%s keeps temp files of refused or finished uploads: %v", nd.ID, l)
		}
	}
	writes[full.ID].b.put(t, full, "through-recovered", "yes")
	writes[full.ID].keys["through-recovered"] = "yes"

	// And after a restart on the same disk.
	c.Restart(full.ID)
	waitHealthy(t, full, commitMark(t, c, healthy[1], writes[healthy[1].ID], "after-restart"), 30*time.Second)
	checkMembersHealthy(t, c)
	checkAllReadable(t, full, writes)
	checkSameFiles(t, c, content)
}

// checkSameFiles checks that every node lists the same tree and serves
// each file's content.
func checkSameFiles(t *testing.T, c *testcluster.Cluster, content map[string][]byte) {
	t.Helper()
	var want map[string]string
	var wantFrom string
	for _, nd := range c.Nodes() {
		got := diskFiles(t, nd)
		if want == nil {
			want, wantFrom = got, nd.ID
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s lists %v\n%s lists %v", nd.ID, got, wantFrom, want)
		}
	}
	for _, nd := range c.Nodes() {
		for p, data := range content {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			b, err := nd.Node().Files().ReadFile(ctx, p)
			cancel()
			if err != nil || sha256Hex(b) != sha256Hex(data) {
				t.Fatalf("%s reads %s: %d bytes, sha256 %s, err %v; want %s", nd.ID, p, len(b), sha256Hex(b)[:12], err, sha256Hex(data)[:12])
			}
		}
	}
	t.Logf("every node lists the same %d paths and serves the %d files", len(want), len(content))
}

// checkMembersHealthy waits until every node is ready and sees every
// member healthy and active (a restarted node restores its front's state
// through the log; until then fronts send its sessions elsewhere).
func checkMembersHealthy(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		for _, nd := range c.Nodes() {
			st := nd.Status(t)
			if !st.Ready {
				return false, fmt.Sprintf("%s not ready: %s", nd.ID, st.ReadyReason)
			}
			for _, m := range st.Members {
				if !m.Healthy || m.State != "active" {
					return false, fmt.Sprintf("%s sees %s healthy=%v state=%s", nd.ID, m.ID, m.Healthy, m.State)
				}
			}
		}
		return true, ""
	})
}

// TestDiskFullLeader fills the leader's data dir, three times over (the
// leader of the moment each time, the previous one's space back). The
// full leader's next log write fails and hashicorp/raft steps it down; a
// write forwarded to it in that moment is handed to the next leader rather
// than failed. The full node stands back from elections: its log is as
// long as the others' right after it stepped down, so it could win one,
// fail the first entry of its term and step down again, over and over. So
// the two others elect a leader at once and keep acknowledging writes,
// each on its first attempt, while the full node refuses writes at once.
// Once space returns it catches up and loses nothing acknowledged; after a
// restart every node reads every acknowledged write.
func TestDiskFullLeader(t *testing.T) {
	c, leaders := newDiskCluster(t)
	c.WaitLeader(t)
	writes := writeSessions(t, c, "before")
	var old *testcluster.Node
	for round := range 3 {
		old = c.WaitLeader(t)
		var others []*testcluster.Node
		for _, nd := range c.Nodes() {
			if nd.ID != old.ID {
				others = append(others, nd)
			}
		}
		t.Logf("round %d: leader %s; filling its disk", round, old.ID)
		filled := time.Now()
		c.FillDisk(old.ID)

		// Writes through the others reach the full leader until its log
		// fails: each must still be acknowledged (the one in flight then
		// by the next leader), and soon.
		slowest := writeUntilFull(t, old, others, writes, fmt.Sprintf("during-%d", round), 5)
		t.Logf("slowest round of writes through %s and %s: %s", others[0].ID, others[1].ID, slowest.Round(time.Millisecond))
		if slowest > 15*time.Second {
			t.Fatalf("a round of writes after the leader's disk filled took %s", slowest.Round(time.Millisecond))
		}
		if again := leaders.electedSince(filled, old.ID); len(again) > 0 {
			t.Fatalf("the node with the full disk, %s, was elected again after it stepped down, %d times", old.ID, len(again))
		}
		nl := c.WaitLeader(t)
		if nl.ID == old.ID {
			t.Fatalf("the node with the full disk, %s, still leads after acknowledged writes", old.ID)
		}
		if err := old.Node().Cluster().LogWriteErr(); err == nil || !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("log write error of the full node %s: %v", old.ID, err)
		}
		refused := fmt.Sprintf("refused-%d", round)
		refusedFast(t, c, writes[old.ID].b, old, refused)

		c.FreeDisk(old.ID)
		final := commitMark(t, c, others[0], writes[others[0].ID], fmt.Sprintf("after-free-%d", round))
		waitHealthy(t, old, final, 45*time.Second)
		if got := writes[old.ID].b.get(t, old, refused); got != "" {
			t.Fatalf("the refused session write is visible through %s: %q", old.ID, got)
		}
	}
	for _, nd := range c.Nodes() {
		checkAllReadable(t, nd, writes)
	}

	c.Restart(old.ID)
	var other *testcluster.Node
	for _, nd := range c.Nodes() {
		if nd.ID != old.ID {
			other = nd
		}
	}
	waitHealthy(t, old, commitMark(t, c, other, writes[other.ID], "after-restart"), 30*time.Second)
	checkMembersHealthy(t, c)
	checkAllReadable(t, old, writes)
}
