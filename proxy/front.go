package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/membership"
)

// Balance policies for requests without a session.
const (
	BalanceLocal       = "local"
	BalanceRoundRobin  = "round-robin"
	BalanceLeastLoaded = "least-loaded"
)

// Route kinds, as the access log names them.
const (
	KindLocal     = "local"     // served here: the session is ours, or there is none to route
	KindForwarded = "forwarded" // sent to the node that owns the session
	KindFailover  = "failover"  // the owner is down or disabled: served by a live node
	KindBalanced  = "balanced"  // no session: placed by the balance policy
	KindHop       = "hop"       // arrived from another node's front, served here
)

// Errors of the front.
var (
	// ErrNotStarted is returned by Shutdown before Start.
	ErrNotStarted = errors.New("front not started")
	// errUnready marks an answer of a node whose front is not serving yet.
	errUnready = errors.New("upstream front not ready")
)

// UnreadyHeader marks an answer of a node that did not serve a forwarded
// request and had sent nothing to its application: the sending front
// serves the request elsewhere, whatever its method.
const UnreadyHeader = hdrUnready

// idempotentReplayMax is the largest body buffered so that a request with
// an Idempotency-Key can be sent again after a failed attempt.
const idempotentReplayMax = 1 << 20

// Members is what the front needs from the member table.
type Members interface {
	All() []membership.Member
	Get(id string) (membership.Member, bool)
	Healthy(id string) bool
	Unresponsive(id string) bool
	MarkFailed(id string)
	Route(id string) string
	ByRoute(tag string) (membership.Member, bool)
	SetState(ctx context.Context, id, state string) error
}

var _ Members = (*membership.Table)(nil)

// Config configures a Front.
type Config struct {
	// SelfID is this node's id.
	SelfID string
	// Members is the replicated member table with liveness.
	Members Members
	// CookieName is the session cookie's name.
	CookieName string
	// Balance is local, round-robin or least-loaded; "" means local.
	Balance string
	// TrustedProxies are the peers whose X-Forwarded-* are believed.
	TrustedProxies []netip.Prefix
	// MaxRequestBody bounds request bodies in bytes; 0 means no limit.
	MaxRequestBody int64
	// MaxTries bounds attempts per request; 0 means 3.
	MaxTries int
	// DrainTimeout bounds Shutdown's wait for in-flight requests; 0 means 20 s.
	DrainTimeout time.Duration
	// LoadInterval is how often peers' load is polled for least-loaded
	// balancing; 0 means 500 ms.
	LoadInterval time.Duration
	// AccessLog logs one line per request at Info.
	AccessLog bool
	// PeerID names the node that sent an internal request (raft.PeerID);
	// the internal handler refuses requests for which it returns "".
	PeerID func(ctx context.Context) string
	// Ready, if set, tells whether this node may serve forwarded requests
	// (e.g. it has caught up with the log after a restart). While it
	// returns false the internal handler answers "unready" and the sender
	// serves the request elsewhere.
	Ready func() bool
	// LocalUp, if set, tells whether this node's application can serve
	// (package upstream: the app beside cohort passes its health check).
	// While it returns false the node is routed around as if disabled:
	// its sessions fail over, it gets no new ones, and requests entering
	// here are forwarded. Ready should include it.
	LocalUp func() bool
	// StateFile, if set, is where Shutdown remembers the state it changed
	// so that the next Start restores it.
	StateFile string
	// Observe, if set, is called once per application request with its
	// route kind (local, forwarded, failover, balanced, hop), final status,
	// duration and number of tries (metrics).
	Observe func(kind string, status int, took time.Duration, tries int)
	// Dial, if set, opens a connection to a peer's cluster address for
	// forwarded requests without a body, which then go over the front's own
	// pool of keep-alive connections instead of Start's round tripper
	// (raft.Cluster.DialHTTP). Requests with a body and upgrades always use
	// the round tripper.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Stateless, if set, matches the paths of requests that need no
	// session (the sessions middleware's ignore pattern, static files by
	// default): they are served on the node they enter, session cookie or
	// not, saving the hop, unless that node is disabled. Every node runs
	// the same application, so any node's answer is the owner's.
	Stateless *regexp.Regexp
	// Logger receives the access log and events; nil discards.
	Logger *slog.Logger
}

