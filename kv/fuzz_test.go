package kv

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/tidwall/redcon"
)

// checkRESP reads one RESP2/RESP3 reply frame from r and fails on
// anything malformed: the oracle of FuzzRESPCommands.
func checkRESP(r *bufio.Reader, depth int) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return errors.New("line without CRLF: " + strconv.Quote(line))
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+', '-':
		if bytes.ContainsAny([]byte(body), "\r\n") {
			return errors.New("simple string with CR or LF")
		}
		return nil
	case ':':
		_, err := strconv.ParseInt(body, 10, 64)
		return err
	case '_':
		return nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return errors.New("bad bulk length " + body)
		}
		if n == -1 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return errors.New("bulk without CRLF")
		}
		return nil
	case '*', '%', '~', '>':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || depth > 10 {
			return errors.New("bad aggregate length " + body)
		}
		if line[0] == '%' {
			n *= 2
		}
		for range n {
			if err := checkRESP(r, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unknown reply type " + strconv.Quote(line[:1]))
}

// FuzzRESPCommands feeds arbitrary bytes through redcon's reader and the
// server's command handling on a local store: every command must get
// exactly one well-formed reply, and nothing may panic.
func FuzzRESPCommands(f *testing.F) {
	for _, seed := range []string{
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*1\r\n$4\r\nEXEC\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n",
		"*5\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\nw\r\n",
		"PING\r\nECHO \"a b\"\r\n",
		"*2\r\n$4\r\nPING\r\n$2\r\na\nb\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$-5\r\nv\r\n",
		"*1\r\n$3\r\nFOO\r\n",
		"*4\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$1\r\na\r\n$1\r\nb\r\n*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$2\r\n-5\r\n$1\r\n9\r\n*3\r\n$4\r\nLPOP\r\n$1\r\nl\r\n$1\r\n5\r\n",
		"*1\r\n$3\r\nA\nB\r\n",
		"*4\r\n$3\r\nSET\r\n$1\r\ne\r\n$1\r\nv\r\n$2\r\nEX\r\n",
		"*3\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nCOUNT\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := newLocal(Config{MaxValue: 64, MaxMemory: 1 << 16}, time.Now)
	defer s.Close()
	srv := NewRESPServer(s, RESPConfig{Timeout: time.Second})
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := redcon.NewReader(bytes.NewReader(in))
		c := &client{id: 1, proto: 2, authed: true}
		for {
			cmds, err := rd.ReadCommands()
			if err != nil {
				break
			}
			for _, cmd := range cmds {
				args := cmd.Args
				c.rawName = args[0]
				args[0] = bytes.ToUpper(args[0])
				if isPubSubCmd(string(args[0])) && string(args[0]) != "PING" {
					continue // needs a connection of its own
				}
				out, _ := srv.dispatch(c, args, nil)
				br := bufio.NewReader(bytes.NewReader(out))
				if err := checkRESP(br, 0); err != nil {
					t.Fatalf("reply to %q is malformed: %v\n%q", args, err, out)
				}
				if br.Buffered() != 0 {
					t.Fatalf("reply to %q has %d bytes after the frame: %q", args, br.Buffered(), out)
				}
			}
		}
	})
}

// FuzzMemcacheProtocol runs arbitrary bytes through the memcached text
// server on a local store: it must not panic, must end, and every line it
// writes must end in CRLF.
func FuzzMemcacheProtocol(f *testing.F) {
	for _, seed := range []string{
		"set k 5 0 3\r\nabc\r\nget k\r\n",
		"set k 0 0 3 noreply\r\nabc\r\ngets k\r\ncas k 0 0 1 1\r\nx\r\n",
		"incr n 5\r\nset n 0 0 1\r\n9\r\nincr n 18446744073709551615\r\ndecr n 100\r\n",
		"append k 0 0 2\r\nxy\r\nprepend k 0 0 1\r\nz\r\ntouch k 10\r\ngat 100 k\r\n",
		"set k 0 0 99999999999\r\n",
		"set k 0 0 2\r\nabcdef\r\n",
		"delete k\r\nflush_all\r\nstats\r\nversion\r\nverbosity 1\r\nquit\r\n",
		"get " + string(bytes.Repeat([]byte("k"), 300)) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := newLocal(Config{MaxValue: 64, MaxMemory: 1 << 16}, time.Now)
	defer s.Close()
	srv := NewMemcacheServer(s, MemcacheConfig{Timeout: time.Second})
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		srv.serveConn(bytes.NewReader(in), &out)
		// Data blocks echo stored bytes, so check only the frame of the
		// last line.
		if b := out.Bytes(); len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
			t.Fatalf("output does not end in CRLF: %q", b)
		}
	})
}
