package sessioncookie

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func token(t testing.TB) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// oracle is the rule written with net/http's own cookie reader and a
// strict decoder: what the sessions middleware did before the rule was
// shared, restricted to well-formed values.
func oracle(lines []string, name string) (string, bool) {
	r := &http.Request{Header: http.Header{"Cookie": lines}}
	for _, c := range r.CookiesNamed(name) {
		tok, route, ok := strings.Cut(c.Value, ".")
		if !ok || len(tok) != TokenLen || route == "" || len(route) > MaxRouteLen || strings.Contains(route, ".") {
			continue
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(tok); err != nil {
			continue
		}
		if !b64URL(route) || !b64URL(tok) {
			continue
		}
		return c.Value, true
	}
	return "", false
}

func TestFind(t *testing.T) {
	a, b := token(t)+".r1", token(t)+".r2"
	for _, tt := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"one", []string{"sid=" + a}, a},
		{"malformed first is skipped", []string{"sid=a b; sid=" + b}, b},
		{"short token first is skipped", []string{"sid=AAAA.r3; sid=" + b}, b},
		{"first well-formed wins", []string{"sid=" + a + "; sid=" + b}, a},
		{"across lines", []string{"x=1; sid=nope", "sid=\"" + b + "\""}, b},
		{"spaces around the name", []string{" sid =" + a}, a},
		{"space after =", []string{"sid= " + a}, ""},
		{"other name", []string{"sidx=" + a}, ""},
		{"too many cookies", []string{"sid=" + a + strings.Repeat(";x=1", 3000)}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Find(tt.lines, "sid")
			if got != tt.want || ok != (tt.want != "") {
				t.Fatalf("Find = %q %v, want %q", got, ok, tt.want)
			}
			if o, _ := oracle(tt.lines, "sid"); o != got {
				t.Fatalf("net/http's reading gives %q, Find %q", o, got)
			}
		})
	}
}

func TestParseAndWellFormed(t *testing.T) {
	tok := token(t)
	for v, ok := range map[string]bool{
		tok + ".AbC-_9": true, tok: false, tok + ".": false, tok + ".a.b": false,
		tok[1:] + ".r": false, tok + "A.r": false, strings.Repeat("+", 43) + ".r": false,
		tok + "." + strings.Repeat("a", 65): false, "": false,
	} {
		if _, _, err := Parse(v); (err == nil) != ok || WellFormed(v) != ok || WellFormed([]byte(v)) != ok {
			t.Errorf("%q: Parse err %v, WellFormed %v; want ok=%v", v, err, WellFormed(v), ok)
		}
	}
	// Every last character: canonical exactly when the strict decoder agrees.
	for _, c := range alphabet {
		v := tok[:42] + string(c)
		_, err := base64.RawURLEncoding.Strict().DecodeString(v)
		if WellFormed(v+".r") != (err == nil) {
			t.Errorf("last character %q: WellFormed %v, strict decode %v", c, WellFormed(v+".r"), err)
		}
	}
}

// FuzzFind checks the rule against net/http's cookie reader: the value
// Find picks is the first well-formed one net/http reads, on any lines.
func FuzzFind(f *testing.F) {
	tok := "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eHF1dXg"
	for _, s := range []string{"sid=" + tok + ".r1", "sid=a b; sid=" + tok + ".r2", " sid = \"" + tok + ".r\" ;", "sid=AAAA.r3;sid=" + tok + ".r1\x00sid=" + tok + ".r9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		lines := strings.Split(raw, "\x00")
		got, ok := Find(lines, "sid")
		want, wok := oracle(lines, "sid")
		if got != want || ok != wok {
			t.Fatalf("%q: Find %q %v; net/http %q %v", raw, got, ok, want, wok)
		}
		if ok && !WellFormed(got) {
			t.Fatalf("Find returned a malformed value %q", got)
		}
	})
}
