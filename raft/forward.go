package raft

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A follower forwards the commands it is asked to apply to the leader. They
// used to go one HTTP/1.1 request each (POST /_internal/raft/apply): two
// system calls and a goroutine wake-up on each side per command, a third of
// the CPU of a cluster taking session writes through its followers (the
// writes scenario's profile). Now they go over one connection per leader on
// the cluster port's forward channel, many in flight at once: a writer
// gathers what is queued into one write, and the leader's answers come back
// the same way, so under load one system call carries many commands.
//
// Frames, both ways: uint32 length of what follows | uint64 call id | body.
// A request's body is uvarint timeout in milliseconds (the follower's
// deadline; 0 for none) | uvarint len | type | payload; an answer's is a status
// byte | uvarint term | the HTTP answer's bytes (encodeApplyAnswer) or,
// for fwdFailed and fwdNotMember, the error's text. A leader of the previous version refuses
// the channel in its handshake: the follower then forwards over HTTP to
// that address for fwdFallbackFor. Commands too large to share the stream
// (above fwdMaxPayload) go over HTTP as well.

// chanForward is the cluster port's channel of forwarded commands.
const chanForward byte = 'F'

// Answer statuses of the forward channel.
const (
	fwdOK        byte = iota // body: encodeApplyAnswer
	fwdNotLeader             // retry against the new leader
	fwdUnknown               // outcome unknown
	fwdFailed                // body: the error's text
	fwdNotMember             // the sender is not in the configuration; body: the error's text
)

const (
	// fwdMaxPayload is the largest command the forward channel carries;
	// larger ones would hold up the commands queued behind them.
	fwdMaxPayload = 256 << 10
	// fwdMaxFrame bounds a frame read from the channel.
	fwdMaxFrame = fwdMaxPayload + maxTypeLen + 64
	// fwdFallbackFor is how long a peer that refused the channel (an
	// older version) is sent commands over HTTP before it is asked again.
	fwdFallbackFor = time.Minute
	// fwdQueue is how many calls may wait for the writer of one connection.
	fwdQueue = 1024
)

// errFwdRefused means the peer did not accept the forward channel.
var errFwdRefused = errors.New("peer refused the forward channel")

// forwarder keeps this node's connections of one multiplexed channel to
// the leader, one per leader address: the forward channel's (commands) or
// the call channel's (leadercall.go).
type forwarder struct {
	c    *Cluster
	ch   byte   // the cluster port channel it dials
	what string // what it carries, for logs
	// onDoubt, when set, is told of each call whose outcome became
	// unknown: the leader's address, this node's end of the connection,
	// and whether the command may still be on its way (settle.go).
	onDoubt func(leader, local string, fence bool)

	mu       sync.Mutex
	conns    map[string]*fwdConn
	dialing  map[string]chan struct{} // closed when that address's dial ends
	fallback map[string]time.Time     // address → HTTP until then
	closed   bool
	wg       sync.WaitGroup
}

func newForwarder(c *Cluster, ch byte, what string) *forwarder {
	return &forwarder{c: c, ch: ch, what: what, conns: map[string]*fwdConn{}, dialing: map[string]chan struct{}{}, fallback: map[string]time.Time{}}
}

