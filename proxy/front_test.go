package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/sessioncookie"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/proxy"
	"github.com/cohortserver/cohort/testcluster"
)

const cookieName = "cohort_session"

// testToken prefixes the cookies the test app sets, so the client ignores
// cookies anything else (such as the sessions middleware) might set.
const testToken = "ZnJvbnR0ZXN0ZnJvbnR0ZXN0ZnJvbnR0ZXN0ZnJvbnQ"

// who is the test app's answer.
type who struct {
	Error  string `json:"-"` // the body of a response other than 200
	Node   string `json:"node"`
	Remote string `json:"remote"`
	XFF    string `json:"xff"`
	Proto  string `json:"proto"`
	Host   string `json:"host"`
	Hop    string `json:"hop"`
	Bytes  int64  `json:"bytes"`
}

// testApp mounts the routes the front's tests drive: it reports which
// node ran it and re-stamps the cookie's route to itself, as the sessions
// middleware does after a failover.
type testApp struct {
	sse     chan struct{} // the SSE handler waits on it between two events
	slowIn  chan string   // /t/slow sends its node id here when it starts
	slowOut chan struct{} // /t/slow answers once this is closed
}

func (a *testApp) setup(n *node.Node) {
	self := n.ID()
	stamp := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("session") != "" {
			// A real session: the sessions middleware sets its cookie
			// and re-stamps it after a failover.
			n.Sessions().Put(r.Context(), "t", 1)
			return
		}
		route := n.Members().Route(self)
		c, err := r.Cookie(cookieName)
		if err == nil && !strings.HasPrefix(c.Value, testToken+".") {
			return // a real session's: the middleware's
		}
		if err != nil && r.URL.Query().Get("new") == "" {
			return
		}
		if err == nil {
			if got, ok := proxy.RouteFromCookie(c.Value); ok && got == route {
				return
			}
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: testToken + "." + route, Path: "/"})
	}
	n.HandleApp("/t/who", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stamp(w, r)
		nb, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(who{Node: self, Remote: r.RemoteAddr, XFF: r.Header.Get("X-Forwarded-For"),
			Proto: r.Header.Get("X-Forwarded-Proto"), Host: r.Header.Get("X-Forwarded-Host"),
			Hop: r.Header.Get("Cohort-Front-Client"), Bytes: nb})
	}))
	n.HandleApp("/t/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(who{Node: self})
	}))
	n.HandleApp("/t/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte(self+":"), b...)); err != nil {
				return
			}
		}
	}))
	n.HandleApp("/t/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.slowIn <- self
		select {
		case <-a.slowOut:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "slow done on "+self)
	}))
	n.HandleApp("/t/broken", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Promises 100 bytes, sends 7 and aborts: an answer that breaks
		// before its body is whole.
		// With ?chunked=1 a stream's head goes out, then it aborts.
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "partial")
		}
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}))
	n.HandleApp("/t/sse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: one %s\n\n", self)
		_ = http.NewResponseController(w).Flush()
		select { // the client must see event one before event two exists
		case <-a.sse:
		case <-r.Context().Done():
			return
		case <-time.After(30 * time.Second):
		}
		fmt.Fprintf(w, "data: two %s\n\n", self)
	}))
}

func newCluster(t testing.TB, tweak func(*config.Config)) (*testcluster.Cluster, *testApp) {
	t.Helper()
	app := &testApp{sse: make(chan struct{}, 1), slowIn: make(chan string, 8), slowOut: make(chan struct{})}
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) {
			cfg.NoDemo = true
			cfg.Front.AccessLog = true
			if tweak != nil {
				tweak(cfg)
			}
		}),
		testcluster.WithNodeSetup(app.setup))
	waitMembers(t, c)
	return c, app
}

// waitMembers waits until every node knows every node's cluster address.
func waitMembers(t testing.TB, c *testcluster.Cluster) {
	t.Helper()
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			for _, other := range c.Nodes() {
				if m, ok := nd.Node().Members().Get(other.ID); !ok || m.Address == "" {
					return false, nd.ID + " does not know " + other.ID
				}
			}
		}
		return true, ""
	})
}

// client sends requests carrying one session cookie and follows the test
// app's re-stamps.
type client struct {
	mu     sync.Mutex
	cookie string
	hc     *http.Client
}

