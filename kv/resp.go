package kv

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/raft"
	"github.com/tidwall/redcon"
)

// RESPConfig configures the Redis protocol server.
type RESPConfig struct {
	Addr string
	// Password is what AUTH must present (user "default"); empty means no
	// AUTH is needed (allowed on loopback only, the caller checks).
	Password string
	// AdminToken, presented as AUTH admin TOKEN, allows FLUSHDB.
	AdminToken func(token string) bool
	TLS        *tls.Config
	// Timeout bounds each command's wait for the cluster (default 10 s).
	Timeout time.Duration
	// WriteTimeout closes a client that does not read its replies
	// (default 30 s).
	WriteTimeout time.Duration
	NodeID       string
	Logger       *slog.Logger
}

// Counters counts one protocol's commands and errors.
type Counters struct {
	Commands    atomic.Int64
	Errors      atomic.Int64
	Connections atomic.Int64
}

// RESPServer serves the Redis protocol over a Store.
type RESPServer struct {
	cfg    RESPConfig
	store  *Store
	log    *slog.Logger
	ln     net.Listener
	srv    *redcon.Server
	hub    *hub
	nextID atomic.Int64
	stats  Counters
	open   atomic.Int64 // connections open now

	mu       sync.Mutex
	detached map[*client]bool
	closed   bool
	done     chan struct{}
}

// NewRESPServer returns a server; Start listens.
func NewRESPServer(store *Store, cfg RESPConfig) *RESPServer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &RESPServer{cfg: cfg, store: store, log: cfg.Logger, hub: newHub(), detached: make(map[*client]bool), done: make(chan struct{})}
	store.SetPublisher(s.hub.publish)
	return s
}

// SetTLS makes Start serve TLS with conf. Call it before Start.
func (s *RESPServer) SetTLS(conf *tls.Config) { s.cfg.TLS = conf }

// Counters returns the server's counters.
func (s *RESPServer) Counters() *Counters { return &s.stats }

// Addr is the address listened on (after Start).
func (s *RESPServer) Addr() string { return s.ln.Addr().String() }

// maxRequest bounds the bytes a client may send for one command before it
// is complete: beyond, the connection gets an error and is closed. It is
// kept small because redcon parses an incomplete command again from its
// start after every read: the cost of a giant command grows with its
// square (a 20 MB MSET stalled a node long enough to lose its leadership).
func (s *RESPServer) maxRequest() int64 {
	return 2*s.store.MaxValue() + 1<<20
}

// Start listens and serves in the background.
func (s *RESPServer) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("redis listener: %w", err)
	}
	s.ln = ln
	inner := ln
	if s.cfg.TLS != nil {
		inner = tls.NewListener(ln, s.cfg.TLS)
	}
	// The limits wrap the TLS connection, so that handle can reset the
	// request count on the connection redcon hands it.
	l := &limitListener{Listener: inner, max: s.maxRequest(), writeTimeout: s.cfg.WriteTimeout, proto: "ERR Protocol error: too big request"}
	s.srv = redcon.NewServerNetwork("tcp", s.cfg.Addr, s.handle, s.accept, s.closedConn)
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil {
			s.log.Error("redis server stopped", "err", err)
		}
	}()
	return nil
}

// Close stops listening and closes every connection.
func (s *RESPServer) Close() error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	s.mu.Lock()
	s.closed = true
	for c := range s.detached {
		c.dconn.NetConn().Close()
	}
	s.mu.Unlock()
	return err
}

// client is one connection's protocol state.
type client struct {
	id       int64
	proto    int
	authed   bool
	admin    bool
	db       byte
	name     string
	addr     string
	multi    bool
	multiErr bool
	queued   [][][]byte
	watches  []watch
	watchIdx uint64

	rawName []byte // the command name as the client sent it

	// pub/sub (detached connections only)
	dconn redcon.DetachedConn
	sub   *subscriber
}

func (s *RESPServer) accept(conn redcon.Conn) bool {
	s.stats.Connections.Add(1)
	s.open.Add(1)
	c := &client{id: s.nextID.Add(1), proto: 2, authed: s.cfg.Password == "", addr: conn.RemoteAddr()}
	conn.SetContext(c)
	return true
}

func (s *RESPServer) closedConn(conn redcon.Conn, _ error) {
	if c, ok := conn.Context().(*client); !ok || c.dconn == nil {
		s.open.Add(-1) // a detached (pub/sub) connection counts until it ends
	}
}

