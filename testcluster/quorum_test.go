package testcluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/testcluster"
)

// shortBudget runs a test cluster with a wait budget of four election
// timeouts (4 s at the test scale) instead of testcluster's 10 s, so that
// the latency checks bound the cut-off side tightly and their faults need
// not last long.
var shortBudget = testcluster.WithConfig(func(cfg *config.Config) {
	_, election, _ := raft.Timing(cfg.RaftTimeoutScale)
	cfg.ClusterWaitBudget = 4 * election
})

// quorumAnswer is what one request through a node got.
type quorumAnswer struct {
	status     int
	retryAfter string
	body       string
	took       time.Duration
	err        error
}

// quorumDo sends one lin request through nd with the shared cookie and a
// client timeout well beyond the wait budget, so a request that waits
// longer than the budget is seen as such instead of as a client timeout.
func quorumDo(nd *testcluster.Node, method, path string, ck *sharedCookie, budget time.Duration) quorumAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), budget+10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, nd.URL(path), nil)
	if v := ck.get(); v != "" {
		req.AddCookie(&http.Cookie{Name: ck.name, Value: v})
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return quorumAnswer{took: time.Since(start), err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	ck.update(resp)
	return quorumAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b), took: time.Since(start)}
}

// TestCutOffNodeAnswersAtOnce cuts a session's owner off from its peers —
// an isolated leader, an isolated follower, a paused leader — and sends
// reads and writes of that session through it: each must be answered
// within the wait budget (plus one election timeout for scheduling), with
// 200 while the node may still serve (a leader's lease) or 503 with
// Retry-After and the API's JSON error "this node cannot reach a quorum";
// once the node knows it is cut off it refuses at once (the reason names
// the missing leader, not a spent budget). Meanwhile the majority side
// serves the session after the election, without a stale read, and after
// the heal every node reads the last acknowledged write.
func TestCutOffNodeAnswersAtOnce(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(mountLinHandlers), shortBudget)
	c.WaitLeader(t)
	c.WaitReady(t)
	cookieName := c.Nodes()[0].Node().Config().SessionCookie
	budget := c.Nodes()[0].Node().Cluster().WaitBudget()
	_, election, _ := raft.Timing(c.Nodes()[0].Node().Config().RaftTimeoutScale)
	limit := budget + election

	leader := func(c *testcluster.Cluster) *testcluster.Node { return c.WaitLeader(t) }
	follower := func(c *testcluster.Cluster) *testcluster.Node { c.WaitLeader(t); return c.Followers()[0] }
	isolate := func(c *testcluster.Cluster, nd *testcluster.Node) func() {
		c.Isolate(nd.ID)
		return c.Heal
	}
	pause := func(c *testcluster.Cluster, nd *testcluster.Node) func() {
		c.Pause(nd.ID)
		return func() { c.Resume(nd.ID) }
	}
	cases := []struct {
		name  string
		owner func(*testcluster.Cluster) *testcluster.Node
		cut   func(*testcluster.Cluster, *testcluster.Node) func()
	}{
		{"isolated leader", leader, isolate},
		{"isolated follower owning the session", follower, isolate},
		{"paused leader", leader, pause},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			owner := tc.owner(c)
			c.WaitReady(t)
			ck := &sharedCookie{name: cookieName}
			acked := fmt.Sprintf("v%d-0", i)
			if a := quorumDo(owner, http.MethodPost, "/lin/put?k=a&v="+acked, ck, budget); a.status != http.StatusOK {
				t.Fatalf("create the session through %s: %+v", owner.ID, a)
			}
			// Values a read may return: the last acknowledged write and
			// any later write whose outcome is unknown.
			allowed := map[string]bool{acked: true}
			undo := tc.cut(c, owner)
			healed := false
			defer func() {
				if !healed {
					undo()
					c.Heal()
				}
			}()

			// Through the cut-off node, until it has refused a read and a
			// write at once, as a node that knows it is cut off.
			fastGet, fastPut := false, false
			deadline := time.Now().Add(30 * time.Second)
			for n := 0; !fastGet || !fastPut; n++ {
				if time.Now().After(deadline) {
					t.Fatalf("%s never refused both a read and a write at once in 30 s (read %v, write %v)", owner.ID, fastGet, fastPut)
				}
				put := n%2 == 1
				var a quorumAnswer
				val := fmt.Sprintf("v%d-cut-%d", i, n)
				if put {
					a = quorumDo(owner, http.MethodPost, "/lin/put?k=a&v="+val, ck, budget)
				} else {
					a = quorumDo(owner, http.MethodGet, "/lin/get?k=a", ck, budget)
				}
				t.Logf("%s %s: %d in %s: %s", owner.ID, map[bool]string{true: "put", false: "get"}[put], a.status, a.took.Round(time.Millisecond), strings.TrimSpace(a.body))
				if a.err != nil {
					t.Fatalf("request %d through %s: %v after %s", n, owner.ID, a.err, a.took)
				}
				if a.took > limit {
					t.Errorf("request %d through cut-off %s took %s, longer than the wait budget %s (+%s): %d %s", n, owner.ID, a.took, budget, election, a.status, a.body)
				}
				switch a.status {
				case http.StatusOK:
					if put {
						allowed = map[string]bool{val: true}
					} else if !allowed[a.body] {
						t.Errorf("stale read through %s: %q, want one of %v", owner.ID, a.body, allowed)
					}
				case http.StatusServiceUnavailable:
					var e struct {
						Error string `json:"error"`
					}
					err := json.Unmarshal([]byte(a.body), &e)
					unknown := strings.Contains(e.Error, "outcome is unknown") || strings.Contains(e.Error, "outcome unknown")
					// A write cut short by a lost leadership says its
					// outcome is unknown, as it did before; every other
					// 503 is the quorum error.
					if err != nil || !strings.HasPrefix(e.Error, "this node cannot reach a quorum") && !(put && unknown) {
						t.Fatalf("503 through %s is not the API's quorum error: %q (%v)", owner.ID, a.body, err)
					}
					if a.retryAfter == "" {
						t.Errorf("503 through %s without Retry-After: %q", owner.ID, a.body)
					}
					if put && unknown {
						allowed[val] = true
					}
					if strings.Contains(e.Error, "no contact with a leader") {
						if put {
							fastPut = true
						} else {
							fastGet = true
						}
					}
				default:
					t.Fatalf("request %d through %s: %d %s", n, owner.ID, a.status, a.body)
				}
			}

			// The majority side serves the session after the election.
			var other *testcluster.Node
			for _, nd := range c.Nodes() {
				if nd.ID != owner.ID {
					other = nd
					break
				}
			}
			testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
				a := quorumDo(other, http.MethodGet, "/lin/get?k=a", ck, budget)
				if a.status == http.StatusOK && !allowed[a.body] {
					t.Fatalf("stale read through %s: %q, want one of %v", other.ID, a.body, allowed)
				}
				return a.status == http.StatusOK, fmt.Sprintf("%d %s %v", a.status, a.body, a.err)
			})
			// A write through the majority side; one whose outcome is
			// unknown (a loaded machine's re-election) is tried again
			// with a new value.
			var final string
			tries := 0
			testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
				tries++
				final = fmt.Sprintf("v%d-final-%d", i, tries)
				a := quorumDo(other, http.MethodPost, "/lin/put?k=a&v="+final, ck, budget)
				return a.status == http.StatusOK, fmt.Sprintf("%d %s %v", a.status, a.body, a.err)
			})

			// Healed: every node reads the last acknowledged write.
			undo()
			c.Heal()
			healed = true
			c.WaitLeader(t)
			for _, nd := range c.Nodes() {
				testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
					a := quorumDo(nd, http.MethodGet, "/lin/get?k=a", ck, budget)
					if a.status == http.StatusOK && a.body != final {
						t.Fatalf("after the heal %s reads %q, want the acknowledged %q", nd.ID, a.body, final)
					}
					return a.status == http.StatusOK, fmt.Sprintf("%d %s %v", a.status, a.body, a.err)
				})
			}
		})
	}
}

