package sessions_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/testcluster"
)

// testRoutes mounts handlers that drive the session API from inside the
// nodes, the way an application does.
func testRoutes(n *node.Node) {
	m := n.Sessions()
	n.HandleApp("POST /t/put", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range r.URL.Query() {
			m.Put(r.Context(), k, v[0])
		}
		fmt.Fprint(w, n.ID())
	}))
	n.HandleApp("POST /t/big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		m.Put(r.Context(), r.URL.Query().Get("k"), b)
		fmt.Fprint(w, "stored")
	}))
	n.HandleApp("GET /t/get", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
	}))
	n.HandleApp("GET /t/keys", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(m.Keys(r.Context()))
	}))
	n.HandleApp("POST /t/renew", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = m.RenewToken(r.Context())
		m.SetPrincipal(r.Context(), r.URL.Query().Get("user"))
		fmt.Fprint(w, "renewed")
	}))
	n.HandleApp("POST /t/destroy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = m.Destroy(r.Context())
	}))
	n.HandleApp("POST /t/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "streamed", "yes")
		fmt.Fprint(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			fmt.Fprintf(w, "flush: %v\n", err)
			return
		}
		// The commit happened before the first byte: the value is readable.
		fmt.Fprintf(w, "stored=%s\n", m.GetString(r.Context(), "streamed"))
	}))
	n.HandleApp("POST /t/hijack", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "hijacked", "yes")
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw")
		_ = buf.Flush()
	}))
}

// client is a browser that keeps the session token and addresses each
// request to one node: its cookie carries that node's route tag, so the
// sticky front serves it there (a handler on that node runs).
type client struct {
	t         *testing.T
	hc        *http.Client
	token     string
	lastRoute string
	bogus     bool // send a route tag no node has
	follow    bool // send the route of the last Set-Cookie, as a browser does
}

func newClient(t *testing.T) *client {
	return &client{t: t, hc: &http.Client{Timeout: 30 * time.Second}}
}

func (c *client) do(method string, nd *testcluster.Node, path string, body io.Reader) (int, string, *http.Response) {
	c.t.Helper()
	req, err := http.NewRequest(method, nd.URL(path), body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		route := nd.Node().Members().Route(nd.ID)
		if c.bogus {
			route = "bogusroute"
		}
		if c.follow {
			route = c.lastRoute
		}
		req.Header.Set("Cookie", "cohort_session="+sessions.FormatCookie(c.token, route))
		c.lastRoute = route // the browser's cookie, unless Set-Cookie changes it
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, nd.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name != "cohort_session" {
			continue
		}
		if ck.MaxAge < 0 {
			c.token = ""
			continue
		}
		tok, route, err := sessions.ParseCookie(ck.Value)
		if err != nil {
			c.t.Fatalf("Set-Cookie %q: %v", ck.Value, err)
		}
		c.token, c.lastRoute = tok, route
	}
	return resp.StatusCode, string(b), resp
}

func get(c *client, nd *testcluster.Node, key string) string {
	c.t.Helper()
	code, body, _ := c.do(http.MethodGet, nd, "/t/get?k="+key, nil)
	if code != http.StatusOK {
		c.t.Fatalf("get %s on %s: %d %s", key, nd.ID, code, body)
	}
	return body
}

func put(c *client, nd *testcluster.Node, key, val string) {
	c.t.Helper()
	code, body, _ := c.do(http.MethodPost, nd, "/t/put?"+url.Values{key: {val}}.Encode(), nil)
	if code != http.StatusOK || body != nd.ID {
		c.t.Fatalf("put %s on %s: %d %s", key, nd.ID, code, body)
	}
}

func applied(c *testcluster.Cluster) map[string]uint64 {
	out := map[string]uint64{}
	for _, nd := range c.Running() {
		out[nd.ID] = nd.Node().Sessions().Stats().Applied
	}
	return out
}

