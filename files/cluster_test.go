package files_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/testcluster"
)

// TestBigFileAcrossNodes: a file PUT through n1 reads back with the same
// SHA-256 from n3 right after the answer, Range and HEAD work, and the file
// survives a kill -9 of the writer.
func TestBigFileAcrossNodes(t *testing.T) {
	size := int64(20 << 20)
	if long() {
		size = 200 << 20
	}
	c := testcluster.New(t, 3)
	n1, n3 := c.Node("n1"), c.Node("n3")
	want := sumOf(t, newRand(1, size))

	resp, err := req(t, c, n1, http.MethodPut, "/_cohort/api/files/big/data.bin", newRand(1, size), size)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}

	resp, err = req(t, c, n3, http.MethodGet, "/_cohort/api/files/big/data.bin", nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET on n3: %d", resp.StatusCode)
	}
	if got := sumOf(t, resp.Body); got != want {
		t.Fatalf("n3 served sha256 %s, want %s", got, want)
	}
	resp.Body.Close()
	if resp.Header.Get(files.HeaderSHA256) != want {
		t.Fatalf("%s = %q", files.HeaderSHA256, resp.Header.Get(files.HeaderSHA256))
	}

	// Range.
	resp, err = req(t, c, n3, http.MethodGet, "/_cohort/api/files/big/data.bin", nil, -1, "Range", "bytes=1000-1999")
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	full := make([]byte, 2000)
	io.ReadFull(newRand(1, size), full)
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(full[1000:]) {
		t.Fatalf("Range: %d, %d bytes, content matches: %v", resp.StatusCode, len(part), string(part) == string(full[1000:]))
	}
	// HEAD.
	resp, err = req(t, c, n3, http.MethodHead, "/_cohort/api/files/big/data.bin", nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		t.Fatalf("HEAD: %d length %d", resp.StatusCode, resp.ContentLength)
	}

	// kill -9 of the writer right after the acknowledgement.
	c.Kill("n1")
	for _, id := range []string{"n2", "n3"} {
		nd := c.Node(id)
		waitFor(t, "read after kill from "+id, func() (bool, string) {
			resp, err := req(t, c, nd, http.MethodGet, "/_cohort/api/files/big/data.bin", nil, -1)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				return false, fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			got := sumOf(t, resp.Body)
			return got == want, "sha256 " + got
		})
	}
}