// usable reports whether calls to addr go over the channel.
func (f *forwarder) usable(addr string, payload int) bool {
	if payload > fwdMaxPayload {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	until, ok := f.fallback[addr]
	if ok && time.Now().After(until) {
		delete(f.fallback, addr)
		ok = false
	}
	return !ok && !f.closed
}

// call sends one request (a command, or a leader call's name) to the
// leader at addr and waits for its answer. Its errors are forwardApply's:
// errRetry when nothing was sent (no connection, not the leader),
// ErrOutcomeUnknown when the request may have been acted on, errFwdRefused
// when the peer is of an older version.
func (f *forwarder) call(ctx context.Context, addr, typ string, payload []byte) (status byte, term uint64, body []byte, err error) {
	fc, err := f.conn(ctx, addr)
	if err != nil {
		return 0, 0, nil, err
	}
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	call := &fwdCall{answer: make(chan fwdAnswer, 1)}
	if !fc.register(call, timeout, typ, payload) {
		return 0, 0, nil, errRetry // the connection just failed; nothing sent
	}
	defer f.release(fc, addr)
	select {
	case fc.out <- call:
	case <-fc.done:
		fc.forget(call)
		return 0, 0, nil, errRetry
	case <-ctx.Done():
		fc.forget(call)
		return 0, 0, nil, fmt.Errorf("%w (%w)", ErrOutcomeUnknown, ctx.Err())
	}
	select {
	case a := <-call.answer:
		if a.status == fwdUnknown {
			f.doubt(addr, fc, false)
		}
		return a.status, a.term, a.body, nil
	case <-fc.done:
		fc.forget(call)
		if call.sent.Load() {
			f.doubt(addr, fc, true)
			return 0, 0, nil, fmt.Errorf("%w: forward connection to %s: %w", ErrOutcomeUnknown, addr, fc.err)
		}
		return 0, 0, nil, errRetry
	case <-ctx.Done():
		fc.forget(call)
		// Queued, it may still be written after this.
		f.doubt(addr, fc, true)
		return 0, 0, nil, fmt.Errorf("%w (%w)", ErrOutcomeUnknown, ctx.Err())
	}
}

// doubt tells onDoubt of a call on fc whose outcome is unknown.
func (f *forwarder) doubt(addr string, fc *fwdConn, fence bool) {
	if f.onDoubt != nil {
		f.onDoubt(addr, fc.conn.LocalAddr().String(), fence)
	}
}

// conn returns the open connection to addr, dialing it if there is none
// (one dial per address at a time).
func (f *forwarder) conn(ctx context.Context, addr string) (*fwdConn, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, ErrNotStarted
		}
		if fc := f.conns[addr]; fc != nil {
			select {
			case <-fc.done:
				delete(f.conns, addr)
			default:
				fc.users++
				f.mu.Unlock()
				return fc, nil
			}
		}
		if wait, ok := f.dialing[addr]; ok {
			f.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w (%w)", ErrNoLeader, ctx.Err())
			}
		}
		wait := make(chan struct{})
		f.dialing[addr] = wait
		f.mu.Unlock()

		fc, err := f.dial(ctx, addr)

		f.mu.Lock()
		delete(f.dialing, addr)
		close(wait)
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
		if f.closed {
			f.mu.Unlock()
			fc.fail(net.ErrClosed)
			return nil, ErrNotStarted
		}
		f.conns[addr] = fc
		fc.users++
		f.mu.Unlock()
		return fc, nil
	}
}

// dial opens a forward connection to addr and starts its reader and writer.
func (f *forwarder) dial(ctx context.Context, addr string) (*fwdConn, error) {
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	f.c.mu.Lock()
	tr := f.c.transport
	f.c.mu.Unlock()
	if tr == nil {
		return nil, ErrNotStarted
	}
	conn, err := tr.dial(dctx, addr, f.ch)
	if err != nil {
		var op *net.OpError
		switch {
		case errors.As(err, &op) && op.Op == "dial", errors.Is(err, errBlocked), ctx.Err() != nil:
			return nil, errRetry
		default:
			// TCP connected, the handshake did not pass: a peer of the
			// previous version closes the connection on an unknown
			// channel. Send it HTTP for a while.
			f.mu.Lock()
			f.fallback[addr] = time.Now().Add(fwdFallbackFor)
			f.mu.Unlock()
			f.c.log.Info("leader does not take the channel; using HTTP", "channel", f.what, "leader", addr, "err", err)
			return nil, errFwdRefused
		}
	}
	fc := &fwdConn{conn: conn, out: make(chan *fwdCall, fwdQueue), pending: map[uint64]*fwdCall{}, done: make(chan struct{})}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		fc.writeLoop()
	}()
	go func() {
		defer f.wg.Done()
		fc.readLoop()
	}()
	return fc, nil
}

