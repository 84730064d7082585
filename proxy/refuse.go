package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Requests refused before any handler runs — a malformed head, a bad
// Host, a head too large, an unsupported transfer coding — are answered
// by net/http's server itself (the fast front leaves every such head to
// it), and net/http logs none of them. The connections net/http serves
// on the public port are wrapped (handedConn) so that these answers are
// logged on their way out, with the client's address and the reason, at
// most refusalBurst lines per refusalEvery, so probing leaves a trace
// without flooding the log.

const (
	refusalEvery = time.Second
	refusalBurst = 5
)

// refusalLog writes rate-limited log lines for refused requests.
type refusalLog struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	window     time.Time // start of the current window
	n          int       // lines written in it
	suppressed int       // refusals not logged since the last line
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, now: time.Now}
}

// note logs one refusal unless the window's budget is spent.
func (l *refusalLog) note(client, reason string) {
	l.mu.Lock()
	now := l.now()
	if now.Sub(l.window) >= refusalEvery {
		l.window, l.n = now, 0
	}
	if l.n >= refusalBurst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.n++
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "request refused",
		slog.String("client", client), slog.String("reason", reason), slog.Int("suppressed", suppressed))
}

// refusalOf recognises the answers net/http's server writes itself when
// it refuses a request head (server.go: "HTTP/1.1 <code> <text>" followed
// directly by its fixed error headers, in one write). Answers of handlers
// always carry Date and are written through a response writer whose
// header order differs. reason is the status line's code and text.
func refusalOf(p []byte) (reason string, ok bool) {
	const errorHeaders = "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) || (p[9] != '4' && p[9] != '5') {
		return "", false
	}
	eol := bytes.Index(p, []byte("\r\n"))
	if eol < 12 || !bytes.HasPrefix(p[eol+2:], []byte(errorHeaders)) {
		return "", false
	}
	return string(p[len("HTTP/1.1 "):eol]), true
}

// WatchRefusals wraps the public listener net/http accepts from when the
// fast front is off, so that the requests net/http refuses are logged as
// on the fast front's connections (see refusalOf).
func (f *Front) WatchRefusals(ln net.Listener) net.Listener {
	return &watchListener{Listener: ln, f: f}
}

type watchListener struct {
	net.Listener
	f *Front
}

func (l *watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.f.handed(c, nil, time.Time{}), nil
}

// CloseChunked wraps the public server's handler: a request that came
// with a chunked body is answered with Connection: close. RFC 9112
// section 6.3 requires closing the connection after a request that had
// both Content-Length and Transfer-Encoding (a smuggling attempt, or a
// broken proxy before us), but net/http's server removes the
// Content-Length before a handler runs, so the two cannot be told apart
// there; closing after every chunked request costs a legitimate chunked
// upload one reconnect.
func CloseChunked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