// TestWriterMemoryFlat: the writer streams; what it allocates does not grow
// with the file size.
func TestWriterMemoryFlat(t *testing.T) {
	c := testcluster.New(t, 3)
	st := store(t, c.Node("n1"))
	measure := func(size int64) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := st.Create(t.Context(), fmt.Sprintf("mem/%d", size), newRand(2, size), &files.WriteOptions{Size: size}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, big := int64(4<<20), int64(32<<20)
	if long() {
		big = 200 << 20
	}
	measure(1 << 20) // warm up pools and connections
	a, b := measure(small), measure(big)
	t.Logf("allocated (all 3 in-process nodes): %d KiB for %d MiB, %d KiB for %d MiB", a>>10, small>>20, b>>10, big>>20)
	// Allocation per byte must be a small fraction: the content is never
	// held, only streamed through fixed buffers.
	if b > uint64(big)/4 {
		t.Fatalf("writing %d MiB allocated %d MiB: the content is being buffered", big>>20, b>>20)
	}
}

// TestCatchUpNoResurrection: a node stopped while files are written and
// deleted comes back with exactly the same tree and reports progress.
func TestCatchUpNoResurrection(t *testing.T) {
	nFiles, nDel := 100, 10
	if long() {
		nFiles, nDel = 500, 50
	}
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Files.MirrorDir = filepath.Join(cfg.DataDir, "mirror")
	}))
	n1 := c.Node("n1")
	// Some files every node has, some of which get deleted while n3 is down.
	for i := range nDel {
		if _, err := store(t, n1).Create(t.Context(), fmt.Sprintf("old/%03d", i), strings.NewReader(fmt.Sprint("old ", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "n3 has the old files", func() (bool, string) {
		n := len(tree(t, c.Node("n3")))
		return n == nDel, fmt.Sprint(n, " files")
	})
	c.Stop("n3")
	w := c.Node("n1")
	c.WaitLeader(t)
	for i := range nFiles {
		body := strings.Repeat(fmt.Sprintf("file %d ", i), 1+i%700)
		if i%10 == 0 { // over InlineMax: a blob catch-up must fetch
			body = strings.Repeat(fmt.Sprintf("big file %d ", i), 8000)
		}
		if _, err := store(t, w).Create(t.Context(), fmt.Sprintf("new/%02d/%04d.txt", i%10, i), strings.NewReader(body), nil); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := range nDel {
		if _, err := store(t, w).Remove(t.Context(), fmt.Sprintf("old/%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	want := tree(t, n1)
	if len(want) != nFiles {
		t.Fatalf("n1 has %d files, want %d", len(want), nFiles)
	}
	c.Restart("n3")
	n3 := c.Node("n3")
	waitFor(t, "n3 caught up", func() (bool, string) {
		got := tree(t, n3)
		if len(got) != len(want) {
			return false, fmt.Sprintf("%d files, want %d", len(got), len(want))
		}
		for p, sum := range want {
			if got[p] != sum {
				return false, "differs at " + p
			}
			if _, err := os.Stat(blobPath(n3, sum)); err != nil {
				return false, "blob of " + p + " missing"
			}
		}
		return true, ""
	})
	// The tree can be whole before the pass reports its end, and a blob
	// can also arrive by the leader's retried push: wait for the pass to
	// finish, then ask for what it fetched.
	var st files.Status
	waitFor(t, "n3's catch-up pass finished", func() (bool, string) {
		st = store(t, n3).Status()
		return st.Sync.Passes > 0 && !st.Sync.Running, fmt.Sprintf("%+v", st.Sync)
	})
	t.Logf("n3 catch-up: %+v", st.Sync)
	if st.Sync.FetchedFiles == 0 || st.Sync.FetchedBytes == 0 || st.Sync.DoneFiles != st.Sync.MissingFiles {
		t.Fatalf("no catch-up progress reported: %+v", st.Sync)
	}
	for i := range nDel {
		if _, err := store(t, n3).Stat(t.Context(), fmt.Sprintf("old/%03d", i)); !errors.Is(err, files.ErrNotFound) {
			t.Fatalf("deleted file old/%03d resurrected on n3: %v", i, err)
		}
	}
	// The mirror directory holds exactly the tree.
	mirror := filepath.Join(n3.Node().Config().DataDir, "mirror")
	waitFor(t, "n3 mirror", func() (bool, string) {
		count := 0
		err := filepath.WalkDir(mirror, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(mirror, p)
			if _, ok := want[filepath.ToSlash(rel)]; !ok {
				return fmt.Errorf("unexpected %s", rel)
			}
			count++
			return nil
		})
		if err != nil {
			return false, err.Error()
		}
		return count == len(want), fmt.Sprint(count, " files")
	})
}

// TestCorruptBlobRepaired: a corrupt blob is detected on read (and by the
// scrubber) and replaced by a good copy from a peer.
func TestCorruptBlobRepaired(t *testing.T) {
	c := testcluster.New(t, 3)
	n1, n2, n3 := c.Node("n1"), c.Node("n2"), c.Node("n3")
	small := strings.Repeat("small and precious ", 100)
	in, err := store(t, n1).Create(t.Context(), "c/small.txt", strings.NewReader(small), nil)
	if err != nil {
		t.Fatal(err)
	}
	bigSize := int64(8 << 20)
	bigIn, err := store(t, n1).Create(t.Context(), "c/big.bin", newRand(3, bigSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*testcluster.Node{n2, n3} {
		for _, sum := range []string{in.SHA256, bigIn.SHA256} {
			waitFor(t, "blob on "+nd.ID, func() (bool, string) {
				_, err := os.Stat(blobPath(nd, sum))
				return err == nil, fmt.Sprint(err)
			})
		}
	}
	corrupt := func(nd *testcluster.Node, sum string, at int64) {
		f, err := os.OpenFile(blobPath(nd, sum), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, at)
		b[0] ^= 0xff
		f.WriteAt(b, at)
		f.Close()
	}
	healthy := func(nd *testcluster.Node, sum string) func() (bool, string) {
		return func() (bool, string) {
			f, err := os.Open(blobPath(nd, sum))
			if err != nil {
				return false, err.Error()
			}
			defer f.Close()
			got := sumOf(t, f)
			return got == sum, "blob hashes to " + got
		}
	}

	// Small file on read: verified before serving, served right anyway.
	corrupt(n2, in.SHA256, 5)
	code, body := call(t, c, n2, http.MethodGet, "/_cohort/api/files/c/small.txt", "")
	if code != http.StatusOK || body != small {
		t.Fatalf("read of a corrupt small blob: %d, content right: %v", code, body == small)
	}
	waitFor(t, "small blob repaired on n2", healthy(n2, in.SHA256))

	// Large file on read: the stream is cut short, never served complete.
	corrupt(n2, bigIn.SHA256, bigSize-10)
	resp, err := req(t, c, n2, http.MethodGet, "/_cohort/api/files/c/big.bin", nil, -1)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a corrupt large blob was served as a complete answer")
	}
	waitFor(t, "big blob repaired on n2", healthy(n2, bigIn.SHA256))
	resp, err = req(t, c, n2, http.MethodGet, "/_cohort/api/files/c/big.bin", nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	if got := sumOf(t, resp.Body); got != bigIn.SHA256 {
		t.Fatalf("after repair n2 serves %s", got)
	}
	resp.Body.Close()

	// The scrubber finds one nobody reads.
	corrupt(n3, bigIn.SHA256, 12345)
	sc, err := store(t, n3).ScrubNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if sc.Corrupt == 0 {
		t.Fatalf("scrubber found nothing: %+v", sc)
	}
	waitFor(t, "scrubbed blob repaired on n3", healthy(n3, bigIn.SHA256))
}

// TestKillMidUpload: a writer killed in the middle of an upload leaves no
// visible file anywhere.
func TestKillMidUpload(t *testing.T) {
	c := testcluster.New(t, 3)
	n1 := c.Node("n1")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		resp, err := req(t, c, n1, http.MethodPut, "/_cohort/api/files/partial.bin", pr, 64<<20)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d", resp.StatusCode)
		}
		done <- err
	}()
	src := newRand(4, 8<<20)
	if _, err := io.Copy(pw, src); err != nil {
		t.Fatal(err)
	}
	// 8 of the announced 64 MiB are in; now the writer dies.
	c.Kill("n1")
	pw.CloseWithError(errors.New("client gone"))
	<-done
	for _, id := range []string{"n2", "n3"} {
		nd := c.Node(id)
		waitFor(t, id+" answers", func() (bool, string) {
			code, body := call(t, c, nd, http.MethodGet, "/_cohort/api/files?prefix=", "")
			return code == http.StatusOK, body
		})
		if tr := tree(t, nd); len(tr) != 0 {
			t.Fatalf("%s shows %v after a killed upload", id, tr)
		}
		code, _ := call(t, c, nd, http.MethodGet, "/_cohort/api/files/partial.bin", "")
		if code != http.StatusNotFound {
			t.Fatalf("%s: GET partial.bin = %d", id, code)
		}
	}
	// The two survivors still take writes.
	if code, body := call(t, c, c.Node("n2"), http.MethodPut, "/_cohort/api/files/after.txt", "still here"); code != http.StatusCreated {
		t.Fatalf("write after kill: %d %s", code, body)
	}
}

// TestRefusals: bad paths and quota overruns get a 4xx/507 with a clear
// message and change nothing.
func TestRefusals(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.Files.MaxFileBytes = 1 << 20
		cfg.Files.MaxBytes = 2 << 20
	}))
	n1 := c.Node("n1")
	if code, body := call(t, c, n1, http.MethodPut, "/_cohort/api/files/keep.txt", "keep"); code != http.StatusCreated {
		t.Fatalf("seed: %d %s", code, body)
	}
	before := tree(t, n1)
	tests := []struct {
		name, method, path, body string
		want                     int
		words                    string
	}{
		{"nul byte", "PUT", "/_cohort/api/files/a%00b", "x", 400, "NUL"},
		{"backslash traversal", "PUT", "/_cohort/api/files/..%5C..%5Cetc%5Cpasswd", "x", 400, "backslash"},
		{"invalid utf-8", "PUT", "/_cohort/api/files/%FF%FE", "x", 400, "UTF-8"},
		{"control char", "PUT", "/_cohort/api/files/a%0Ab", "x", 400, "control"},
		{"segment too long", "PUT", "/_cohort/api/files/" + strings.Repeat("y", 300), "x", 400, "longer"},
		{"bad listing prefix", "GET", "/_cohort/api/files?prefix=../", "", 400, ".."},
		{"file over the per-file limit", "PUT", "/_cohort/api/files/huge.bin", strings.Repeat("z", 1<<20+1), 413, "--files-max-file-bytes"},
		{"bad If-Match", "PUT", "/_cohort/api/files/keep.txt", "x", 400, "If-Match"},
		{"file under a file", "PUT", "/_cohort/api/files/keep.txt/inner", "x", 409, "is a file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.name == "bad If-Match" {
				hdr = []string{"If-Match", "banana"}
			}
			code, body := call(t, c, n1, tt.method, tt.path, tt.body, hdr...)
			if code != tt.want {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
			if msg := errorBody(t, body); !strings.Contains(msg, tt.words) {
				t.Fatalf("message %q does not say %q", msg, tt.words)
			}
		})
	}
	// Traversal with dot segments never reaches a handler as such: the
	// router cleans the path (301 to a path outside the files API, which
	// answers 404), and the Go API refuses it.
	resp, err := req(t, c, n1, http.MethodPut, "/_cohort/api/files/../../../etc/passwd", strings.NewReader("x"), 1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 300 || resp.StatusCode >= 500 {
		t.Fatalf("dot-dot traversal answered %d", resp.StatusCode)
	}
	if _, err := store(t, n1).Create(t.Context(), "../../etc/passwd", strings.NewReader("x"), nil); !errors.Is(err, files.ErrBadPath) {
		t.Fatalf("Go API accepted a traversal: %v", err)
	}
	// Total quota: 2 MiB; two files of 768 KiB fit, a third does not.
	chunk := strings.Repeat("x", 768<<10)
	for _, name := range []string{"one.bin", "two.bin"} {
		if code, body := call(t, c, n1, http.MethodPut, "/_cohort/api/files/"+name, chunk); code != http.StatusCreated {
			t.Fatalf("%s: %d %s", name, code, body)
		}
	}
	code, body := call(t, c, n1, http.MethodPut, "/_cohort/api/files/three.bin", chunk)
	if code != http.StatusInsufficientStorage || !strings.Contains(errorBody(t, body), "--files-max-bytes") {
		t.Fatalf("over total quota: %d %s", code, body)
	}
	// Streaming without a length is refused at commit.
	_, err = store(t, n1).Create(t.Context(), "four.bin", io.MultiReader(strings.NewReader(chunk)), nil)
	if !errors.Is(err, files.ErrQuotaExceeded) {
		t.Fatalf("streamed write over quota: %v", err)
	}
	after := tree(t, n1)
	if len(after) != len(before)+2 || after["keep.txt"] != before["keep.txt"] {
		t.Fatalf("refusals changed the tree: %v", after)
	}
}

// TestVersionsRenameWatch: compare-and-set, rename, delete tombstones and
// the watch API.
func TestVersionsRenameWatch(t *testing.T) {
	c := testcluster.New(t, 3)
	n1, n2 := c.Node("n1"), c.Node("n2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, err := store(t, n2).Watch(ctx, "conf/")
	if err != nil {
		t.Fatal(err)
	}
	code, body := call(t, c, n1, http.MethodPut, "/_cohort/api/files/conf/app.yaml", "v: 1", "If-None-Match", "*")
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	in, err := store(t, n1).Stat(t.Context(), "conf/app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, c, n2, http.MethodPut, "/_cohort/api/files/conf/app.yaml", "v: 2", "If-None-Match", "*"); code != http.StatusPreconditionFailed {
		t.Fatalf("second create-only: %d %s", code, body)
	}
	if code, body := call(t, c, n2, http.MethodPut, "/_cohort/api/files/conf/app.yaml", "v: 2", "If-Match", fmt.Sprintf(`"%d"`, in.Version+100)); code != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d %s", code, body)
	}
	if code, body := call(t, c, n2, http.MethodPut, "/_cohort/api/files/conf/app.yaml", "v: 2", "If-Match", fmt.Sprintf(`"%d"`, in.Version)); code != http.StatusOK {
		t.Fatalf("If-Match: %d %s", code, body)
	}
	if code, body := call(t, c, n2, http.MethodGet, "/_cohort/api/files/conf/app.yaml", ""); code != 200 || body != "v: 2" {
		t.Fatalf("read back: %d %q", code, body)
	}
	if code, body := call(t, c, n1, http.MethodPost, "/_cohort/api/files/conf/app.yaml?rename_to=conf/old.yaml", ""); code != 200 {
		t.Fatalf("rename: %d %s", code, body)
	}
	if code, body := call(t, c, n2, http.MethodDelete, "/_cohort/api/files/conf/old.yaml", ""); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _ := call(t, c, n1, http.MethodGet, "/_cohort/api/files/conf/old.yaml", ""); code != 404 {
		t.Fatalf("deleted file answers %d", code)
	}
	var got []string
	for len(got) < 5 {
		select {
		case ev := <-events:
			got = append(got, fmt.Sprintf("%s deleted=%v", ev.Info.Path, ev.Info.Deleted))
		case <-time.After(30 * time.Second):
			t.Fatalf("watch got only %v", got)
		}
	}
	want := []string{"conf/app.yaml deleted=false", "conf/app.yaml deleted=false", "conf/app.yaml deleted=true", "conf/old.yaml deleted=false", "conf/old.yaml deleted=true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watch events %v, want %v", got, want)
	}
	code, body = call(t, c, n1, http.MethodGet, "/_cohort/api/files?prefix=conf/&deleted=1", "")
	if code != 200 || !strings.Contains(body, `"deleted":true`) {
		t.Fatalf("listing with tombstones: %d %s", code, body)
	}
}

// TestWriterAndJoin: the io.Writer API, and a node that joins later
// fetches every blob it lacks.
func TestWriterAndJoin(t *testing.T) {
	c := testcluster.New(t, 3)
	st := store(t, c.Node("n2"))
	for i := range 6 {
		w := st.Writer(t.Context(), fmt.Sprintf("w/%d.bin", i), nil)
		if _, err := io.Copy(w, newRand(uint64(10+i), int64(i)*50_000)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if w.Info().Size != int64(i)*50_000 {
			t.Fatalf("writer stored %d bytes", w.Info().Size)
		}
	}
	aborted := st.Writer(t.Context(), "w/aborted.bin", nil)
	aborted.Write([]byte("half"))
	aborted.Abort()
	want := tree(t, c.Node("n1"))
	if _, ok := want["w/aborted.bin"]; ok || len(want) != 6 {
		t.Fatalf("tree after writes: %v", want)
	}
	// A snapshot makes the inline blobs durable (Persist fsyncs them).
	for _, nd := range c.Running() {
		if err := nd.Node().Cluster().Snapshot(); err != nil {
			t.Fatalf("snapshot on %s: %v", nd.ID, err)
		}
	}
	n4 := c.AddNode(t)
	waitFor(t, "n4 has every file and blob", func() (bool, string) {
		got := tree(t, n4)
		if len(got) != len(want) {
			return false, fmt.Sprint(len(got), " files")
		}
		for p, sum := range want {
			if _, err := os.Stat(blobPath(n4, sum)); err != nil || got[p] != sum {
				return false, "missing " + p
			}
		}
		return true, ""
	})
}
