package proxy

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestResolveClient(t *testing.T) {
	f := &Front{cfg: Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	}}}
	for _, tt := range []struct {
		name   string
		remote string
		xff    []string
		proto  string
		tls    bool
		addr   string
		chain  string
		pr     string
		host   string
	}{
		{"direct client, headers ignored", "203.0.113.5:4000", []string{"6.6.6.6"}, "https", false,
			"203.0.113.5:4000", "203.0.113.5", "http", "app.example"},
		{"direct TLS client", "203.0.113.5:4000", nil, "", true, "203.0.113.5:4000", "203.0.113.5", "https", "app.example"},
		{"trusted proxy, one hop", "10.1.1.1:5000", []string{"198.51.100.7"}, "https", false,
			"198.51.100.7:0", "198.51.100.7, 10.1.1.1", "https", "front.example"},
		{"trusted chain, spoofed left part", "10.1.1.1:5000", []string{"6.6.6.6, 198.51.100.7, 10.2.2.2"}, "", false,
			"198.51.100.7:0", "6.6.6.6, 198.51.100.7, 10.2.2.2, 10.1.1.1", "http", "front.example"},
		{"trusted proxy, several headers", "10.1.1.1:5000", []string{"6.6.6.6", "198.51.100.7"}, "", false,
			"198.51.100.7:0", "6.6.6.6, 198.51.100.7, 10.1.1.1", "http", "front.example"},
		{"trusted proxy, garbage hop", "10.1.1.1:5000", []string{"198.51.100.7, junk"}, "", false,
			"10.1.1.1:5000", "198.51.100.7, junk, 10.1.1.1", "http", "front.example"},
		{"trusted IPv6 proxy", "[::1]:5000", []string{"2001:db8::1"}, "", false,
			"[2001:db8::1]:0", "2001:db8::1, ::1", "http", "front.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://app.example/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			r.Header.Set("X-Forwarded-Host", "front.example")
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			v := f.resolveClient(r)
			if v.addr != tt.addr || strings.Join(v.chain, ", ") != tt.chain || v.proto != tt.pr || v.host != tt.host {
				t.Fatalf("got addr %q chain %q proto %q host %q; want %q %q %q %q",
					v.addr, strings.Join(v.chain, ", "), v.proto, v.host, tt.addr, tt.chain, tt.pr, tt.host)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	f := &Front{}
	errConn := errors.New("connection reset")
	for _, tt := range []struct {
		name     string
		method   string
		idemKey  bool
		sent     bool
		bodyRead bool
		replay   bool
		wrote    bool
		err      error
		retry    bool
	}{
		{"dial failure, POST", http.MethodPost, false, false, false, false, false, errConn, true},
		{"sent GET", http.MethodGet, false, true, false, false, false, errConn, true},
		{"sent HEAD", http.MethodHead, false, true, false, false, false, errConn, true},
		{"sent OPTIONS", http.MethodOptions, false, true, false, false, false, errConn, true},
		{"sent POST", http.MethodPost, false, true, true, false, false, errConn, false},
		{"sent POST with key, buffered body", http.MethodPost, true, true, true, true, false, errConn, true},
		{"sent PUT with key, streamed body", http.MethodPut, true, true, true, false, false, errConn, false},
		{"sent DELETE with key, no body", http.MethodDelete, true, true, false, false, false, errConn, true},
		{"GET after bytes reached the client", http.MethodGet, false, true, false, false, true, errConn, false},
		{"upstream not ready", http.MethodPost, false, true, true, false, false, errUnready, true},
		{"body too large", http.MethodPost, false, true, true, false, false, &http.MaxBytesError{Limit: 1}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/", nil)
			if tt.idemKey {
				r.Header.Set("Idempotency-Key", "k1")
			}
			a := &attempt{err: tt.err}
			a.sent.Store(tt.sent)
			a.bodyRd.Store(tt.bodyRead)
			var replay []byte
			if tt.replay {
				replay = []byte("x")
			}
			lw := &logWriter{ResponseWriter: httptest.NewRecorder(), wroteHeader: tt.wrote}
			if retry, _, _ := f.judge(lw, r, a, replay); retry != tt.retry {
				t.Fatalf("retry = %v, want %v", retry, tt.retry)
			}
		})
	}
}
