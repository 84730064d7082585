package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cohortCluster is a cluster of cohort processes on loopback.
type cohortCluster struct {
	p     *procs
	name  string   // prefix of process names and data dirs
	cmd   []string // binary and leading args (e.g. "cohort" or "bench cohort-node")
	dir   string
	key   string // cluster key file
	tok   string // admin token file
	token string
	nodes []*cohortNode
	hc    *http.Client
}

// cohortNode is one node of a cohortCluster.
type cohortNode struct {
	id      string
	http    string // host:port of the public front
	cluster string // host:port of the cluster port
	data    string
	flags   []string // this node's own flags, given at every launch
	proc    *proc
}

// url returns the node's public URL for path.
func (n *cohortNode) url(path string) string { return "http://" + n.http + path }

// startCohort starts a cluster of size nodes from cmd and waits until
// every node is ready.
func startCohort(ctx context.Context, p *procs, name string, cmd []string, size int) (*cohortCluster, error) {
	return startCohortWith(ctx, p, name, cmd, size, nil)
}

// startCohortWith is startCohort with extra flags for every node.
func startCohortWith(ctx context.Context, p *procs, name string, cmd []string, size int, extra []string) (*cohortCluster, error) {
	return startCohortNodes(ctx, p, name, cmd, size, extra, nil)
}

// startCohortNodes is startCohortWith where perNode, if not nil, returns
// each node's own flags (listeners on ports of their own, say); it is
// called once per node before any starts, and the node keeps its flags
// on later launches.
func startCohortNodes(ctx context.Context, p *procs, name string, cmd []string, size int, extra []string,
	perNode func(n *cohortNode) ([]string, error)) (*cohortCluster, error) {
	dir := filepath.Join(p.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cohort dir: %w", err)
	}
	c := &cohortCluster{p: p, name: name, cmd: cmd, dir: dir,
		key: filepath.Join(dir, "key"), tok: filepath.Join(dir, "token"),
		hc: &http.Client{Timeout: 10 * time.Second}}
	c.token = randString(24)
	if err := os.WriteFile(c.key, []byte(randString(32)), 0o600); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if err := os.WriteFile(c.tok, []byte(c.token), 0o600); err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	var peers []string
	for i := range size {
		ports, err := p.ports(2)
		if err != nil {
			return nil, err
		}
		n := &cohortNode{id: fmt.Sprintf("n%d", i+1),
			http:    fmt.Sprintf("127.0.0.1:%d", ports[0]),
			cluster: fmt.Sprintf("127.0.0.1:%d", ports[1])}
		n.data = filepath.Join(dir, n.id)
		if perNode != nil {
			if n.flags, err = perNode(n); err != nil {
				return nil, fmt.Errorf("flags of %s: %w", n.id, err)
			}
		}
		c.nodes = append(c.nodes, n)
		peers = append(peers, n.id+"="+n.cluster)
	}
	for _, n := range c.nodes {
		if err := c.launch(n, append([]string{"--peers", strings.Join(peers, ",")}, extra...)...); err != nil {
			return nil, err
		}
	}
	if err := c.waitReady(ctx, 60*time.Second, c.nodes...); err != nil {
		return nil, err
	}
	return c, nil
}

// launch starts the process of n with the common flags, n's own flags
// and extra.
func (c *cohortCluster) launch(n *cohortNode, extra ...string) error {
	args := append([]string{}, c.cmd[1:]...)
	args = append(args, "serve", "--node-id", n.id, "--data-dir", n.data,
		"--http-addr", n.http, "--cluster-addr", n.cluster,
		"--cluster-key-file", c.key, "--admin-token-file", c.tok, "--log-level", "warn")
	args = append(args, n.flags...)
	args = append(args, extra...)
	pr, err := c.p.start(c.name+"-"+n.id, c.cmd[0], args...)
	if err != nil {
		return err
	}
	n.proc = pr
	return nil
}

// waitReady waits until /_cohort/ready answers 200 on every node given.
func (c *cohortCluster) waitReady(ctx context.Context, timeout time.Duration, nodes ...*cohortNode) error {
	for _, n := range nodes {
		if err := waitHTTP(ctx, n.proc, n.url("/_cohort/ready"), timeout); err != nil {
			return fmt.Errorf("cohort %s ready: %w", n.id, err)
		}
	}
	return nil
}

// nodeStatus is the part of /_cohort/status the harness reads.
type nodeStatus struct {
	NodeID       string `json:"node_id"`
	LeaderID     string `json:"leader_id"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
}

// status asks n for its view of the cluster.
func (c *cohortCluster) status(ctx context.Context, n *cohortNode) (nodeStatus, error) {
	var st nodeStatus
	err := c.adminJSON(ctx, n, http.MethodGet, "/_cohort/status", &st)
	return st, err
}

// adminJSON calls an admin endpoint of n and decodes the JSON answer.
func (c *cohortCluster) adminJSON(ctx context.Context, n *cohortNode, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, n.url(path), nil)
	if err != nil {
		return fmt.Errorf("admin request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, n.id, err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s on %s: %s", method, path, n.id, res.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// leader returns the node every live node names as leader.
func (c *cohortCluster) leader(ctx context.Context) (*cohortNode, error) {
	var found *cohortNode
	err := waitFor(ctx, 30*time.Second, func() (bool, string) {
		for _, n := range c.nodes {
			if n.proc.exited() {
				continue
			}
			st, err := c.status(ctx, n)
			if err != nil || st.LeaderID == "" {
				continue
			}
			found = c.node(st.LeaderID)
			return found != nil, "leader " + st.LeaderID
		}
		return false, "no node names a leader"
	})
	return found, err
}

// leaderAndFollower returns the leader and another node.
func (c *cohortCluster) leaderAndFollower(ctx context.Context) (leader, follower *cohortNode, err error) {
	if leader, err = c.leader(ctx); err != nil {
		return nil, nil, err
	}
	follower = c.nodes[0]
	if follower == leader {
		follower = c.nodes[1]
	}
	return leader, follower, nil
}

// node returns the node with id, or nil.
func (c *cohortCluster) node(id string) *cohortNode {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// stop stops every process of the cluster.
func (c *cohortCluster) stop() {
	var list []*proc
	for _, n := range c.nodes {
		if n.proc != nil {
			list = append(list, n.proc)
		}
	}
	c.p.stopSome(list...)
}

// rssKiB returns the resident memory of n's process in KiB.
func rssKiB(pr *proc) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pr.pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kib int64
			_, _ = fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kib)
			return kib
		}
	}
	return 0
}

// randString returns n random bytes as base64url.
func randString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
