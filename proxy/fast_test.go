package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortserver/cohort/membership"
)

func TestParseRequestHead(t *testing.T) {
	const ck = "sid"
	for _, tt := range []struct {
		name   string
		head   string
		take   bool
		cookie string
		close  bool
	}{
		{"plain GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1; sid=" + tok + ".r2\r\n\r\n", true, tok + ".r2", false},
		{"HEAD, quoted cookie, second Cookie line", "HEAD / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\ncookie: sid=\"" + tok + ".r2\"\r\n\r\n", true, tok + ".r2", false},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n", true, "", true},
		{"POST", "POST / HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", false, "", false},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", false, "", false},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false, "", false},
		{"a body", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", false, "", false},
		{"chunked", "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", false},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false, "", false},
		{"Connection naming a header", "GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret\r\n\r\n", false, "", false},
		{"folded line", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", false, "", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", false, "", false},
		{"control byte in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", false, "", false},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"double slash", "GET //a HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"dot segment", "GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"trailing dot segment", "GET /a/. HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"escaped path", "GET /a%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n", false, "", false},
		{"dots in a name are fine", "GET /a/.well/b.txt?x=/../ HTTP/1.1\r\nHost: x\r\n\r\n", true, "", false},
		{"escapes in the query are fine", "GET /a?q=%2F HTTP/1.1\r\nHost: x\r\n\r\n", true, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, bad := headEnd([]byte(tt.head))
			if bad || n != len(tt.head) {
				t.Fatalf("headEnd = %d, %v; want %d", n, bad, len(tt.head))
			}
			var r fastReq
			take := parseRequestHead([]byte(tt.head), ck, &r)
			if take != tt.take {
				t.Fatalf("take = %v, want %v", take, tt.take)
			}
			if take && (string(r.cookie) != tt.cookie || r.close != tt.close) {
				t.Fatalf("cookie %q close %v; want %q %v", r.cookie, r.close, tt.cookie, tt.close)
			}
		})
	}
	for _, head := range []string{"GET / HTTP/1.1\nHost: x\n\n", "GET / HTTP/1.1\r\nHost: x\n\r\n", "\r\nGET / HTTP/1.1\r\n\r\n"} {
		if _, bad := headEnd([]byte(head)); !bad {
			t.Errorf("headEnd(%q) accepted bare LFs or a leading blank line", head)
		}
	}
	if n, bad := headEnd([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); n != 0 || bad {
		t.Errorf("an unfinished head: %d %v", n, bad)
	}
}

func TestChunkSize(t *testing.T) {
	for line, want := range map[string]int64{"0\r\n": 0, "1a\r\n": 26, "FF;ext=1\r\n": 255, "10 \r\n": 16} {
		if n, ok := chunkSize([]byte(line)); !ok || n != want {
			t.Errorf("chunkSize(%q) = %d %v, want %d", line, n, ok, want)
		}
	}
	for _, line := range []string{"\r\n", "g\r\n", "1\n", "1234567890abcdef0\r\n"} {
		if _, ok := chunkSize([]byte(line)); ok {
			t.Errorf("chunkSize(%q) accepted", line)
		}
	}
}

// fakeMembers is a member table of two nodes, n1 (this one) and n2 at a
// test server, with routes "r1" and "r2".
type fakeMembers struct {
	mu     sync.Mutex
	addr   string
	failed map[string]int
}

func (m *fakeMembers) All() []membership.Member {
	a, _ := m.Get("n1")
	b, _ := m.Get("n2")
	return []membership.Member{a, b}
}

func (m *fakeMembers) Get(id string) (membership.Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch id {
	case "n1":
		return membership.Member{ID: "n1", Address: "127.0.0.1:1", State: membership.StateActive}, true
	case "n2":
		return membership.Member{ID: "n2", Address: m.addr, State: membership.StateActive}, true
	}
	return membership.Member{}, false
}

func (m *fakeMembers) Healthy(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed[id] == 0
}

// Unresponsive: the fake has no probes; a peer never fails them.
func (m *fakeMembers) Unresponsive(string) bool { return false }

