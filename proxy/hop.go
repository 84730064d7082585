package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// hopTransport carries forwarded requests to peers. Requests without a
// body (the reads that make most of a sticky front's hops) go over its own
// pool of keep-alive HTTP/1.1 connections, written and read in the calling
// goroutine: net/http's Transport hands every request to a writer and a
// reader goroutine per connection, and on a forwarded hop those hand-offs
// cost as much CPU as the proxying itself. Everything else — bodies,
// upgrades (websockets) — goes to the fallback, net/http's Transport on the
// same cluster port.
type hopTransport struct {
	dial     func(ctx context.Context, addr string) (net.Conn, error)
	fallback http.RoundTripper
	maxIdle  int           // idle connections kept per peer
	idleFor  time.Duration // an idle connection older than this is closed, not reused

	mu     sync.Mutex
	idle   map[string][]*hopConn
	closed bool
}

// hopConn is one connection of the pool with its buffers.
type hopConn struct {
	net.Conn
	addr   string // the pool's key: the address dialled
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

const (
	hopMaxIdle  = 256
	hopIdleFor  = 60 * time.Second
	hopBufBytes = 4 << 10
	// hopDialTimeout bounds dialling a peer and proving the cluster key.
	hopDialTimeout = 5 * time.Second
)

// errNoAnswer marks a failure before any byte of an answer came back.
var errNoAnswer = errors.New("peer closed the connection before answering")

func newHopTransport(dial func(context.Context, string) (net.Conn, error), fallback http.RoundTripper) *hopTransport {
	return &hopTransport{dial: dial, fallback: fallback, maxIdle: hopMaxIdle, idleFor: hopIdleFor, idle: make(map[string][]*hopConn)}
}

// lean reports whether req can take the pooled path: no body to send, no
// protocol switch.
func lean(req *http.Request) bool {
	return leanRequest(req) && req.URL.Scheme == "http"
}

// leanRequest is lean without the destination: what the request itself
// must be like.
func leanRequest(req *http.Request) bool {
	return (req.Body == nil || req.Body == http.NoBody) && req.ContentLength == 0 &&
		req.Method != http.MethodConnect && req.Header.Get("Upgrade") == ""
}

// replayable reports whether a request may be sent again after it reached
// a connection that turned out to be closed, as net/http's Transport does:
// no body and an idempotent method or an Idempotency-Key.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != ""
}

// RoundTrip implements http.RoundTripper.
func (t *hopTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !lean(req) {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	resend := replayable(req)
	for {
		// A request that may be resent meets a connection the peer closed
		// as an error and goes again; only the others pay for a look first.
		pc, reused, err := t.conn(ctx, req.URL.Host, !resend)
		if err != nil {
			return nil, err
		}
		res, err := t.exchange(ctx, pc, req)
		if err == nil {
			return res, nil
		}
		pc.Close()
		if reused && errors.Is(err, errNoAnswer) && resend && ctx.Err() == nil {
			continue // the peer closed it while it was idle; each pass uses up one idle connection
		}
		return nil, err
	}
}

// exchange writes req on pc and reads the answer's header. The body, when
// there is one, gives the connection back to the pool once read to its end.
func (t *hopTransport) exchange(ctx context.Context, pc *hopConn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = pc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	trace := httptrace.ContextClientTrace(ctx)
	if err := req.Write(pc.bw); err != nil {
		return fail(fmt.Errorf("%w: write: %w", errNoAnswer, err))
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(fmt.Errorf("%w: write: %w", errNoAnswer, err))
	}
	if a, _ := ctx.Value(attemptKey{}).(*attempt); a != nil {
		a.sent.Store(true)
	}
	if trace != nil && trace.WroteHeaders != nil {
		trace.WroteHeaders()
	}
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{})
	}
	if _, err := pc.br.Peek(1); err != nil {
		return fail(fmt.Errorf("%w: %w", errNoAnswer, err))
	}
	var res *http.Response
	for {
		var err error
		res, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(fmt.Errorf("read answer: %w", err))
		}
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx (103 Early Hints): hand it to the proxy, read on.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return fail(err)
			}
		}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("peer switched protocols on a request without Upgrade"))
	}
	keep := !res.Close && !req.Close
	if res.Body == http.NoBody {
		t.release(pc, stop, keep)
		return res, nil
	}
	res.Body = &hopBody{rc: res.Body, pc: pc, t: t, stop: stop, keep: keep}
	return res, nil
}

// conn takes an idle connection to addr, newest first, or dials one. With
// look, an idle connection the peer has closed is skipped (one
// non-blocking peek).
func (t *hopTransport) conn(ctx context.Context, addr string, look bool) (*hopConn, bool, error) {
	var stale []*hopConn
	defer func() {
		for _, pc := range stale {
			pc.Close()
		}
	}()
	t.mu.Lock()
	list := t.idle[addr]
	for len(list) > 0 {
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if time.Since(pc.idleAt) > t.idleFor || (look && peerClosed(pc.Conn)) {
			stale = append(stale, pc)
			continue
		}
		t.idle[addr] = list
		t.mu.Unlock()
		return pc, true, nil
	}
	t.idle[addr] = list
	t.mu.Unlock()
	// A partitioned peer drops the SYN: without a bound the kernel retries
	// for minutes.
	ctx, cancel := context.WithTimeout(ctx, hopDialTimeout)
	defer cancel()
	c, err := t.dial(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	return &hopConn{Conn: c, addr: addr, br: bufio.NewReaderSize(c, hopBufBytes), bw: bufio.NewWriterSize(c, hopBufBytes)}, false, nil
}

// release ends an exchange: the connection goes back to the pool when it
// can carry another request, else it is closed.
func (t *hopTransport) release(pc *hopConn, stop func() bool, keep bool) {
	if !stop() { // the request's context ended: the deadline is spoiled
		keep = false
	}
	if keep && pc.br.Buffered() == 0 {
		pc.idleAt = time.Now()
		t.mu.Lock()
		if !t.closed && len(t.idle[pc.addr]) < t.maxIdle {
			t.idle[pc.addr] = append(t.idle[pc.addr], pc)
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
	pc.Close()
}

// CloseIdleConnections closes the pooled connections and those of the
// fallback, and keeps none from now on.
func (t *hopTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = make(map[string][]*hopConn), true
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.Close()
		}
	}
	if c, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// hopBody is an answer's body on a pooled connection.
type hopBody struct {
	mu   sync.Mutex
	rc   io.ReadCloser
	pc   *hopConn // nil once the connection was released or closed
	t    *hopTransport
	stop func() bool
	keep bool
}

func (b *hopBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pc == nil {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		pc := b.pc
		b.pc = nil
		b.t.release(pc, b.stop, b.keep)
	case err != nil:
		b.pc.Close()
		b.pc = nil
		b.stop()
	}
	return n, err
}

// Close closes the connection unless the body was read to its end: what
// is left of an answer cannot be skipped cheaply.
func (b *hopBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pc != nil {
		b.stop()
		b.pc.Close()
		b.pc = nil
	}
	return nil
}