func newClient() *client {
	return &client{hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

func (c *client) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cookie
}

func (c *client) do(method, url string, body io.Reader, hdr http.Header) (int, who, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, who{}, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if ck := c.get(); ck != "" {
		req.Header.Set("Cookie", cookieName+"="+ck)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, who{}, err
	}
	defer res.Body.Close()
	for _, sc := range res.Cookies() {
		if sc.Name == cookieName && sc.Value != "" {
			c.mu.Lock()
			c.cookie = sc.Value
			c.mu.Unlock()
		}
	}
	var w who
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, w, err
	}
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &w); err != nil {
			return res.StatusCode, w, fmt.Errorf("decode %q: %w", b, err)
		}
	} else {
		w.Error = strings.TrimSpace(string(b))
	}
	return res.StatusCode, w, nil
}

func (c *client) mustGet(t testing.TB, url string) who {
	t.Helper()
	code, w, err := c.do(http.MethodGet, url, nil, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, code, err)
	}
	return w
}

// sessionOn returns a client whose cookie the node id owns.
func sessionOn(t testing.TB, c *testcluster.Cluster, id string) *client {
	t.Helper()
	cl := newClient()
	cl.cookie = testToken + "." + c.Running()[0].Node().Members().Route(id)
	return cl
}

// realSessionOn returns a client with a real session the node id owns:
// after a failover the sessions middleware finds it replicated, where a
// made-up token would send it asking the leader (gone with the owner)
// whether it missed the session's creation.
func realSessionOn(t testing.TB, c *testcluster.Cluster, id string) *client {
	t.Helper()
	cl := newClient()
	cl.mustGet(t, c.Node(id).URL("/t/who?session=1"))
	if route, _ := proxy.RouteFromCookie(cl.get()); route != c.Running()[0].Node().Members().Route(id) {
		t.Fatalf("session cookie %q not owned by %s", cl.get(), id)
	}
	return cl
}

// TestOneSessionCookie: of two cookies of the session's name, the front
// routes by the one the sessions middleware then loads (the first
// well-formed), on the fast front (GET) and net/http's path (POST); a
// request can no longer be sent to one node with another node's session.
func TestOneSessionCookie(t *testing.T) {
	c, _ := newCluster(t, nil)
	owned := realSessionOn(t, c, "n1")
	n3 := c.Running()[0].Node().Members().Route("n3")
	for _, first := range []string{"a b", "AAAA." + n3, "\"\""} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			cl := newClient()
			code, w, err := cl.do(method, c.Node("n2").URL("/t/who"), nil,
				http.Header{"Cookie": {cookieName + "=" + first + "; " + cookieName + "=" + owned.get()}})
			if err != nil || code != http.StatusOK || w.Node != "n1" {
				t.Fatalf("%s with %q first: %d %v served by %q, want n1 (the session's owner)", method, first, code, err, w.Node)
			}
		}
	}
	// A well-formed cookie naming no live session comes first: the front
	// routes by it (to n1), and the middleware there must not fall
	// through to the second cookie and take n2's session over.
	other := realSessionOn(t, c, "n2")
	unknown := testToken + "." + c.Running()[0].Node().Members().Route("n1")
	cl := newClient()
	code, w, err := cl.do(http.MethodGet, c.Node("n3").URL("/t/who"), nil,
		http.Header{"Cookie": {cookieName + "=" + unknown + "; " + cookieName + "=" + other.get()}})
	if err != nil || code != http.StatusOK || w.Node != "n1" || cl.get() != "" {
		t.Fatalf("served by %q (%d %v), cookie set %q; want n1, and n2's session left alone", w.Node, code, err, cl.get())
	}
}

