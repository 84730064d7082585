package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/testcert"
	"github.com/cohortserver/cohort/testcluster"
)

// TestPublicTLSAndHTTP2 serves the public port over TLS: clients speak
// HTTP/2, the session cookie is Secure, a session entering any node is
// still served by its owner, a certificate renewed on disk is served
// without a restart, and plain HTTP on the TLS port is refused.
func TestPublicTLSAndHTTP2(t *testing.T) {
	dir := t.TempDir()
	first := testcert.Write(t, filepath.Join(dir, "public.crt"), filepath.Join(dir, "public.key"))
	certFile, keyFile, pool := first.CertFile, first.KeyFile, first.Pool
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Front.PublicTLSCertFile, cfg.Front.PublicTLSKeyFile = certFile, keyFile
	}))
	waitMembers(t, c)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	nodes := c.Nodes()
	call := func(method string, nd *testcluster.Node) (count int, node string, resp *http.Response) {
		t.Helper()
		req, err := http.NewRequest(method, "https://"+nd.HTTPAddr+"/demo/api/counter", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err = cl.Do(req)
		if err != nil {
			t.Fatalf("%s through %s: %v", method, nd.ID, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body struct {
			Count int    `json:"count"`
			Node  string `json:"node"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &body) != nil {
			t.Fatalf("%s through %s: HTTP %d %s", method, nd.ID, resp.StatusCode, b)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s through %s answered over %s, want HTTP/2", method, nd.ID, resp.Proto)
		}
		return body.Count, body.Node, resp
	}

	want, owner, resp := call(http.MethodPost, nodes[0])
	var setCookie string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, cookieName+"=") {
			setCookie = v
		}
	}
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(setCookie, attr) {
			t.Fatalf("session cookie over TLS lacks %s: %q", attr, setCookie)
		}
	}
	for i := range 9 {
		nd := nodes[i%3]
		if n, node, _ := call(http.MethodGet, nd); node != owner || n != want {
			t.Fatalf("GET through %s over TLS: node %s count %d, want %s with %d", nd.ID, node, n, owner, want)
		}
	}

	// A renewed certificate written over the files serves the next
	// handshakes without a restart.
	served := func(pool *x509.CertPool) (string, error) {
		conn, err := tls.Dial("tcp", nodes[1].HTTPAddr, &tls.Config{RootCAs: pool})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	old, err := served(pool)
	if err != nil {
		t.Fatal(err)
	}
	newPool := testcert.Write(t, certFile, keyFile).Pool
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		got, err := served(newPool)
		if err != nil {
			return false, err.Error()
		}
		return got != old, "still serving serial " + got
	})

	plain, err := http.Get("http://" + nodes[0].HTTPAddr + "/demo/api/counter")
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain HTTP on the TLS port: HTTP %d, want 400", plain.StatusCode)
	}
}
