package testcluster

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEmergencyGCUnderDiskPressure: while its disk is nearly full, a node
// collects unreferenced blobs older than files.EmergencyGrace without
// waiting out --files-gc-grace (one hour here); referenced blobs and very
// young unreferenced ones (a write between blob and commit) stay.
func TestEmergencyGCUnderDiskPressure(t *testing.T) {
	c := New(t, 1, WithDiskLimit(128<<20))
	nd := c.WaitLeader(t)
	c.WaitReady(t)
	blobs := filepath.Join(nd.cfg.DataDir, "files", "blobs")
	orphan := func(age time.Duration) string {
		t.Helper()
		b := make([]byte, 200<<10)
		_, _ = rand.Read(b)
		s := sha256.Sum256(b)
		sum := hex.EncodeToString(s[:])
		p := filepath.Join(blobs, sum[:2], sum)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-age)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A referenced blob (over the inline limit), aged like the orphan.
	content := bytes.Repeat([]byte("kept "), 40_000)
	nd.PutFile(t, "kept.bin", content)
	ks := sha256.Sum256(content)
	kept := filepath.Join(blobs, hex.EncodeToString(ks[:1]), hex.EncodeToString(ks[:]))
	old := time.Now().Add(-10 * time.Minute)
	if err := os.Chtimes(kept, old, old); err != nil {
		t.Fatalf("age the referenced blob: %v", err)
	}
	stale, young := orphan(10*time.Minute), orphan(0)
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	store := nd.Node().Files()
	store.GCNow()
	if !exists(stale) {
		t.Fatal("with free disk an unreferenced blob went before --files-gc-grace")
	}
	c.FillDisk(nd.ID)
	store.GCNow()
	if exists(stale) {
		t.Error("with the disk full, an unreferenced 10-minute-old blob was not collected")
	}
	if !exists(kept) {
		t.Error("emergency collection removed a referenced blob")
	}
	if !exists(young) {
		t.Error("emergency collection removed a blob younger than its grace")
	}
	c.FreeDisk(nd.ID)
}
