package upstream

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Headers cohort sets for the app; a client's are removed first.
const (
	// HeaderNode names the node that serves the request.
	HeaderNode = "Cohort-Node"
)

// Config configures a Proxy.
type Config struct {
	// Network and Addr are where the app listens: ("tcp",
	// "127.0.0.1:9000") or ("unix", "/run/app.sock").
	Network, Addr string
	// Display is how messages name the app (the --app-upstream value).
	Display string
	// NodeID is this node's id, sent to the app as Cohort-Node.
	NodeID string
	// CookieName is cohort's session cookie, which carries the route.
	CookieName string
	// SelfRoute returns this node's route tag (membership's hash of its
	// id under the cluster key).
	SelfRoute func() string
	// AppSessionCookie is the app's own session cookie; "" inserts no
	// affinity.
	AppSessionCookie string
	// HealthPath is the app's health check; "" with CheckConnect dials the
	// app instead, and with neither the app counts as healthy.
	HealthPath string
	// CheckConnect makes an empty HealthPath a TCP (or socket) connect check.
	CheckConnect bool
	// HealthInterval and HealthTimeout pace the check; 0 means 1 s and 2 s.
	HealthInterval, HealthTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the app's answer header; 0
	// means none.
	ResponseHeaderTimeout time.Duration
	// IsHop, if set, tells whether a request was forwarded by a peer's
	// front. When such a request cannot reach the app at all (nothing was
	// sent), the answer carries UnreadyHeader so that the peer serves it
	// elsewhere.
	IsHop func(ctx context.Context) bool
	// UnreadyHeader is the front's "not served here, try another node"
	// mark (proxy.UnreadyHeader).
	UnreadyHeader string
	// Logger receives errors and health changes; nil discards.
	Logger *slog.Logger
}

// Proxy is the handler that serves application requests from the local app.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	rp        *httputil.ReverseProxy
	transport *http.Transport

	healthy  atomic.Bool
	held     atomic.Pointer[string] // why the app is held down (rolling restart); nil when not
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every health change
	reason   string
	checks   atomic.Int64
	failures atomic.Int64
	errors   atomic.Int64
}

type ctxKey struct{}

// reqInfo is what the handler learned about the request for ModifyResponse.
type reqInfo struct {
	hasApp  bool // the request carries the app's session cookie
	routeOK bool // the request's cohort cookie names this node
	tls     bool
}

// New builds a proxy; it does no I/O.
func New(cfg Config) (*Proxy, error) {
	if cfg.Network == "" || cfg.Addr == "" || cfg.CookieName == "" || cfg.SelfRoute == nil {
		return nil, errors.New("upstream: Network, Addr, CookieName and SelfRoute are required")
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 2 * time.Second
	}
	if cfg.Display == "" {
		cfg.Display = cfg.Network + ":" + cfg.Addr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "app"), changed: make(chan struct{})}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, cfg.Network, cfg.Addr)
		},
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass the app's encoding through untouched
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.transport,
		BufferPool:     newBufferPool(),
		FlushInterval:  -1, // the app decides when bytes go out, as a Go handler's Flush does
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.proxyError,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	if cfg.HealthPath == "" && !cfg.CheckConnect {
		p.healthy.Store(true)
		p.reason = ""
	} else {
		p.reason = "no health check has passed yet"
	}
	return p, nil
}

// ServeHTTP proxies one request to the app.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := &reqInfo{tls: r.TLS != nil}
	if p.cfg.AppSessionCookie != "" {
		for _, c := range r.Cookies() {
			switch c.Name {
			case p.cfg.AppSessionCookie:
				info.hasApp = true
			case p.cfg.CookieName:
				if routeOf(c.Value) == p.cfg.SelfRoute() {
					info.routeOK = true
				}
			}
		}
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, info)))
}

// routeOf is the ROUTE of a cookie value TOKEN.ROUTE.
func routeOf(v string) string {
	if i := strings.LastIndexByte(v, '.'); i >= 0 {
		return v[i+1:]
	}
	return ""
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = p.hostHeader()
	pr.Out.Host = pr.In.Host // the app sees the Host the client sent
	h := pr.Out.Header
	for k := range h {
		if isCohortHeader(k) {
			delete(h, k)
		}
	}
	// Rewrite starts without X-Forwarded-*; the front has resolved them
	// (believed only from --trusted-proxies) on the incoming request.
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
		if v := pr.In.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	h.Set(HeaderNode, p.cfg.NodeID)
	stripCookie(h, p.cfg.CookieName)
}