// Front is one node's sticky front. Build it with New, wrap the
// application with Wrap, mount InternalHandler on the cluster port, then
// Start it once the cluster port is up.
type Front struct {
	cfg  Config
	log  *slog.Logger
	rp   *httputil.ReverseProxy
	rt   atomic.Pointer[roundTripper]
	next atomic.Pointer[http.Handler]

	inflight atomic.Int64 // requests in this front, forwarded or served
	serving  atomic.Int64 // requests running the inner chain here
	rr       atomic.Uint64

	routes    atomic.Pointer[map[string]string] // route tag → node id
	routesMu  sync.Mutex
	selfRoute atomic.Pointer[string]

	hops     *hopTransport // set by Start when Config.Dial is
	refusals *refusalLog   // requests net/http refused, logged rate-limited
	watch    attemptWatch  // forwarded attempts by peer address
	loads    *loadBook
	cpu      *cpuMeter
	wg       sync.WaitGroup // Start's goroutines
}

type roundTripper struct{ http.RoundTripper }

// New builds a front; it does no I/O.
func New(cfg Config) (*Front, error) {
	if cfg.SelfID == "" || cfg.Members == nil || cfg.CookieName == "" {
		return nil, errors.New("proxy: SelfID, Members and CookieName are required")
	}
	switch cfg.Balance {
	case "":
		cfg.Balance = BalanceLocal
	case BalanceLocal, BalanceRoundRobin, BalanceLeastLoaded:
	default:
		return nil, fmt.Errorf("proxy: balance %q must be local, round-robin or least-loaded", cfg.Balance)
	}
	if cfg.MaxTries <= 0 {
		cfg.MaxTries = 3
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 20 * time.Second
	}
	if cfg.LoadInterval <= 0 {
		cfg.LoadInterval = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Front{cfg: cfg, log: cfg.Logger.With("component", "front"), loads: newLoadBook(), cpu: newCPUMeter()}
	f.refusals = newRefusalLog(f.log)
	empty := map[string]string{}
	f.routes.Store(&empty)
	f.rp = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      transportFunc(f.roundTrip),
		BufferPool:     newBufferPool(),
		ErrorHandler:   f.proxyError,
		ModifyResponse: checkAnswer,
		ErrorLog:       slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}
	return f, nil
}

// Start gives the front the round tripper of the cluster port (whose
// connections prove the cluster key) and starts the load poller and the
// CPU meter. They stop when ctx ends; Close waits for them.
func (f *Front) Start(ctx context.Context, rt http.RoundTripper) {
	hops := rt
	if f.cfg.Dial != nil {
		ht := newHopTransport(f.cfg.Dial, rt)
		f.hops = ht
		hops = ht
	}
	f.rt.Store(&roundTripper{hops})
	self := f.cfg.Members.Route(f.cfg.SelfID)
	f.selfRoute.Store(&self)
	f.goRun(func() { f.cpu.run(ctx) })
	f.goRun(func() { f.watchPeers(ctx) })
	f.goRun(func() { f.pollLoads(ctx, &http.Client{Transport: rt}) })
	f.restoreState(ctx)
}

// Close waits for the goroutines Start began and closes the idle
// connections to peers; end Start's ctx first.
func (f *Front) Close() error {
	f.wg.Wait()
	if f.hops != nil {
		f.hops.CloseIdleConnections()
	}
	return nil
}

