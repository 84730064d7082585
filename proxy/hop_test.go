package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hopFixture is a hop transport in front of an httptest server, counting
// the connections it dials.
type hopFixture struct {
	srv      *httptest.Server
	ht       *hopTransport
	dials    atomic.Int64
	fallback atomic.Int64
}

func newHopFixture(t *testing.T, h http.Handler) *hopFixture {
	t.Helper()
	f := &hopFixture{srv: httptest.NewServer(h)}
	fb := roundTripCounter{rt: f.srv.Client().Transport, n: &f.fallback}
	f.ht = newHopTransport(func(ctx context.Context, addr string) (net.Conn, error) {
		f.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, fb)
	t.Cleanup(func() {
		f.ht.CloseIdleConnections()
		f.srv.Close()
	})
	return f
}

type roundTripCounter struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c roundTripCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func (f *hopFixture) do(t *testing.T, ctx context.Context, method, path string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.ht.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

func TestHopTransportReusesConnections(t *testing.T) {
	f := newHopFixture(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, r.Method+" "+r.URL.Path)
		}
	}))
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		res, body, err := f.do(t, ctx, http.MethodGet, "/a", nil)
		if err != nil || res.StatusCode != 200 || body != "GET /a" {
			t.Fatalf("GET: %v %v %q", err, res, body)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/chunked", nil)
	res, err := f.ht.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "part one, part two" || res.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("chunked: %q trailer %v", b, res.Trailer)
	}
	for _, m := range []string{http.MethodHead, http.MethodDelete} {
		if res, _, err := f.do(t, ctx, m, "/empty", nil); err != nil || res.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: %v %v", m, res, err)
		}
	}
	if n := f.dials.Load(); n != 1 {
		t.Fatalf("%d connections dialled for sequential requests, want 1", n)
	}
	// A body goes to the fallback transport.
	if res, body, err := f.do(t, ctx, http.MethodPost, "/b", strings.NewReader("x")); err != nil || body != "POST /b" || res.StatusCode != 200 {
		t.Fatalf("POST with body: %v %q", err, body)
	}
	if f.fallback.Load() != 1 || f.dials.Load() != 1 {
		t.Fatalf("fallback used %d times, dials %d; want 1 and 1", f.fallback.Load(), f.dials.Load())
	}
}

// A peer that closed an idle connection (restart, graceful shutdown) must
// cost no request: not a GET, and not a POST without a body either, which
// must never be sent twice.
func TestHopTransportStaleConnection(t *testing.T) {
	var posts atomic.Int64
	f := newHopFixture(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	ctx := context.Background()
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if _, _, err := f.do(t, ctx, m, "/", nil); err != nil {
			t.Fatal(err)
		}
		f.srv.CloseClientConnections() // the server drops the idle connection
		res, body, err := f.do(t, ctx, m, "/", nil)
		if err != nil || res.StatusCode != 200 || body != "ok" {
			t.Fatalf("%s after the peer closed the idle connection: %v %q", m, err, body)
		}
	}
	if posts.Load() != 2 {
		t.Fatalf("the server saw %d POSTs, want 2", posts.Load())
	}
}

func TestHopTransportCancelAndEarlyHints(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	f := newHopFixture(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", "</app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "done")
			return
		}
		io.WriteString(w, "head ")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	if res, body, err := f.do(t, ctx, http.MethodGet, "/hints", nil); err != nil || body != "done" || res.StatusCode != 200 || len(hints) != 1 {
		t.Fatalf("early hints: %v %q %v", err, body, hints)
	}

	// A request whose context ends mid-body fails and spoils its connection.
	cctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, f.srv.URL+"/slow", nil)
	res, err := f.ht.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "head " {
		t.Fatalf("first bytes: %q %v", buf, err)
	}
	cancel()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(res.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("body read to the end after the context was cancelled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("body read did not end after the context was cancelled")
	}
	res.Body.Close()
	once.Do(func() { close(release) })
	dials := f.dials.Load()
	if _, body, err := f.do(t, context.Background(), http.MethodGet, "/hints", nil); err != nil || body != "done" {
		t.Fatalf("after a cancelled request: %v %q", err, body)
	}
	if f.dials.Load() != dials+1 {
		t.Fatal("the cancelled request's connection went back to the pool")
	}
}

func TestHopTransportDialError(t *testing.T) {
	ht := newHopTransport(func(ctx context.Context, addr string) (net.Conn, error) {
		return nil, errors.New("refused")
	}, http.DefaultTransport)
	wrote := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaders: func() { wrote = true }})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/", nil)
	if _, err := ht.RoundTrip(req); err == nil || wrote {
		t.Fatalf("err %v, wrote headers %v; want an error before anything was written", err, wrote)
	}
}
