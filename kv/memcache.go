package kv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/raft"
)

// MemcacheConfig configures the memcached text protocol server.
type MemcacheConfig struct {
	Addr         string
	Timeout      time.Duration // each command's wait for the cluster (default 10 s)
	WriteTimeout time.Duration // a client that does not read is closed (default 30 s)
	Logger       *slog.Logger
}

// MemcacheServer serves the memcached text protocol over a Store, in its
// own namespace.
type MemcacheServer struct {
	cfg   MemcacheConfig
	store *Store
	log   *slog.Logger
	ln    net.Listener
	stats Counters
	start time.Time

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// NewMemcacheServer returns a server; Start listens.
func NewMemcacheServer(store *Store, cfg MemcacheConfig) *MemcacheServer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &MemcacheServer{cfg: cfg, store: store, log: cfg.Logger, conns: make(map[net.Conn]bool)}
}

// Counters returns the server's counters.
func (s *MemcacheServer) Counters() *Counters { return &s.stats }

// Addr is the address listened on (after Start).
func (s *MemcacheServer) Addr() string { return s.ln.Addr().String() }

// Start listens and serves in the background.
func (s *MemcacheServer) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("memcached listener: %w", err)
	}
	s.ln = &limitListener{Listener: ln, writeTimeout: s.cfg.WriteTimeout}
	s.start = time.Now()
	s.wg.Add(1)
	go s.serve()
	return nil
}

// Close stops listening and closes every connection.
func (s *MemcacheServer) Close() error {
	if s.ln == nil {
		return nil
	}
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *MemcacheServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("memcached accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.stats.Connections.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			s.serveConn(c, c)
		}()
	}
}

// maxLine bounds a command line (memcached's is 2048 bytes; keys are at
// most 250 bytes).
const (
	maxLine   = 2048
	maxKeyLen = 250
)

var errCloseConn = errors.New("close the connection")

// serveConn runs the text protocol on one connection until it ends.
func (s *MemcacheServer) serveConn(r io.Reader, w io.Writer) {
	br := bufio.NewReaderSize(r, 16<<10)
	bw := bufio.NewWriterSize(w, 16<<10)
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				bw.WriteString("CLIENT_ERROR line too long\r\n")
				bw.Flush()
			}
			return
		}
		if err := s.execute(br, bw, line); err != nil {
			bw.Flush()
			return
		}
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line ending in \n (the \r is optional, as memcached
// accepts) of at most maxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, errLineTooLong
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
	return line, nil
}

func (s *MemcacheServer) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	return s.store.bound(ctx, "memcached"), cancel
}

func (s *MemcacheServer) serverErr(bw *bufio.Writer, err error) {
	s.stats.Errors.Add(1)
	msg := err.Error()
	if m, ok := raft.RefusalMessage(err); ok {
		msg = m
	}
	fmt.Fprintf(bw, "SERVER_ERROR %s\r\n", oneLine(msg))
}

func oneLine(m string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, []byte(m)))
}

func (s *MemcacheServer) clientErr(bw *bufio.Writer, msg string) {
	s.stats.Errors.Add(1)
	bw.WriteString("CLIENT_ERROR " + msg + "\r\n")
}