func (m *fakeMembers) MarkFailed(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failed[id]++
}

func (m *fakeMembers) heal() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.failed)
}

func (m *fakeMembers) Route(id string) string { return "r" + strings.TrimPrefix(id, "n") }

func (m *fakeMembers) ByRoute(tag string) (membership.Member, bool) {
	return m.Get("n" + strings.TrimPrefix(tag, "r"))
}

func (m *fakeMembers) SetState(context.Context, string, string) error { return nil }

// fastFixture is a front on n1 whose fast listener forwards to an upstream
// test server playing n2's cluster port; what it hands off is answered
// "slow" by a plain http.Server.
type fastFixture struct {
	members  *fakeMembers
	upstream *httptest.Server
	fl       *FastListener
	addr     string
	dials    atomic.Int64
	slow     atomic.Int64
}

func newFastFixture(t *testing.T, up http.HandlerFunc) *fastFixture {
	t.Helper()
	return newFastFixtureWith(t, up, ListenOptions{}, nil)
}

// newFastFixtureWith is newFastFixture with the listener's options (the
// http.Server behind it gets the same header timeout and limit, as in
// package node) and a logger for the front.
func newFastFixtureWith(t *testing.T, up http.HandlerFunc, opts ListenOptions, log *slog.Logger) *fastFixture {
	t.Helper()
	fx := &fastFixture{members: &fakeMembers{failed: map[string]int{}}}
	fx.upstream = httptest.NewServer(up)
	fx.members.addr = fx.upstream.Listener.Addr().String()
	f, err := New(Config{SelfID: "n1", Members: fx.members, CookieName: "sid", Logger: log,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			fx.dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.Wrap(http.NotFoundHandler())
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx, http.DefaultTransport)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = ln.Addr().String()
	fx.fl = f.Listen(ln, opts)
	srv := &http.Server{ReadHeaderTimeout: opts.HeaderTimeout, MaxHeaderBytes: opts.MaxHeaderBytes, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fx.slow.Add(1)
		_, _ = io.WriteString(w, "slow")
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(fx.fl)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		fx.fl.CloseConns()
		<-done
		cancel()
		_ = f.Close()
		fx.upstream.Close()
	})
	return fx
}

// dial opens a raw client connection to the front.
func (fx *fastFixture) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", fx.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
}

// read reads one answer to a request of method and returns it with its
// body.
func read(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res, string(b)
}

// tok is a well-formed session token (internal/sessioncookie).
const tok = "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eHF1dXg"

const routed = "Host: app.example\r\nCookie: sid=" + tok + ".r2\r\n"

