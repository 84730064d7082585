package files_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/testcluster"
)

// long reports whether the full-size acceptance runs (COHORT_LONG=1).
func long() bool { return os.Getenv("COHORT_LONG") == "1" }

// randReader is size bytes of seeded pseudo-random content, generated as
// it is read (never held in memory).
type randReader struct {
	r    *rand.ChaCha8
	left int64
}

func newRand(seed uint64, size int64) *randReader {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return &randReader{r: rand.NewChaCha8(s), left: size}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, _ := r.r.Read(p)
	r.left -= int64(n)
	return n, nil
}

func sumOf(t testing.TB, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func store(t testing.TB, nd *testcluster.Node) *files.Store {
	t.Helper()
	n := nd.Node()
	if n == nil {
		t.Fatalf("node %s is not running", nd.ID)
	}
	return n.Files()
}

// req sends an admin request with a raw body and headers.
func req(t testing.TB, c *testcluster.Cluster, nd *testcluster.Node, method, path string, body io.Reader, size int64, hdr ...string) (*http.Response, error) {
	t.Helper()
	r, err := http.NewRequest(method, nd.URL(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if size >= 0 && body != nil {
		r.ContentLength = size
	}
	r.Header.Set("Authorization", "Bearer "+c.Token())
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return http.DefaultClient.Do(r)
}

// call is req that reads the whole answer.
func call(t testing.TB, c *testcluster.Cluster, nd *testcluster.Node, method, path string, body string, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	size := int64(-1)
	if body != "" || method == http.MethodPut {
		rd, size = strings.NewReader(body), int64(len(body))
	}
	resp, err := req(t, c, nd, method, path, rd, size, hdr...)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, nd.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// tree is a node's live files: path -> sha256.
func tree(t testing.TB, nd *testcluster.Node) map[string]string {
	t.Helper()
	list, err := store(t, nd).List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(list))
	for _, in := range list {
		out[in.Path] = in.SHA256
	}
	return out
}

func blobPath(nd *testcluster.Node, sum string) string {
	return filepath.Join(nd.Node().Config().DataDir, "files", "blobs", sum[:2], sum)
}

func errorBody(t testing.TB, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("answer %q is not a JSON error", body)
	}
	return e.Error
}

func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	testcluster.WaitFor(t, 60*time.Second, func() (bool, string) {
		ok, last := cond()
		return ok, fmt.Sprintf("%s: %s", what, last)
	})
}
