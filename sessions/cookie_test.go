package sessions

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseCookie(t *testing.T) {
	tok, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"token and route", tok + ".AbC-_9xyz012", true},
		{"no route separator", tok, false},
		{"empty route", tok + ".", false},
		{"route too long", tok + "." + strings.Repeat("a", 65), false},
		{"route with a dot", tok + ".ab.cd", false},
		{"short token", tok[1:] + ".r", false},
		{"long token", tok + "A.r", false},
		{"padding", tok[:42] + "=.r", false},
		{"standard base64", strings.Repeat("+", 43) + ".r", false},
		{"non-canonical last char", tok[:42] + "B.r", tok[42] == 'B' || false},
		{"empty", "", false},
		{"spaces", " " + tok + ".r", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotTok, gotRoute, err := ParseCookie(tt.value)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseCookie(%q) err = %v, want ok=%v", tt.value, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformedCookie) {
				t.Fatalf("error %v does not wrap ErrMalformedCookie", err)
			}
			if err == nil && FormatCookie(gotTok, gotRoute) != tt.value {
				t.Fatalf("round trip %q -> %q", tt.value, FormatCookie(gotTok, gotRoute))
			}
		})
	}
}

func FuzzParseCookie(f *testing.F) {
	tok, _ := newToken()
	for _, s := range []string{tok + ".r", tok + ".AbC-_9xyz012", tok, ".", "", tok + ".a.b", strings.Repeat("A", 43) + ".x", "\x00.\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		token, route, err := ParseCookie(v)
		if err != nil {
			if token != "" || route != "" {
				t.Fatalf("error with parts %q %q", token, route)
			}
			return
		}
		if FormatCookie(token, route) != v {
			t.Fatalf("round trip %q", v)
		}
		const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		raw, derr := base64.RawURLEncoding.Strict().DecodeString(token)
		if derr != nil || len(raw) != tokenBytes || len(route) == 0 || len(route) > 64 || strings.Trim(route, b64url) != "" {
			t.Fatalf("accepted %q", v)
		}
		if len(sessionID(token)) != idLen {
			t.Fatal("id length")
		}
	})
}

// FuzzDecodeCommit feeds arbitrary payloads to the command decoders: they
// must refuse, never panic, and re-encode what they accept identically.
func FuzzDecodeCommit(f *testing.F) {
	f.Add((&commit{flags: flagCreate, newID: strings.Repeat("i", idLen), maxBytes: 10, ops: []op{{kind: opSet, key: "k", val: []byte("sv")}, {kind: opIdle, n: 5}, {kind: opPrincipal, key: "p"}, {kind: opDelete, key: "x"}, {kind: opClear}}}).encode())
	f.Add((&commit{id: strings.Repeat("i", idLen), ops: []op{{kind: opIncr, key: "n", n: -3}, {kind: opCAS, key: "k", old: []byte("sa"), val: nil},
		{kind: opAppend, key: "l", val: []byte(`{"a":1}`)}, {kind: opSetAdd, key: "s", val: []byte("m")}, {kind: opSetRemove, key: "s", val: []byte("m")}}}).encode())
	f.Add(encodeIDs([]string{"a", "b"}))
	f.Add(destroyCmd{principal: "p", except: "e"}.encode())
	f.Add([]byte{1, 0, 0, 0, 0, 200})
	f.Fuzz(func(t *testing.T, p []byte) {
		if c, err := decodeCommit(p); err == nil {
			again, err := decodeCommit(c.encode())
			if err != nil || string(again.encode()) != string(c.encode()) {
				t.Fatalf("commit does not round-trip: %v", err)
			}
			// The applier takes any stored blob: p as one must not panic it.
			_, _, _ = applyOps(p, c.ops)
		}
		_, _ = decodeIDs(p)
		_, _ = decodeDestroy(p)
		_ = validBlob(p)
		_ = blobKeys(p)
		_ = decodeValue(p)
	})
}
