package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

func blobSection(blobs ...[]byte) (string, []string) {
	var b strings.Builder
	var sums []string
	var total int
	for _, c := range blobs {
		h := sha256.Sum256(c)
		sum := hex.EncodeToString(h[:])
		sums = append(sums, sum)
		fmt.Fprintf(&b, "blob %s %d\n%s", sum, len(c), c)
		total += len(c)
	}
	fmt.Fprintf(&b, "end %d %d 0\n", len(blobs), total)
	return b.String(), sums
}

// TestRestoreBlobs: a blob section restores into a blob store with every
// blob verified; a truncated section, a wrong end record and content that
// does not match its hash are refused.
func TestRestoreBlobs(t *testing.T) {
	ctx := context.Background()
	sec, sums := blobSection([]byte("hello"), bytes.Repeat([]byte("x"), 3*copyBuf+7), nil)
	dir := t.TempDir()
	got, err := RestoreBlobs(ctx, dir, bufio.NewReader(strings.NewReader(sec)))
	if err != nil || got.Blobs != 3 || got.Bytes != int64(5+3*copyBuf+7) {
		t.Fatalf("restore: %+v, %v", got, err)
	}
	b := newBlobStore(dir)
	for _, s := range sums {
		if _, err := os.Stat(b.path(s)); err != nil {
			t.Errorf("blob %s not restored: %v", s[:12], err)
		}
	}
	for name, bad := range map[string]string{
		"truncated in a blob": sec[:40+len(sums[0])],
		"no end record":       sec[:strings.LastIndex(sec, "end ")],
		"end record differs":  strings.Replace(sec, "end 3 ", "end 4 ", 1),
		"content changed":     strings.Replace(sec, "hello", "jello", 1),
		"unknown record":      "bogus\n" + sec,
	} {
		if _, err := RestoreBlobs(ctx, t.TempDir(), bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%s: restored without error", name)
		}
	}
}
