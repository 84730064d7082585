package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/internal/testport"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
)

// Cluster is N real cohort nodes in this process, each built by node.New
// exactly as `cohort serve` builds one, on 127.0.0.1 ports, with data in
// the test's temp dir.
type Cluster struct {
	t      testing.TB
	dir    string
	faults *raft.Faults
	key    string // cluster key file
	token  string // admin token
	tweak  func(*config.Config)
	setup  func(*node.Node)
	tee    io.Writer // also receives every log line (WithLogWriter)
	skew   map[string]time.Duration
	disk   *diskLimit // WithDiskLimit
	logger *slog.Logger

	mu          sync.Mutex
	nodes       []*Node
	partitioned [][]string
	mounts      []string // data dirs with a tmpfs mounted (disk.go)
}

// Node is one member of a test cluster. Its *node.Node changes on Restart.
type Node struct {
	ID          string
	HTTPAddr    string
	ClusterAddr string
	c           *Cluster
	cfg         config.Config

	mu      sync.Mutex
	n       *node.Node
	running bool
	// held are the node's listeners from newNode until its first start:
	// holding them (rather than closing a :0 probe and binding again)
	// means no other node or test can be handed the same port meanwhile.
	held []net.Listener
}

// Option adjusts a test cluster.
type Option func(*Cluster)

// WithConfig lets a test change every node's configuration before start.
func WithConfig(fn func(*config.Config)) Option {
	return func(c *Cluster) { c.tweak = fn }
}

// WithNodeSetup runs fn on every node after node.New and before Start,
// each time a node is (re)built: tests register extra state machines,
// routes or hooks there.
func WithNodeSetup(fn func(*node.Node)) Option {
	return func(c *Cluster) { c.setup = fn }
}

// WithLogWriter copies every log line of every node to w (tests that look
// for what must never be logged).
func WithLogWriter(w io.Writer) Option {
	return func(c *Cluster) { c.tee = w }
}

// WithClockSkew runs each listed node with its clock off by the given
// amount (what it would stamp commands with, were it the leader).
func WithClockSkew(skew map[string]time.Duration) Option {
	return func(c *Cluster) { c.skew = skew }
}

// KeyFile is the path of the cluster key file every node reads at start.
func (c *Cluster) KeyFile() string { return c.key }

// TokenFile is the path of the admin token file every node reads at start.
func (c *Cluster) TokenFile() string { return filepath.Join(c.dir, "admin.token") }

// logSegmentSize is the Raft log segment size of test nodes: 64 KiB, not
// 64 MiB, so that a node's log fits the small disks of WithDiskLimit and a
// full disk fails its log writes soon (a new segment cannot be made).
const logSegmentSize = 64 << 10

// New starts n nodes that bootstrap from a shared --peers list and waits
// until they agree on a leader. Everything stops at the end of the test.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, dir: t.TempDir(), faults: raft.NewFaults()}
	for _, o := range opts {
		o(c)
	}
	c.logger = slog.New(newTestHandler(t, c.tee))
	c.key = filepath.Join(c.dir, "cluster.key")
	c.token = "test-admin-token-0123456789abcdef"
	must(t, os.WriteFile(c.key, []byte("test-cluster-key-0123456789abcdef\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(c.dir, "admin.token"), []byte(c.token+"\n"), 0o600))

	var peers []config.Peer
	for i := 1; i <= n; i++ {
		nd := c.newNode(fmt.Sprintf("n%d", i))
		peers = append(peers, config.Peer{ID: nd.ID, Address: nd.ClusterAddr})
	}
	t.Cleanup(c.closeAll)
	for _, nd := range c.nodes {
		nd.cfg.Peers = peers
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, nd := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.start()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("start test cluster: %v", err)
		}
	}
	c.WaitLeader(t)
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) newNode(id string) *Node {
	hl, cl := testport.Listen(c.t), testport.Listen(c.t)
	nd := &Node{ID: id, c: c, HTTPAddr: hl.Addr().String(), ClusterAddr: cl.Addr().String(),
		held: []net.Listener{hl, cl}}
	cfg := config.Default()
	cfg.NodeID = id
	cfg.DataDir = filepath.Join(c.dir, id)
	cfg.HTTPAddr = nd.HTTPAddr
	cfg.ClusterAddr = nd.ClusterAddr
	cfg.AdvertiseAddr = nd.ClusterAddr
	cfg.ClusterKeyFile = c.key
	cfg.AdminTokenFile = filepath.Join(c.dir, "admin.token")
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.JoinTimeout = 30 * time.Second
	cfg.Logger = c.logger
	cfg.RaftTimeoutScale = testTimeoutScale()
	// A request's waits on the cluster end after 10 s (the commit timeout
	// of the sessions) whatever the scale: a 2-core machine running -race
	// tests of several packages at once stalled 48 concurrent commits of
	// one session past 4 s. Tests of the cut-off behaviour set a shorter
	// budget with WithConfig.
	cfg.ClusterWaitBudget = 10 * time.Second
	nd.cfg = cfg
	c.mountDisk(nd)
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.mu.Unlock()
	return nd
}

// testTimeoutScale is the Raft timer scale of test clusters: 2 by default
// (heartbeat 1 s, lease 500 ms), since a 2-core machine running -race tests
// of several packages at once can stall a goroutine past the LAN defaults
// and cause elections nobody asked for. COHORT_TEST_RAFT_SCALE overrides it.
func testTimeoutScale() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("COHORT_TEST_RAFT_SCALE"), 64); err == nil && v > 0 {
		return v
	}
	return 2
}