func (f *Front) goRun(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// Serving is the number of requests running the application here now
// (entered here or forwarded by a peer), not those merely forwarded.
func (f *Front) Serving() int64 { return f.serving.Load() }

// InFlight is the number of requests this front is serving now, entered
// through the public port or forwarded by a peer.
func (f *Front) InFlight() int64 { return f.inflight.Load() }

// Wrap returns the front around next (the sessions middleware and the
// application). next is also what forwarded requests run through.
func (f *Front) Wrap(next http.Handler) http.Handler {
	f.next.Store(&next)
	return http.HandlerFunc(f.serve)
}

type transportFunc func(*http.Request) (*http.Response, error)

func (t transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return t(r) }

func (f *Front) roundTrip(r *http.Request) (*http.Response, error) {
	rt := f.rt.Load()
	if rt == nil {
		return nil, errUnready
	}
	return rt.RoundTrip(r)
}

// attempt is one try of sending a request to a peer; it travels in the
// request's context so the proxy's callbacks can fill it in.
type attempt struct {
	addr   string
	view   *clientView
	err    error
	sent   atomic.Bool // the request headers reached the connection
	bodyRd atomic.Bool // some of the body was read
}

type attemptKey struct{}

// plan is where a request goes first.
type plan struct {
	kind   string
	target string // node id; SelfID serves locally
}

func (f *Front) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	lw := &logWriter{ResponseWriter: w}
	stripHop(r.Header)
	view := f.resolveClient(r)
	p := f.plan(r)
	upstream, tries := p.target, 0
	if f.cfg.Observe != nil {
		defer func() { f.cfg.Observe(p.kind, lw.status(), time.Since(start), tries) }()
	}
	if f.cfg.AccessLog && f.log.Enabled(r.Context(), slog.LevelInfo) {
		defer func() {
			f.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", lw.status()), slog.Duration("duration", time.Since(start)),
				slog.String("route", p.kind), slog.String("upstream", upstream), slog.Int("tries", tries),
				slog.String("client", view.addr), slog.Int64("bytes", lw.bytes))
		}()
	}
	next := f.next.Load()
	if next == nil {
		writeError(lw, http.StatusServiceUnavailable, "this node's front is not serving yet; try again")
		return
	}
	if max := f.cfg.MaxRequestBody; max > 0 {
		if r.ContentLength > max {
			writeError(lw, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(max, 10)+" bytes (--max-request-body)")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(lw, r.Body, max)
		}
	}
	replay, err := f.replayable(r)
	if err != nil {
		writeError(lw, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return
	}
	var excluded []string
	for {
		tries++
		upstream = p.target
		if p.target == f.cfg.SelfID {
			f.serveLocal(lw, r, &view, *next)
			return
		}
		m, ok := f.cfg.Members.Get(p.target)
		if !ok || m.Address == "" {
			excluded = append(excluded, p.target)
			p.target = f.fallback(&p, excluded)
			continue
		}
		a := f.forward(lw, r, m.Address, &view, replay)
		if a.err == nil {
			return
		}
		retry, markFailed, code := f.judge(lw, r, a, replay)
		if markFailed {
			f.cfg.Members.MarkFailed(p.target)
		}
		f.log.LogAttrs(r.Context(), slog.LevelDebug, "upstream attempt failed",
			slog.String("upstream", p.target), slog.Int("try", tries), slog.Bool("retry", retry), slog.String("err", a.err.Error()))
		if !retry || tries >= f.cfg.MaxTries {
			if code != 0 && !lw.wroteHeader {
				writeError(lw, code, upstreamMessage(code, p.target, a.err))
			}
			return
		}
		excluded = append(excluded, p.target)
		p.target = f.fallback(&p, excluded)
	}
}

func upstreamMessage(code int, node string, err error) string {
	if code == http.StatusRequestEntityTooLarge {
		return "request body too large (--max-request-body)"
	}
	return fmt.Sprintf("node %s did not answer: %s", node, err.Error())
}