func TestStickyRouting(t *testing.T) {
	c, app := newCluster(t, func(cfg *config.Config) { cfg.Front.MaxRequestBody = 1 << 20 })
	nodes := c.Nodes()

	t.Run("new session stays where it entered with balance local", func(t *testing.T) {
		cl := newClient()
		w := cl.mustGet(t, nodes[1].URL("/t/who?new=1"))
		if w.Node != nodes[1].ID || cl.get() == "" {
			t.Fatalf("served by %s, cookie %q; want %s and a cookie", w.Node, cl.get(), nodes[1].ID)
		}
	})

	t.Run("100 requests over all ports reach the owner", func(t *testing.T) {
		cl := sessionOn(t, c, "n2")
		for i := range 100 {
			nd := nodes[i%3]
			if w := cl.mustGet(t, nd.URL("/t/who")); w.Node != "n2" {
				t.Fatalf("request %d through %s served by %s, want n2", i, nd.ID, w.Node)
			}
		}
	})

	t.Run("static paths are served where they enter", func(t *testing.T) {
		cl := sessionOn(t, c, "n2")
		for _, nd := range nodes {
			for _, path := range []string{"/t/static/app.css", "/t/static/logo.PNG"} {
				if w := cl.mustGet(t, nd.URL(path)); w.Node != nd.ID {
					t.Fatalf("%s with n2's cookie through %s served by %s, want %s (--session-ignore)", path, nd.ID, w.Node, nd.ID)
				}
			}
			if w := cl.mustGet(t, nd.URL("/t/static/page")); w.Node != "n2" {
				t.Fatalf("/t/static/page through %s served by %s, want the owner n2", nd.ID, w.Node)
			}
		}
	})

	t.Run("forged hop marker and X-Forwarded-For are not trusted", func(t *testing.T) {
		cl := sessionOn(t, c, "n2")
		forged := http.Header{
			"Cohort-Front-Client": {"6.6.6.6:666"}, "Cohort-Front-Tls": {"1"},
			"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil.example"},
		}
		for _, nd := range nodes { // n2 serves locally; n1 and n3 forward
			code, w, err := cl.do(http.MethodGet, nd.URL("/t/who"), nil, forged)
			if err != nil || code != http.StatusOK {
				t.Fatalf("through %s: %d %v", nd.ID, code, err)
			}
			if strings.Contains(w.Remote, "6.6.6.6") || w.XFF != "127.0.0.1" || w.Proto != "http" ||
				w.Host != nd.HTTPAddr || w.Hop != "" {
				t.Errorf("through %s the app saw %+v: a forged header was believed", nd.ID, w)
			}
			if !strings.HasPrefix(w.Remote, "127.0.0.1:") {
				t.Errorf("through %s remote address %q, want the client's 127.0.0.1:port", nd.ID, w.Remote)
			}
		}
	})

	t.Run("a request to the internal path on the public port is just an app path", func(t *testing.T) {
		cl := newClient()
		code, _, _ := cl.do(http.MethodGet, nodes[0].URL("/_internal/front/app/t/who"), nil, nil)
		if code != http.StatusNotFound {
			t.Fatalf("status %d, want 404", code)
		}
	})

	t.Run("bodies stream through the hop and the limit holds", func(t *testing.T) {
		cl := sessionOn(t, c, "n3")
		for _, tt := range []struct {
			name string
			size int
			want int
		}{
			{"small", 1000, http.StatusOK},
			{"at limit", 1 << 20, http.StatusOK},
			{"over limit", 1<<20 + 1, http.StatusRequestEntityTooLarge},
		} {
			t.Run(tt.name, func(t *testing.T) {
				for _, nd := range []*testcluster.Node{nodes[0], nodes[2]} {
					code, w, err := cl.do(http.MethodPost, nd.URL("/t/who"), strings.NewReader(strings.Repeat("x", tt.size)), nil)
					if err != nil || code != tt.want {
						t.Fatalf("through %s: %d %v, want %d", nd.ID, code, err, tt.want)
					}
					if code == http.StatusOK && (w.Bytes != int64(tt.size) || w.Node != "n3") {
						t.Fatalf("through %s: %+v, want %d bytes on n3", nd.ID, w, tt.size)
					}
				}
			})
		}
	})

	t.Run("websocket echoes through a forwarded hop", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		route := nodes[0].Node().Members().Route("n2")
		conn, _, err := websocket.Dial(ctx, "ws://"+nodes[0].HTTPAddr+"/t/ws", &websocket.DialOptions{
			HTTPHeader: http.Header{"Cookie": {cookieName + "=" + testToken + "." + route}},
		})
		if err != nil {
			t.Fatalf("dial through n1: %v", err)
		}
		defer conn.CloseNow()
		for i := range 3 {
			msg := fmt.Sprintf("hello %d", i)
			if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != "n2:"+msg {
				t.Fatalf("echo %q, want %q", b, "n2:"+msg)
			}
		}
		conn.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("server-sent events stream through a forwarded hop", func(t *testing.T) {
		route := nodes[0].Node().Members().Route("n3")
		req, _ := http.NewRequest(http.MethodGet, nodes[0].URL("/t/sse"), nil)
		req.Header.Set("Cookie", cookieName+"="+testToken+"."+route)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		rd := bufio.NewReader(res.Body)
		line, err := rd.ReadString('\n')
		if err != nil || line != "data: one n3\n" {
			t.Fatalf("first event %q %v", line, err)
		}
		app.sse <- struct{}{} // only now does the handler write event two
		_, _ = rd.ReadString('\n')
		if line, err = rd.ReadString('\n'); err != nil || line != "data: two n3\n" {
			t.Fatalf("second event %q %v", line, err)
		}
	})
}

