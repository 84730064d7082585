package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
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

// proc is one `cohort serve` process of a real cluster.
type proc struct {
	id, http, cluster string
	args              []string
	cmd               *exec.Cmd
	log               *os.File
	exited            chan struct{}
}

// procCluster is three real processes of the built binary on loopback.
type procCluster struct {
	t     *testing.T
	dir   string
	token string
	nodes []*proc
}

// freeAddr is a loopback address for a node process to bind (testport
// keeps it out of the ephemeral range and unique within this test binary).
func freeAddr(t *testing.T) string {
	t.Helper()
	return testport.Addr(t)
}

func startProcCluster(t *testing.T, n int, extra ...string) *procCluster {
	t.Helper()
	return startProcClusterWith(t, n, func(*proc) []string { return extra })
}

// startProcClusterWith is startProcCluster with flags of its own for each
// node (perNode sees the node's id and addresses).
func startProcClusterWith(t *testing.T, n int, perNode func(p *proc) []string) *procCluster {
	t.Helper()
	bin := cohortBinary(t)
	c := &procCluster{t: t, dir: t.TempDir(), token: "e2e-admin-token-0123456789abcdef"}
	key := filepath.Join(c.dir, "cluster.key")
	tok := filepath.Join(c.dir, "admin.token")
	must(t, os.WriteFile(key, []byte("e2e-cluster-key-0123456789abcdef"), 0o600))
	must(t, os.WriteFile(tok, []byte(c.token), 0o600))
	var peers []string
	for i := 1; i <= n; i++ {
		p := &proc{id: fmt.Sprintf("n%d", i), http: freeAddr(t), cluster: freeAddr(t)}
		peers = append(peers, p.id+"="+p.cluster)
		c.nodes = append(c.nodes, p)
	}
	for _, p := range c.nodes {
		p.args = append([]string{bin, "serve", "--node-id", p.id, "--data-dir", filepath.Join(c.dir, p.id),
			"--http-addr", p.http, "--cluster-addr", p.cluster, "--peers", strings.Join(peers, ","),
			"--cluster-key-file", key, "--admin-token-file", tok, "--shutdown-timeout", "10s"}, perNode(p)...)
		c.start(p)
	}
	t.Cleanup(func() {
		for _, p := range c.nodes {
			c.kill(p, syscall.SIGKILL)
		}
	})
	c.waitReady(c.nodes...)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (c *procCluster) start(p *proc) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.dir, p.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	must(c.t, err)
	p.log = f
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	must(c.t, p.cmd.Start())
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.cmd, p.exited)
}

func (c *procCluster) kill(p *proc, sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		p.log.Close()
	}
}

func (c *procCluster) logs(p *proc) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, p.id+".log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

type status struct {
	NodeID   string `json:"node_id"`
	LeaderID string `json:"leader_id"`
	State    string `json:"state"`
	Term     uint64 `json:"term"`
}

var apiClient = &http.Client{Timeout: 3 * time.Second}

func (c *procCluster) status(p *proc) (status, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.http+"/_cohort/status", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := apiClient.Do(req)
	if err != nil {
		return status{}, err
	}
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return status{}, err
	}
	return st, nil
}

// waitFor polls cond until it holds or the deadline passes.

func (c *procCluster) waitReady(ps ...*proc) {
	c.t.Helper()
	poll.Until(c.t, 30*time.Second, func() (bool, string) {
		for _, p := range ps {
			resp, err := apiClient.Get("http://" + p.http + "/_cohort/ready")
			if err != nil {
				return false, p.id + ": " + err.Error()
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false, fmt.Sprintf("%s: %d %s", p.id, resp.StatusCode, b)
			}
		}
		return true, ""
	})
}

// leader waits until the given nodes agree on a leader among them.
func (c *procCluster) leader(among ...*proc) *proc {
	c.t.Helper()
	var found *proc
	poll.Until(c.t, 20*time.Second, func() (bool, string) {
		var seen []string
		lid := ""
		for _, p := range among {
			st, err := c.status(p)
			if err != nil {
				return false, p.id + ": " + err.Error()
			}
			seen = append(seen, p.id+"->"+st.LeaderID)
			if lid == "" {
				lid = st.LeaderID
			}
			if st.LeaderID == "" || st.LeaderID != lid {
				return false, strings.Join(seen, " ")
			}
		}
		for _, p := range among {
			if p.id == lid {
				found = p
				return true, ""
			}
		}
		return false, "leader " + lid + " is not among the live nodes: " + strings.Join(seen, " ")
	})
	return found
}

func (c *procCluster) others(x *proc) []*proc {
	var out []*proc
	for _, p := range c.nodes {
		if p != x {
			out = append(out, p)
		}
	}
	return out
}