// listen re-opens a node's ports; a restarted node keeps its addresses.
func listenRetry(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(20 * time.Millisecond) // port still in TIME_WAIT teardown; bounded retry
	}
}

// listeners returns the listeners held since newNode on a first start, and
// binds the node's addresses again on a restart.
func (nd *Node) listeners() (hl, cl net.Listener, err error) {
	nd.mu.Lock()
	held := nd.held
	nd.held = nil
	nd.mu.Unlock()
	if held != nil {
		return held[0], held[1], nil
	}
	hl, err = listenRetry(nd.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", nd.ID, err)
	}
	cl, err = listenRetry(nd.ClusterAddr)
	if err != nil {
		hl.Close()
		return nil, nil, fmt.Errorf("%s: %w", nd.ID, err)
	}
	return hl, cl, nil
}

func (nd *Node) start() error {
	cfg := nd.cfg
	if nd.c.tweak != nil {
		nd.c.tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", nd.ID, err)
	}
	hl, cl, err := nd.listeners()
	if err != nil {
		return err
	}
	opts := []node.Option{node.WithListeners(hl, cl), node.WithFaults(nd.c.faults), node.WithRaftLogSegmentSize(logSegmentSize)}
	if d, ok := nd.c.skew[nd.ID]; ok {
		opts = append(opts, node.WithClock(func() time.Time { return time.Now().Add(d) }))
	}
	n, err := node.New(cfg, opts...)
	if err != nil {
		hl.Close()
		cl.Close()
		return fmt.Errorf("%s: %w", nd.ID, err)
	}
	if nd.c.setup != nil {
		nd.c.setup(n)
	}
	if err := n.Start(context.Background()); err != nil {
		hl.Close()
		cl.Close()
		return fmt.Errorf("%s: %w", nd.ID, err)
	}
	nd.mu.Lock()
	nd.n, nd.running = n, true
	nd.mu.Unlock()
	return nil
}

// Node returns the running *node.Node (nil while stopped).
func (nd *Node) Node() *node.Node {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if !nd.running {
		return nil
	}
	return nd.n
}

// Running reports whether the node is up.
func (nd *Node) Running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.running
}

// Nodes returns every node, running or not.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Node returns the node with id, failing the test if there is none.
func (c *Cluster) Node(id string) *Node {
	for _, nd := range c.Nodes() {
		if nd.ID == id {
			return nd
		}
	}
	c.t.Fatalf("no node %q in the test cluster", id)
	return nil
}

// Running returns the nodes that are up.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, nd := range c.Nodes() {
		if nd.Running() {
			out = append(out, nd)
		}
	}
	return out
}

// Faults is the transport's fault seam shared by every node.
func (c *Cluster) Faults() *raft.Faults { return c.faults }