func (s *RESPServer) handle(conn redcon.Conn, cmd redcon.Command) {
	if lc, ok := conn.NetConn().(interface{ resetCount() }); ok {
		lc.resetCount()
	}
	c := conn.Context().(*client)
	args := cmd.Args
	c.rawName = args[0]
	name := strings.ToUpper(string(args[0]))
	args[0] = []byte(name)
	if c.authed && !c.multi {
		switch name {
		case "SUBSCRIBE", "PSUBSCRIBE":
			s.startPubSub(conn, c, args)
			return
		}
	}
	if c.authed && !c.multi && plainData(args) {
		if pipe := conn.PeekPipeline(); len(pipe) > 0 && allPlainData(pipe) {
			all := [][][]byte{args}
			for _, p := range conn.ReadPipeline() {
				p.Args[0] = bytes.ToUpper(p.Args[0])
				all = append(all, p.Args)
			}
			conn.WriteRaw(s.runPipeline(c, all))
			return
		}
	}
	out, closeConn := s.dispatch(c, args, nil)
	conn.WriteRaw(out)
	if closeConn {
		conn.Close()
	}
}

// plainData reports whether args (upper-case name) is a data command with
// the right arity that may run in a pipeline batch.
func plainData(args [][]byte) bool {
	name := string(args[0])
	spec, ok := lookupCommand(name)
	return ok && arityOK(spec, len(args)) && !strings.HasPrefix(name, "MC.") && name != "FLUSHDB"
}

func allPlainData(cmds []redcon.Command) bool {
	for _, c := range cmds {
		up := append([][]byte{bytes.ToUpper(c.Args[0])}, c.Args[1:]...)
		if !plainData(up) {
			return false
		}
	}
	return true
}

// runPipeline answers pipelined data commands in order: each run of
// consecutive writes is one operation of one entry (so their order holds
// and they share one commit), each run of reads one sync.
func (s *RESPServer) runPipeline(c *client, cmds [][][]byte) []byte {
	var out []byte
	reply := func(r Reply) {
		s.stats.Commands.Add(1)
		if r.Kind == kindErr {
			s.stats.Errors.Add(1)
		}
		out = appendRESP(out, r, c.proto)
	}
	for len(cmds) > 0 {
		write := commands[string(cmds[0][0])].write(cmds[0])
		n := 1
		for n < len(cmds) && commands[string(cmds[n][0])].write(cmds[n]) == write {
			n++
		}
		run := cmds[:n]
		cmds = cmds[n:]
		ctx, cancel := s.ctx()
		if write {
			r, err := s.store.Exec(ctx, c.db, 0, nil, run)
			for i, a := range run {
				switch {
				case err != nil:
					reply(clusterErr(err))
				case i >= len(r.Arr):
					reply(rErr("ERR missing reply"))
				case string(a[0]) == "PUBLISH" && !r.Arr[i].IsErr():
					reply(rInt(int64(s.hub.count(a[1]))))
				default:
					reply(r.Arr[i])
				}
			}
		} else {
			rs, err := s.store.Read(ctx, c.db, run)
			for i := range run {
				if err != nil {
					reply(clusterErr(err))
				} else {
					reply(rs[i])
				}
			}
		}
		cancel()
	}
	return out
}

// dispatch runs one command and appends its reply to out; closeConn asks
// for the connection to be closed after the reply (QUIT).
func (s *RESPServer) dispatch(c *client, args [][]byte, out []byte) ([]byte, bool) {
	s.stats.Commands.Add(1)
	r, closeConn := s.command(c, args)
	if r.Kind == kindErr {
		s.stats.Errors.Add(1)
	}
	return appendRESP(out, r, c.proto), closeConn
}

func (s *RESPServer) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	return s.store.bound(ctx, "redis"), cancel
}

// clusterErr is the Redis error for a failure of the cluster.
func clusterErr(err error) Reply {
	if msg, ok := raft.RefusalMessage(err); ok {
		return rErr("CLUSTERDOWN " + msg)
	}
	switch {
	case errors.Is(err, raft.ErrOutcomeUnknown):
		return rErr("TRYAGAIN the outcome of this write is unknown (the leader changed while it was in flight); read before retrying: " + err.Error())
	case errors.Is(err, ErrUnavailable), errors.Is(err, raft.ErrNoLeader):
		return rErr("CLUSTERDOWN " + err.Error())
	}
	return rErr("ERR " + err.Error())
}