// TestReplicated covers the acceptance of issue 3 on one 3-node cluster:
// reads anywhere, re-stamped routes, concurrent keys, zero entries for
// reads, renewal, the middleware with streaming and hijacking, limits,
// and no acknowledged write lost to a kill -9 of the serving node.
func TestReplicated(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(testRoutes), testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Sessions.MaxBytes = 64 << 10
		cfg.Sessions.MaxValueBytes = 16 << 10
	}))
	nodes := c.Nodes()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	b := newClient(t)

	t.Run("put on one node reads on every node", func(t *testing.T) {
		b.t = t
		put(b, n1, "color", "blue")
		if want := n1.Node().Members().Route("n1"); b.lastRoute != want || len(b.token) != 43 {
			t.Fatalf("token %q route %q, want n1's tag %q", b.token, b.lastRoute, want)
		}
		for _, nd := range []*testcluster.Node{n2, n3} {
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				v := get(b, nd, "color")
				return v == "blue", nd.ID + " read " + v
			})
		}
		// A cookie naming no live node is served where it lands and
		// re-stamped with that node's route tag.
		b.bogus = true
		b.lastRoute = ""
		if v := get(b, n3, "color"); v != "blue" {
			t.Fatalf("read with a foreign route: %q", v)
		}
		b.bogus = false
		if want := n3.Node().Members().Route("n3"); b.lastRoute != want {
			t.Fatalf("after a read on n3 the route is %q, want n3's %q (re-stamp)", b.lastRoute, want)
		}
	})

	t.Run("read-only requests append no entry", func(t *testing.T) {
		// A browser keeps its cookie and its requests enter through any
		// node's port: the front sends them to the session's owner, which
		// reads locally.
		b.t = t
		b.follow = true
		defer func() { b.follow = false }()
		before := applied(c)
		for i := range 1000 {
			nd := nodes[i%3]
			if v := get(b, nd, "color"); v != "blue" {
				t.Fatalf("read %d through %s: %q", i, nd.ID, v)
			}
		}
		if after := applied(c); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("1000 reads appended sessions entries: before %v after %v", before, after)
		}
	})

	t.Run("concurrent requests writing different keys all survive", func(t *testing.T) {
		b.t = t
		token, route := b.token, b.lastRoute
		var wg sync.WaitGroup
		const writers = 48
		errs := make(chan string, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nd := nodes[i%3]
				req, _ := http.NewRequest(http.MethodPost, nd.URL(fmt.Sprintf("/t/put?k%02d=v%d", i, i)), nil)
				// Every request enters through another node's port with the
				// browser's cookie; all are served by the session's owner.
				req.Header.Set("Cookie", "cohort_session="+sessions.FormatCookie(token, route))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- resp.Status
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
		for _, nd := range nodes {
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				_, body, _ := b.do(http.MethodGet, nd, "/t/keys", nil)
				var keys []string
				_ = json.Unmarshal([]byte(body), &keys)
				return len(keys) == writers+1, fmt.Sprintf("%s has %d keys: %s", nd.ID, len(keys), body)
			})
		}
	})

	t.Run("renew kills the old token everywhere and carries the data", func(t *testing.T) {
		b.t = t
		old := b.token
		code, body, _ := b.do(http.MethodPost, n2, "/t/renew?user=alice", nil)
		if code != http.StatusOK {
			t.Fatalf("renew: %d %s", code, body)
		}
		nw := b.token
		if nw == old || nw == "" {
			t.Fatalf("cookie not renewed: %q", nw)
		}
		for _, nd := range nodes {
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				v := get(b, nd, "color")
				return v == "blue", nd.ID + " with the new token read " + v
			})
		}
		stale := newClient(t)
		for _, nd := range nodes {
			stale.token = old
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				v := get(stale, nd, "color")
				return v == "", nd.ID + " with the old token read " + v
			})
		}
		// A write with the dead token starts a new session, never adopts it.
		stale.token = old
		put(stale, n1, "x", "y")
		if got := stale.token; got == old || got == "" {
			t.Fatalf("a write with a dead token kept it: %q", got)
		}
		code, adm := n1.Do(t, http.MethodGet, "/_cohort/api/sessions?principal=alice", nil)
		if code != http.StatusOK || !strings.Contains(string(adm), `"principal":"alice"`) || strings.Contains(string(adm), nw) {
			t.Fatalf("admin list: %d %s", code, adm)
		}
	})

	t.Run("streaming and hijacking commit before the first byte", func(t *testing.T) {
		b.t = t
		code, body, _ := b.do(http.MethodPost, n2, "/t/stream", nil)
		if code != http.StatusOK || body != "first\nstored=yes\n" {
			t.Fatalf("stream: %d %q", code, body)
		}
		code, body, _ = b.do(http.MethodPost, n3, "/t/hijack", nil)
		if code != http.StatusOK || body != "raw" {
			t.Fatalf("hijack: %d %q", code, body)
		}
		if v := get(b, n3, "hijacked"); v != "yes" {
			t.Fatalf("hijacked request's change: %q", v)
		}
	})

	t.Run("oversized values and sessions answer 413", func(t *testing.T) {
		b.t = t
		code, body, _ := b.do(http.MethodPost, n1, "/t/big?k=huge", strings.NewReader(strings.Repeat("x", 17<<10)))
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "value of") {
			t.Fatalf("big value: %d %s", code, body)
		}
		for i := range 4 {
			code, body, _ = b.do(http.MethodPost, n1, fmt.Sprintf("/t/big?k=part%d", i), strings.NewReader(strings.Repeat("x", 15<<10)))
			if code != http.StatusOK {
				t.Fatalf("part %d: %d %s", i, code, body)
			}
		}
		code, body, _ = b.do(http.MethodPost, n2, "/t/big?k=part9", strings.NewReader(strings.Repeat("x", 15<<10)))
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"error"`) || !strings.Contains(body, "session of") {
			t.Fatalf("session over 64 KiB: %d %s", code, body)
		}
	})

	t.Run("kill -9 of the serving node loses no acknowledged write", func(t *testing.T) {
		b.t = t
		for i := range 20 {
			put(b, n1, fmt.Sprintf("last%d", i), "acked")
		}
		if want := n1.Node().Members().Route("n1"); b.lastRoute != want {
			t.Fatalf("route %q, want n1's", b.lastRoute)
		}
		c.Kill(n1.ID)
		c.WaitLeader(t)
		// The browser still sends n1's route: the front serves it on the
		// node it reached, which catches up before reading.
		b.follow = true
		for _, nd := range []*testcluster.Node{n2, n3} {
			for i := range 20 {
				if v := get(b, nd, fmt.Sprintf("last%d", i)); v != "acked" {
					t.Fatalf("%s lost last%d: %q", nd.ID, i, v)
				}
			}
		}
		b.follow = false
		put(b, n2, "after", "kill")
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			v := get(b, n3, "after")
			return v == "kill", v
		})
	})
}

// TestDemoCounter drives the demo's counter and login on three nodes.
func TestDemoCounter(t *testing.T) {
	c := testcluster.New(t, 3)
	nodes := c.Nodes()
	b := newClient(t)
	var reply struct {
		Count int    `json:"count"`
		Node  string `json:"node"`
		User  string `json:"user"`
	}
	code, body, resp := b.do(http.MethodGet, nodes[0], "/demo/api/counter", nil)
	if code != 200 || resp.Header.Get("Set-Cookie") != "" || !strings.Contains(body, `"count":0`) {
		t.Fatalf("GET without a session: %d %s (Set-Cookie %q)", code, body, resp.Header.Get("Set-Cookie"))
	}
	if s := nodes[0].Node().Sessions().Stats(); s.Total != 0 {
		t.Fatalf("a read created a session: %+v", s)
	}
	// After the first request, the cookie names a route no node has: the
	// front serves it where it lands, and the session, moving, must see
	// its write made an instant earlier on another node.
	for i := 1; i <= 3; i++ {
		b.bogus = i > 1
		_, body, resp = b.do(http.MethodPost, nodes[i-1], "/demo/api/counter", nil)
		_ = json.Unmarshal([]byte(body), &reply)
		if reply.Count != i || reply.Node != nodes[i-1].ID {
			t.Fatalf("POST %d: %s", i, body)
		}
		if i == 1 {
			sc := resp.Header.Get("Set-Cookie")
			for _, want := range []string{"HttpOnly", "SameSite=Lax", "Path=/"} {
				if !strings.Contains(sc, want) {
					t.Fatalf("Set-Cookie %q lacks %s", sc, want)
				}
			}
		}
	}
	b.bogus = false
	old := b.token
	_, body, _ = b.do(http.MethodPost, nodes[1], "/demo/api/login", strings.NewReader(`{"user":"bob"}`))
	_ = json.Unmarshal([]byte(body), &reply)
	if reply.User != "bob" || reply.Node != nodes[1].ID || b.token == old {
		t.Fatalf("login: %s", body)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		_, body, _ := b.do(http.MethodGet, nodes[2], "/demo/api/counter", nil)
		return strings.Contains(body, `"count":3`), body
	})
	code, body2, _ := b.do(http.MethodPost, nodes[0], "/demo/api/login", strings.NewReader(`{"user":""}`))
	if code != http.StatusBadRequest {
		t.Fatalf("empty user: %d %s", code, body2)
	}
	code, out := nodes[2].Do(t, http.MethodDelete, "/_cohort/api/sessions?principal=bob", nil)
	if code != 200 || !strings.Contains(string(out), `"destroyed":1`) {
		t.Fatalf("log bob out everywhere: %d %s", code, out)
	}
	for _, nd := range nodes {
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			_, body, _ := b.do(http.MethodGet, nd, "/demo/api/counter", nil)
			return strings.Contains(body, `"count":0`), nd.ID + ": " + body
		})
	}
}

// TestIdleExpiry checks a session past its idle timeout ends on every
// node through the leader's batched sweep, with one expired event per
// session per node.
func TestIdleExpiry(t *testing.T) {
	var mu sync.Mutex
	events := map[string]int{}
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Sessions.IdleTimeout = time.Second
		cfg.Sessions.SweepInterval = 100 * time.Millisecond
	}), testcluster.WithNodeSetup(func(n *node.Node) {
		testRoutes(n)
		id := n.ID()
		n.Sessions().OnEvent(func(ev sessions.Event) {
			if ev.Type == sessions.EventExpired {
				mu.Lock()
				events[id]++
				mu.Unlock()
			}
		})
	}))
	nodes := c.Nodes()
	const count = 5
	// A session read on n1 for three idle timeouts stays alive on every
	// node: its touches are replicated (coalesced), the reads append no
	// commit.
	keep := newClient(t)
	put(keep, nodes[0], "k", "kept")
	tick := time.NewTicker(150 * time.Millisecond)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); <-tick.C {
		if v := get(keep, nodes[0], "k"); v != "kept" {
			t.Fatalf("session used every 150ms expired on n1: %q", v)
		}
	}
	tick.Stop()
	for _, nd := range nodes[1:] {
		if v := get(keep, nd, "k"); v != "kept" {
			t.Fatalf("session kept alive on n1 expired on %s: touches not replicated", nd.ID)
		}
	}
	if st := nodes[0].Node().Sessions().Stats(); st.Touches == 0 || st.Commits != 1 {
		t.Fatalf("n1 proposed %d touches and %d commits, want touches and 1 commit", st.Touches, st.Commits)
	}
	for i := range count - 1 {
		put(newClient(t), nodes[i%3], "k", "v")
	}
	for _, nd := range nodes {
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			st := nd.Node().Sessions().Stats()
			return st.Total == 0, fmt.Sprintf("%s: %+v", nd.ID, st)
		})
	}
	var sweeps uint64
	for _, nd := range nodes {
		sweeps += nd.Node().Sessions().Stats().Sweeps
	}
	if sweeps == 0 || sweeps > count {
		t.Fatalf("%d sweep entries for %d sessions", sweeps, count)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for _, nd := range nodes {
			if events[nd.ID] != count {
				return false, fmt.Sprint(events)
			}
		}
		return true, ""
	})
}

// TestPassivationSnapshotRestart keeps 5 sessions in memory per node,
// passivates the rest to disk, snapshots, restarts a node and adds one:
// every node ends with every session and its data.
func TestPassivationSnapshotRestart(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(testRoutes), testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Sessions.MemorySessions = 5
	}))
	nodes := c.Nodes()
	const count = 20
	clients := make([]*client, count)
	for i := range clients {
		clients[i] = newClient(t)
		put(clients[i], nodes[0], "who", fmt.Sprint("user", i))
	}
	for _, nd := range nodes {
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			st := nd.Node().Sessions().Stats()
			return st.Total == count && st.Passivated >= count-5, fmt.Sprintf("%s: %+v", nd.ID, st)
		})
	}
	for _, nd := range c.Running() {
		if err := nd.Node().Cluster().Snapshot(); err != nil {
			t.Fatalf("snapshot %s: %v", nd.ID, err)
		}
	}
	c.Stop("n3")
	put(clients[0], nodes[0], "after", "stop")
	c.Restart("n3")
	added := c.AddNode(t)
	for _, nd := range []*testcluster.Node{nodes[2], added} {
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			st := nd.Node().Sessions().Stats()
			return st.Total == count, fmt.Sprintf("%s: %+v", nd.ID, st)
		})
		for i, cl := range clients {
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				v := get(cl, nd, "who")
				return v == fmt.Sprint("user", i), fmt.Sprintf("%s session %d read %q", nd.ID, i, v)
			})
		}
		if v := get(clients[0], nd, "after"); v != "stop" {
			t.Fatalf("%s missed the write made while n3 was down: %q", nd.ID, v)
		}
	}
}
