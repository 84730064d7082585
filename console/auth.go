package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Cookie and header names of the console.
const (
	// SessionCookie holds the console session: EXPIRY.MAC.
	SessionCookie = "cohort_console"
	// CSRFHeader must carry the page's CSRF token on every state-changing
	// admin API call made with the session cookie.
	CSRFHeader = "X-Cohort-CSRF"
)

// sessionTTL is how long a console login lasts.
const sessionTTL = 12 * time.Hour

// auth derives and checks console sessions. Sessions are stateless: any
// node holding the same admin token accepts them, and changing the token
// ends them all.
type auth struct {
	token func() []byte // the admin token; empty disables the console
	now   func() time.Time
}

// key derives the MAC key from the token, so a session value never
// reveals the token and cannot be used as one.
func (a *auth) key() []byte {
	t := a.token()
	if len(t) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, t)
	m.Write([]byte("cohort/console-key/v1"))
	return m.Sum(nil)
}

func mac(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// issue returns a new session value.
func (a *auth) issue() (string, time.Time) {
	exp := a.now().Add(sessionTTL)
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + mac(a.key(), "session", e), exp
}

// valid reports whether a session value is authentic and unexpired.
func (a *auth) valid(v string) bool {
	key := a.key()
	if key == nil {
		return false
	}
	e, sig, ok := strings.Cut(v, ".")
	if !ok || len(e) > 20 {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || a.now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(mac(key, "session", e)))
}

// csrf is the CSRF token bound to a session value.
func (a *auth) csrf(session string) string {
	return mac(a.key(), "csrf", session)
}

// session returns the request's valid session value, or "".
func (a *auth) session(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil || !a.valid(c.Value) {
		return ""
	}
	return c.Value
}

// safeMethod reports methods that change nothing.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin accepts a request whose Origin (or, lacking it, Referer)
// names the host it was sent to. A browser always sends Origin on a
// state-changing fetch; a missing one is refused.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" || o == "null" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// authorized checks a request that carries no bearer token: a valid
// session cookie, and for a state-changing method also the CSRF header
// bound to that session and a same-origin Origin.
func (a *auth) authorized(r *http.Request) bool {
	s := a.session(r)
	if s == "" {
		return false
	}
	if safeMethod(r.Method) {
		return true
	}
	got := r.Header.Get(CSRFHeader)
	return got != "" && hmac.Equal([]byte(got), []byte(a.csrf(s))) && sameOrigin(r)
}