// TestFailoverOnKill kills a session's owner under a steady GET load
// through the two other nodes: no GET may fail. When the owner was also
// the leader, the survivors must take the session over (a Raft claim)
// across the election.
func TestFailoverOnKill(t *testing.T) {
	for _, tt := range []struct {
		name   string
		leader bool
	}{
		{"owner is a follower", false},
		{"owner is the leader", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testFailoverOnKill(t, tt.leader) })
	}
}

func testFailoverOnKill(t *testing.T, ownerLeads bool) {
	c, _ := newCluster(t, nil)
	owner := c.Followers()[0].ID
	if ownerLeads {
		owner = c.Leader().ID
	}
	var entries []*testcluster.Node
	for _, nd := range c.Nodes() {
		if nd.ID != owner {
			entries = append(entries, nd)
		}
	}
	cl := realSessionOn(t, c, owner)

	var (
		mu       sync.Mutex
		ok, fail int
		lastErr  string
		after    int // successes after the kill
		killed   = make(chan struct{})
		done     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, nd := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				code, w, err := cl.do(http.MethodGet, nd.URL("/t/who"), nil, nil)
				mu.Lock()
				if err != nil || code != http.StatusOK {
					fail++
					lastErr = fmt.Sprintf("through %s: %d %v %q", nd.ID, code, err, w.Error)
				} else {
					ok++
					select {
					case <-killed:
						after++
					default:
					}
				}
				mu.Unlock()
			}
		}()
	}
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return ok >= 50, fmt.Sprintf("%d requests before the kill", ok)
	})
	c.Kill(owner)
	close(killed)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return after >= 200, fmt.Sprintf("%d requests after the kill", after)
	})
	close(done)
	wg.Wait()
	if fail != 0 {
		t.Fatalf("%d of %d GETs failed across the kill; last: %s", fail, ok+fail, lastErr)
	}
	// The cookie now names a live node, and that node keeps the session.
	route, _ := proxy.RouteFromCookie(cl.get())
	m, found := entries[0].Node().Members().ByRoute(route)
	if !found || m.ID == owner {
		t.Fatalf("cookie route %q names %q, want a live node", route, m.ID)
	}
	for i := range 20 {
		if w := cl.mustGet(t, entries[i%2].URL("/t/who")); w.Node != m.ID {
			t.Fatalf("after re-stamp served by %s, want %s", w.Node, m.ID)
		}
	}
	t.Logf("%d GETs, none failed; session moved from %s to %s", ok, owner, m.ID)
}

// TestFailoverOnFrozenOwner freezes the owner (its connections stall, as
// after SIGSTOP or a cut cable): no connection is refused, so only the
// probes can tell. A read entering another node must still be answered,
// by failing over once the probes declare the owner failed, instead of
// waiting on the pooled connection for as long as the owner stays frozen.
// Both the fast front and net/http's path are checked.
func TestFailoverOnFrozenOwner(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast path %v", fast), func(t *testing.T) {
			c, _ := newCluster(t, func(cfg *config.Config) { cfg.Front.FastPath = fast })
			owner := c.Followers()[0].ID
			var entry *testcluster.Node
			for _, nd := range c.Nodes() {
				if nd.ID != owner {
					entry = nd
					break
				}
			}
			cl := sessionOn(t, c, owner)
			for range 10 { // the entry node now holds pooled connections to the owner
				if w := cl.mustGet(t, entry.URL("/t/who")); w.Node != owner {
					t.Fatalf("served by %s before the freeze, want %s", w.Node, owner)
				}
			}
			c.Pause(owner)
			defer c.Resume(owner)
			start := time.Now()
			w := cl.mustGet(t, entry.URL("/t/who")) // the client gives up after 30 s
			if w.Node == owner {
				t.Fatalf("served by the frozen owner %s", owner)
			}
			t.Logf("a read for %s's session was answered by %s %v after %s froze", owner, w.Node, time.Since(start).Round(time.Millisecond), owner)
		})
	}
}