func TestFastFrontForwards(t *testing.T) {
	var seen sync.Map // path → the headers upstream saw
	fx := newFastFixture(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.RequestURI(), r.Header.Clone())
		switch r.URL.Path {
		case internalAppPrefix + "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			fl := http.NewResponseController(w)
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				_ = fl.Flush()
			}
			w.Header().Set("X-Sum", "3")
		case internalAppPrefix + "/close":
			w.Header().Set("Connection", "close, X-Hop")
			w.Header().Set("X-Hop", "secret")
			_, _ = io.WriteString(w, "closing")
		case internalAppPrefix + "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "hinted")
		default:
			w.Header().Set("X-Path", r.URL.RequestURI())
			_, _ = io.WriteString(w, "fast "+r.Host)
		}
	})

	t.Run("forwarded with the front's headers, forged ones dropped", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /a?q=1 HTTP/1.1\r\n"+routed+"X-Forwarded-For: 6.6.6.6\r\nCohort-Front-Client: 6.6.6.6:1\r\n"+
			"Keep-Alive: 5\r\nX-App: yes\r\n\r\n")
		res, body := read(t, br, "GET")
		if res.StatusCode != 200 || body != "fast app.example" || res.Header.Get("X-Path") != internalAppPrefix+"/a?q=1" {
			t.Fatalf("answer %d %q %v", res.StatusCode, body, res.Header)
		}
		v, _ := seen.Load(internalAppPrefix + "/a?q=1")
		h := v.(http.Header)
		if h.Get("X-Forwarded-For") != "127.0.0.1" || !strings.HasPrefix(h.Get(hdrClient), "127.0.0.1:") ||
			h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != "app.example" ||
			h.Get("X-App") != "yes" || h.Get("Keep-Alive") != "" || h.Get("Cookie") != "sid="+tok+".r2" {
			t.Fatalf("upstream saw %v", h)
		}
	})

	t.Run("pipelined requests, HEAD and keep-alive reuse", func(t *testing.T) {
		before := fx.dials.Load()
		c, br := fx.dial(t)
		send(t, c, "GET /1 HTTP/1.1\r\n"+routed+"\r\nHEAD /2 HTTP/1.1\r\n"+routed+"\r\nGET /3 HTTP/1.1\r\n"+routed+"\r\n")
		for i, m := range []string{"GET", "HEAD", "GET"} {
			res, body := read(t, br, m)
			want := "fast app.example"
			if m == "HEAD" {
				want = ""
			}
			if res.StatusCode != 200 || body != want || res.Header.Get("X-Path") != fmt.Sprintf("%s/%d", internalAppPrefix, i+1) {
				t.Fatalf("answer %d: %d %q %v", i, res.StatusCode, body, res.Header)
			}
		}
		if d := fx.dials.Load() - before; d > 1 {
			t.Fatalf("%d dials for three sequential requests, want at most 1", d)
		}
	})

	t.Run("chunked answer with trailers and early hints relayed", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /chunked HTTP/1.1\r\n"+routed+"\r\nGET /hints HTTP/1.1\r\n"+routed+"\r\n")
		res, body := read(t, br, "GET")
		if body != "part0;part1;part2;" || res.Trailer.Get("X-Sum") != "3" || len(res.TransferEncoding) == 0 {
			t.Fatalf("chunked: %q trailer %v te %v", body, res.Trailer, res.TransferEncoding)
		}
		line, _ := br.ReadString('\n')
		if line != "HTTP/1.1 103 Early Hints\r\n" {
			t.Fatalf("want the 103 first, got %q", line)
		}
		for line != "\r\n" {
			line, _ = br.ReadString('\n')
		}
		if res, body := read(t, br, "GET"); res.StatusCode != 200 || body != "hinted" {
			t.Fatalf("after hints: %d %q", res.StatusCode, body)
		}
	})

	t.Run("upstream Connection: close and the headers it names stay on the hop", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /close HTTP/1.1\r\n"+routed+"\r\n")
		res, body := read(t, br, "GET")
		if body != "closing" || res.Close || res.Header.Get("X-Hop") != "" {
			t.Fatalf("answer %q close %v headers %v", body, res.Close, res.Header)
		}
		send(t, c, "GET /after HTTP/1.1\r\n"+routed+"\r\n")
		if _, body := read(t, br, "GET"); body != "fast app.example" {
			t.Fatalf("the client connection should stay open: %q", body)
		}
	})

	t.Run("client Connection: close ends the connection", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /x HTTP/1.1\r\n"+routed+"Connection: close\r\n\r\n")
		res, body := read(t, br, "GET")
		if !res.Close || body != "fast app.example" {
			t.Fatalf("close %v body %q", res.Close, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after Connection: close: %v, want EOF", err)
		}
	})

	t.Run("everything else goes to net/http, with the bytes already read", func(t *testing.T) {
		for _, raw := range []string{
			"GET /x HTTP/1.1\r\nHost: app.example\r\n\r\n",                     // no session
			"GET /x HTTP/1.1\r\nHost: a\r\nCookie: sid=" + tok + ".r1\r\n\r\n", // ours
			"GET /x HTTP/1.1\r\nHost: a\r\nCookie: sid=" + tok + ".r9\r\n\r\n", // nobody's
			"POST /x HTTP/1.1\r\n" + routed + "Content-Length: 2\r\n\r\nhi",
			"GET /x HTTP/1.1\n" + "Host: a\nCookie: sid=" + tok + ".r2\n\n", // bare LFs
			"GET /a/../x HTTP/1.1\r\n" + routed + "\r\n",
			"GET /x HTTP/1.1\r\n" + routed + "X-Big: " + strings.Repeat("b", fastReadBuf) + "\r\n\r\n",
		} {
			before := fx.slow.Load()
			c, br := fx.dial(t)
			send(t, c, raw)
			method, _, _ := strings.Cut(raw, " ")
			if res, body := read(t, br, method); res.StatusCode != 200 || body != "slow" || fx.slow.Load() != before+1 {
				t.Fatalf("%.40q: %d %q", raw, res.StatusCode, body)
			}
		}
	})

	t.Run("a fast connection hands off mid-stream", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /x HTTP/1.1\r\n"+routed+"\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := read(t, br, "GET"); body != "fast app.example" {
			t.Fatalf("first: %q", body)
		}
		if _, body := read(t, br, "GET"); body != "slow" {
			t.Fatalf("second: %q", body)
		}
	})
}