// release ends one use of fc; a connection to an address that is not the
// leader's any more is closed once nobody uses it.
func (f *forwarder) release(fc *fwdConn, addr string) {
	_, leader := f.c.Leader()
	f.mu.Lock()
	fc.users--
	idle := fc.users == 0 && leader != addr && f.conns[addr] == fc
	if idle {
		delete(f.conns, addr)
	}
	f.mu.Unlock()
	if idle {
		fc.fail(errors.New("not the leader's any more"))
	}
}

// close fails every connection and waits for their goroutines.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = map[string]*fwdConn{}
	f.mu.Unlock()
	for _, fc := range conns {
		fc.fail(net.ErrClosed)
	}
	f.wg.Wait()
}

// fwdCall is one forwarded command waiting for its answer.
type fwdCall struct {
	id     uint64
	frame  []byte
	sent   atomic.Bool // its frame reached the writer: it may have been proposed
	answer chan fwdAnswer
}

type fwdAnswer struct {
	status byte
	term   uint64
	body   []byte
}

// fwdConn is one forward connection of a follower to a leader.
type fwdConn struct {
	conn net.Conn
	out  chan *fwdCall

	mu      sync.Mutex
	pending map[uint64]*fwdCall
	nextID  uint64
	users   int // calls using it (forwarder.mu)

	once sync.Once
	done chan struct{}
	err  error // why it failed; set before done is closed
}

// register gives call an id and its frame and records it; false when the
// connection has failed. timeout is how long the leader may take (0: its
// own default).
func (fc *fwdConn) register(call *fwdCall, timeout time.Duration, typ string, payload []byte) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	select {
	case <-fc.done:
		return false
	default:
	}
	fc.nextID++
	call.id = fc.nextID
	body := make([]byte, 12, 12+2*binary.MaxVarintLen64+len(typ)+len(payload))
	body = binary.AppendUvarint(body, uint64(timeout/time.Millisecond))
	body = binary.AppendUvarint(body, uint64(len(typ)))
	body = append(body, typ...)
	body = append(body, payload...)
	binary.BigEndian.PutUint32(body[0:4], uint32(len(body)-4))
	binary.BigEndian.PutUint64(body[4:12], call.id)
	call.frame = body
	fc.pending[call.id] = call
	return true
}

func (fc *fwdConn) forget(call *fwdCall) {
	fc.mu.Lock()
	delete(fc.pending, call.id)
	fc.mu.Unlock()
}

// fail closes the connection once; waiters see done.
func (fc *fwdConn) fail(err error) {
	fc.once.Do(func() {
		fc.err = err
		close(fc.done)
		fc.conn.Close()
	})
}

// writeLoop writes queued calls; a call counts as sent (its outcome
// unknown should the connection fail) from the moment it is written.
func (fc *fwdConn) writeLoop() {
	err := writeBatched(fc.conn, fc.out, fc.done, func(call *fwdCall) []byte {
		call.sent.Store(true)
		return call.frame
	})
	if err != nil {
		fc.fail(fmt.Errorf("write: %w", err))
	}
}