// replayable prepares the body for a possible second attempt: nothing to
// do without a body; with an Idempotency-Key and a small known length the
// body is buffered; otherwise the body can be re-sent only if no byte of
// it was read.
func (f *Front) replayable(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.Header.Get("Idempotency-Key") == "" || r.ContentLength < 0 || r.ContentLength > idempotentReplayMax {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// judge decides what a failed attempt allows: whether to retry, whether
// the upstream counts as failed, and which status to answer with if not.
func (f *Front) judge(lw *logWriter, r *http.Request, a *attempt, replay []byte) (retry, markFailed bool, code int) {
	var mbe *http.MaxBytesError
	switch {
	case r.Context().Err() != nil:
		return false, false, 0 // the client left
	case errors.As(a.err, &mbe):
		return false, false, http.StatusRequestEntityTooLarge
	case lw.wroteHeader:
		return false, true, 0 // a byte reached the client: never retry
	case errors.Is(a.err, errUnready):
		return true, false, http.StatusBadGateway
	case !a.sent.Load() && !a.bodyRd.Load():
		return true, true, http.StatusBadGateway // nothing was sent: always safe
	}
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions ||
		r.Header.Get("Idempotency-Key") != ""
	bodyOK := replay != nil || !a.bodyRd.Load()
	return safe && bodyOK, true, http.StatusBadGateway
}

// serveLocal runs the inner chain here, with normalised headers.
func (f *Front) serveLocal(w http.ResponseWriter, r *http.Request, v *clientView, next http.Handler) {
	v.setForwarded(r.Header)
	r.RemoteAddr = v.addr
	f.serving.Add(1)
	defer f.serving.Add(-1)
	next.ServeHTTP(w, r)
}

// forward sends one attempt to a peer's cluster address.
func (f *Front) forward(w http.ResponseWriter, r *http.Request, addr string, v *clientView, replay []byte) *attempt {
	a := &attempt{addr: addr, view: v}
	body := r.Body
	if replay != nil {
		body = io.NopCloser(bytes.NewReader(replay))
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), attemptKey{}, a))
	defer cancel(nil)
	target := f.watch.add(addr, cancel)
	defer f.watch.remove(addr, target)
	if f.hops == nil || !leanRequest(r) {
		// net/http's Transport tells that it wrote a request only through a
		// trace; the hop pool marks the attempt itself, saving the trace's
		// allocations on the hops that matter most.
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { a.sent.Store(true) }})
	}
	out := r.WithContext(ctx)
	if body != nil && body != http.NoBody {
		out.Body = &trackedBody{r: body, read: &a.bodyRd}
	}
	f.rp.ServeHTTP(w, out)
	return a
}

// trackedBody notes whether any byte was read and keeps the transport
// from closing the request body, so a later attempt can still use it.
type trackedBody struct {
	r    io.ReadCloser
	read *atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read.Store(true)
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

const internalAppPrefix = "/_internal/front/app"

func (f *Front) rewrite(pr *httputil.ProxyRequest) {
	a, _ := pr.In.Context().Value(attemptKey{}).(*attempt)
	if a == nil {
		return
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = a.addr
	pr.Out.URL.Path = internalAppPrefix + pr.In.URL.Path
	if pr.In.URL.RawPath != "" {
		pr.Out.URL.RawPath = internalAppPrefix + pr.In.URL.RawPath
	}
	pr.Out.Host = pr.In.Host // the target's app sees the Host header the client sent
	if pr.In.Host == "" {
		// An HTTP/1.0 request without Host: the hop (HTTP/1.1) needs one,
		// and the target shows the app none, as it would have here.
		pr.Out.Header.Set(hdrNoHost, "1")
	}
	a.view.setForwarded(pr.Out.Header)
	pr.Out.Header.Set(hdrClient, a.view.addr)
	if a.view.tls {
		pr.Out.Header.Set(hdrTLS, "1")
	}
}

func (f *Front) proxyError(_ http.ResponseWriter, r *http.Request, err error) {
	if a, _ := r.Context().Value(attemptKey{}).(*attempt); a != nil {
		a.err = err
	}
}

// checkAnswer refuses a peer's unready answer (judge retries it
// elsewhere) and reads small answers whole before any of them goes out.
func checkAnswer(res *http.Response) error {
	if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get(hdrUnready) != "" {
		return errUnready
	}
	if res.Body == nil || res.Body == http.NoBody || res.StatusCode == http.StatusSwitchingProtocols {
		return nil // no body, or an upgraded connection
	}
	if n := res.ContentLength; n >= 0 && n <= prefetchMax {
		// Read whole before a byte goes out: a peer that dies mid-answer
		// then fails the attempt instead of truncating the client's
		// answer. One read past the end lets the connection be reused.
		b := make([]byte, n+1)
		// A body stops at its Content-Length, so n bytes read means whole.
		if got, err := io.ReadFull(res.Body, b); int64(got) != n {
			return fmt.Errorf("read answer: %d of %d bytes: %w", got, n, err)
		}
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(b[:n]))
	}
	return nil
}

// prefetchMax is the largest answer (by its Content-Length) the front
// reads whole before passing it on; larger ones and streams go out as
// they arrive.
const prefetchMax = 64 << 10

// writeError answers with the API's error shape {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) { httpapi.WriteError(w, code, msg) }

type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
