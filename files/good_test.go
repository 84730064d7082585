package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
)

// TestGoodBlobs: a blob ingested here is known good until its file
// changes; a check that passes makes it good again; quarantine forgets it.
func TestGoodBlobs(t *testing.T) {
	b := newBlobStore(t.TempDir())
	if err := b.open(); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("good "), 1000)
	raw := sha256.Sum256(content)
	sum := hex.EncodeToString(raw[:])
	if _, err := b.ingest(context.Background(), bytes.NewReader(content), ingestOpts{}); err != nil {
		t.Fatal(err)
	}
	good := func() bool {
		t.Helper()
		f, err := b.openBlob(sum)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return b.good.is(sum, f)
	}
	if !good() {
		t.Fatal("a blob just ingested is not known good")
	}
	// The same bytes written back: the content is right, but the file
	// changed, so it is no longer known good.
	if err := os.WriteFile(b.path(sum), content, 0o640); err != nil {
		t.Fatal(err)
	}
	if good() {
		t.Fatal("a blob whose file was written since is still known good")
	}
	if _, err := b.verify(context.Background(), sum, 0); err != nil {
		t.Fatal(err)
	}
	if !good() {
		t.Fatal("a blob that passed its check is not known good")
	}
	if err := b.quarantine(sum); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.good.m.Load(sum); ok {
		t.Fatal("a quarantined blob is still recorded as good")
	}
}
