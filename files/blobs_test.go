package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func newTestBlobs(t *testing.T) *blobStore {
	t.Helper()
	b := newBlobStore(t.TempDir())
	if err := b.open(); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(p []byte) string {
	s := sha256.Sum256(p)
	return hex.EncodeToString(s[:])
}

// tmpLeft lists what ingest left in the temp directory.
func tmpLeft(t *testing.T, b *blobStore) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(b.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// TestIngestDeclared: a sealed stream is kept under the sender's SHA-256
// when its CRC-32C matches, and refused, with nothing kept, when a byte
// changed on the way or the trailers are missing or malformed.
func TestIngestDeclared(t *testing.T) {
	content := bytes.Repeat([]byte("cohort blob "), 100_000)
	sum, crc := sha(content), crc32.Checksum(content, castagnoli)
	declare := func(sum string, crc uint32, err error) func() (string, uint32, error) {
		return func() (string, uint32, error) { return sum, crc, err }
	}

	t.Run("intact", func(t *testing.T) {
		b := newTestBlobs(t)
		var completed string
		res, err := b.ingest(context.Background(), bytes.NewReader(content), ingestOpts{
			declared: declare(sum, crc, nil),
			complete: func(s string) { completed = s },
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.SHA256 != sum || res.Size != int64(len(content)) || completed != sum {
			t.Fatalf("got %+v, completed %q; want %s, %d bytes", res, completed, sum, len(content))
		}
		got, err := os.ReadFile(b.path(sum))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("stored blob differs (err %v)", err)
		}
	})

	damaged := bytes.Clone(content)
	damaged[len(damaged)/2] ^= 0x40
	for _, tc := range []struct {
		name     string
		body     []byte
		declared func() (string, uint32, error)
		want     string
	}{
		{"byte changed in transfer", damaged, declare(sum, crc, nil), "damaged in transfer"},
		{"trailers missing", content, declare("", 0, errors.New("the push ended without its checksum trailers")), "without its checksum trailers"},
		{"bad sum", content, declare("not-a-sum", crc, nil), "no valid sha-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBlobs(t)
			_, err := b.ingest(context.Background(), bytes.NewReader(tc.body), ingestOpts{
				declared: tc.declared,
				complete: func(string) { t.Error("complete called for refused content") },
			})
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err = %v, want ErrCorrupt saying %q", err, tc.want)
			}
			if b.has(sum) {
				t.Fatal("refused content was kept")
			}
			if left := tmpLeft(t, b); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}

	t.Run("expect wins over declared", func(t *testing.T) {
		b := newTestBlobs(t)
		other := sha([]byte("other"))
		_, err := b.ingest(context.Background(), bytes.NewReader(content), ingestOpts{
			expect:   other,
			declared: declare(other, crc, nil),
		})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v: a known hash must be checked by hashing", err)
		}
	})
}

// corrupting flips one byte of what passes through it, after the layer
// below computed its checksum: damage on the wire.
type corrupting struct {
	r    io.Reader
	at   int64
	seen int64
}

func (c *corrupting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.at >= c.seen && c.at < c.seen+int64(n) {
		p[c.at-c.seen] ^= 0x01
	}
	c.seen += int64(n)
	return n, err
}

// TestSealedPushOverHTTP: the trailers a sealed body fills at its end cross
// a real net/http round trip, and a byte changed after the sender's
// checksum is refused by the receiver.
func TestSealedPushOverHTTP(t *testing.T) {
	content := bytes.Repeat([]byte{1, 2, 3, 5, 8, 13, 21}, 300_000)
	sum := sha(content)
	b := newTestBlobs(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, sealed := r.Trailer[trailerCRC]; !sealed {
			http.Error(w, "not sealed", http.StatusBadRequest)
			return
		}
		res, err := b.ingest(r.Context(), r.Body, ingestOpts{
			declared: func() (string, uint32, error) { return declaredBy(r.Trailer) },
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprint(w, res.SHA256)
	}))
	defer srv.Close()

	send := func(damageAt int64) (int, string) {
		t.Helper()
		seal := new(sealedSum)
		pr, pw := io.Pipe()
		go func() {
			pw.Write(content)
			seal.set(sum) // as the writer does once it has hashed the last byte
			pw.Close()
		}()
		trailer := http.Header{trailerSum: nil, trailerCRC: nil}
		var body io.Reader = &sealedBody{r: pr, seal: seal, trailer: trailer}
		if damageAt >= 0 {
			body = &corrupting{r: body, at: damageAt}
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Trailer = trailer
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}

	if code, msg := send(int64(len(content)) - 3); code != http.StatusUnprocessableEntity || !bytes.Contains([]byte(msg), []byte("damaged in transfer")) {
		t.Fatalf("damaged push: %d %s", code, msg)
	}
	if b.has(sum) {
		t.Fatal("damaged push was kept")
	}
	if code, msg := send(-1); code != http.StatusOK || msg != sum {
		t.Fatalf("intact push: %d %s", code, msg)
	}
	if got, err := os.ReadFile(b.path(sum)); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("stored blob differs (err %v)", err)
	}
}

// TestWriteInline: a small blob from the log is stored under its hash with
// nothing left in the temp directory; writing it again (another entry with
// the same content, a reader's flush racing the queue) writes nothing and
// leaves the blob there untouched (same inode: its good-blob mark holds).
func TestWriteInline(t *testing.T) {
	b := newTestBlobs(t)
	data := []byte("a small file carried in the Raft log\n")
	sum := sha(data)
	wrote, err := b.writeInline(sum, data)
	if err != nil || !wrote {
		t.Fatalf("first write: wrote %v, err %v", wrote, err)
	}
	before, err := os.Stat(b.path(sum))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b.path(sum)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob holds %q (err %v), want %q", got, err, data)
	}
	wrote, err = b.writeInline(sum, data)
	if err != nil || wrote {
		t.Fatalf("second write: wrote %v, err %v; want nothing written", wrote, err)
	}
	after, err := os.Stat(b.path(sum))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the second write replaced the blob")
	}
	if left := tmpLeft(t, b); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	empty := sha(nil)
	if wrote, err := b.writeInline(empty, nil); err != nil || !wrote {
		t.Fatalf("empty blob: wrote %v, err %v", wrote, err)
	}
	if fi, err := os.Stat(b.path(empty)); err != nil || fi.Size() != 0 {
		t.Fatalf("empty blob: %v, %v", fi, err)
	}
}

// BenchmarkWriteInline stores distinct 4 KiB blobs as every node does on
// applying a small file committed in the log.
func BenchmarkWriteInline(b *testing.B) {
	bs := newBlobStore(b.TempDir())
	if err := bs.open(); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.LittleEndian.PutUint64(data, uint64(i))
		if _, err := bs.writeInline(sha(data), data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFetchOfAQueuedInlineBlob: a peer fetching the blob of a small file
// that this node applied but has not written yet (the inline queue writes
// it in the background) gets the content, not "blob not here".
func TestFetchOfAQueuedInlineBlob(t *testing.T) {
	b := newTestBlobs(t)
	s := &Store{blobs: b, inline: newInlineQueue(b)}
	content := []byte("a small file carried in the log")
	sum := sha(content)
	s.inline.pending[sum] = content // as add does while the writer runs

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/blobs/"+sum, nil)
	req.SetPathValue("sum", sum)
	s.handleFetch(rec, req)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content) {
		t.Fatalf("fetch of a queued inline blob: %d %q", rec.Code, rec.Body.String())
	}
	if s.inline.queued(sum) || !b.has(sum) {
		t.Fatalf("the fetch did not write the queued blob (queued %v, stored %v)", s.inline.queued(sum), b.has(sum))
	}
}