func validKey(k []byte) bool {
	if len(k) == 0 || len(k) > maxKeyLen {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// writeReply writes a store reply: statuses as they are, errors mapped to
// memcached's own texts.
func (s *MemcacheServer) writeReply(bw *bufio.Writer, r Reply) {
	switch r.Kind {
	case kindStatus:
		bw.Write(r.Str)
	case kindBulk:
		bw.Write(r.Str)
	case kindErr:
		s.stats.Errors.Add(1)
		msg := string(r.Str)
		switch {
		case msg == errOOM:
			msg = mcOOM
		case bytes.HasPrefix(r.Str, []byte("CLIENT_ERROR")), bytes.HasPrefix(r.Str, []byte("SERVER_ERROR")), msg == "ERROR":
		default:
			msg = "SERVER_ERROR " + msg
		}
		bw.WriteString(msg)
	default:
		bw.WriteString("SERVER_ERROR unexpected reply")
	}
	bw.WriteString("\r\n")
}

func (s *MemcacheServer) execute(br *bufio.Reader, bw *bufio.Writer, line []byte) error {
	f := bytes.Fields(line)
	if len(f) == 0 {
		bw.WriteString("ERROR\r\n")
		return nil
	}
	s.stats.Commands.Add(1)
	cmd := string(f[0])
	noreply := len(f) > 1 && string(f[len(f)-1]) == "noreply"
	if noreply {
		f = f[:len(f)-1]
	}
	out := bw
	if noreply {
		out = bufio.NewWriter(io.Discard)
	}
	switch cmd {
	case "get", "gets":
		return s.get(bw, f[1:], cmd == "gets", nil)
	case "gat", "gats":
		if len(f) < 3 {
			bw.WriteString("ERROR\r\n")
			return nil
		}
		return s.get(bw, f[2:], cmd == "gats", f[1])
	case "set", "add", "replace", "append", "prepend", "cas":
		return s.storeCmd(br, out, bw, cmd, f)
	case "delete":
		if len(f) < 2 || len(f) > 3 || !validKey(f[1]) || (len(f) == 3 && string(f[2]) != "0") {
			s.clientErr(bw, "bad command line format.  Usage: delete <key> [noreply]")
			return nil
		}
		s.do(out, "MC.DEL", f[1])
	case "incr", "decr":
		if len(f) != 3 || !validKey(f[1]) {
			bw.WriteString("ERROR\r\n")
			return nil
		}
		dir := "+"
		if cmd == "decr" {
			dir = "-"
		}
		s.do(out, "MC.INCR", f[1], f[2], []byte(dir))
	case "touch":
		if len(f) != 3 || !validKey(f[1]) {
			bw.WriteString("ERROR\r\n")
			return nil
		}
		s.do(out, "MC.TOUCH", f[1], f[2])
	case "flush_all":
		delay := []byte("0")
		if len(f) == 2 {
			delay = f[1]
		} else if len(f) > 2 {
			bw.WriteString("ERROR\r\n")
			return nil
		}
		s.do(out, "MC.FLUSH", delay)
	case "version":
		fmt.Fprintf(bw, "VERSION 1.6.21-cohort-%s\r\n", buildinfo.Version)
	case "verbosity":
		out.WriteString("OK\r\n")
	case "stats":
		s.writeStats(bw)
	case "quit":
		return errCloseConn
	default:
		s.stats.Errors.Add(1)
		bw.WriteString("ERROR\r\n")
	}
	return nil
}

func (s *MemcacheServer) do(bw *bufio.Writer, name string, rest ...[]byte) {
	ctx, cancel := s.ctx()
	defer cancel()
	args := append([][]byte{[]byte(name)}, rest...)
	r, err := s.store.Do(ctx, nsMemcached, args)
	if err != nil {
		s.serverErr(bw, err)
		return
	}
	s.writeReply(bw, r)
}

// get answers get/gets, and gat/gats when exptime is set (one entry
// touches every key).
func (s *MemcacheServer) get(bw *bufio.Writer, keys [][]byte, withCas bool, exptime []byte) error {
	if len(keys) == 0 {
		bw.WriteString("ERROR\r\n")
		return nil
	}
	for _, k := range keys {
		if !validKey(k) {
			s.clientErr(bw, "bad command line format")
			return nil
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var replies []Reply
	if exptime != nil {
		if _, err := strconv.ParseInt(string(exptime), 10, 64); err != nil {
			s.clientErr(bw, "invalid exptime argument")
			return nil
		}
		cmds := make([][][]byte, len(keys))
		for i, k := range keys {
			cmds[i] = [][]byte{[]byte("MC.GAT"), k, exptime}
		}
		r, err := s.store.Exec(ctx, nsMemcached, 0, nil, cmds)
		if err != nil {
			s.serverErr(bw, err)
			return nil
		}
		replies = r.Arr
	} else {
		cmds := make([][][]byte, len(keys))
		for i, k := range keys {
			cmds[i] = [][]byte{[]byte("MC.GET"), k}
		}
		var err error
		if replies, err = s.store.Read(ctx, nsMemcached, cmds); err != nil {
			s.serverErr(bw, err)
			return nil
		}
	}
	for i, r := range replies {
		if r.Kind != kindArray || len(r.Arr) != 3 {
			continue
		}
		fmt.Fprintf(bw, "VALUE %s %d %d", keys[i], r.Arr[1].Int, len(r.Arr[0].Str))
		if withCas {
			fmt.Fprintf(bw, " %d", r.Arr[2].Int)
		}
		bw.WriteString("\r\n")
		bw.Write(r.Arr[0].Str)
		bw.WriteString("\r\n")
	}
	bw.WriteString("END\r\n")
	return nil
}

// storeCmd reads the data block of a storage command and commits it.
func (s *MemcacheServer) storeCmd(br *bufio.Reader, out, bw *bufio.Writer, cmd string, f [][]byte) error {
	want := 5
	if cmd == "cas" {
		want = 6
	}
	if len(f) != want || !validKey(f[1]) {
		s.clientErr(bw, "bad command line format")
		return errCloseConn // the data block that may follow cannot be told from commands
	}
	n, err := strconv.ParseInt(string(f[4]), 10, 64)
	_, ferr := strconv.ParseUint(string(f[2]), 10, 32)
	_, eerr := strconv.ParseInt(string(f[3]), 10, 64)
	if err != nil || n < 0 || ferr != nil || eerr != nil {
		s.clientErr(bw, "bad command line format")
		return errCloseConn
	}
	if n > s.store.MaxValue() {
		// Swallow the data as memcached does, then refuse.
		if _, err := io.CopyN(io.Discard, br, n+2); err != nil {
			return err
		}
		s.stats.Errors.Add(1)
		bw.WriteString(mcTooLarge + "\r\n")
		return nil
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(br, data); err != nil {
		return err
	}
	if data[n] != '\r' || data[n+1] != '\n' {
		s.clientErr(bw, "bad data chunk")
		return errCloseConn
	}
	cas := []byte("0")
	if cmd == "cas" {
		if _, err := strconv.ParseUint(string(f[5]), 10, 64); err != nil {
			s.clientErr(bw, "bad command line format")
			return nil
		}
		cas = f[5]
	}
	s.do(out, "MC.STORE", []byte(cmd), f[1], f[2], f[3], cas, data[:n])
	return nil
}

func (s *MemcacheServer) writeStats(bw *bufio.Writer) {
	st := s.store.Stats()
	now := time.Now()
	stat := func(k string, v any) { fmt.Fprintf(bw, "STAT %s %v\r\n", k, v) }
	stat("pid", 0)
	stat("uptime", int64(now.Sub(s.start).Seconds()))
	stat("time", now.Unix())
	stat("version", "1.6.21-cohort-"+buildinfo.Version)
	stat("curr_connections", s.stats.Connections.Load())
	stat("cmd_total", s.stats.Commands.Load())
	stat("errors", s.stats.Errors.Load())
	stat("curr_items", s.store.Local(nsMemcached, [][]byte{[]byte("DBSIZE")}).Int)
	stat("bytes", st.UsedBytes)
	stat("limit_maxbytes", st.MaxBytes)
	bw.WriteString("END\r\n")
}