// counter does a demo counter call on node p with the client's cookies.
func counter(ctx context.Context, cl *http.Client, p *proc, method string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+p.http+"/demo/api/counter", nil)
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Count int    `json:"count"`
		Node  string `json:"node"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, "", fmt.Errorf("decode counter: %w", err)
	}
	return body.Count, body.Node, nil
}

// newSessionClient returns a client with a cookie jar. Cookies ignore
// ports (RFC 6265), so the session cookie goes to every node on 127.0.0.1,
// as it would to every node behind one host name.
func newSessionClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	must(t, err)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

func TestKill9LeaderLosesNoAcknowledgedSessionWrite(t *testing.T) {
	c := startProcCluster(t, 3)
	leader := c.leader(c.nodes...)
	cl := newSessionClient(t)
	ctx := context.Background()
	// Writes through every node; each acknowledged value is remembered.
	last := 0
	for i := 0; i < 30; i++ {
		n, _, err := counter(ctx, cl, c.nodes[i%3], http.MethodPost)
		if err != nil {
			t.Fatalf("POST counter: %v", err)
		}
		last = n
	}
	killedAt := time.Now()
	c.kill(leader, syscall.SIGKILL)
	rest := c.others(leader)
	nl := c.leader(rest...)
	t.Logf("kill -9 of leader %s: new leader %s after %s", leader.id, nl.id, time.Since(killedAt).Round(time.Millisecond))
	for _, p := range rest {
		n, _, err := counter(ctx, cl, p, http.MethodGet)
		if err != nil {
			t.Fatalf("GET counter on %s: %v", p.id, err)
		}
		if n != last {
			t.Fatalf("counter on %s is %d after the kill, last acknowledged %d", p.id, n, last)
		}
	}
	// The killed node comes back with everything.
	c.start(leader)
	c.waitReady(leader)
	n, _, err := counter(ctx, cl, leader, http.MethodGet)
	if err != nil || n != last {
		t.Fatalf("restarted %s: counter %d err %v, want %d\n%s", leader.id, n, err, last, c.logs(leader))
	}
}

func TestSIGSTOPLeaderIsReplacedAndRejoinsAfterSIGCONT(t *testing.T) {
	c := startProcCluster(t, 3)
	leader := c.leader(c.nodes...)
	cl := newSessionClient(t)
	ctx := context.Background()
	if _, _, err := counter(ctx, cl, c.nodes[0], http.MethodPost); err != nil {
		t.Fatal(err)
	}
	c.kill(leader, syscall.SIGSTOP)
	rest := c.others(leader)
	nl := c.leader(rest...)
	n, _, err := counter(ctx, cl, nl, http.MethodPost)
	if err != nil {
		t.Fatalf("write while the old leader is frozen: %v", err)
	}
	_ = leader.cmd.Process.Signal(syscall.SIGCONT)
	poll.Until(t, 20*time.Second, func() (bool, string) {
		st, err := c.status(leader)
		if err != nil {
			return false, err.Error()
		}
		return st.State == "follower" && st.LeaderID == nl.id, fmt.Sprintf("%+v", st)
	})
	got, _, err := counter(ctx, cl, leader, http.MethodGet)
	if err != nil || got != n {
		t.Fatalf("thawed node reads %d (%v), want %d", got, err, n)
	}
}

// lbGet sends a GET the way an HTTP balancer in front of the nodes would
// (HAProxy with redispatch and retry-on conn-failure): a node that refuses
// the connection or drops it before answering is skipped, since GET is
// idempotent; an HTTP error answer or a wrong value counts as a failure.
func lbGet(ctx context.Context, cl *http.Client, ps []*proc, start int, redispatched *atomic.Int64) (int, error) {
	var lastConn error
	for i := 0; i < len(ps); i++ {
		p := ps[(start+i)%len(ps)]
		n, _, err := counter(ctx, cl, p, http.MethodGet)
		if err == nil {
			return n, nil
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			lastConn = err // no HTTP answer: connection-level failure
			redispatched.Add(1)
			continue
		}
		return 0, fmt.Errorf("%s: %w", p.id, err)
	}
	return 0, fmt.Errorf("no node answered: %w", lastConn)
}

func TestRollingRestartUnderLoadFailsNoGET(t *testing.T) {
	c := startProcCluster(t, 3)
	c.leader(c.nodes...)
	cl := newSessionClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want, _, err := counter(ctx, cl, c.nodes[0], http.MethodPost)
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed, redispatched atomic.Int64
	var failMu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i++ {
				n, err := lbGet(ctx, cl, c.nodes, i, &redispatched)
				if ctx.Err() != nil {
					return
				}
				if err != nil || n != want {
					failed.Add(1)
					failMu.Lock()
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("n=%d err=%v", n, err))
					}
					failMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for _, p := range c.nodes {
		c.kill(p, syscall.SIGTERM)
		c.start(p)
		c.waitReady(p)
		c.leader(c.nodes...)
	}
	cancel()
	wg.Wait()
	t.Logf("rolling restart of 3 nodes: %d GETs succeeded, %d failed; %d tries redispatched after a refused or dropped connection",
		ok.Load(), failed.Load(), redispatched.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d GETs failed during the rolling restart, e.g. %v", failed.Load(), failures)
	}
	if ok.Load() == 0 {
		t.Fatal("no GET succeeded")
	}
}
