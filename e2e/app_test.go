package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/internal/testport"
)

// phpBinary returns php-cli's path, or skips (fails under CI) without it.
func phpBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("php")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("php-cli is required in CI (apt-get install php-cli)")
		}
		t.Skip("php-cli not installed: apt-get install php-cli")
	}
	return p
}

// copyDir copies the files of src (one level) into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	must(t, err)
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
}

// phpApp is the PHP example (examples/php) run by every node of a cluster.
type phpApp struct {
	*procCluster
	dir     string            // the app's files (a copy)
	appAddr map[string]string // node id → the app's address
}

// startPHPCluster starts the PHP example on three nodes; with store, each
// node also serves the Redis protocol (--redis-addr), so the example keeps
// its sessions in the replicated store instead of node-local files.
func startPHPCluster(t *testing.T, store bool) *phpApp {
	t.Helper()
	phpBinary(t)
	a := &phpApp{dir: filepath.Join(t.TempDir(), "app"), appAddr: map[string]string{}}
	copyDir(t, filepath.Join("..", "examples", "php"), a.dir)
	sessions := t.TempDir()
	a.procCluster = startProcClusterWith(t, 3, func(p *proc) []string {
		addr := testport.Addr(t)
		a.appAddr[p.id] = addr
		sess := filepath.Join(sessions, p.id) // node-local PHP sessions
		must(t, os.MkdirAll(sess, 0o700))
		var kv []string
		if store {
			kv = []string{"--redis-addr", testport.Addr(t)}
		}
		return append(kv, "--app-upstream", "http://"+addr,
			"--app-command", `exec php -d session.save_path="$SESS" -S 127.0.0.1:$PORT index.php`,
			"--app-dir", a.dir, "--app-env", "SESS="+sess, "--app-env", "PHP_CLI_SERVER_WORKERS=4",
			"--app-session-cookie", "PHPSESSID", "--app-health", "/health",
			"--app-health-interval", "500ms", "--app-start-timeout", "8s", "--app-stop-grace", "3s",
			"--access-log=false")
	})
	return a
}

type phpAnswer struct {
	Count   int               `json:"count"`
	User    string            `json:"user"`
	Node    string            `json:"node"`
	Store   string            `json:"store"` // the app's session.save_handler
	Headers map[string]string `json:"headers"`
}

func phpCall(ctx context.Context, cl *http.Client, p *proc, method, path string, hdr map[string]string) (phpAnswer, error) {
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+p.http+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return phpDo(cl, p, req)
}

// phpDo sends req to node p and decodes the app's JSON answer.
func phpDo(cl *http.Client, p *proc, req *http.Request) (phpAnswer, error) {
	method, path := req.Method, req.URL.Path
	resp, err := cl.Do(req)
	if err != nil {
		return phpAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return phpAnswer{}, fmt.Errorf("%s %s via %s: HTTP %d, answer cut short after %d bytes: %w", method, path, p.id, resp.StatusCode, len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return phpAnswer{}, fmt.Errorf("%s %s via %s: HTTP %d: %s", method, path, p.id, resp.StatusCode, b)
	}
	var a phpAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("%s %s via %s: %w: %s", method, path, p.id, err, b)
	}
	return a, nil
}

type appState struct {
	Healthy bool `json:"healthy"`
	Process *struct {
		PID      int    `json:"pid"`
		Restarts int64  `json:"restarts"`
		Command  string `json:"command"`
	} `json:"process"`
}

func (a *phpApp) app(p *proc) appState {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.http+"/_cohort/api/app", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := apiClient.Do(req)
	must(a.t, err)
	defer resp.Body.Close()
	var st appState
	must(a.t, json.NewDecoder(resp.Body).Decode(&st))
	if st.Process == nil {
		a.t.Fatalf("%s: no supervised process in %+v", p.id, st)
	}
	return st
}

func ready(p *proc) bool {
	resp, err := apiClient.Get("http://" + p.http + "/_cohort/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// loop calls GET path through the given nodes in turn until stop, with
// its own session, and records failures and the nodes that answered.
type loop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	served     []string
	firstErr   error
}

func (l *loop) run(ctx context.Context, t *testing.T, ps []*proc, path string, start int) {
	cl := newSessionClient(t)
	for i := start; ctx.Err() == nil; i++ {
		a, err := phpCall(ctx, cl, ps[i%len(ps)], http.MethodGet, path, nil)
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		if err != nil {
			l.failed.Add(1)
			if l.firstErr == nil {
				l.firstErr = err
			}
		} else {
			l.ok.Add(1)
			l.served = append(l.served, a.Node)
		}
		l.mu.Unlock()
	}
}

func (l *loop) servedSince(i int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.served[min(i, len(l.served)):]...)
}

