package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testAuth(now time.Time) *auth {
	return &auth{token: func() []byte { return []byte("admin-token-0123456789") }, now: func() time.Time { return now }}
}

func TestSessionValues(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := testAuth(now)
	v, exp := a.issue()
	if !a.valid(v) {
		t.Fatal("a fresh session is not valid")
	}
	if strings.Contains(v, "admin-token") {
		t.Fatal("the session value holds the token")
	}
	later := testAuth(exp)
	other := &auth{token: func() []byte { return []byte("another-token-0123456789") }, now: a.now}
	none := &auth{token: func() []byte { return nil }, now: a.now}
	tests := []struct {
		name string
		a    *auth
		v    string
		want bool
	}{
		{"fresh", a, v, true},
		{"expired", later, v, false},
		{"token changed", other, v, false},
		{"console disabled", none, v, false},
		{"tampered expiry", a, "9" + v, false},
		{"no dot", a, "abc", false},
		{"empty", a, "", false},
		{"huge expiry", a, "999999999999999999999.x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.valid(tt.v); got != tt.want {
				t.Errorf("valid(%q) = %v, want %v", tt.v, got, tt.want)
			}
		})
	}
}

func TestAuthorizedNeedsCSRFForWrites(t *testing.T) {
	a := testAuth(time.Now())
	v, _ := a.issue()
	req := func(method string, hdr map[string]string) *http.Request {
		r := httptest.NewRequest(method, "http://node:8080/_cohort/api/nodes/n1/drain", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v})
		for k, val := range hdr {
			r.Header.Set(k, val)
		}
		return r
	}
	csrf := a.csrf(v)
	tests := []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"get", req(http.MethodGet, nil), true},
		{"post bare", req(http.MethodPost, nil), false},
		{"post csrf no origin", req(http.MethodPost, map[string]string{CSRFHeader: csrf}), false},
		{"post csrf same origin", req(http.MethodPost, map[string]string{CSRFHeader: csrf, "Origin": "http://node:8080"}), true},
		{"post csrf referer", req(http.MethodPost, map[string]string{CSRFHeader: csrf, "Referer": "http://node:8080/_cohort/ui/"}), true},
		{"post csrf other origin", req(http.MethodPost, map[string]string{CSRFHeader: csrf, "Origin": "http://evil:8080"}), false},
		{"delete wrong csrf", req(http.MethodDelete, map[string]string{CSRFHeader: csrf + "x", "Origin": "http://node:8080"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.authorized(tt.r); got != tt.want {
				t.Errorf("authorized = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzSessionValue(f *testing.F) {
	a := testAuth(time.Unix(1_700_000_000, 0))
	v, _ := a.issue()
	for _, s := range []string{v, "", ".", "1.", ".x", "1700000001.AAAA", "-1.x", v + "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a.valid(s) && s != v {
			t.Fatalf("forged session %q accepted", s)
		}
	})
}

func BenchmarkAuthorizedWrite(b *testing.B) {
	a := testAuth(time.Now())
	v, _ := a.issue()
	r := httptest.NewRequest(http.MethodPost, "http://node:8080/_cohort/api/nodes/n1/drain", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v})
	r.Header.Set(CSRFHeader, a.csrf(v))
	r.Header.Set("Origin", "http://node:8080")
	b.ReportAllocs()
	for b.Loop() {
		if !a.authorized(r) {
			b.Fatal("refused")
		}
	}
}
