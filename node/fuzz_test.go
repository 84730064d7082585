package node

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cohortserver/cohort/config"
)

// FuzzAdminJSON posts arbitrary bodies to the admin endpoints that decode
// JSON: whatever arrives, the answer is a status with a JSON error, never a
// panic. The node is built but not started, so nothing is applied.
func FuzzAdminJSON(f *testing.F) {
	cfg := config.Default()
	cfg.NodeID = "n1"
	cfg.DataDir = f.TempDir()
	cfg.Logger = nil
	n, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	tok := []byte("fuzz-admin-token-0123456789")
	n.adminToken, n.adminTokens = tok, [][]byte{tok}
	for _, seed := range []string{`{"id":"n2","address":"127.0.0.1:7072"}`, `{"to":"n2"}`, `{`, `[]`, `{"id":1}`, `{"id":"n2","extra":true}`, "\x00"} {
		f.Add(seed)
	}
	paths := []string{"/_cohort/api/nodes", "/_cohort/api/leader/transfer", "/_cohort/api/nodes/n2/drain"}
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range paths {
			req := httptest.NewRequest(http.MethodPost, p, bytes.NewReader([]byte(body)))
			req.Header.Set("Authorization", "Bearer "+string(tok))
			rec := httptest.NewRecorder()
			n.mux.ServeHTTP(rec, req)
			if rec.Code < 400 {
				t.Fatalf("%s %q: HTTP %d on a node that is not running", p, body, rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%s %q: error answered as %q", p, body, ct)
			}
		}
	})
}
