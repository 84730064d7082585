package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
)

// These tests hold the fast front to net/http's server: the limits it
// enforces, the heads it refuses, the headers a proxy must remove. See
// DESIGN.md, "Conformance".

// logBuf is a logger's output, safe for concurrent writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func TestValidHost(t *testing.T) {
	for c := 0; c < 256; c++ {
		h := "a" + string(rune(c)) + "b"
		if c >= 0x80 {
			h = "a" + string([]byte{byte(c)}) + "b"
		}
		if validHost([]byte(h)) != httpguts.ValidHostHeader(h) {
			t.Errorf("byte %#x: validHost %v, httpguts %v", c, validHost([]byte(h)), !validHost([]byte(h)))
		}
	}
}

func TestParseRequestHeadRefusals(t *testing.T) {
	other := "AAAA.r3" // routable by a lax reading, not well-formed
	for _, tt := range []struct {
		name   string
		head   string
		take   bool
		cookie string
	}{
		{"Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false, ""},
		{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false, ""},
		{"Host with quotes and angle brackets", "GET / HTTP/1.1\r\nHost: a\"<b>\r\n\r\n", false, ""},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n", false, ""},
		{"Host IPv6 and port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", true, ""},
		{"first cookie malformed", "GET / HTTP/1.1\r\nHost: x\r\nCookie: sid=a b; sid=" + tok + ".r1\r\n\r\n", true, tok + ".r1"},
		{"first cookie lax-routable only", "GET / HTTP/1.1\r\nHost: x\r\nCookie: sid=" + other + "\r\nCookie: sid=" + tok + ".r1\r\n\r\n", true, tok + ".r1"},
		{"too many cookies", "GET / HTTP/1.1\r\nHost: x\r\nCookie: sid=" + tok + ".r1" + strings.Repeat(";", 3000) + "\r\n\r\n", false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r fastReq
			if take := parseRequestHead([]byte(tt.head), "sid", &r); take != tt.take {
				t.Fatalf("take = %v, want %v", take, tt.take)
			}
			if tt.take && string(r.cookie) != tt.cookie {
				t.Fatalf("session cookie %q, want %q", r.cookie, tt.cookie)
			}
		})
	}
}

// rawClosedWithin sends raw on a new connection to addr and reports how
// long the server took to close it, or fails after limit.
func rawClosedWithin(t *testing.T, addr string, steps []string, pause time.Duration, limit time.Duration) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for i, s := range steps {
		if i > 0 {
			// Waiting for time to pass is the point here: the server's
			// clock is what is measured.
			<-time.After(pause)
		}
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %v after it began (got %q)", limit, b)
	}
	return time.Since(start)
}

// TestFastFrontHeaderTimeout: a connection that sends nothing, or a head
// it never finishes, is closed HeaderTimeout after the accept or the
// head's first byte — also when the head was handed to net/http part
// way, which must not start a ReadHeaderTimeout of its own.
func TestFastFrontHeaderTimeout(t *testing.T) {
	// Margins are wide: CI machines are loaded; a regression costs a
	// whole HeaderTimeout (or IdleTimeout) more.
	const ht = 3 * time.Second
	fx := newFastFixtureWith(t, func(w http.ResponseWriter, r *http.Request) {}, ListenOptions{
		HeaderTimeout: ht, IdleTimeout: time.Minute}, nil)
	t.Run("idle from the accept", func(t *testing.T) {
		t.Parallel()
		if d := rawClosedWithin(t, fx.addr, []string{""}, 0, 20*time.Second); d < ht-100*time.Millisecond || d > ht+2*time.Second {
			t.Fatalf("idle connection closed after %v, want %v", d, ht)
		}
	})
	t.Run("a partial head", func(t *testing.T) {
		t.Parallel()
		if d := rawClosedWithin(t, fx.addr, []string{"G"}, 0, 20*time.Second); d > ht+2*time.Second {
			t.Fatalf("partial head closed after %v, want %v", d, ht)
		}
	})
	t.Run("a partial head handed to net/http", func(t *testing.T) {
		t.Parallel()
		// The second write fills the fast front's buffer: net/http gets
		// the head 0.8·ht after it began and must end it at ht, not 1.8·ht.
		steps := []string{"GET / HTTP/1.1\r\n", "X-Big: " + strings.Repeat("b", fastReadBuf)}
		if d := rawClosedWithin(t, fx.addr, steps, ht*8/10, 20*time.Second); d > ht+ht/2 {
			t.Fatalf("partial head closed after %v, want %v", d, ht)
		}
	})
}

