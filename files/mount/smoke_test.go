package mount_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSmoke(t *testing.T) {
	c, dirs := mountedCluster(t, 3)
	_ = c
	a, b := dirs["n1"], dirs["n3"]
	big := bytes.Repeat([]byte("0123456789abcdef"), 100<<10)
	for _, content := range [][]byte{[]byte("hello\n"), big} {
		if err := os.WriteFile(filepath.Join(a, "f.txt"), content, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(b, "f.txt"))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read on n3: %d bytes, err %v; want %d", len(got), err, len(content))
		}
	}
	if err := os.MkdirAll(filepath.Join(a, "d1/d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(b, "d1"))
	t.Logf("n3 d1: %v %v", ents, err)
	ents, err = os.ReadDir(b)
	t.Logf("n3 root: %v %v", ents, err)
}
