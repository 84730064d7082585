package upstream

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzStripCookie checks the cookie line cohort forwards to the app: for
// any Cookie header a client sends, cohort's own cookie never reaches the
// app under its name, and every other cookie pair is kept in order.
func FuzzStripCookie(f *testing.F) {
	for _, s := range []string{
		"a=1; cohort_session=tok.route; PHPSESSID=abc",
		"cohort_session=x",
		" cohort_session = x ;b=2",
		"cohort_session",
		"a=1;;cohort_session=;",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		h := http.Header{"Cookie": {line}}
		stripCookie(h, "cohort_session")
		var want []string
		for _, part := range strings.Split(line, ";") {
			if n, _, _ := strings.Cut(part, "="); strings.TrimSpace(n) != "cohort_session" {
				want = append(want, strings.TrimSpace(part))
			}
		}
		got := strings.Join(h["Cookie"], "; ")
		if len(want) == 0 {
			if _, ok := h["Cookie"]; ok {
				t.Fatalf("%q: Cookie %q kept with nothing left", line, got)
			}
			return
		}
		if got != strings.Join(want, "; ") {
			t.Fatalf("%q: forwarded %q, want %q", line, got, strings.Join(want, "; "))
		}
		// What the app's cookie parser sees must not include cohort's cookie.
		r := &http.Request{Header: h}
		for _, c := range r.Cookies() {
			if c.Name == "cohort_session" {
				t.Fatalf("%q: the app still reads cohort_session=%q", line, c.Value)
			}
		}
	})
}
