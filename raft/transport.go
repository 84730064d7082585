package raft

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Channel bytes name what an authenticated connection carries.
const (
	chanRaft byte = 'R' // hashicorp/raft NetworkTransport
	chanHTTP byte = 'H' // node-to-node HTTP (RPC, forwarding, blobs)
	// chanForward ('F', forward.go): forwarded commands, multiplexed.
	// chanCall ('Q', leadercall.go): calls to the leader, multiplexed.
)

const (
	handshakeMagic   = "COH1"
	nonceLen         = 32
	macLen           = sha256.Size
	maxIDLen         = 64
	handshakeTimeout = 5 * time.Second
)

// Transport owns the cluster port. It accepts TCP connections, wraps them in
// TLS when configured, runs the cluster-key handshake and hands each
// authenticated connection to the Raft stream layer or the internal HTTP
// listener, depending on the channel the client asked for. Nothing the peer
// sends reaches Raft or RPC before it proved the key.
type Transport struct {
	nodeID  string
	key     []byte      // used to dial
	accept  [][]byte    // accepted from peers: key first, then any rotation keys
	tlsConf *tls.Config // server side; nil without TLS
	tlsCli  *tls.Config // client side; nil without TLS
	log     *slog.Logger
	faults  *Faults

	ln        net.Listener
	advertise net.Addr

	raftLn *chanListener
	httpLn *chanListener
	fwdLn  *chanListener
	callLn *chanListener
	chans  string // the channels peers may ask for

	mu     sync.Mutex
	conns  map[*authConn]struct{}
	closed bool
	wg     sync.WaitGroup

	// heard is when a byte last arrived from each peer (node id →
	// *atomic.Int64 of Unix nanoseconds), on any channel: what QuorumContact
	// counts while no leader is known (quorum.go).
	heard sync.Map
	// answered is the same clock counting only connections this node
	// dialed: bytes there are answers, so they also prove that what this
	// node sends reaches the peer (a one-way cut stops them).
	answered sync.Map
	started  time.Time
}

// TransportConfig configures a Transport.
type TransportConfig struct {
	NodeID string
	Key    []byte // cluster key; required; used to dial and accepted
	// AcceptKeys are further keys accepted from peers, for rotating the
	// cluster key without downtime.
	AcceptKeys [][]byte
	TLS        *tls.Config // mutual TLS for both directions; nil disables TLS
	Logger     *slog.Logger
	Faults     *Faults // fault seam for tests; nil injects nothing
	Advertise  string  // address other nodes dial; defaults to the listener's
	// Listener, when set, is used instead of listening on the address
	// (tests pre-open ports so peers know them before start).
	Listener net.Listener
	// noForward refuses the forward channel (and the call channel), as a
	// node of an older version does (test seam).
	noForward bool
	// noCall refuses the call channel, as a node of the previous version
	// does (test seam).
	noCall bool
}

// errors of the handshake, logged for rejected peers.
var (
	errBadMagic = errors.New("peer does not speak the cohort cluster protocol")
	errBadMAC   = errors.New("peer did not prove the cluster key")
	errBadChan  = errors.New("peer asked for an unknown channel")
	errBlocked  = errors.New("connection blocked by fault injection")
)

