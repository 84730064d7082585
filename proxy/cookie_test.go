package proxy

import (
	"net/http"
	"strings"
	"testing"
)

func TestRouteFromCookie(t *testing.T) {
	for _, tt := range []struct {
		in    string
		route string
		ok    bool
	}{
		{"abc.def", "def", true},
		{"a.b.c", "", false}, // split at the last dot; the token "a.b" is not base64url
		{"tok-_9.R0ut-_", "R0ut-_", true},
		{"", "", false},
		{".route", "", false},
		{"token.", "", false},
		{"token", "", false},
		{"tok en.route", "", false},
		{"token.ro/ute", "", false},
		{"token.ro=", "", false},
		{"token." + strings.Repeat("a", 65), "", false},
		{"token." + strings.Repeat("a", 64), strings.Repeat("a", 64), true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			route, ok := RouteFromCookie(tt.in)
			if ok != tt.ok || route != tt.route {
				t.Fatalf("RouteFromCookie(%q) = %q, %v; want %q, %v", tt.in, route, ok, tt.route, tt.ok)
			}
		})
	}
}

func FuzzRouteFromCookie(f *testing.F) {
	for _, s := range []string{"abc.def", "a.b.c", "", ".", "..", "x.", ".x", "tok.\x00", "tok.é", "tok." + strings.Repeat("a", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		route, ok := RouteFromCookie(s)
		if !ok {
			if route != "" {
				t.Fatalf("not ok but route %q", route)
			}
			return
		}
		if !strings.HasSuffix(s, "."+route) || strings.Contains(route, ".") || len(route) == 0 || len(route) > maxRouteLen {
			t.Fatalf("RouteFromCookie(%q) = %q", s, route)
		}
		token := strings.TrimSuffix(s, "."+route)
		if !base64URL(token) || !base64URL(route) {
			t.Fatalf("accepted %q with non-base64url parts", s)
		}
	})
}

func TestCookieValue(t *testing.T) {
	a, c := tok+".b", tok+".d"
	for _, tt := range []struct {
		name    string
		headers []string
		want    string
		ok      bool
	}{
		{"alone", []string{"s=" + a}, a, true},
		{"among others", []string{"x=1; s=" + a + "; y=2"}, a, true},
		{"first wins", []string{"s=" + a + "; s=" + c}, a, true},
		{"second header", []string{"x=1", "s=" + c}, c, true},
		{"quoted", []string{`s="` + a + `"`}, a, true},
		{"a malformed one does not count", []string{"s=a b; s=AAAA.r3; s=" + c}, c, true},
		{"prefix name", []string{"ss=" + a + "; s_=c"}, "", false},
		{"no value", []string{"s"}, "", false},
		{"none", nil, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.headers {
				h.Add("Cookie", v)
			}
			got, ok := cookieValue(h, "s")
			if got != tt.want || ok != tt.ok {
				t.Fatalf("cookieValue = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzCookieValue(f *testing.F) {
	for _, s := range []string{"s=a.b", "x=1; s=a.b", `s="a.b"`, "s", ";;;", "s=\"", " s = v ;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		h := http.Header{"Cookie": {line}}
		v, ok := cookieValue(h, "s")
		if ok && !strings.Contains(line, v) {
			t.Fatalf("cookieValue(%q) = %q, not part of the header", line, v)
		}
		if ok {
			RouteFromCookie(v)
		}
	})
}