// Token is the admin token of every node.
func (c *Cluster) Token() string { return c.token }

// Dir is the cluster's temp dir.
func (c *Cluster) Dir() string { return c.dir }

// WaitFor polls cond until it is true or timeout passes, then fails the
// test with what cond last said.
func WaitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, timeout, cond)
}

// WaitLeader waits until every running node, except those cut off by a
// partition, agrees on one leader that is itself running, and returns it.
func (c *Cluster) WaitLeader(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	WaitFor(t, 15*time.Second, func() (bool, string) {
		var ids []string
		for _, nd := range c.Running() {
			n := nd.Node()
			if n == nil {
				continue
			}
			id, _ := n.Cluster().Leader()
			ids = append(ids, nd.ID+"->"+id)
		}
		leader = nil
		var lid string
		for _, nd := range c.Running() {
			n := nd.Node()
			if n != nil && n.Cluster().IsLeader() && !c.isolated(nd.ID) {
				if lid != "" {
					return false, "two leaders: " + strings.Join(ids, " ")
				}
				lid, leader = nd.ID, nd
			}
		}
		if leader == nil {
			return false, "no leader: " + strings.Join(ids, " ")
		}
		for _, nd := range c.Running() {
			if n := nd.Node(); n != nil {
				id, _ := n.Cluster().Leader()
				if id != lid && !c.isolated(nd.ID) {
					return false, "not agreed: " + strings.Join(ids, " ")
				}
			}
		}
		return true, ""
	})
	return leader
}

// WaitReady waits until every running node reports ready (node.Ready:
// leader known, caught up, its own member entry applied, every added
// check passing) and fails the test with the reasons of those that are
// not.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	WaitFor(t, 20*time.Second, func() (bool, string) {
		var not []string
		for _, nd := range c.Running() {
			n := nd.Node()
			if n == nil {
				continue
			}
			if ok, reason := n.Ready(context.Background()); !ok {
				not = append(not, nd.ID+": "+reason)
			}
		}
		return len(not) == 0, strings.Join(not, "; ")
	})
}

// Leader returns the current leader without waiting (nil when none).
func (c *Cluster) Leader() *Node {
	for _, nd := range c.Running() {
		if n := nd.Node(); n != nil && n.Cluster().IsLeader() {
			return nd
		}
	}
	return nil
}

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, nd := range c.Running() {
		if n := nd.Node(); n != nil && !n.Cluster().IsLeader() {
			out = append(out, nd)
		}
	}
	return out
}

// Kill stops a node abruptly: connections drop, no leadership transfer,
// no graceful close (node.Abort). Its data dir stays for Restart.
func (c *Cluster) Kill(id string) {
	nd := c.Node(id)
	nd.mu.Lock()
	n := nd.n
	was := nd.running
	nd.running = false
	nd.mu.Unlock()
	if was {
		if err := n.Abort(); err != nil {
			c.t.Logf("kill %s: %v", id, err)
		}
	}
}

// Stop shuts a node down gracefully (a leader transfers leadership first).
func (c *Cluster) Stop(id string) {
	nd := c.Node(id)
	nd.mu.Lock()
	n := nd.n
	was := nd.running
	nd.running = false
	nd.mu.Unlock()
	if was {
		if err := n.Close(); err != nil {
			c.t.Errorf("stop %s: %v", id, err)
		}
	}
}

// Restart starts a stopped or killed node again on the same data dir and
// addresses.
func (c *Cluster) Restart(id string) {
	c.t.Helper()
	nd := c.Node(id)
	if nd.Running() {
		c.Stop(id)
	}
	if err := nd.start(); err != nil {
		c.t.Fatalf("restart %s: %v", id, err)
	}
}

// AddNode starts a new node that joins the cluster through --join.
func (c *Cluster) AddNode(t testing.TB) *Node {
	t.Helper()
	var join []string
	for _, nd := range c.Running() {
		join = append(join, nd.ClusterAddr)
	}
	nd := c.newNode(fmt.Sprintf("n%d", len(c.Nodes())+1))
	nd.cfg.Join = join
	if err := nd.start(); err != nil {
		t.Fatalf("add node: %v", err)
	}
	return nd
}