// writeBatched writes the frame of each item from in until done is closed
// or a write fails, flushing only when in is empty, so that items queued
// meanwhile share one system call. Both sides of the forward channel write
// this way.
func writeBatched[T any](w io.Writer, in <-chan T, done <-chan struct{}, frame func(T) []byte) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	for {
		var item T
		select {
		case item = <-in:
		case <-done:
			return nil
		}
		for more := true; more; {
			if _, err := bw.Write(frame(item)); err != nil {
				return err
			}
			select {
			case item = <-in:
			default:
				more = false
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}

// readLoop hands each answer to its call.
func (fc *fwdConn) readLoop() {
	br := bufio.NewReaderSize(fc.conn, 64<<10)
	for {
		id, body, err := readFrame(br, fwdMaxFrame)
		if err != nil {
			fc.fail(fmt.Errorf("read: %w", err))
			return
		}
		if len(body) < 1 {
			fc.fail(errors.New("read: empty answer"))
			return
		}
		term, n := binary.Uvarint(body[1:])
		if n <= 0 {
			fc.fail(errors.New("read: malformed answer"))
			return
		}
		fc.mu.Lock()
		call := fc.pending[id]
		delete(fc.pending, id)
		fc.mu.Unlock()
		if call != nil {
			call.answer <- fwdAnswer{status: body[0], term: term, body: body[1+n:]}
		}
	}
}

// readFrame reads one frame: its call id and its body (a fresh slice).
func readFrame(br *bufio.Reader, max int) (uint64, []byte, error) {
	var head [12]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(head[0:4]))
	if n < 8 || n-8 > max {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	body := make([]byte, n-8)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, err
	}
	return binary.BigEndian.Uint64(head[4:12]), body, nil
}

// fwdHandler answers one request of a multiplexed channel: its status, the
// leader's term and the answer's body.
type fwdHandler func(ctx context.Context, origin string, body []byte) (status byte, term uint64, out []byte)

// serveForward accepts the connections of one multiplexed channel on the
// leader's side (any node may be asked) until the transport closes, and
// answers their requests with handle.
func (c *Cluster) serveForward(ln net.Listener, handle fwdHandler, track bool) {
	defer c.loops.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.loops.Add(1)
		go c.serveForwardConn(conn, handle, track)
	}
}

// serveForwardConn answers one follower's requests, each on its own
// goroutine, the answers written as they come, flushed when none is
// waiting. With track, the commands read are tracked until Raft answers
// them (settle.go).
func (c *Cluster) serveForwardConn(conn net.Conn, handle fwdHandler, track bool) {
	defer c.loops.Done()
	origin := ""
	if ac, ok := conn.(*authConn); ok {
		origin = ac.peer
	}
	var sc *fwdServed
	if track {
		sc = c.serving(origin, conn)
		defer c.unserve(origin, sc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	answers := make(chan []byte, fwdQueue)
	var calls sync.WaitGroup
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := writeBatched(conn, answers, ctx.Done(), func(f []byte) []byte { return f }); err != nil {
			conn.Close()
		}
	}()
	defer func() {
		conn.Close()
		cancel() // ends the calls' applies and the writer
		calls.Wait()
		<-writerDone
	}()
	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		if c.fwdReadGate != nil && sc != nil {
			c.fwdReadGate(origin)
		}
		id, body, err := readFrame(br, fwdMaxFrame)
		if err != nil {
			if sc != nil {
				close(sc.ended)
			}
			return
		}
		calls.Add(1)
		var t *ticket
		if sc != nil {
			t = sc.set.ticket() // before the next read: a settle waits for it
		}
		go func() {
			defer calls.Done()
			hctx := ctx
			if t != nil {
				hctx = withTicket(ctx, t)
				defer t.release()
			}
			status, term, out := handle(hctx, origin, body)
			frame := make([]byte, 12, 12+1+binary.MaxVarintLen64+len(out))
			frame = append(frame, status)
			frame = binary.AppendUvarint(frame, term)
			frame = append(frame, out...)
			binary.BigEndian.PutUint32(frame[0:4], uint32(len(frame)-4))
			binary.BigEndian.PutUint64(frame[4:12], id)
			select {
			case answers <- frame:
			case <-ctx.Done():
			}
		}()
	}
}

// forwardedCommand decodes and applies one command a follower forwarded
// over the forward channel.
func (c *Cluster) forwardedCommand(ctx context.Context, origin string, body []byte) (status byte, term uint64, out []byte) {
	c.fwdCommands.Add(1)
	ms, n := binary.Uvarint(body)
	if n <= 0 {
		return fwdFailed, 0, []byte("malformed forwarded command: timeout")
	}
	if ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	typ, payload, err := readString(body[n:], maxTypeLen)
	if err != nil {
		return fwdFailed, 0, []byte("malformed forwarded command: " + err.Error())
	}
	return c.leaderApply(ctx, origin, typ, payload)
}