const (
	redisVersion = "7.2.0"
	errNoAuth    = "NOAUTH Authentication required."
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
)

func (s *RESPServer) command(c *client, args [][]byte) (Reply, bool) {
	name := string(args[0])
	if !c.authed {
		switch name {
		case "AUTH", "HELLO", "QUIT", "RESET":
		default:
			return rErr(errNoAuth), false
		}
	}
	if c.multi {
		switch name {
		case "EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET":
		default:
			spec, ok := lookupCommand(name)
			switch {
			case !ok || strings.HasPrefix(name, "MC."):
				c.multiErr = true
				return c.unknown(args), false
			case !arityOK(spec, len(args)):
				c.multiErr = true
				return errArity(name), false
			case name == "FLUSHDB" && !c.admin:
				c.multiErr = true
				return noPerm(name), false
			}
			c.queued = append(c.queued, args)
			return rStatus("QUEUED"), false
		}
	}
	switch name {
	case "PING":
		if len(args) > 2 {
			return errArity(name), false
		}
		if len(args) == 2 {
			return rBulk(args[1]), false
		}
		return rStatus("PONG"), false
	case "ECHO":
		if len(args) != 2 {
			return errArity(name), false
		}
		return rBulk(args[1]), false
	case "QUIT":
		return rOK(), true
	case "RESET":
		*c = client{id: c.id, proto: 2, authed: s.cfg.Password == "", addr: c.addr, dconn: c.dconn, sub: c.sub}
		return rStatus("RESET"), false
	case "AUTH":
		return s.auth(c, args[1:]), false
	case "HELLO":
		return s.hello(c, args), false
	case "SELECT":
		if len(args) != 2 {
			return errArity(name), false
		}
		n, ok := parseInt(args[1])
		if !ok {
			return rErr(errNotInt), false
		}
		if n < 0 || n >= NumDBs {
			return rErr("ERR DB index is out of range"), false
		}
		c.db = byte(n)
		return rOK(), false
	case "CLIENT":
		return s.clientCmd(c, args), false
	case "INFO":
		return s.info(), false
	case "COMMAND":
		if len(args) >= 2 && strings.EqualFold(string(args[1]), "COUNT") {
			return rInt(int64(len(commands))), false
		}
		if len(args) >= 2 && strings.EqualFold(string(args[1]), "DOCS") {
			return Reply{Kind: kindMap}, false
		}
		return rArr(nil), false
	case "MULTI":
		if c.multi {
			return rErr("ERR MULTI calls can not be nested"), false
		}
		c.multi, c.multiErr, c.queued = true, false, nil
		return rOK(), false
	case "DISCARD":
		if !c.multi {
			return rErr("ERR DISCARD without MULTI"), false
		}
		c.multi, c.queued, c.watches = false, nil, nil
		return rOK(), false
	case "WATCH":
		if c.multi {
			return rErr("ERR WATCH inside MULTI is not allowed"), false
		}
		if len(args) < 2 {
			return errArity(name), false
		}
		for _, k := range args[1:] {
			rev, idx := s.store.Watch(c.db, k)
			if len(c.watches) == 0 || idx < c.watchIdx {
				c.watchIdx = idx
			}
			c.watches = append(c.watches, watch{key: bytes.Clone(k), rev: rev})
		}
		return rOK(), false
	case "UNWATCH":
		c.watches = nil
		return rOK(), false
	case "EXEC":
		if !c.multi {
			return rErr("ERR EXEC without MULTI"), false
		}
		queued, watches, failed := c.queued, c.watches, c.multiErr
		c.multi, c.queued, c.watches, c.multiErr = false, nil, nil, false
		if failed {
			return rErr("EXECABORT Transaction discarded because of previous errors."), false
		}
		ctx, cancel := s.ctx()
		defer cancel()
		r, err := s.store.Exec(ctx, c.db, c.watchIdx, watches, queued)
		if err != nil {
			return clusterErr(err), false
		}
		return r, false
	case "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE":
		return s.pubsubCmd(c, args), false
	case "FLUSHDB", "FLUSHALL":
		if !c.admin {
			return noPerm(name), false
		}
		if name == "FLUSHALL" {
			return rErr("ERR FLUSHALL is not supported; FLUSHDB each database"), false
		}
		args = args[:1] // ASYNC/SYNC make no difference here
	}
	if _, ok := lookupCommand(name); !ok || strings.HasPrefix(name, "MC.") {
		return c.unknown(args), false
	}
	ctx, cancel := s.ctx()
	defer cancel()
	r, err := s.store.Do(ctx, c.db, args)
	if err != nil {
		return clusterErr(err), false
	}
	if name == "PUBLISH" && !r.IsErr() {
		r = rInt(int64(s.hub.count(args[1])))
	}
	return r, false
}