func spread(t testing.TB, entry *testcluster.Node, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		w := newClient().mustGet(t, entry.URL("/t/who?new=1"))
		got[w.Node]++
	}
	return got
}

func setState(t testing.TB, c *testcluster.Cluster, id, action, want string) {
	t.Helper()
	if code, b := c.Nodes()[0].Do(t, http.MethodPost, "/_cohort/api/nodes/"+id+"/"+action, nil); code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", action, id, code, b)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			if m, _ := nd.Node().Members().Get(id); m.State != want {
				return false, nd.ID + " sees " + id + " " + m.State
			}
		}
		return true, ""
	})
}

func TestBalanceAndNodeStates(t *testing.T) {
	c, _ := newCluster(t, func(cfg *config.Config) { cfg.Balance = config.BalanceRoundRobin })
	n1 := c.Node("n1")

	got := spread(t, n1, 30)
	for _, id := range []string{"n1", "n2", "n3"} {
		if got[id] == 0 {
			t.Fatalf("round-robin spread 30 new sessions as %v: %s got none", got, id)
		}
	}
	t.Logf("round-robin: %v", got)

	existing2 := sessionOn(t, c, "n2")
	setState(t, c, "n2", "drain", membership.StateDraining)
	if got := spread(t, n1, 30); got["n2"] != 0 {
		t.Fatalf("draining n2 got new sessions: %v", got)
	}
	if got := spread(t, c.Node("n2"), 10); got["n2"] != 0 {
		t.Fatalf("new sessions entering through draining n2 stayed there: %v", got)
	}
	for _, nd := range c.Nodes() {
		if w := existing2.mustGet(t, nd.URL("/t/who")); w.Node != "n2" {
			t.Fatalf("existing n2 session through %s served by %s while draining", nd.ID, w.Node)
		}
	}

	existing3 := sessionOn(t, c, "n3")
	setState(t, c, "n3", "disable", membership.StateDisabled)
	if got := spread(t, n1, 20); got["n3"] != 0 || got["n2"] != 0 || got["n1"] != 20 {
		t.Fatalf("with n2 draining and n3 disabled new sessions went %v, want all on n1", got)
	}
	w := existing3.mustGet(t, n1.URL("/t/who"))
	if w.Node == "n3" {
		t.Fatalf("disabled n3 still served its session")
	}
	if w2 := existing3.mustGet(t, c.Node("n3").URL("/t/who")); w2.Node != w.Node {
		t.Fatalf("after failover the session went to %s through n3, want %s", w2.Node, w.Node)
	}

	setState(t, c, "n2", "enable", membership.StateActive)
	setState(t, c, "n3", "enable", membership.StateActive)

	// Graceful stop: the node takes itself out first, and restores its
	// state when it comes back.
	c.Stop("n3")
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		m, _ := n1.Node().Members().Get("n3")
		return m.State == membership.StateDisabled, "after a graceful stop n3 is " + m.State
	})
	if w := sessionOn(t, c, "n3").mustGet(t, n1.URL("/t/who")); w.Node == "n3" {
		t.Fatalf("stopped n3 served a request")
	}
	c.Restart("n3")
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		m, _ := n1.Node().Members().Get("n3")
		return m.State == membership.StateActive, "n3 is " + m.State
	})
}

