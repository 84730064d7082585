package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The fast front takes the forwarded hop off net/http's server. A sticky
// front's hottest path is a read of a session another node owns: parse
// the head, look at one cookie, send the request on, relay the answer.
// Through net/http's server and httputil.ReverseProxy that costs the entry
// node about twice the CPU HAProxy spends (a goroutine and a background
// read per request, header maps, a response writer, a copy of the request
// and of the answer's header). The fast front owns the public listener,
// reads each request head itself and, when the request is a body-less GET
// or HEAD for a session owned by another healthy node, writes it on over
// the hop pool and relays the answer byte for byte. Everything else — and
// every connection whose next request is anything else — is handed to
// net/http with the bytes already read, and served there exactly as
// before. See DESIGN.md, "The fast front".

// ListenOptions configure the fast front's listener.
type ListenOptions struct {
	// Claims reports whether a request for path belongs to the front (the
	// public mux sends it there and the node serves it now: caught up,
	// not draining). Requests it does not claim go to net/http.
	Claims func(path []byte) bool
	// IdleTimeout closes a keep-alive connection that sends nothing for
	// this long; 0 means 120 s.
	IdleTimeout time.Duration
	// HeaderTimeout bounds the reading of a request head, as the
	// http.Server's ReadHeaderTimeout does: the first from the accept,
	// later ones from their first byte. A connection handed to net/http
	// mid-head keeps the deadline it had; 0 means 10 s.
	HeaderTimeout time.Duration
	// MaxHeaderBytes is the http.Server's: a head larger than it allows
	// goes to net/http (which answers 431); 0 means net/http's default.
	MaxHeaderBytes int
}

const (
	fastReadBuf  = 8 << 10  // a request head larger than this goes to net/http
	fastWriteBuf = 4 << 10  // answers are gathered here before one write
	fastMaxHead  = 64 << 10 // the largest answer head relayed
	// fastClientCheck is how often a request waiting on its upstream
	// checks that its client is still there (a non-blocking peek).
	fastClientCheck = 500 * time.Millisecond
)

// FastListener accepts the public port's connections, serves the requests
// it can forward itself and passes everything else on to the http.Server
// that accepts from it. Build it with Front.Listen.
type FastListener struct {
	f    *Front
	ln   net.Listener
	opts ListenOptions
	ctx  context.Context // ends when the connections are closed for good
	stop context.CancelFunc

	handoff   chan net.Conn
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	acceptErr error // set before done is closed, if the listener failed
	closing   atomic.Bool

	mu    sync.Mutex
	conns map[*fastConn]struct{}
	wg    sync.WaitGroup
}