func noPerm(name string) Reply {
	return rErrf("NOPERM this user has no permissions to run the '%s' command (AUTH admin <admin token> first)", strings.ToLower(name))
}

func (s *RESPServer) auth(c *client, a [][]byte) Reply {
	var user, pass string
	switch len(a) {
	case 1:
		user, pass = "default", string(a[0])
	case 2:
		user, pass = string(a[0]), string(a[1])
	default:
		return errArity("auth")
	}
	switch user {
	case "admin":
		if s.cfg.AdminToken != nil && s.cfg.AdminToken(pass) {
			c.authed, c.admin = true, true
			return rOK()
		}
	case "default":
		if s.cfg.Password == "" {
			if len(a) == 1 {
				return rErr("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
			}
			c.authed = true
			return rOK()
		}
		if subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password)) == 1 {
			c.authed = true
			return rOK()
		}
	}
	return rErr(errWrongPass)
}

func (s *RESPServer) hello(c *client, args [][]byte) Reply {
	proto := c.proto
	if len(args) >= 2 {
		v, ok := parseInt(args[1])
		if !ok {
			return rErr("ERR Protocol version is not an integer or out of range")
		}
		if v != 2 && v != 3 {
			return rErr("NOPROTO unsupported protocol version")
		}
		proto = int(v)
	}
	for i := 2; i < len(args); i++ {
		switch strings.ToUpper(string(args[i])) {
		case "AUTH":
			if i+2 >= len(args) {
				return rErr(errSyntax)
			}
			if r := s.auth(c, args[i+1:i+3]); r.IsErr() {
				return r
			}
			i += 2
		case "SETNAME":
			if i+1 >= len(args) {
				return rErr(errSyntax)
			}
			c.name = string(args[i+1])
			i++
		default:
			return rErr(errSyntax)
		}
	}
	if !c.authed {
		return rErr(errNoAuth)
	}
	c.proto = proto
	kv := func(k string, v Reply) []Reply { return []Reply{rBulk([]byte(k)), v} }
	var m []Reply
	m = append(m, kv("server", rBulk([]byte("redis")))...)
	m = append(m, kv("version", rBulk([]byte(redisVersion)))...)
	m = append(m, kv("proto", rInt(int64(proto)))...)
	m = append(m, kv("id", rInt(c.id))...)
	m = append(m, kv("mode", rBulk([]byte("standalone")))...)
	m = append(m, kv("role", rBulk([]byte("master")))...)
	m = append(m, kv("modules", rArr(nil))...)
	return Reply{Kind: kindMap, Arr: m}
}

func (s *RESPServer) clientCmd(c *client, args [][]byte) Reply {
	if len(args) < 2 {
		return errArity("client")
	}
	switch sub := strings.ToUpper(string(args[1])); sub {
	case "SETNAME":
		if len(args) != 3 {
			return errArity("client|setname")
		}
		c.name = string(args[2])
		return rOK()
	case "GETNAME":
		if c.name == "" {
			return rNil()
		}
		return rBulk([]byte(c.name))
	case "ID":
		return rInt(c.id)
	case "INFO", "LIST":
		return rBulk(fmt.Appendf(nil, "id=%d addr=%s name=%s db=%d resp=%d\n", c.id, c.addr, c.name, c.db, c.proto))
	case "SETINFO", "NO-EVICT", "NO-TOUCH":
		return rOK()
	default:
		return rErrf("ERR unknown subcommand '%s'. Try CLIENT HELP.", args[1])
	}
}