// TestGracefulStopFinishesInFlight stops a node gracefully while a
// request runs on it: the node takes itself out of the cluster's traffic
// first (disabled: its sessions fail over), lets the running request
// finish with its answer intact, and only then stops.
func TestGracefulStopFinishesInFlight(t *testing.T) {
	c, app := newCluster(t, nil)
	n1, n2 := c.Node("n1"), c.Node("n2")
	type answer struct {
		code int
		body string
		err  error
	}
	slow := make(chan answer, 1)
	go func() {
		resp, err := http.Get(n2.URL("/t/slow"))
		if err != nil {
			slow <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- answer{resp.StatusCode, string(b), err}
	}()
	select {
	case id := <-app.slowIn:
		if id != "n2" {
			t.Fatalf("slow request ran on %s, want n2", id)
		}
	case a := <-slow:
		t.Fatalf("slow request ended before it started: %+v", a)
	case <-time.After(10 * time.Second):
		t.Fatal("slow request did not start on n2")
	}

	stopped := make(chan struct{})
	go func() {
		c.Stop("n2")
		close(stopped)
	}()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		m, _ := n1.Node().Members().Get("n2")
		return m.State == membership.StateDisabled, "while stopping with a request in flight, n2 is " + m.State
	})
	if w := sessionOn(t, c, "n2").mustGet(t, n1.URL("/t/who")); w.Node == "n2" {
		t.Fatal("a session of the stopping n2 was still forwarded to it")
	}
	select {
	case <-stopped:
		t.Fatal("n2 stopped with a request still running")
	default:
	}

	close(app.slowOut)
	select {
	case a := <-slow:
		if a.err != nil || a.code != http.StatusOK || a.body != "slow done on n2" {
			t.Fatalf("the in-flight request got %+v, want 200 \"slow done on n2\"", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request did not finish")
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("n2 did not stop after its last request finished")
	}
}

func TestLeastLoaded(t *testing.T) {
	c, _ := newCluster(t, func(cfg *config.Config) { cfg.Balance = config.BalanceLeastLoaded })
	got := spread(t, c.Node("n1"), 30)
	for _, id := range []string{"n1", "n2", "n3"} {
		if got[id] == 0 {
			t.Fatalf("least-loaded spread idle nodes as %v: %s got none", got, id)
		}
	}
	t.Logf("least-loaded: %v", got)
}

// TestBrokenAnswerBeforeAnyByte: an owner whose answer breaks before a
// byte of it reached the client (it promised 100 bytes and closed after
// 7) gets a 502 that names it, for a request with a body (net/http's
// path), not a connection closed without a word; a GET is served by the
// fast front, which relays nothing before the answer's head is read.
func TestBrokenAnswerBeforeAnyByte(t *testing.T) {
	c, _ := newCluster(t, nil)
	cl := sessionOn(t, c, "n2")
	for _, path := range []string{"/t/broken"} {
		for _, method := range []string{http.MethodPost, http.MethodPut} {
			code, _, err := cl.do(method, c.Node("n1").URL(path), strings.NewReader("some body"), nil)
			if err != nil || code != http.StatusBadGateway {
				t.Fatalf("%s %s through n1 to n2's broken answer: %d %v; want 502", method, path, code, err)
			}
			// The failed attempt marked n2 failed until a probe answers:
			// until then n1 would serve the route itself.
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				return c.Node("n1").Node().Members().Healthy("n2"), "n1 still holds n2 failed"
			})
		}
	}
	// A whole answer of the same route still goes through.
	code, w, err := cl.do(http.MethodPost, c.Node("n1").URL("/t/who"), strings.NewReader("some body"), nil)
	if err != nil || code != http.StatusOK || w.Node != "n2" || w.Bytes != 9 {
		t.Fatalf("POST /t/who through n1: %d %v %+v; want n2's answer", code, err, w)
	}
}

// TestCatchUpOutlastsAnElection: a request naming a session this node does
// not hold, routed to a node that just died, catches up with the cluster
// (a read index through the next leader) within the request's wait budget,
// however long the election takes (here at least 2.5 s: Raft's timers
// scaled by 5), and is served. The session middleware had its own 2 s bound
// on that catch-up, shorter than the budget: such a request failed with 503
// whenever an election outlasted it (TestFailoverOnKill on a loaded
// machine).
func TestCatchUpOutlastsAnElection(t *testing.T) {
	c, _ := newCluster(t, func(cfg *config.Config) {
		cfg.RaftTimeoutScale = 5
		cfg.ClusterWaitBudget = time.Minute
	})
	lead := c.Leader()
	var via *testcluster.Node
	for _, nd := range c.Nodes() {
		if nd.ID != lead.ID {
			via = nd
			break
		}
	}
	cl := newClient()
	// A well-formed token no node holds, with the leader's route.
	cl.cookie = strings.Repeat("A", sessioncookie.TokenLen) + "." + via.Node().Members().Route(lead.ID)
	c.Kill(lead.ID)
	start := time.Now()
	code, w, err := cl.do(http.MethodGet, via.URL("/t/who"), nil, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET through %s right after the leader's kill: %d %v %q (after %v)", via.ID, code, err, w.Error, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("served by %s %v after the leader's kill", w.Node, time.Since(start).Round(time.Millisecond))
}