// Listen wraps the public listener ln. Serve an http.Server on the result:
// it receives the connections the fast front does not keep. Requests are
// forwarded fast only when the front has a hop pool (Config.Dial) and has
// been started; until then every connection goes to net/http.
func (f *Front) Listen(ln net.Listener, opts ListenOptions) *FastListener {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 120 * time.Second
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 10 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if opts.Claims == nil {
		opts.Claims = func([]byte) bool { return true }
	}
	ctx, stop := context.WithCancel(context.Background())
	l := &FastListener{f: f, ln: ln, opts: opts, ctx: ctx, stop: stop,
		handoff: make(chan net.Conn), done: make(chan struct{}), conns: make(map[*fastConn]struct{})}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection for net/http.
func (l *FastListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.done:
		if l.acceptErr != nil {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting; the connections already open go on (http.Server
// calls it first in Shutdown). See Shutdown and CloseConns.
func (l *FastListener) Close() error {
	return l.closeWith(nil)
}

func (l *FastListener) closeWith(err error) error {
	var cerr error
	l.closeOnce.Do(func() {
		l.acceptErr = err
		close(l.done)
		cerr = l.ln.Close()
	})
	return cerr
}

// Addr is the public address.
func (l *FastListener) Addr() net.Addr { return l.ln.Addr() }

// Shutdown stops accepting, closes the fast front's idle connections and
// waits until the others finish their current request (they answer it
// with Connection: close) or ctx ends, when it closes them all. Call it
// after http.Server.Shutdown.
func (l *FastListener) Shutdown(ctx context.Context) error {
	_ = l.Close()
	l.closing.Store(true)
	l.mu.Lock()
	for fc := range l.conns {
		if fc.idle.Load() {
			_ = fc.c.Close()
		}
	}
	l.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		l.stop()
		return nil
	case <-ctx.Done():
		l.CloseConns()
		<-finished
		return ctx.Err()
	}
}

// CloseConns stops accepting and closes every connection the fast front
// holds at once (an abort), then waits for their goroutines.
func (l *FastListener) CloseConns() {
	_ = l.Close()
	l.closing.Store(true)
	l.stop()
	l.mu.Lock()
	for fc := range l.conns {
		_ = fc.c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *FastListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.f.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-l.done:
					t.Stop()
					return
				}
				continue
			}
			_ = l.closeWith(err)
			return
		}
		backoff = 0
		fc := &fastConn{l: l, c: c}
		l.mu.Lock()
		if l.closing.Load() {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.conns[fc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go fc.serve()
	}
}

// isTemporary reports accept errors worth retrying (out of descriptors).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// give hands a connection to net/http, or closes it if nobody accepts any
// more.
func (l *FastListener) give(c net.Conn) {
	select {
	case l.handoff <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// fastConn is one public connection while the fast front holds it.
type fastConn struct {
	l        *FastListener
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	out      countingWriter
	idle     atomic.Bool
	deadline time.Time // the read deadline set on c; zero when none
	headBy   time.Time // when the head being read must be complete; zero while idle
	remote   string    // c.RemoteAddr as net/http would give it
	fwd      string    // the X-Forwarded-For/Proto and client lines for every hop
	req      fastReq
	head     []byte // the answer's head, reused
	line     []byte // a line of the answer being read, reused
	drop     [][]byte
	bodyFrom int64  // out.n where the answer's body starts (access log's bytes)
	target   string // the node the current request went to
}

// countingWriter counts the bytes that reached the client.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// outcome is how a forwarded request ended.
type outcome uint8

const (
	outKeep    outcome = iota // answered; the connection may carry another request
	outClose                  // answered, or given up after bytes reached the client: close
	outHandoff                // nothing reached the client: net/http serves the request
)

func (fc *fastConn) serve() {
	l := fc.l
	handedOff := false
	defer func() {
		l.mu.Lock()
		delete(l.conns, fc)
		l.mu.Unlock()
		if !handedOff {
			_ = fc.c.Close()
		}
		l.wg.Done()
	}()
	fc.remote = fc.c.RemoteAddr().String()
	ap, err := netip.ParseAddrPort(fc.remote)
	if err != nil || l.f.trusted(ap.Addr().Unmap()) || l.f.hops == nil {
		// A trusted proxy's X-Forwarded-* need the full reading of
		// resolveClient; without a hop pool there is nothing fast to do.
		handedOff = true
		l.give(l.f.handed(fc.c, nil, time.Time{}))
		return
	}
	// net/http counts the first head's ReadHeaderTimeout from the accept:
	// a connection that sends nothing is closed then, not after the idle
	// timeout.
	fc.headBy = time.Now().Add(l.opts.HeaderTimeout)
	peerHost, _, _ := net.SplitHostPort(fc.remote) // as resolveClient reads it
	fc.fwd = "X-Forwarded-For: " + peerHost + "\r\nX-Forwarded-Proto: http\r\n" +
		hdrClient + ": " + fc.remote + "\r\n"
	fc.br = bufio.NewReaderSize(fc.c, fastReadBuf)
	fc.out.w = fc.c
	fc.bw = bufio.NewWriterSize(&fc.out, fastWriteBuf)
	for {
		ok, err := fc.nextRequest()
		if err != nil {
			return // the client closed, timed out, or the front is closing
		}
		if ok {
			switch fc.forward() {
			case outKeep:
				fc.br.Discard(len(fc.req.head))
				fc.headBy = time.Time{} // idle until the next head begins
				continue
			case outClose:
				return
			}
		}
		handedOff = true
		l.give(l.f.handed(fc.c, fc.br, fc.headBy))
		return
	}
}

// nextRequest waits for the next request head and reports whether the
// fast front takes it. It consumes nothing: a request it declines is read
// again by net/http. A head not complete by fc.headBy closes the
// connection, as net/http's ReadHeaderTimeout does.
func (fc *fastConn) nextRequest() (bool, error) {
	l := fc.l
	fc.idle.Store(fc.br.Buffered() == 0)
	if l.closing.Load() && fc.br.Buffered() == 0 {
		return false, net.ErrClosed
	}
	for {
		buf, _ := fc.br.Peek(fc.br.Buffered())
		n, bad := headEnd(buf)
		if n > 0 || bad {
			fc.idle.Store(false)
			if bad || n > l.opts.MaxHeaderBytes+4096 { // net/http's limit: MaxHeaderBytes plus 4 KiB
				return false, nil
			}
			r := &fc.req
			ok := parseRequestHead(buf[:n], l.f.cfg.CookieName, r) && l.opts.Claims(r.path())
			return ok, nil
		}
		if len(buf) == fc.br.Size() {
			fc.idle.Store(false)
			return false, nil // too large for the fast front
		}
		if len(buf) > 0 && fc.headBy.IsZero() {
			// The head has begun: it must be complete within HeaderTimeout.
			fc.idle.Store(false)
			fc.headBy = time.Now().Add(l.opts.HeaderTimeout)
		}
		switch now := time.Now(); {
		case !fc.headBy.IsZero():
			if fc.deadline != fc.headBy {
				fc.deadline = fc.headBy
				_ = fc.c.SetReadDeadline(fc.deadline)
			}
		case fc.deadline.Before(now.Add(l.opts.IdleTimeout - time.Second)):
			// Refreshed at most once a second: a deadline costs a timer update.
			fc.deadline = now.Add(l.opts.IdleTimeout)
			_ = fc.c.SetReadDeadline(fc.deadline)
		}
		if _, err := fc.br.Peek(len(buf) + 1); err != nil {
			if len(buf) > 0 && fc.br.Buffered() > 0 {
				// A partial head and an error (EOF, or the head's deadline,
				// which stays with it): net/http answers it as it would.
				return false, nil
			}
			return false, err // idle or too slow: closed, as net/http does
		}
	}
}

// forward sends the request fc.req to the node that owns its session and
// relays the answer, if the plan says it goes to another node.
func (fc *fastConn) forward() outcome {
	f := fc.l.f
	r := &fc.req
	if f.cfg.Stateless != nil && f.cfg.Stateless.Match(r.path()) {
		return outHandoff // served here: net/http's path plans it local
	}
	m, ok := f.owner(r.cookie, r.hasCookie)
	if !ok {
		return outHandoff
	}
	start := time.Now()
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	fc.bodyFrom, fc.target = -1, m.ID
	status, res, err := fc.exchange(m.Address)
	switch res {
	case outHandoff:
		if !errors.Is(err, errUnready) && fc.l.ctx.Err() == nil {
			f.cfg.Members.MarkFailed(m.ID)
		}
		fc.bw.Reset(&fc.out)
		f.log.LogAttrs(fc.l.ctx, slog.LevelDebug, "upstream attempt failed",
			slog.String("upstream", m.ID), slog.Int("try", 1), slog.Bool("retry", true), slog.String("err", err.Error()))
		return outHandoff
	case outClose:
		if err != nil {
			f.log.LogAttrs(fc.l.ctx, slog.LevelDebug, "forwarded request aborted",
				slog.String("upstream", m.ID), slog.String("err", err.Error()))
		}
	}
	took := time.Since(start)
	if status == 0 {
		status = http.StatusBadGateway // given up before the answer's head
	}
	if f.cfg.Observe != nil {
		f.cfg.Observe(KindForwarded, status, took, 1)
	}
	if f.cfg.AccessLog && f.log.Enabled(fc.l.ctx, slog.LevelInfo) {
		body := int64(0)
		if fc.bodyFrom >= 0 {
			body = max(0, fc.out.n-fc.bodyFrom)
		}
		f.log.LogAttrs(fc.l.ctx, slog.LevelInfo, "request",
			slog.String("method", string(r.method)), slog.String("path", string(r.path())),
			slog.Int("status", status), slog.Duration("duration", took),
			slog.String("route", KindForwarded), slog.String("upstream", m.ID), slog.Int("tries", 1),
			slog.String("client", fc.remote), slog.Int64("bytes", body))
	}
	return res
}

// errClientGone ends an exchange whose client left while it waited.
var errClientGone = errors.New("client closed the connection")

// alwaysStopped is the release callback of exchanges that set no
// context hook on the connection.
func alwaysStopped() bool { return true }

// exchange writes the request on a pooled connection to addr and relays
// the answer to the client. Until a byte of the answer is written to the
// client it returns outHandoff on failure, so that net/http's path serves
// the request elsewhere; afterwards failures close the connection.
func (fc *fastConn) exchange(addr string) (status int, res outcome, err error) {
	hops := fc.l.f.hops
	var pc *hopConn
	for {
		var reused bool
		if pc, reused, err = hops.conn(fc.l.ctx, addr, false); err != nil {
			return 0, outHandoff, err
		}
		// One deadline for the write and the first wait: a frozen peer
		// takes nothing, and only the probes tell it from a slow one.
		_ = pc.SetDeadline(time.Now().Add(fastClientCheck))
		if err = fc.writeRequest(pc); err == nil {
			err = fc.waitUpstream(pc)
		}
		if err == nil {
			break
		}
		pc.Close()
		switch {
		case errors.Is(err, errClientGone):
			return 0, outClose, err
		case reused && !isTimeout(err) && !errors.Is(err, errPeerUnhealthy):
			continue // the peer closed it while it was idle: a GET or HEAD goes again
		}
		return 0, outHandoff, err
	}
	status, keep, res, err := fc.relay(pc)
	if err == nil && keep {
		_ = pc.SetDeadline(time.Time{})
		hops.release(pc, alwaysStopped, true)
	} else {
		pc.Close()
	}
	return status, res, err
}

// writeRequest writes the request head on pc: the target under the
// internal prefix, the client's headers but the hop-by-hop and forwarded
// ones, and the front's own X-Forwarded-* and client lines.
func (fc *fastConn) writeRequest(pc *hopConn) error {
	r, bw := &fc.req, pc.bw
	bw.Write(r.method)
	bw.WriteByte(' ')
	bw.WriteString(internalAppPrefix)
	bw.Write(r.target)
	bw.WriteString(" HTTP/1.1\r\n")
	_, rest := cutCRLF(r.head)
	for {
		var line []byte
		if line, rest = cutCRLF(rest); len(line) == 0 {
			break
		}
		switch classify(requestHeaderClasses, line[:bytes.IndexByte(line, ':')]) {
		case clsConn, clsDrop:
			continue
		}
		bw.Write(line)
		bw.WriteString("\r\n")
	}
	bw.WriteString(fc.fwd)
	bw.WriteString("X-Forwarded-Host: ")
	bw.Write(r.host)
	bw.WriteString("\r\n\r\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: write: %w", errNoAnswer, err)
	}
	return nil
}

// answer is what the fast front needs to know of an answer's head.
type answer struct {
	code    int
	length  int64 // -1: not given
	chunked bool
	close   bool // the upstream will close the connection after it
	unready bool // the upstream's front is not serving yet
}

// relay reads the answer to fc.req from pc and writes it to the client.
// keep reports whether pc may carry another request.
func (fc *fastConn) relay(pc *hopConn) (status int, keep bool, res outcome, err error) {
	sent := fc.out.n
	var a answer
	for {
		if a, err = fc.readAnswerHead(pc); err != nil {
			break
		}
		if a.unready {
			err = errUnready
			break
		}
		if a.code >= 200 {
			break
		}
		if a.code == 101 {
			err = errors.New("peer switched protocols on a request without Upgrade")
			break
		}
		// 1xx (103 Early Hints): relay it, read on.
		fc.writeAnswerHead(false)
		if err = fc.bw.Flush(); err != nil {
			return a.code, false, outClose, errClientGone
		}
	}
	if err != nil {
		if fc.out.n == sent {
			return a.code, false, outHandoff, err
		}
		return a.code, false, outClose, err
	}
	r := &fc.req
	bodyless := string(r.method) == "HEAD" || a.code == 204 || a.code == 304
	untilClose := !bodyless && !a.chunked && a.length < 0
	closeClient := r.close || untilClose || fc.l.closing.Load()
	fc.writeAnswerHead(closeClient)
	fc.bodyFrom = fc.out.n + int64(fc.bw.Buffered())
	switch {
	case bodyless:
	case a.chunked:
		err = fc.relayChunked(pc)
	default:
		err = fc.relayBody(pc, a.length)
	}
	if err == nil {
		if ferr := fc.bw.Flush(); ferr != nil {
			err = fmt.Errorf("%w: %w", errClientGone, ferr)
		}
	}
	if err != nil {
		return a.code, false, outClose, err
	}
	if closeClient {
		res = outClose
	}
	return a.code, !a.close && !untilClose, res, nil
}

// responseHeaderClasses are the answer headers the front reads or drops.
var responseHeaderClasses = map[string]headerClass{
	"connection":           clsConn,
	"content-length":       clsLength,
	"transfer-encoding":    clsEncoding,
	"keep-alive":           clsDrop,
	"proxy-connection":     clsDrop,
	"upgrade":              clsDrop,
	"cohort-front-unready": clsUnready,
}

// readAnswerHead reads an answer's head into fc.head and parses it.
func (fc *fastConn) readAnswerHead(pc *hopConn) (answer, error) {
	a := answer{length: -1}
	fc.head = fc.head[:0]
	fc.drop = fc.drop[:0]
	first := true
	for {
		line, err := fc.readLine(pc)
		if err != nil {
			return a, err
		}
		fc.head = append(fc.head, line...)
		if len(fc.head) > fastMaxHead {
			return a, errors.New("answer head larger than 64 KiB")
		}
		line = line[:len(line)-1]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return a, errors.New("answer head line does not end in CRLF")
		}
		line = line[:len(line)-1]
		if first {
			first = false
			if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) || (len(line) > 12 && line[12] != ' ') {
				return a, fmt.Errorf("malformed status line %q", line)
			}
			code, err := strconv.Atoi(string(line[9:12]))
			if err != nil || code < 100 {
				return a, fmt.Errorf("malformed status line %q", line)
			}
			a.code = code
			continue
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := splitField(line)
		if !ok {
			return a, fmt.Errorf("malformed answer header %q", line)
		}
		switch classify(responseHeaderClasses, name) {
		case clsLength:
			n, ok := parseLength(value)
			if !ok || (a.length >= 0 && n != a.length) {
				return a, fmt.Errorf("bad Content-Length %q", value)
			}
			a.length = n
		case clsEncoding:
			// net/http reads exactly one Transfer-Encoding, "chunked".
			if a.chunked || !asciiEqualFold(value, "chunked") {
				return a, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			a.chunked = true
		case clsConn:
			for len(value) > 0 {
				var tok []byte
				tok, value, _ = bytes.Cut(value, []byte{','})
				if tok = trimOWS(tok); asciiEqualFold(tok, "close") {
					a.close = true
				} else if len(tok) > 0 && !asciiEqualFold(tok, "keep-alive") {
					fc.drop = append(fc.drop, tok)
				}
			}
		case clsUnready:
			a.unready = a.code == 503
		}
	}
	if a.chunked && a.length >= 0 {
		return a, errors.New("answer has both Content-Length and Transfer-Encoding")
	}
	return a, nil
}

// writeAnswerHead writes fc.head to the client without the hop-by-hop
// headers, with Connection: close when the client connection ends after
// this answer.
func (fc *fastConn) writeAnswerHead(closeClient bool) {
	bw := fc.bw
	status, rest := cutCRLF(fc.head)
	bw.Write(status)
	bw.WriteString("\r\n")
	for {
		var line []byte
		if line, rest = cutCRLF(rest); len(line) == 0 {
			break
		}
		name := line[:bytes.IndexByte(line, ':')]
		switch classify(responseHeaderClasses, name) {
		case clsConn, clsDrop, clsUnready:
			continue
		}
		if fc.named(name) {
			continue
		}
		bw.Write(line)
		bw.WriteString("\r\n")
	}
	if closeClient {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// named reports whether the answer's Connection header named this header.
func (fc *fastConn) named(name []byte) bool {
	for _, d := range fc.drop {
		if bytes.EqualFold(d, name) {
			return true
		}
	}
	return false
}

// readLine reads one line of the answer (LF included). It flushes what
// the client is owed before it may block, and checks on the client while
// the upstream is silent. The line is valid until the next read.
func (fc *fastConn) readLine(pc *hopConn) ([]byte, error) {
	if b, _ := pc.br.Peek(pc.br.Buffered()); bytes.IndexByte(b, '\n') < 0 {
		if err := fc.flush(); err != nil {
			return nil, err
		}
	}
	fc.line = fc.line[:0]
	for {
		b, err := pc.br.ReadSlice('\n')
		if err == nil && len(fc.line) == 0 {
			return b, nil
		}
		fc.line = append(fc.line, b...)
		switch {
		case err == nil:
			return fc.line, nil
		case len(fc.line) > fastMaxHead:
			return nil, errors.New("answer line longer than 64 KiB")
		case err == bufio.ErrBufferFull:
			continue
		}
		if err = fc.upstreamSilent(pc, err); err != nil {
			return nil, err
		}
	}
}

// relayBody copies n bytes of body (n < 0: until the upstream closes).
func (fc *fastConn) relayBody(pc *hopConn, n int64) error {
	var big []byte
	defer func() {
		if big != nil {
			fastBufs.Put(big)
		}
	}()
	for n != 0 {
		if k := pc.br.Buffered(); k > 0 {
			if n > 0 && int64(k) > n {
				k = int(n)
			}
			b, _ := pc.br.Peek(k)
			if _, err := fc.bw.Write(b); err != nil {
				return fmt.Errorf("%w: %w", errClientGone, err)
			}
			_, _ = pc.br.Discard(k)
			if n > 0 {
				n -= int64(k)
			}
			continue
		}
		if err := fc.flush(); err != nil {
			return err
		}
		if big == nil {
			big = fastBufs.Get()
		}
		want := len(big)
		if n > 0 && n < int64(want) {
			want = int(n)
		}
		k, err := pc.br.Read(big[:want])
		if k > 0 {
			if _, werr := fc.bw.Write(big[:k]); werr != nil {
				return fmt.Errorf("%w: %w", errClientGone, werr)
			}
			if n > 0 {
				n -= int64(k)
			}
		}
		switch {
		case err == nil:
		case err == io.EOF && n < 0:
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		default:
			if err = fc.upstreamSilent(pc, err); err != nil {
				return err
			}
		}
	}
	return nil
}

// relayChunked copies a chunked body as it is: sizes, data, trailers.
// It reads the framing as net/http's chunked reader does (FuzzRelayChunked),
// down to its bound on the bytes that are not data.
func (fc *fastConn) relayChunked(pc *hopConn) error {
	var excess int64
	for {
		line, err := fc.readLine(pc)
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok {
			return fmt.Errorf("malformed chunk size line %q", line)
		}
		excess = max(0, excess+int64(len(line))-16-2*size)
		if excess > 16<<10 {
			return errors.New("chunked answer has too much besides data")
		}
		if _, err := fc.bw.Write(line); err != nil {
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
		if size == 0 {
			for { // trailers, then the empty line
				line, err := fc.readLine(pc)
				if err != nil {
					return err
				}
				if _, err := fc.bw.Write(line); err != nil {
					return fmt.Errorf("%w: %w", errClientGone, err)
				}
				if len(line) <= 2 {
					if string(line) != "\r\n" {
						return errors.New("chunked body does not end in CRLF")
					}
					return nil
				}
				if len(line) < 2 || line[len(line)-2] != '\r' {
					return errors.New("trailer line does not end in CRLF")
				}
				if _, _, ok := splitField(line[:len(line)-2]); !ok {
					return fmt.Errorf("malformed trailer %q", line)
				}
			}
		}
		if err := fc.relayBody(pc, size); err != nil {
			return err
		}
		if line, err = fc.readLine(pc); err != nil {
			return err
		}
		if string(line) != "\r\n" {
			return errors.New("chunk data does not end in CRLF")
		}
		if _, err := fc.bw.Write(line); err != nil {
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
	}
}

// chunkSize parses "1a2b[;ext]\r\n" as net/http's chunked reader does:
// the line ends in CRLF and holds no other CR, white space may only
// trail (before an extension or the end), the size is hex.
func chunkSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-2] != '\r' || bytes.IndexByte(line, '\r') != len(line)-2 || len(line)-2 >= 4096 {
		return 0, false
	}
	hex := line[:len(line)-2]
	for len(hex) > 0 && (hex[len(hex)-1] == ' ' || hex[len(hex)-1] == '\t') {
		hex = hex[:len(hex)-1]
	}
	if i := bytes.IndexByte(hex, ';'); i >= 0 {
		hex = hex[:i]
	}
	if len(hex) == 0 || len(hex) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range hex {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}

// parseLength reads a Content-Length as net/http does: digits only.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// flush sends the client what it is owed.
func (fc *fastConn) flush() error {
	if err := fc.bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

// waitUpstream waits for the first byte of the answer.
func (fc *fastConn) waitUpstream(pc *hopConn) error {
	for {
		_, err := pc.br.Peek(1)
		if err == nil {
			return nil
		}
		if err = fc.upstreamSilent(pc, err); err != nil {
			if !errors.Is(err, errClientGone) {
				err = fmt.Errorf("%w: %w", errNoAnswer, err)
			}
			return err
		}
	}
}

// upstreamSilent handles a read error on pc: a timeout only means the
// upstream has been silent for fastClientCheck, so unless the client has
// left or the upstream failed the probes meanwhile, the read goes on
// (nil); any other error is returned. A frozen or cut-off owner keeps its
// connections open: the probes are what tell, and the request then fails
// over (a GET or HEAD may be sent again) if no byte reached the client.
func (fc *fastConn) upstreamSilent(pc *hopConn, err error) error {
	if !isTimeout(err) {
		return err
	}
	if fc.l.f.cfg.Members.Unresponsive(fc.target) {
		return errPeerUnhealthy
	}
	// The client's read deadline no longer matters while its request
	// runs, and a peek would fail on it.
	fc.deadline = time.Time{}
	_ = fc.c.SetReadDeadline(time.Time{})
	if peerClosed(fc.c) {
		return errClientGone
	}
	_ = pc.SetReadDeadline(time.Now().Add(fastClientCheck))
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var fastBufs = newBufferPool()

// handedConn is a public connection net/http serves: handed off by the
// fast front with the bytes it read but did not use (br) and the deadline
// of the head being read (headBy), or wrapped as accepted (WatchRefusals).
// It logs the requests net/http refuses (refusalOf).
type handedConn struct {
	net.Conn
	br       *bufio.Reader // nil once drained
	headBy   atomic.Int64  // unix ns; until net/http sets its first read deadline
	refusals *refusalLog
}

// handed wraps c for net/http: br holds what the fast front read, headBy
// is the deadline of the head begun (zero: none begun).
func (f *Front) handed(c net.Conn, br *bufio.Reader, headBy time.Time) *handedConn {
	hc := &handedConn{Conn: c, br: br, refusals: f.refusals}
	if br != nil && br.Buffered() == 0 {
		hc.br = nil
	}
	if !headBy.IsZero() {
		hc.headBy.Store(headBy.UnixNano())
	}
	return hc
}

func (c *handedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// SetReadDeadline passes net/http's deadlines on, but its first one (the
// ReadHeaderTimeout it starts every connection with) no later than the
// deadline the head already had: time spent on the fast front counts.
func (c *handedConn) SetReadDeadline(t time.Time) error {
	if by := c.headBy.Swap(0); by != 0 {
		if limit := time.Unix(0, by); t.IsZero() || t.After(limit) {
			t = limit
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// Write notes net/http's refusals of a request head on their way out.
func (c *handedConn) Write(p []byte) (int, error) {
	if c.refusals != nil && len(p) > 12 && p[0] == 'H' {
		if reason, ok := refusalOf(p); ok {
			c.refusals.note(c.Conn.RemoteAddr().String(), reason)
		}
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel's sendfile/splice for answers net/http copies
// from files.
func (c *handedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite lets net/http half-close the connection as it does a TCP one.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