// isCohortHeader reports whether a header name is one of cohort's
// (Cohort-*, X-Cohort-*): only cohort may set those for the app.
func isCohortHeader(k string) bool {
	const a, b = "cohort-", "x-cohort-"
	return (len(k) >= len(a) && strings.EqualFold(k[:len(a)], a)) ||
		(len(k) >= len(b) && strings.EqualFold(k[:len(b)], b))
}

// stripCookie removes the cookie called name from the Cookie headers.
func stripCookie(h http.Header, name string) {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return
	}
	var out []string
	for _, line := range lines {
		parts := strings.Split(line, ";")
		kept := parts[:0]
		for _, part := range parts {
			n, _, _ := strings.Cut(part, "=")
			if strings.TrimSpace(n) != name { // net/http trims names too
				kept = append(kept, strings.TrimSpace(part))
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, "; "))
		}
	}
	if len(out) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = out
}

func (p *Proxy) hostHeader() string {
	if p.cfg.Network == "unix" {
		return "app" // any name: the dialer ignores it
	}
	return p.cfg.Addr
}

// modifyResponse inserts the affinity cookie.
func (p *Proxy) modifyResponse(res *http.Response) error {
	info, _ := res.Request.Context().Value(ctxKey{}).(*reqInfo)
	if info == nil || p.cfg.AppSessionCookie == "" || info.routeOK {
		return nil
	}
	if !info.hasApp && !setsCookie(res.Header, p.cfg.AppSessionCookie) {
		return nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("affinity cookie: %w", err)
	}
	c := &http.Cookie{
		Name:     p.cfg.CookieName,
		Value:    base64.RawURLEncoding.EncodeToString(b[:]) + "." + p.cfg.SelfRoute(),
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   info.tls,
	}
	res.Header.Add("Set-Cookie", c.String())
	if res.Header.Get("Cache-Control") == "" {
		// A shared cache must not hand this cookie to another client.
		res.Header.Set("Cache-Control", "private")
	}
	return nil
}

// setsCookie reports whether an answer sets (not deletes) the cookie name.
func setsCookie(h http.Header, name string) bool {
	for _, line := range h["Set-Cookie"] {
		n, rest, _ := strings.Cut(line, "=")
		if strings.TrimSpace(n) != name {
			continue
		}
		v, attrs, _ := strings.Cut(rest, ";")
		attrs = strings.ToLower(attrs)
		if strings.TrimSpace(v) == "" || strings.Contains(attrs, "max-age=0") || strings.Contains(attrs, "max-age=-") {
			continue
		}
		return true
	}
	return false
}

func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left
	}
	p.errors.Add(1)
	code, what := http.StatusBadGateway, "did not answer"
	var op *net.OpError
	notSent := errors.As(err, &op) && op.Op == "dial"
	if notSent {
		// Nothing reached the app: it is down (killed, restarting). Route
		// around it now rather than at the next health check.
		p.Fail("cannot connect: " + err.Error())
	}
	if !p.Healthy() {
		code, what = http.StatusServiceUnavailable, "is not healthy"
	}
	if notSent && p.cfg.IsHop != nil && p.cfg.UnreadyHeader != "" && p.cfg.IsHop(r.Context()) {
		w.Header().Set(p.cfg.UnreadyHeader, "1")
	}
	p.log.Warn("app request failed", "upstream", p.cfg.Display, "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(code)
	msg := fmt.Sprintf("the application at %s %s: %s", p.cfg.Display, what, err.Error())
	_, _ = fmt.Fprintf(w, "{\"error\":%q}\n", msg)
}

// URL is the address of path on the app, for Client.
func (p *Proxy) URL(path string) string { return "http://" + p.hostHeader() + path }

// errRedirect refuses a redirect from the app to anywhere else.
var errRedirect = errors.New("the app answered with a redirect; a call of cohort's must be answered where it was sent")

// Client calls the app directly (jobs with an http path): over the
// proxy's connections, refusing redirects.
func (p *Proxy) Client() *http.Client {
	return &http.Client{
		Transport:     p.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}
}

// Errors is the number of requests the app did not answer.
func (p *Proxy) Errors() int64 { return p.errors.Load() }

// Close closes idle connections to the app.
func (p *Proxy) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