// TestBoundedWaitsOnACutOffNode checks the raft API other listeners use
// (kv, the files mount, the Go API): with a context marked by Bounded, a
// write through an isolated follower is refused with ErrNoQuorum once the
// node knows it is cut off, before anything is proposed (the key never
// appears), and counted in the metrics; an unmarked context keeps the old
// behaviour (wait for a leader until it ends); after the heal the node
// writes again.
func TestBoundedWaitsOnACutOffNode(t *testing.T) {
	kvOpt, kvs := testcluster.WithKV()
	c := testcluster.New(t, 3, kvOpt, shortBudget)
	leader := c.WaitLeader(t)
	f := c.Followers()[0]
	cl := f.Node().Cluster()
	if _, err := testcluster.Put(cl.Bounded(context.Background(), "test"), f.Node(), "before", "1"); err != nil {
		t.Fatalf("bounded put through healthy %s: %v", f.ID, err)
	}
	c.Isolate(f.ID)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		qc := cl.QuorumContact()
		return qc.CutOff, fmt.Sprintf("%+v", qc)
	})
	if err := cl.CutOff(); !errors.Is(err, raft.ErrNoQuorum) || !strings.HasPrefix(err.Error(), "this node cannot reach a quorum") {
		t.Fatalf("CutOff on isolated %s: %v", f.ID, err)
	}
	_, err := testcluster.Put(cl.Bounded(context.Background(), "test"), f.Node(), "cut", "1")
	if !errors.Is(err, raft.ErrNoQuorum) || errors.Is(err, raft.ErrOutcomeUnknown) {
		t.Fatalf("bounded put through cut-off %s: %v, want a refusal before anything was proposed", f.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = testcluster.Put(ctx, f.Node(), "unbounded", "1")
	cancel()
	if err == nil || errors.Is(err, raft.ErrNoQuorum) {
		t.Fatalf("unbounded put through cut-off %s: %v, want it to wait for a leader until its context ends", f.ID, err)
	}
	code, body := f.Do(t, http.MethodGet, "/_cohort/metrics", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `cohort_cluster_quorum_refused_total{route="test",wait="apply test.kv.put"} 1`) {
		t.Fatalf("metrics of %s do not count the refusal: %d\n%s", f.ID, code, body)
	}
	c.Heal()
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		return cl.CutOff() == nil, fmt.Sprint(cl.CutOff())
	})
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		_, err := testcluster.Put(cl.Bounded(context.Background(), "test"), f.Node(), "after", "1")
		return err == nil, fmt.Sprint(err)
	})
	testcluster.MustPut(t, leader.Node(), "barrier", "1")
	for _, nd := range c.Nodes() {
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			_, ok := kvs.On(nd.ID).Get("barrier")
			return ok, nd.ID + " has not applied the barrier"
		})
		if _, ok := kvs.On(nd.ID).Get("cut"); ok {
			t.Fatalf("%s holds the refused write", nd.ID)
		}
	}
}
