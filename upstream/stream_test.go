package upstream

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestUpgradeAndStreamingPassThrough checks what a Go handler could do
// behind the front: an upgraded connection (websocket-style) carries bytes
// both ways, and a streamed answer reaches the client before it ends.
func TestUpgradeAndStreamingPassThrough(t *testing.T) {
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws":
			if r.Header.Get("Upgrade") != "echo" {
				http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
				return
			}
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			line, _ := brw.ReadString('\n')
			_, _ = io.WriteString(c, "echo: "+line)
		case "/stream":
			w.Header().Set("Content-Type", "application/x-ndjson") // no automatic flush in ReverseProxy
			_, _ = io.WriteString(w, "data: first\n\n")
			_ = http.NewResponseController(w).Flush()
			<-release
			_, _ = io.WriteString(w, "data: last\n\n")
		}
	})
	p, _ := newProxy(t, app, nil)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)

	c, err := net.DialTimeout("tcp", front.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the proxy: %v %v", res, err)
	}
	fmt.Fprintf(c, "hello\n")
	if line, _ := br.ReadString('\n'); line != "echo: hello\n" {
		t.Fatalf("upgraded connection answered %q", line)
	}

	res, err = http.Get(front.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, len("data: first\n\n"))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(res.Body, first); got <- err }()
	select {
	case err := <-got:
		if err != nil || string(first) != "data: first\n\n" {
			t.Fatalf("first event: %q %v", first, err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the first part of a streamed answer did not reach the client before the answer ended")
	}
	close(release)
	rest, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(rest), "data: last") {
		t.Fatalf("rest of the stream %q", rest)
	}
}