// Listen opens the cluster port at addr and starts accepting.
func Listen(addr string, cfg TransportConfig) (*Transport, error) {
	if len(cfg.Key) < 16 {
		return nil, fmt.Errorf("cluster key: need at least 16 bytes, got %d", len(cfg.Key))
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("listen on cluster address %s: %w", addr, err)
		}
	}
	t := &Transport{
		nodeID:  cfg.NodeID,
		key:     cfg.Key,
		accept:  append([][]byte{cfg.Key}, cfg.AcceptKeys...),
		log:     cfg.Logger,
		faults:  cfg.Faults,
		ln:      ln,
		conns:   make(map[*authConn]struct{}),
		started: time.Now(),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS != nil {
		t.tlsConf = cfg.TLS.Clone()
		t.tlsConf.ClientAuth = tls.RequireAndVerifyClientCert
		t.tlsCli = cfg.TLS.Clone()
	}
	adv := ln.Addr()
	if cfg.Advertise != "" {
		// Kept as given: a host name (a compose service, a DNS name) must
		// stay a name in Raft's configuration and the member table, not
		// the address it resolves to today.
		if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("advertise address %q: %w", cfg.Advertise, err)
		}
		adv = namedAddr(cfg.Advertise)
	}
	t.advertise = adv
	t.raftLn = newChanListener(adv)
	t.httpLn = newChanListener(adv)
	t.fwdLn = newChanListener(adv)
	t.callLn = newChanListener(adv)
	chans := []byte{chanRaft, chanHTTP}
	if !cfg.noForward {
		chans = append(chans, chanForward)
	}
	if !cfg.noForward && !cfg.noCall {
		chans = append(chans, chanCall)
	}
	t.chans = string(chans)
	if t.faults != nil {
		t.faults.register(t)
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr is the address the cluster port listens on.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// AdvertiseAddr is the address other nodes dial.
func (t *Transport) AdvertiseAddr() net.Addr { return t.advertise }

// HTTPListener returns the listener of authenticated node-to-node HTTP connections.
func (t *Transport) HTTPListener() net.Listener { return t.httpLn }

// forwardListener returns the listener of forward connections (forward.go).
func (t *Transport) forwardListener() net.Listener { return t.fwdLn }

// callListener returns the listener of leader call connections (leadercall.go).
func (t *Transport) callListener() net.Listener { return t.callLn }

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.log.Error("cluster port accept failed", "err", err)
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.serveConn(c)
		}()
	}
}

func (t *Transport) serveConn(raw net.Conn) {
	remote := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	c := raw
	if t.tlsConf != nil {
		tc := tls.Server(raw, t.tlsConf)
		if err := tc.Handshake(); err != nil {
			t.log.Warn("rejected cluster connection: TLS handshake failed", "remote", remote, "err", err)
			raw.Close()
			return
		}
		c = tc
	}
	peer, ch, err := serverHandshake(c, t.accept, t.nodeID, t.chans)
	if err != nil {
		t.log.Warn("rejected cluster connection", "remote", remote, "err", err)
		c.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})
	ac, err := t.track(c, peer, ch, false)
	if err != nil {
		c.Close()
		return
	}
	var ok bool
	switch ch {
	case chanRaft:
		ok = t.raftLn.deliver(ac)
	case chanHTTP:
		ok = t.httpLn.deliver(ac)
	case chanForward:
		ok = t.fwdLn.deliver(ac)
	case chanCall:
		ok = t.callLn.deliver(ac)
	}
	if !ok {
		ac.Close()
	}
}

// Dial opens an authenticated connection to a peer's cluster port for the
// given channel.
func (t *Transport) dial(ctx context.Context, addr string, ch byte) (net.Conn, error) {
	d := net.Dialer{KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = raw.SetDeadline(deadline)
	c := raw
	if t.tlsCli != nil {
		cfg := t.tlsCli.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	peer, err := clientHandshake(c, t.key, t.nodeID, ch)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster handshake with %s: %w", addr, err)
	}
	if t.faults != nil && t.faults.dialBlocked(t.nodeID, peer) {
		c.Close()
		return nil, fmt.Errorf("dial %s (%s): %w", addr, peer, errBlocked)
	}
	_ = raw.SetDeadline(time.Time{})
	ac, err := t.track(c, peer, ch, true)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("dial %s (%s): %w", addr, peer, err)
	}
	return ac, nil
}

func (t *Transport) track(c net.Conn, peer string, ch byte, dialed bool) (*authConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, net.ErrClosed
	}
	if t.faults != nil && t.faults.blocked(t.nodeID, peer) {
		return nil, errBlocked
	}
	ac := &authConn{Conn: c, peer: peer, ch: ch, t: t, closed: make(chan struct{}), heard: peerClock(&t.heard, peer)}
	if dialed {
		ac.answered = peerClock(&t.answered, peer)
	}
	t.conns[ac] = struct{}{}
	return ac, nil
}

func (t *Transport) untrack(ac *authConn) {
	t.mu.Lock()
	delete(t.conns, ac)
	t.mu.Unlock()
}

