package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console is mounted.
const Prefix = "/_cohort/ui/"

// Options configures a Console.
type Options struct {
	// Token returns the admin token in use; while it is empty the console
	// refuses every login. Required.
	Token func() []byte
	// NodeID names the node serving the page (shown in the header).
	NodeID string
	// Logger receives login events; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LoginFailuresPerClient is how many failed logins a client address
	// may make per minute (0: DefaultLoginFailuresPerClient), and
	// LoginFailuresTotal how many all clients of this node together
	// (0: DefaultLoginFailuresTotal). Beyond them a login answers 429
	// without checking the token, and the refusal is logged.
	LoginFailuresPerClient, LoginFailuresTotal int
	// Bus, when set, makes LoginFailuresTotal cluster-wide: failed logins
	// are shared on it in small batches (see share.go) and the other
	// nodes' are charged here. Messages from NodeID are this node's own.
	Bus Bus
}

// Console is the web console: its pages and its login.
type Console struct {
	opts Options
	auth auth
	lim  *loginLimiter
	shr  *share // nil without Options.Log
	tmpl *template.Template
	log  *slog.Logger
	mux  *http.ServeMux
}

// New returns the console. It does no I/O.
func New(o Options) (*Console, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c := &Console{opts: o, auth: auth{token: o.Token, now: o.Now}, tmpl: tmpl, log: log.With("component", "console"),
		lim: newLoginLimiter(o.LoginFailuresPerClient, o.LoginFailuresTotal, o.Now)}
	if o.Bus != nil {
		c.shr = newShare(o.Bus, o.NodeID, c.lim, c.log, o.Now)
		c.lim.allName = "cluster"
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	c.mux = http.NewServeMux()
	c.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET "+Prefix+"{$}", c.page)
	c.mux.HandleFunc("POST "+Prefix+"login", c.login)
	c.mux.HandleFunc("POST "+Prefix+"logout", c.logout)
	c.mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	})
	return c, nil
}

// ServeHTTP serves the console under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// Close stops sharing failed logins and waits for a batch in flight.
func (c *Console) Close() {
	if c.shr != nil {
		c.shr.close()
	}
}

// Authorized reports whether a request is authenticated by a console
// session: a valid cookie, and for a state-changing method the CSRF header
// bound to it and a same-origin Origin. The admin guard calls it for
// requests without a bearer token.
func (c *Console) Authorized(r *http.Request) bool { return c.auth.authorized(r) }

type pageData struct {
	LoggedIn bool
	Disabled bool
	Error    string
	CSRF     string
	NodeID   string
}

func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	d := pageData{NodeID: c.opts.NodeID, Disabled: len(c.opts.Token()) == 0}
	if s := c.auth.session(r); s != "" {
		d.LoggedIn, d.CSRF = true, c.auth.csrf(s)
	}
	if r.URL.Query().Get("e") == "1" {
		d.Error = "That token is not the admin token of this cluster."
	}
	c.render(w, http.StatusOK, d)
}

func (c *Console) render(w http.ResponseWriter, code int, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := c.tmpl.ExecuteTemplate(w, "index.html", d); err != nil {
		c.log.Warn("render console page", "err", err)
	}
}

func (c *Console) checkToken(got string) bool {
	want := c.opts.Token()
	if got == "" || len(want) == 0 {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if r.Header.Get("Origin") != "" && !sameOrigin(r) {
		http.Error(w, "cross-origin login refused", http.StatusForbidden)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed login form", http.StatusBadRequest)
		return
	}
	client := clientOf(r)
	if ok, limit := c.lim.allow(client); !ok {
		c.log.Warn("console login rate-limited", "remote", r.RemoteAddr, "limit", limit)
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many failed logins; try again in a minute", http.StatusTooManyRequests)
		return
	}
	if !c.checkToken(r.PostForm.Get("token")) {
		c.lim.failed(client)
		if c.shr != nil {
			c.shr.add()
		}
		c.log.Warn("console login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, Prefix+"?e=1", http.StatusSeeOther)
		return
	}
	v, exp := c.auth.issue()
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: v, Path: "/_cohort/", Expires: exp,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	c.log.Info("console login", "remote", r.RemoteAddr)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !c.auth.authorized(r) && c.auth.session(r) != "" {
		http.Error(w, "missing CSRF token", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/_cohort/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}