func TestFastFrontFailures(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	fx := newFastFixture(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case internalAppPrefix + "/wait":
			started <- struct{}{}
			<-r.Context().Done()
			cancelled <- struct{}{}
		case internalAppPrefix + "/unready":
			w.Header().Set(hdrUnready, "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case internalAppPrefix + "/short":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "12345")
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		default:
			_, _ = io.WriteString(w, "fast")
		}
	})

	t.Run("a client that leaves cancels the upstream request", func(t *testing.T) {
		c, _ := fx.dial(t)
		send(t, c, "GET /wait HTTP/1.1\r\n"+routed+"\r\n")
		<-started
		c.Close()
		select {
		case <-cancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream request still runs 10 s after its client left")
		}
	})

	t.Run("an unready upstream: net/http serves, the node is not marked failed", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /unready HTTP/1.1\r\n"+routed+"\r\n")
		if _, body := read(t, br, "GET"); body != "slow" {
			t.Fatalf("answer %q, want the handed-off one", body)
		}
		if !fx.members.Healthy("n2") {
			t.Fatal("n2 marked failed for being unready")
		}
	})

	t.Run("an answer cut short closes the client connection", func(t *testing.T) {
		c, br := fx.dial(t)
		send(t, c, "GET /short HTTP/1.1\r\n"+routed+"\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(res.Body); err == nil {
			t.Fatalf("read %q without error from a cut answer", b)
		}
	})

	t.Run("a dead upstream: marked failed, net/http serves", func(t *testing.T) {
		fx.members.heal()
		c, br := fx.dial(t)
		send(t, c, "GET /ok HTTP/1.1\r\n"+routed+"\r\n")
		if _, body := read(t, br, "GET"); body != "fast" {
			t.Fatalf("before: %q", body)
		}
		fx.upstream.CloseClientConnections()
		fx.upstream.Close()
		send(t, c, "GET /ok HTTP/1.1\r\n"+routed+"\r\n")
		if _, body := read(t, br, "GET"); body != "slow" {
			t.Fatalf("after the upstream died: %q", body)
		}
		if fx.members.Healthy("n2") {
			t.Fatal("n2 not marked failed")
		}
	})
}

func TestFastListenerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	fx := newFastFixture(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == internalAppPrefix+"/slow" {
			started <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "fast")
	})
	idle, idleBr := fx.dial(t)
	send(t, idle, "GET /x HTTP/1.1\r\n"+routed+"\r\n")
	read(t, idleBr, "GET")
	busy, busyBr := fx.dial(t)
	send(t, busy, "GET /slow HTTP/1.1\r\n"+routed+"\r\n")
	<-started

	done := make(chan error, 1)
	go func() { done <- fx.fl.Shutdown(context.Background()) }()
	if _, err := idleBr.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want it closed (EOF)", err)
	}
	close(release)
	res, body := read(t, busyBr, "GET")
	if body != "fast" || !res.Close {
		t.Fatalf("the request in flight: %q close=%v; want it answered with Connection: close", body, res.Close)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