// TestFastFrontRefusesLocally: heads net/http refuses are answered 400
// on the entry node, never sent to the owner, and logged.
func TestFastFrontRefusesLocally(t *testing.T) {
	var logs logBuf
	var upstream int
	var mu sync.Mutex
	fx := newFastFixtureWith(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstream++
		mu.Unlock()
	}, ListenOptions{}, logs.logger())
	before := fx.dials.Load()
	for _, host := range []string{"a b", "a/b", "a\"<b>", "user@evil"} {
		c, br := fx.dial(t)
		send(t, c, "GET /x HTTP/1.1\r\nHost: "+host+"\r\nCookie: sid="+tok+".r2\r\n\r\n")
		if res, _ := read(t, br, "GET"); res.StatusCode != http.StatusBadRequest {
			t.Fatalf("Host %q: %d, want 400", host, res.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if upstream != 0 || fx.dials.Load() != before {
		t.Fatalf("refused heads reached the owner: %d requests, %d dials", upstream, fx.dials.Load()-before)
	}
	if got := strings.Count(logs.String(), `msg="request refused"`); got != 4 || !strings.Contains(logs.String(), `reason="400 Bad Request: malformed Host header"`) ||
		!strings.Contains(logs.String(), "client=127.0.0.1:") {
		t.Fatalf("want 4 refusal lines with reason and client, log:\n%s", logs.String())
	}
}

// TestWatchRefusals: net/http's path (the fast front off) logs refusals
// too, at most refusalBurst a second.
func TestWatchRefusals(t *testing.T) {
	var logs logBuf
	f, err := New(Config{SelfID: "n1", Members: &fakeMembers{failed: map[string]int{}}, CookieName: "sid", Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(f.WatchRefusals(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	for range refusalBurst + 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || res.StatusCode != 400 {
			t.Fatalf("answer %v %v", res, err)
		}
	}
	if n := strings.Count(logs.String(), `msg="request refused"`); n < 1 || n > refusalBurst*2 {
		t.Fatalf("%d refusal lines for %d refusals, want 1..%d:\n%s", n, refusalBurst+3, refusalBurst*2, logs.String())
	}
}

func TestRefusalOf(t *testing.T) {
	// An answer of a handler, even a 400 with Connection: close, is not
	// a refusal of the head.
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "no", http.StatusBadRequest)
	}))
	defer rec.Close()
	c, err := net.Dial("tcp", rec.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c)
	if _, ok := refusalOf(b); ok {
		t.Fatalf("a handler's answer taken for a refusal: %q", b)
	}
	if r, ok := refusalOf([]byte("HTTP/1.1 400 Bad Request: malformed Host header\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: malformed Host header")); !ok || r != "400 Bad Request: malformed Host header" {
		t.Fatalf("refusal not recognised: %q %v", r, ok)
	}
}

// TestCloseChunked: a request with both Content-Length and
// Transfer-Encoding is answered, then the connection is closed (RFC 9112
// section 6.3).
func TestCloseChunked(t *testing.T) {
	srv := httptest.NewServer(CloseChunked(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(res.Body)
	if !res.Close {
		t.Fatal("answer to a request with Content-Length and Transfer-Encoding keeps the connection")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after it: %q %v, want the connection closed", rest, err)
	}
}

// TestFastPathAllocs: the checks added to the fast front's parsing (Host,
// the session-cookie rule, the answer's framing) allocate nothing, as the
// rest of its per-request path.
func TestFastPathAllocs(t *testing.T) {
	head := []byte("GET /demo/api/counter?x=1 HTTP/1.1\r\nHost: app.example:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n" +
		"Cookie: theme=dark; sid=" + tok + ".r2; lang=en\r\nProxy-Authorization: Basic YTpi\r\n\r\n")
	var r fastReq
	if n := testing.AllocsPerRun(200, func() {
		if !parseRequestHead(head, "sid", &r) {
			t.Fatal("not taken")
		}
	}); n != 0 {
		t.Errorf("parseRequestHead: %v allocations", n)
	}
	answer := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\nVary: Cookie\r\n\r\n"
	var out bytes.Buffer
	src := strings.NewReader(answer)
	fc, pc, _ := answerConn(answer, &out)
	pc.br.Reset(src)
	if _, err := fc.readAnswerHead(pc); err != nil { // grows fc.head once
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() {
		src.Reset(answer)
		pc.br.Reset(src)
		if _, err := fc.readAnswerHead(pc); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("readAnswerHead: %v allocations", n)
	}
}
