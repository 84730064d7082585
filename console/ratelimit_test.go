package console

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/syncbuf"
)

// TestLoginRateLimit: failed logins are limited per client address and for
// all clients of the node together; a refusal answers 429 without checking
// the token and is logged; the limits refill with time.
func TestLoginRateLimit(t *testing.T) {
	const token = "admin-token-0123456789"
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var logs syncbuf.Buffer
	c, err := New(Options{Token: func() []byte { return []byte(token) }, Now: clock,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), LoginFailuresPerClient: 3, LoginFailuresTotal: 5})
	if err != nil {
		t.Fatal(err)
	}
	try := func(client, tok string) int {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "http://node:8080"+Prefix+"login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = client + ":40000"
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 3 {
		if code := try("10.0.0.1", "wrong-token"); code != http.StatusSeeOther {
			t.Fatalf("failure %d of the first client: HTTP %d, want 303 (refused, not yet limited)", i+1, code)
		}
	}
	if code := try("10.0.0.1", token); code != http.StatusTooManyRequests {
		t.Fatalf("fourth try of a client with 3 failures: HTTP %d, want 429 even with the right token", code)
	}
	if !strings.Contains(logs.String(), "console login rate-limited") || !strings.Contains(logs.String(), "limit=client") {
		t.Fatalf("the refusal was not logged: %s", logs.String())
	}
	if code := try("10.0.0.2", token); code != http.StatusSeeOther {
		t.Fatalf("another client with the right token: HTTP %d, want 303", code)
	}
	// Two more failures from other clients use up the node's 5.
	try("10.0.0.3", "wrong-token")
	try("10.0.0.4", "wrong-token")
	if code := try("10.0.0.5", token); code != http.StatusTooManyRequests {
		t.Fatalf("a fresh client after 5 failures on the node: HTTP %d, want 429", code)
	}
	if !strings.Contains(logs.String(), "limit=node") {
		t.Fatalf("the node-wide refusal was not logged: %s", logs.String())
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if code := try("10.0.0.1", token); code != http.StatusSeeOther {
		t.Fatalf("after a minute the first client with the right token: HTTP %d, want 303", code)
	}
}
