package sessions

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/cohortserver/cohort/httpapi"
	"github.com/cohortserver/cohort/internal/sessioncookie"
	"github.com/cohortserver/cohort/raft"
)

// Middleware loads the request's session from its cookie and commits the
// changes the handler made before the first byte of the response leaves
// (on WriteHeader, Write, Flush, Hijack or the handler's return), so the
// Set-Cookie header rides on the response and the changes are durable on
// a majority before the client sees anything. A commit that fails answers
// with a JSON error instead of the handler's response: 413 when a value or
// the session is too large, 409 when the session ended concurrently or
// moved to another node, 503 otherwise. With Config.Lock, a request first
// waits for the previous request of its session on this node to commit
// (503 with Retry-After past Config.LockWait).
//
// Reading a session costs no Raft entry. A request whose cookie names an
// unknown or expired token gets no session; its first change creates one
// with a fresh token (strict mode: a client-chosen token is never used).
// When the session's cookie carries another node's route tag, the cookie
// is set again with this node's tag so stickiness follows the session.
//
// The wrapped ResponseWriter keeps http.Flusher, http.Hijacker and
// io.ReaderFrom working and unwraps for http.ResponseController.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.ignored(r) {
			next.ServeHTTP(w, r)
			return
		}
		sc := &scope{Context: r.Context()}
		rs := &sc.rs
		rs.m = m
		err := m.load(r, rs)
		defer rs.release()
		if err != nil {
			w.Header().Set("Retry-After", "1")
			if qe := (*raft.QuorumError)(nil); errors.As(err, &qe) {
				// The request was not served; what the load waited for
				// (a claim) is not the request's write.
				httpapi.WriteError(w, http.StatusServiceUnavailable, qe.Error())
				return
			}
			writeError(w, err)
			return
		}
		sc.rw = respWriter{ResponseWriter: w, rs: rs, r: r}
		next.ServeHTTP(&sc.rw, r.WithContext(sc))
		sc.rw.finish()
	})
}

// scope is what the middleware keeps for one request, in one allocation:
// the request's context, carrying the session under ctxKey, the session
// and the response writer.
type scope struct {
	context.Context
	rs reqSession
	rw respWriter
}

// Value implements context.Context.
func (s *scope) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		return &s.rs
	}
	return s.Context.Value(key)
}

// load finds the live session the request's cookie names and makes sure
// this node may answer it from local state (ensureOwner). The cookie that
// counts is the first well-formed one (internal/sessioncookie), the one
// the front routed the request by; any other cookie of the name is
// ignored, so a request cannot be routed by one cookie and take over the
// session of another.
func (m *Manager) load(r *http.Request, rs *reqSession) error {
	value, ok := sessioncookie.Find(r.Header["Cookie"], m.cfg.CookieName)
	if !ok {
		return nil
	}
	token, route := sessioncookie.Split(value) // Find returns well-formed values only
	now := m.now()
	id := sessionID(token)
	x := m.lookup(id, now)
	if x == nil && route != m.routeTag() {
		// Created or renewed elsewhere and not applied here yet: catch
		// up before calling the token unknown.
		m.catchUps.Add(1)
		if err := m.catchUp(r.Context()); err != nil {
			return fmt.Errorf("read session: this node cannot catch up with the cluster (%w); retry", err)
		}
		x = m.lookup(id, now)
	}
	if x == nil {
		return nil
	}
	var err error
	if m.locks != nil {
		if x, now, err = m.lock(r.Context(), rs, id); err != nil {
			return err
		}
		if x == nil {
			rs.release()
			return nil
		}
	}
	if x, err = m.ensureOwner(r.Context(), id, x, now); err != nil {
		return err
	}
	if x == nil {
		rs.release()
		return nil
	}
	m.touched(id, x, now)
	rs.id, rs.token, rs.cookieRoute = id, token, route
	return nil
}

// lock takes session id's lock for the request (Config.Lock) and reads
// the session again: the previous holder may have changed or ended it.
func (m *Manager) lock(ctx context.Context, rs *reqSession, id string) (*session, int64, error) {
	unlock, err := m.locks.acquire(ctx, id, m.cfg.LockWait)
	if err != nil {
		return nil, 0, fmt.Errorf("session lock: %w", err)
	}
	rs.mu.Lock()
	rs.unlock = unlock
	rs.mu.Unlock()
	now := m.now()
	return m.lookup(id, now), now, nil
}

// respWriter commits the session before the response starts.
type respWriter struct {
	http.ResponseWriter
	rs      *reqSession
	r       *http.Request
	started bool
	failed  bool
}

var errCommitFailed = errors.New("session commit failed; an error response was sent instead")

// before commits and sets the cookie once, before the first byte; it
// reports whether the handler's response may proceed.
func (w *respWriter) before() bool {
	if w.started {
		return !w.failed
	}
	w.started = true
	err := w.rs.commit(w.r.Context())
	w.rs.release() // the changes are in: the session's next request may run
	if err != nil {
		w.failed = true
		w.rs.m.log.Warn("session commit failed", "path", w.r.URL.Path, "err", err)
		writeError(w.ResponseWriter, err)
		return false
	}
	w.rs.cookie(w.ResponseWriter.Header(), w.r)
	return true
}

// finish commits what the handler left: everything, when it wrote
// nothing; changes made after the response started otherwise (they are
// committed, but after the client saw the response and without a cookie).
func (w *respWriter) finish() {
	if !w.started {
		w.before()
		return
	}
	if w.failed {
		return
	}
	if err := w.rs.commit(w.r.Context()); err != nil {
		w.rs.m.log.Warn("session commit after the response started failed", "path", w.r.URL.Path, "err", err)
	}
}

// WriteHeader implements http.ResponseWriter.
func (w *respWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // informational: the response has not started
		return
	}
	if w.before() {
		w.ResponseWriter.WriteHeader(code)
	}
}

// Write implements http.ResponseWriter.
func (w *respWriter) Write(p []byte) (int, error) {
	if !w.before() {
		return 0, errCommitFailed
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps sendfile for io.Copy into the response.
func (w *respWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.before() {
		return 0, errCommitFailed
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

type writerOnly struct{ io.Writer }

// Flush implements http.Flusher.
func (w *respWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController calls.
func (w *respWriter) FlushError() error {
	if !w.before() {
		return errCommitFailed
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker; the session is committed first. A
// cookie change cannot ride on a hijacked connection: call Save and set
// the cookie in the upgrade response yourself if the token changes there.
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.before() {
		return nil, nil, errCommitFailed
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the underlying writer for http.ResponseController.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// StatusFor maps a commit error to its HTTP status.
func StatusFor(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrSessionGone), errors.Is(err, ErrSessionMoved), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrNoSession), errors.Is(err, ErrInvalidValue), errors.Is(err, ErrWrongType):
		return http.StatusInternalServerError
	default:
		return http.StatusServiceUnavailable
	}
}

func writeError(w http.ResponseWriter, err error) {
	if msg, ok := raft.RefusalMessage(err); ok {
		// This node cannot reach a quorum: answered at once, retryable
		// elsewhere; an unknown outcome is said.
		w.Header().Set("Retry-After", raft.RetryAfter)
		httpapi.WriteError(w, http.StatusServiceUnavailable, msg)
		return
	}
	code := StatusFor(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", raft.RetryAfter)
	}
	httpapi.WriteError(w, code, err.Error())
}
