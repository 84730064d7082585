package kv

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/testcert"
	"github.com/cohortserver/cohort/internal/testport"
)

// startRESP serves a local store on a loopback port.
func startRESP(t *testing.T, cfg RESPConfig) (*RESPServer, *Store) {
	t.Helper()
	st := newLocal(Config{}, time.Now)
	cfg.Addr = testport.Addr(t)
	srv := NewRESPServer(st, cfg)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); st.Close() })
	return srv, st
}

// exchange sends raw bytes and reads n reply lines' worth of frames.
func exchange(t *testing.T, addr, send string, frames int) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(send)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []string
	for range frames {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "$") && l != "$-1" {
			v, _ := br.ReadString('\n')
			l = strings.TrimSpace(v)
		}
		out = append(out, l)
	}
	return out
}

func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func TestPipelineKeepsOrder(t *testing.T) {
	srv, st := startRESP(t, RESPConfig{})
	send := resp("SET", "a", "1") + resp("INCR", "a") + resp("GET", "a") + resp("INCRBY", "a", "10") +
		resp("GET", "a") + resp("DEL", "a") + resp("GET", "a") + resp("NOPE")
	got := exchange(t, srv.Addr(), send, 8)
	want := []string{"+OK", ":2", "2", ":12", "12", ":1", "$-1", "-ERR unknown command 'NOPE', with args beginning with:"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("pipeline answered %q, want %q", got, want)
	}
	if s := st.Stats(); s.Batches > 4 {
		t.Errorf("%d entries for a pipeline of 4 writes in 2 runs", s.Batches)
	}
}

func TestAuthAndAdmin(t *testing.T) {
	srv, _ := startRESP(t, RESPConfig{Password: "secret-pass", AdminToken: func(tok string) bool { return tok == "admin-token" }})
	got := exchange(t, srv.Addr(), resp("GET", "a")+resp("AUTH", "wrong")+resp("AUTH", "secret-pass")+resp("FLUSHDB")+
		resp("AUTH", "admin", "admin-token")+resp("FLUSHDB")+resp("MC.GET", "k"), 7)
	want := []string{errNoAuth, "-" + errWrongPass[0:], "+OK", "-NOPERM", "+OK", "+OK", "-ERR unknown command 'MC.GET'"}
	for i := range want {
		if !strings.HasPrefix(got[i], strings.TrimPrefix(want[i], "")) && !strings.HasPrefix(got[i], "-"+want[i]) {
			t.Errorf("reply %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pair := testcert.Write(t, dir+"/cert.pem", dir+"/key.pem")
	cert, err := tls.LoadX509KeyPair(dir+"/cert.pem", dir+"/key.pem")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startRESP(t, RESPConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	c, err := tls.Dial("tcp", srv.Addr(), &tls.Config{RootCAs: pair.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	// More than one request limit's worth of commands on one connection:
	// the count must reset per command behind TLS too.
	val := strings.Repeat("v", 512<<10)
	for i := 0; i < 8; i++ {
		if _, err := c.Write([]byte(resp("SET", "k", val))); err != nil {
			t.Fatal(err)
		}
		if l, err := br.ReadString('\n'); err != nil || l != "+OK\r\n" {
			t.Fatalf("SET %d over TLS: %q, %v", i, l, err)
		}
	}
}