// Partition cuts every link between the groups; nodes in no group keep
// their links. Partition(["n1"], ["n2","n3"]) isolates n1.
func (c *Cluster) Partition(groups ...[]string) {
	for i, a := range groups {
		for _, b := range groups[i+1:] {
			for _, x := range a {
				for _, y := range b {
					c.faults.Cut(x, y)
				}
			}
		}
	}
	c.mu.Lock()
	c.partitioned = groups
	c.mu.Unlock()
}

// Isolate cuts one node off from every other.
func (c *Cluster) Isolate(id string) {
	var rest []string
	for _, nd := range c.Nodes() {
		if nd.ID != id {
			rest = append(rest, nd.ID)
		}
	}
	c.Partition([]string{id}, rest)
}

// Heal opens every link again.
func (c *Cluster) Heal() {
	c.faults.MendAll()
	c.mu.Lock()
	c.partitioned = nil
	c.mu.Unlock()
}

// isolated reports whether id sits in a partition group without the
// majority (WaitLeader ignores such nodes' view of the leader).
func (c *Cluster) isolated(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partitioned) == 0 {
		return false
	}
	total := len(c.nodes)
	for _, g := range c.partitioned {
		for _, m := range g {
			if m == id {
				return len(g)*2 <= total
			}
		}
	}
	return false
}

func (c *Cluster) closeAll() {
	var wg sync.WaitGroup
	for _, nd := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.mu.Lock()
			n, was, held := nd.n, nd.running, nd.held
			nd.running, nd.held = false, nil
			nd.mu.Unlock()
			for _, ln := range held { // never started
				ln.Close()
			}
			if was {
				_ = n.Abort()
			}
		}()
	}
	wg.Wait()
}

// URL returns the node's public URL for path.
func (nd *Node) URL(path string) string { return "http://" + nd.HTTPAddr + path }

// Do sends an admin-authenticated request to the node's public front and
// returns the status and body.
func (nd *Node) Do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		must(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, nd.URL(path), rd)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+nd.c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, nd.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, b
}

// PutFile writes content as the shared file path through nd's files API
// with the cluster's admin token, and fails t unless it was stored.
func (nd *Node) PutFile(t testing.TB, path string, content []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, nd.URL("/_cohort/api/files/"+path), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+nd.c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("put %s through %s: %v", path, nd.ID, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("put %s through %s: HTTP %d %s", path, nd.ID, resp.StatusCode, b)
	}
}

// Status fetches the node's /_cohort/status.
func (nd *Node) Status(t testing.TB) node.Status {
	t.Helper()
	code, b := nd.Do(t, http.MethodGet, "/_cohort/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status of %s: HTTP %d: %s", nd.ID, code, b)
	}
	var st node.Status
	must(t, json.Unmarshal(b, &st))
	return st
}

// MemberIDs returns the sorted ids of the members a status lists.
func MemberIDs(st node.Status) []string {
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID)
	}
	sort.Strings(ids)
	return ids
}

// testHandler sends slog records to t.Log until the test ends.
type testHandler struct {
	slog.Handler
	st *testState
}

type testState struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
	tee  io.Writer
}

func newTestHandler(t testing.TB, tee io.Writer) *testHandler {
	st := &testState{t: t, tee: tee}
	t.Cleanup(func() {
		st.mu.Lock()
		st.done = true
		st.mu.Unlock()
	})
	level := slog.LevelInfo
	if os.Getenv("COHORT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return &testHandler{Handler: slog.NewTextHandler(logWriter{st}, &slog.HandlerOptions{Level: level}), st: st}
}

// WithAttrs keeps the handler's type so the sink stays the test's.
func (h *testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &testHandler{Handler: h.Handler.WithAttrs(as), st: h.st}
}

// WithGroup keeps the handler's type.
func (h *testHandler) WithGroup(name string) slog.Handler {
	return &testHandler{Handler: h.Handler.WithGroup(name), st: h.st}
}

type logWriter struct{ st *testState }

func (w logWriter) Write(p []byte) (int, error) {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	if w.st.tee != nil {
		_, _ = w.st.tee.Write(p)
	}
	if !w.st.done {
		w.st.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
