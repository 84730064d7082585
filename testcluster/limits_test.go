package testcluster_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

// TestPublicPortLimits checks the hostile-input limits of the public port:
// each case would pass if its protection were removed.
func TestPublicPortLimits(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Nodes()[0]

	t.Run("oversized headers get 431", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, nd.URL("/_cohort/health"), nil)
		req.Header.Set("X-Big", strings.Repeat("a", 200<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("HTTP %d, want 431", resp.StatusCode)
		}
	})

	t.Run("oversized admin JSON is refused with a JSON error", func(t *testing.T) {
		body := bytes.NewReader([]byte(`{"id":"n9","address":"` + strings.Repeat("x", 2<<20) + `"}`))
		req, _ := http.NewRequest(http.MethodPost, nd.URL("/_cohort/api/nodes"), body)
		req.Header.Set("Authorization", "Bearer "+c.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("HTTP %d, want 400 or 413", resp.StatusCode)
		}
	})

	t.Run("unknown JSON fields are refused", func(t *testing.T) {
		code, b := nd.Do(t, http.MethodPost, "/_cohort/api/leader/transfer", map[string]string{"too": "n1"})
		if code != http.StatusBadRequest || !strings.Contains(string(b), "unknown field") {
			t.Fatalf("HTTP %d %s", code, b)
		}
	})

	t.Run("a client that never finishes its headers is cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", nd.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /_cohort/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		_, err = bufio.NewReader(conn).ReadString('\n')
		if err == nil {
			// Go answers 408 or closes; either ends the slow request.
			t.Logf("server answered the slow client after %s", time.Since(start).Round(time.Second))
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("server kept a half-sent request open for 30 s")
		}
	})

	t.Run("bad node ids are refused with a reason", func(t *testing.T) {
		code, b := nd.Do(t, http.MethodPost, "/_cohort/api/nodes", map[string]string{"id": "../etc", "address": "127.0.0.1:1"})
		if code != http.StatusBadRequest || !strings.Contains(string(b), "must match") {
			t.Fatalf("HTTP %d %s", code, b)
		}
	})
}

func TestTraversalPathsGetAClearError(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Nodes()[0]
	for _, path := range []string{"/_cohort/api/files/a/../../etc/passwd", "/_cohort/api/files/./x", "/demo/api/files/..", "/a/%2e%2e/b"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+nd.HTTPAddr+path, nil)
		req.URL.Opaque = path // send the path as written, not cleaned by the client
		req.Header.Set("Authorization", "Bearer "+c.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", path, resp.StatusCode)
		}
	}
}
