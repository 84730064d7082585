package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/testcluster"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "cohort test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "public.crt"), filepath.Join(dir, "public.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestPublicTLSAndHTTP2 serves the public port over TLS: clients speak
// HTTP/2, the session cookie is Secure, a session entering any node is
// still served by its owner, a certificate renewed on disk is served
// without a restart, and plain HTTP on the TLS port is refused.
func TestPublicTLSAndHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
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
	dir := t.TempDir()
	newCert, newKey, newPool := selfSigned(t, dir)
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
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