func (s *RESPServer) info() Reply {
	st := s.store.Stats()
	var b strings.Builder
	fmt.Fprintf(&b, "# Server\r\nredis_version:%s\r\nredis_mode:standalone\r\ncohort_node:%s\r\n", redisVersion, s.cfg.NodeID)
	fmt.Fprintf(&b, "\r\n# Clients\r\nconnected_clients:%d\r\n", s.open.Load())
	fmt.Fprintf(&b, "\r\n# Memory\r\nused_memory:%d\r\nmaxmemory:%d\r\n", st.UsedBytes, st.MaxBytes)
	fmt.Fprintf(&b, "\r\n# Persistence\r\nloading:0\r\n")
	fmt.Fprintf(&b, "\r\n# Stats\r\ntotal_commands_processed:%d\r\n", s.stats.Commands.Load())
	fmt.Fprintf(&b, "\r\n# Replication\r\nrole:master\r\n")
	fmt.Fprintf(&b, "\r\n# Keyspace\r\n")
	for db := range NumDBs {
		if n := s.store.Local(byte(db), [][]byte{[]byte("DBSIZE")}).Int; n > 0 {
			fmt.Fprintf(&b, "db%d:keys=%d,expires=0,avg_ttl=0\r\n", db, n)
		}
	}
	return rBulk([]byte(b.String()))
}

// ---- pub/sub

// subscriber is a connection in pub/sub mode. Messages are queued by
// Apply (never blocking it); a client that falls more than the queue
// behind is disconnected, as Redis does past its pub/sub output limit.
type subscriber struct {
	out      chan []byte
	proto    int
	channels map[string]bool
	patterns map[string]bool
	gone     chan struct{}
	goneOnce sync.Once
}

func (sub *subscriber) drop() { sub.goneOnce.Do(func() { close(sub.gone) }) }

type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*subscriber]bool
	patterns map[string]map[*subscriber]bool
}

func newHub() *hub {
	return &hub{channels: make(map[string]map[*subscriber]bool), patterns: make(map[string]map[*subscriber]bool)}
}

func appendPush(b []byte, proto int, parts ...Reply) []byte {
	r := rArr(parts)
	if proto >= 3 {
		b = append(b, '>')
		b = strconv.AppendInt(b, int64(len(parts)), 10)
		b = append(b, '\r', '\n')
		for _, p := range parts {
			b = appendRESP(b, p, proto)
		}
		return b
	}
	return appendRESP(b, r, proto)
}

func (h *hub) publish(channel, msg []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for sub := range h.channels[string(channel)] {
		sub.send(appendPush(nil, sub.proto, rBulk([]byte("message")), rBulk(channel), rBulk(msg)))
	}
	for pat, subs := range h.patterns {
		if !matchGlob(pat, string(channel)) {
			continue
		}
		for sub := range subs {
			sub.send(appendPush(nil, sub.proto, rBulk([]byte("pmessage")), rBulk([]byte(pat)), rBulk(channel), rBulk(msg)))
		}
	}
}

func (sub *subscriber) send(frame []byte) {
	select {
	case sub.out <- frame:
	default:
		sub.drop()
	}
}

func (h *hub) count(channel []byte) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := len(h.channels[string(channel)])
	for pat, subs := range h.patterns {
		if matchGlob(pat, string(channel)) {
			n += len(subs)
		}
	}
	return n
}

func (h *hub) set(m map[string]map[*subscriber]bool, name string, sub *subscriber, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		if m[name] == nil {
			m[name] = make(map[*subscriber]bool)
		}
		m[name][sub] = true
		return
	}
	delete(m[name], sub)
	if len(m[name]) == 0 {
		delete(m, name)
	}
}

// pubsubCmd runs (P)(UN)SUBSCRIBE for a detached client.
func (s *RESPServer) pubsubCmd(c *client, args [][]byte) Reply {
	sub := c.sub
	if sub == nil {
		return rErr("ERR pub/sub needs a connection of its own")
	}
	name := string(args[0])
	pattern := name[0] == 'P'
	mine, hubMap, kind := sub.channels, s.hub.channels, "subscribe"
	if pattern {
		mine, hubMap, kind = sub.patterns, s.hub.patterns, "psubscribe"
	}
	on := !strings.Contains(name, "UNSUB")
	if !on {
		kind = "un" + kind
	}
	targets := args[1:]
	if len(targets) == 0 {
		if on {
			return errArity(name)
		}
		for n := range mine {
			targets = append(targets, []byte(n))
		}
	}
	var frames []byte
	for _, t := range targets {
		if on {
			mine[string(t)] = true
		} else {
			delete(mine, string(t))
		}
		s.hub.set(hubMap, string(t), sub, on)
		frames = appendPush(frames, c.proto, rBulk([]byte(kind)), rBulk(t), rInt(int64(len(sub.channels)+len(sub.patterns))))
	}
	if len(targets) == 0 { // unsubscribe with nothing subscribed
		frames = appendPush(frames, c.proto, rBulk([]byte(kind)), rNil(), rInt(0))
	}
	return Reply{Kind: kindRaw, Str: frames}
}

