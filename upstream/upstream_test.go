package upstream

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const route = "R0uteTag1234"

func newProxy(t *testing.T, app http.Handler, mod func(*Config)) (*Proxy, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	cfg := Config{
		Network: "tcp", Addr: srv.Listener.Addr().String(), NodeID: "n1",
		CookieName: "cohort_session", SelfRoute: func() string { return route },
		AppSessionCookie: "PHPSESSID",
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, srv
}

func echoHeaders(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r.Header)
}

func TestClientCohortHeadersNeverReachTheApp(t *testing.T) {
	p, _ := newProxy(t, http.HandlerFunc(echoHeaders), nil)
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	for _, h := range []string{"Cohort-Node", "Cohort-Front-Client", "cohort-anything", "X-Cohort-Fence", "X-Cohort-Run-Key"} {
		r.Header.Set(h, "forged")
	}
	r.Header.Set("Cookie", "a=1; cohort_session=tok.R0uteTag1234; PHPSESSID=abc")
	r.Header.Set("X-Forwarded-For", "10.0.0.9") // as the front resolved it
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	var got http.Header
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	for k, v := range got {
		if isCohortHeader(k) && !(k == HeaderNode && len(v) == 1 && v[0] == "n1") {
			t.Errorf("the app got %s: %q", k, v)
		}
	}
	if got.Get(HeaderNode) != "n1" {
		t.Errorf("Cohort-Node = %q, want n1", got.Get(HeaderNode))
	}
	if c := got.Get("Cookie"); c != "a=1; PHPSESSID=abc" {
		t.Errorf("Cookie reaching the app = %q, want cohort's cookie taken out", c)
	}
	if xff := got.Get("X-Forwarded-For"); xff != "10.0.0.9" {
		t.Errorf("X-Forwarded-For = %q, want the front's", xff)
	}
}

func TestAffinityCookieInsertedForAppSessions(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			http.SetCookie(w, &http.Cookie{Name: "PHPSESSID", Value: "new", Path: "/"})
		}
		if r.URL.Path == "/logout" {
			http.SetCookie(w, &http.Cookie{Name: "PHPSESSID", Value: "", MaxAge: -1})
		}
		io.WriteString(w, "ok")
	})
	p, _ := newProxy(t, app, nil)
	tests := []struct {
		name, path, cookie string
		insert             bool
	}{
		{"no app session", "/", "", false},
		{"app sets its cookie", "/login", "", true},
		{"request carries the app cookie, no route", "/", "PHPSESSID=abc", true},
		{"route names another node (failover)", "/", "PHPSESSID=abc; cohort_session=tok.OtherNode123", true},
		{"route already names this node", "/", "PHPSESSID=abc; cohort_session=tok." + route, false},
		{"app deletes its cookie", "/logout", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.cookie != "" {
				r.Header.Set("Cookie", tt.cookie)
			}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			var aff *http.Cookie
			for _, c := range w.Result().Cookies() {
				if c.Name == "cohort_session" {
					aff = c
				}
			}
			if (aff != nil) != tt.insert {
				t.Fatalf("affinity cookie inserted = %v, want %v (Set-Cookie %q)", aff != nil, tt.insert, w.Header()["Set-Cookie"])
			}
			if aff == nil {
				return
			}
			tok, rt, _ := strings.Cut(aff.Value, ".")
			if rt != route || len(tok) != 43 || !aff.HttpOnly || aff.Path != "/" || aff.SameSite != http.SameSiteLaxMode {
				t.Fatalf("affinity cookie %s: want TOKEN(43).%s, HttpOnly, Path=/, SameSite=Lax", aff, route)
			}
			if w.Header().Get("Cache-Control") != "private" {
				t.Fatalf("Cache-Control = %q, want private with an inserted cookie", w.Header().Get("Cache-Control"))
			}
		})
	}
}

func TestAppThatNeverListensGetsAClear502AndGoesUnhealthy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p, err := New(Config{Network: "tcp", Addr: addr, Display: "http://" + addr, NodeID: "n1", CookieName: "c",
		SelfRoute: func() string { return route }, CheckConnect: true,
		IsHop: func(context.Context) bool { return true }, UnreadyHeader: "Cohort-Front-Unready"})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x")))
	if w.Code != http.StatusServiceUnavailable && w.Code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 or 503", w.Code)
	}
	if !strings.Contains(w.Body.String(), "the application at http://"+addr) || !strings.Contains(w.Body.String(), "refused") {
		t.Fatalf("body %q does not say which app failed and how", w.Body)
	}
	if w.Header().Get("Cohort-Front-Unready") == "" {
		t.Fatal("a forwarded request that reached no app lacks the unready mark, so the peer would not retry elsewhere")
	}
	if p.Healthy() {
		t.Fatal("an app refusing connections still counts as healthy")
	}
}

func TestGarbageAnswerIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, "SSH-2.0-OpenSSH garbage\r\n\r\n")
			}()
		}
	}()
	p, _ := New(Config{Network: "tcp", Addr: ln.Addr().String(), NodeID: "n1", CookieName: "c", SelfRoute: func() string { return route }})
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "malformed HTTP") {
		t.Fatalf("garbage answer gave %d %q, want 502 naming a malformed answer", w.Code, w.Body)
	}
}

func TestHealthFollowsTheHealthPath(t *testing.T) {
	var fail atomic.Bool
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
		}
	})
	p, _ := newProxy(t, app, func(c *Config) { c.HealthPath = "/health"; c.HealthInterval = 20 * time.Millisecond })
	if p.Healthy() {
		t.Fatal("healthy before any check passed")
	}
	ctx := context.Background()
	if !p.CheckNow(ctx) || !p.Healthy() || p.Ready(ctx) != nil {
		t.Fatal("not healthy after a passing check")
	}
	fail.Store(true)
	if p.CheckNow(ctx) || p.Healthy() {
		t.Fatal("healthy after a failing check")
	}
	if err := p.Ready(ctx); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Ready = %v, want the failing status", err)
	}
	fail.Store(false)
	p.Hold("restarting")
	if p.CheckNow(ctx); p.Healthy() {
		t.Fatal("healthy while held")
	}
	p.Release()
	if !p.Healthy() {
		t.Fatal("not healthy after Release")
	}
}
