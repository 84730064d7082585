package sessions

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestMiddlewareCookie(t *testing.T) {
	m, err := New(&localLog{}, Config{Route: func() string { return "routeA" }, Ignore: regexp.MustCompile(`\.css$`)})
	if err != nil {
		t.Fatal(err)
	}
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/destroy":
			_ = m.Destroy(r.Context())
		case "/read":
			_, _ = w.Write([]byte(m.GetString(r.Context(), "k")))
		default:
			m.Put(r.Context(), "k", "v")
		}
	}))
	serve := func(path, cookie string, tlsOn bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		if tlsOn {
			r.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	tests := []struct {
		name, path string
		tls        bool
		want       []string // in Set-Cookie; nil = no Set-Cookie
	}{
		{"plain", "/put", false, []string{"HttpOnly", "SameSite=Lax", "Path=/", ".routeA"}},
		{"tls", "/put", true, []string{"Secure", ".routeA"}},
		{"ignored path", "/app.css", false, nil},
		{"read without a session", "/read", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := serve(tt.path, "", tt.tls).Header().Get("Set-Cookie")
			if tt.want == nil {
				if sc != "" {
					t.Fatalf("Set-Cookie %q", sc)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(sc, w) {
					t.Fatalf("Set-Cookie %q lacks %q", sc, w)
				}
			}
			if !tt.tls && strings.Contains(sc, "Secure") {
				t.Fatalf("Secure over plain HTTP: %q", sc)
			}
		})
	}

	// Re-stamp, strict mode and destroy.
	sc := serve("/put", "", false).Result().Cookies()[0]
	tok, _, _ := ParseCookie(sc.Value)
	w := serve("/read", "cohort_session="+tok+".otherRoute", false)
	if w.Body.String() != "v" || !strings.Contains(w.Header().Get("Set-Cookie"), tok+".routeA") {
		t.Fatalf("foreign route: body %q Set-Cookie %q", w.Body.String(), w.Header().Get("Set-Cookie"))
	}
	if w := serve("/read", "cohort_session="+tok+".routeA", false); w.Header().Get("Set-Cookie") != "" {
		t.Fatalf("own route re-stamped: %q", w.Header().Get("Set-Cookie"))
	}
	forged, _ := newToken()
	w = serve("/put", "cohort_session="+forged+".routeA", false)
	if strings.Contains(w.Header().Get("Set-Cookie"), forged) {
		t.Fatal("adopted a token the cluster did not issue")
	}
	w = serve("/destroy", "cohort_session="+tok+".routeA", false)
	if !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("destroy: Set-Cookie %q", w.Header().Get("Set-Cookie"))
	}
	if w := serve("/read", "cohort_session="+tok+".routeA", false); w.Body.String() != "" {
		t.Fatal("destroyed session still readable")
	}
}