// sever closes every connection to or from peer ("" closes all).
func (t *Transport) sever(peer string) {
	t.mu.Lock()
	var victims []*authConn
	for ac := range t.conns {
		if peer == "" || ac.peer == peer {
			victims = append(victims, ac)
		}
	}
	t.mu.Unlock()
	for _, ac := range victims {
		ac.Close()
	}
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close stops accepting, closes every connection and waits for the accept
// goroutines. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	err := t.ln.Close()
	t.raftLn.Close()
	t.httpLn.Close()
	t.fwdLn.Close()
	t.callLn.Close()
	t.sever("")
	t.wg.Wait()
	if t.faults != nil {
		t.faults.unregister(t)
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// authConn is a connection that passed the handshake.
type authConn struct {
	net.Conn
	peer   string
	ch     byte
	t      *Transport
	once   sync.Once
	closed chan struct{}
	// The deadlines last set, in Unix nanoseconds (0: none), so that a
	// read or write stalled by the fault seam times out as the socket's
	// own would.
	readBy, writeBy atomic.Int64
	heard           *atomic.Int64 // the transport's last-heard time of peer
	answered        *atomic.Int64 // its last-answered time; nil when accepted
}

// Read passes through the fault seam when there is one.
func (c *authConn) Read(p []byte) (int, error) {
	if f := c.t.faults; f != nil {
		if err := f.gate(c.t.nodeID, c.peer, false, c.closed, &c.readBy); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		now := time.Now().UnixNano()
		c.heard.Store(now)
		if c.answered != nil {
			c.answered.Store(now)
		}
	}
	return n, err
}

// peerClock returns peer's clock in m (heard or answered), created on
// first use.
func peerClock(m *sync.Map, peer string) *atomic.Int64 {
	if v, ok := m.Load(peer); ok {
		return v.(*atomic.Int64)
	}
	v, _ := m.LoadOrStore(peer, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// lastHeard is when a byte last came from peer over an authenticated
// connection (zero when never).
func (t *Transport) lastHeard(peer string) time.Time { return clockTime(&t.heard, peer) }

// lastAnswered is when a byte last came from peer over a connection this
// node dialed (zero when never).
func (t *Transport) lastAnswered(peer string) time.Time { return clockTime(&t.answered, peer) }

// clockTime reads peer's clock in m; zero when never set.
func clockTime(m *sync.Map, peer string) time.Time {
	v, ok := m.Load(peer)
	if !ok {
		return time.Time{}
	}
	ns := v.(*atomic.Int64).Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Write passes through the fault seam when there is one.
func (c *authConn) Write(p []byte) (int, error) {
	if f := c.t.faults; f != nil {
		if err := f.gate(c.t.nodeID, c.peer, true, c.closed, &c.writeBy); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.Close()
			}
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

// SetDeadline sets both deadlines on the connection (and for the seam).
func (c *authConn) SetDeadline(t time.Time) error {
	c.readBy.Store(unixNanos(t))
	c.writeBy.Store(unixNanos(t))
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline on the connection (and for the seam).
func (c *authConn) SetReadDeadline(t time.Time) error {
	c.readBy.Store(unixNanos(t))
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline on the connection (and for the seam).
func (c *authConn) SetWriteDeadline(t time.Time) error {
	c.writeBy.Store(unixNanos(t))
	return c.Conn.SetWriteDeadline(t)
}

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// SyscallConn gives the TCP connection under the handshake (and under TLS),
// so a connection pool can see whether the peer closed an idle connection.
func (c *authConn) SyscallConn() (syscall.RawConn, error) {
	raw := c.Conn
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil, errors.New("cluster connection has no system socket")
	}
	return sc.SyscallConn()
}

// Close closes the connection once and forgets it.
func (c *authConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
		c.t.untrack(c)
	})
	return err
}

// serverHandshake runs the server side: send a fresh nonce, check the
// client's MAC over both nonces, its id and channel (one of chans), then
// prove the key back.
// A replayed client message fails because the server nonce is new each time.
func serverHandshake(c net.Conn, keys [][]byte, selfID, chans string) (peer string, ch byte, err error) {
	var ns [nonceLen]byte
	if _, err := rand.Read(ns[:]); err != nil {
		return "", 0, fmt.Errorf("server nonce: %w", err)
	}
	hello := append([]byte(handshakeMagic), ns[:]...)
	if _, err := c.Write(hello); err != nil {
		return "", 0, fmt.Errorf("send challenge: %w", err)
	}
	// client: nonce | idlen | id | chan | mac
	var head [nonceLen + 1]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return "", 0, fmt.Errorf("read client hello: %w", err)
	}
	nc := head[:nonceLen]
	idLen := int(head[nonceLen])
	if idLen == 0 || idLen > maxIDLen {
		return "", 0, errBadMagic
	}
	rest := make([]byte, idLen+1+macLen)
	if _, err := io.ReadFull(c, rest); err != nil {
		return "", 0, fmt.Errorf("read client hello: %w", err)
	}
	id := rest[:idLen]
	ch = rest[idLen]
	mac := rest[idLen+1:]
	var key []byte
	for _, k := range keys {
		// Every key is checked, so the time taken does not tell which matched.
		if hmac.Equal(mac, handshakeMAC(k, "client", ns[:], nc, id, []byte{ch})) && key == nil {
			key = k
		}
	}
	if key == nil {
		return "", 0, errBadMAC
	}
	if strings.IndexByte(chans, ch) < 0 {
		return "", 0, errBadChan
	}
	sid := []byte(selfID)
	reply := append([]byte{byte(len(sid))}, sid...)
	reply = append(reply, handshakeMAC(key, "server", nc, ns[:], sid, nil)...)
	if _, err := c.Write(reply); err != nil {
		return "", 0, fmt.Errorf("send proof: %w", err)
	}
	return string(id), ch, nil
}

// clientHandshake runs the client side and returns the server's node id.
func clientHandshake(c net.Conn, key []byte, selfID string, ch byte) (string, error) {
	var hello [len(handshakeMagic) + nonceLen]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		return "", fmt.Errorf("read challenge: %w", err)
	}
	if string(hello[:len(handshakeMagic)]) != handshakeMagic {
		return "", errBadMagic
	}
	ns := hello[len(handshakeMagic):]
	var nc [nonceLen]byte
	if _, err := rand.Read(nc[:]); err != nil {
		return "", fmt.Errorf("client nonce: %w", err)
	}
	id := []byte(selfID)
	msg := make([]byte, 0, nonceLen+1+len(id)+1+macLen)
	msg = append(msg, nc[:]...)
	msg = append(msg, byte(len(id)))
	msg = append(msg, id...)
	msg = append(msg, ch)
	msg = append(msg, handshakeMAC(key, "client", ns, nc[:], id, []byte{ch})...)
	if _, err := c.Write(msg); err != nil {
		return "", fmt.Errorf("send hello: %w", err)
	}
	var l [1]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return "", fmt.Errorf("server refused the cluster key (connection closed): %w", err)
	}
	if l[0] == 0 || int(l[0]) > maxIDLen {
		return "", errBadMagic
	}
	rest := make([]byte, int(l[0])+macLen)
	if _, err := io.ReadFull(c, rest); err != nil {
		return "", fmt.Errorf("read proof: %w", err)
	}
	sid := rest[:l[0]]
	if !hmac.Equal(rest[l[0]:], handshakeMAC(key, "server", nc[:], ns, sid, nil)) {
		return "", errBadMAC
	}
	return string(sid), nil
}

func handshakeMAC(key []byte, role string, a, b, id, extra []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cohort/1 " + role))
	m.Write(a)
	m.Write(b)
	m.Write([]byte{byte(len(id))})
	m.Write(id)
	m.Write(extra)
	return m.Sum(nil)
}

// namedAddr is an advertised address kept as the operator wrote it.
type namedAddr string

// Network is tcp.
func (namedAddr) Network() string { return "tcp" }

// String is the address as configured.
func (a namedAddr) String() string { return string(a) }

// chanListener is a net.Listener fed by the transport's accept loop.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept waits for the next authenticated connection.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept.
func (l *chanListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

// Addr is the advertised cluster address.
func (l *chanListener) Addr() net.Addr { return l.addr }