// startPubSub detaches the connection: from now on a goroutine of its own
// reads its commands, and another writes the messages Apply queues.
func (s *RESPServer) startPubSub(conn redcon.Conn, c *client, first [][]byte) {
	c.dconn = conn.Detach()
	c.sub = &subscriber{out: make(chan []byte, 4096), proto: c.proto, channels: map[string]bool{}, patterns: map[string]bool{}, gone: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.dconn.NetConn().Close()
		return
	}
	s.detached[c] = true
	s.mu.Unlock()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		c.dconn.WriteRaw(b)
		return c.dconn.Flush()
	}
	finish := func() {
		s.open.Add(-1)
		c.sub.drop()
		for ch := range c.sub.channels {
			s.hub.set(s.hub.channels, ch, c.sub, false)
		}
		for p := range c.sub.patterns {
			s.hub.set(s.hub.patterns, p, c.sub, false)
		}
		c.dconn.NetConn().Close()
		s.mu.Lock()
		delete(s.detached, c)
		s.mu.Unlock()
	}
	go func() { // writer
		for {
			select {
			case f := <-c.sub.out:
				if write(f) != nil {
					c.dconn.NetConn().Close()
					return
				}
			case <-c.sub.gone:
				c.dconn.NetConn().Close()
				return
			}
		}
	}()
	go func() { // reader
		defer finish()
		args := first
		for {
			name := string(args[0])
			var out []byte
			var quit bool
			subscribed := len(c.sub.channels)+len(c.sub.patterns) > 0
			switch {
			case name == "PING" && c.proto < 3 && subscribed:
				msg := []byte{}
				if len(args) > 1 {
					msg = args[1]
				}
				out = appendRESP(nil, rArr([]Reply{rBulk([]byte("pong")), rBulk(msg)}), c.proto)
			case c.proto < 3 && subscribed && !isPubSubCmd(name):
				out = appendRESP(nil, rErrf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", strings.ToLower(name)), c.proto)
			default:
				r, q := s.command(c, args)
				quit = q
				s.stats.Commands.Add(1)
				if r.Kind == kindRaw {
					out = r.Str
				} else {
					out = appendRESP(nil, r, c.proto)
				}
			}
			if write(out) != nil || quit {
				return
			}
			cmd, err := c.dconn.ReadCommand()
			if err != nil {
				return
			}
			args = cmd.Args
			c.rawName = args[0]
			args[0] = bytes.ToUpper(args[0])
		}
	}()
}

func isPubSubCmd(name string) bool {
	switch name {
	case "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "PING", "QUIT", "RESET":
		return true
	}
	return false
}

// ---- connection limits

// limitListener wraps accepted connections: a client may send at most max
// bytes toward one command (reset at each command), and each write must
// finish within writeTimeout.
type limitListener struct {
	net.Listener
	max          int64
	writeTimeout time.Duration
	proto        string // the protocol's error line for an oversized request
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

type limitConn struct {
	net.Conn
	l    *limitListener
	read atomic.Int64
}

var errTooBigRequest = errors.New("request too big")

func (c *limitConn) resetCount() { c.read.Store(0) }

func (c *limitConn) Read(p []byte) (int, error) {
	if c.l.max > 0 && c.read.Load() > c.l.max {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn.Write([]byte("-" + c.l.proto + "\r\n"))
		return 0, errTooBigRequest
	}
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *limitConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.l.writeTimeout))
	return c.Conn.Write(p)
}

// unknown is Redis' error for an unknown command, with the name as sent.
func (c *client) unknown(args [][]byte) Reply {
	named := append([][]byte{c.rawName}, args[1:]...)
	if c.rawName == nil {
		named[0] = args[0]
	}
	return unknownCommand(named)
}