func TestPHPAppOnThreeNodes(t *testing.T) {
	a := startPHPCluster(t, false)
	c := a.procCluster
	ctx := context.Background()

	// 1. One app session keeps to one node, whichever node it enters.
	cl := newSessionClient(t)
	owner := ""
	for i := 0; i < 12; i++ {
		got, err := phpCall(ctx, cl, c.nodes[i%3], http.MethodPost, "/counter", nil)
		must(t, err)
		if owner == "" {
			owner = got.Node
		}
		if got.Node != owner || got.Count != i+1 {
			t.Fatalf("POST %d through %s: served by %s with count %d; want %s and %d", i+1, c.nodes[i%3].id, got.Node, got.Count, owner, i+1)
		}
	}
	t.Logf("PHP session keeps to %s through every node", owner)

	// 2. Headers a client forges never reach the app.
	other := c.others(c.byID(owner))[0]
	got, err := phpCall(ctx, cl, other, http.MethodGet, "/headers", map[string]string{
		"Cohort-Node": "evil", "Cohort-Front-Client": "6.6.6.6:1", "X-Cohort-Fence": "999", "X-Cohort-Node": "evil",
	})
	must(t, err)
	for k, v := range got.Headers {
		if strings.HasPrefix(k, "X-COHORT") || strings.HasPrefix(k, "COHORT-FRONT") || (strings.HasPrefix(k, "COHORT") && k != "COHORT-NODE") {
			t.Errorf("the app got the forged header %s: %s", k, v)
		}
	}
	if got.Headers["COHORT-NODE"] != owner || strings.Contains(got.Headers["COOKIE"], "cohort_session") || got.Headers["X-FORWARDED-FOR"] != "127.0.0.1" {
		t.Errorf("the app got Cohort-Node %q, Cookie %q, X-Forwarded-For %q; want %s, no cohort_session, 127.0.0.1",
			got.Headers["COHORT-NODE"], got.Headers["COOKIE"], got.Headers["X-FORWARDED-FOR"], owner)
	}

	// 3. kill -9 of the owner's app alone: the node goes unready, the
	// session is served elsewhere without a failed GET, the app restarts
	// and the node comes back.
	op := c.byID(owner)
	before := a.app(op)
	var l loop
	lctx, lstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.run(lctx, t, c.others(op), "/counter", 0) }()
	// The loop's own session: make it belong to the owner first.
	lcl := newSessionClient(t)
	_, err = phpCall(ctx, lcl, op, http.MethodPost, "/counter", nil)
	must(t, err)
	must(t, syscall.Kill(-before.Process.PID, syscall.SIGKILL))
	killed := time.Now()
	poll.Until(t, 3*time.Second, func() (bool, string) { return !ready(op), owner + " still ready after its app was killed" })
	t.Logf("%s unready %s after its app was killed", owner, time.Since(killed).Round(time.Millisecond))
	downAt := int(l.ok.Load())
	poll.Until(t, 30*time.Second, func() (bool, string) {
		st := a.app(op)
		return ready(op) && st.Process.Restarts > before.Process.Restarts, fmt.Sprintf("%s: ready=%v %+v", owner, ready(op), *st.Process)
	})
	t.Logf("%s ready again %s after the kill", owner, time.Since(killed).Round(time.Millisecond))
	// And its sessions fail over: a session owned by it, entering elsewhere.
	got, err = phpCall(ctx, lcl, other, http.MethodGet, "/counter", nil)
	must(t, err)
	lstop()
	wg.Wait()
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d GETs failed (of %d) while %s's app was down: %v", n, l.ok.Load()+n, owner, l.firstErr)
	}
	if s := l.servedSince(downAt); len(s) == 0 {
		t.Fatal("no GET was answered while the app was down")
	}

	// 4. kill -9 of a node: its sessions fail over with no failed GET, its
	// app dies with it (the port is free), and it comes back.
	victim := c.byID(got.Node)
	l = loop{}
	lctx, lstop = context.WithCancel(ctx)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(lctx, t, c.others(victim), "/counter", g) }()
	}
	c.kill(victim, syscall.SIGKILL)
	poll.Until(t, 5*time.Second, func() (bool, string) {
		conn, err := net.DialTimeout("tcp", a.appAddr[victim.id], time.Second)
		if err != nil {
			return true, ""
		}
		conn.Close()
		return false, victim.id + "'s app still listens after kill -9 of its node"
	})
	after := int(l.ok.Load())
	poll.Until(t, 10*time.Second, func() (bool, string) { return int(l.ok.Load()) > after+40, "no answers after the kill" })
	lstop()
	wg.Wait()
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d GETs failed (of %d) across kill -9 of %s: %v", n, l.ok.Load()+n, victim.id, l.firstErr)
	}
	for _, s := range l.servedSince(after) {
		if s == victim.id {
			t.Fatalf("killed node %s answered", victim.id)
		}
	}
	c.start(victim)
	c.waitReady(c.nodes...)

	// 5. Rolling restart under 64 connections: no failed request, every
	// node restarted once, in order.
	restarts := map[string]int64{}
	for _, p := range c.nodes {
		restarts[p.id] = a.app(p).Process.Restarts
	}
	l = loop{}
	lctx, lstop = context.WithCancel(ctx)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(lctx, t, c.nodes, "/counter", g) }()
	}
	// A deploy: the restart also switches every node to a new command.
	newCmd := `APP_RELEASE=2 exec php -d session.save_path="$SESS" -S 127.0.0.1:$PORT index.php`
	out, err := exec.Command(cohortBinary(t), "app", "restart", "--addr", "http://"+c.nodes[1].http,
		"--token-file", filepath.Join(c.dir, "admin.token"), "--command", newCmd).CombinedOutput()
	afterRestart := l.ok.Load()
	poll.Until(t, 10*time.Second, func() (bool, string) { return l.ok.Load() > afterRestart+100, "no load after the restart" })
	lstop()
	wg.Wait()
	if err != nil {
		t.Fatalf("cohort app restart: %v\n%s", err, out)
	}
	t.Logf("cohort app restart:\n%s", out)
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed (of %d) during the rolling restart: %v", n, l.ok.Load()+n, l.firstErr)
	}
	if i1, i2, i3 := strings.Index(string(out), "n1: restarted"), strings.Index(string(out), "n2: restarted"), strings.Index(string(out), "n3: restarted"); i1 < 0 || i2 < i1 || i3 < i2 {
		t.Fatalf("nodes not restarted once each in order:\n%s", out)
	}
	for _, p := range c.nodes {
		if cmd := a.app(p).Process.Command; cmd != newCmd {
			t.Fatalf("%s runs %q after the deploy, want %q", p.id, cmd, newCmd)
		}
		if got := a.app(p).Process.Restarts; got != restarts[p.id]+1 {
			t.Fatalf("%s: app restarts %d, want %d; log in %s", p.id, got, restarts[p.id]+1, keepLog(c, p))
		}
	}
	t.Logf("rolling restart: %d requests over 64 connections, none failed", l.ok.Load())

	// 6. A node whose app does not come back healthy stops the rolling
	// restart with a clear message; the others keep serving.
	must(t, os.WriteFile(filepath.Join(a.dir, "maintenance-n2"), nil, 0o644))
	out, err = exec.Command(cohortBinary(t), "app", "restart", "--addr", "http://"+c.nodes[0].http,
		"--token-file", filepath.Join(c.dir, "admin.token")).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "stopped at node n2") || !strings.Contains(string(out), "did not come back healthy") || !strings.Contains(string(out), "[n3]") {
		t.Fatalf("rolling restart with n2's app unhealthy: err %v, output:\n%s", err, out)
	}
	t.Logf("rolling restart stopped as it should:\n%s", out)
	for _, p := range []*proc{c.nodes[0], c.nodes[2]} {
		if _, err := phpCall(ctx, newSessionClient(t), p, http.MethodGet, "/counter", nil); err != nil {
			t.Fatalf("%s does not serve after the stopped restart: %v", p.id, err)
		}
	}
	must(t, os.Remove(filepath.Join(a.dir, "maintenance-n2")))
	c.admin(c.nodes[0], http.MethodPost, "/_cohort/api/nodes/n2/enable")
	c.waitReady(c.nodes...)
}

// keepLog copies a node's log out of the test's temporary directory.
func keepLog(c *procCluster, p *proc) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, p.id+".log"))
	f := filepath.Join(os.TempDir(), fmt.Sprintf("cohort-e2e-%s-%d.log", p.id, time.Now().UnixNano()))
	_ = os.WriteFile(f, b, 0o644)
	return f
}
