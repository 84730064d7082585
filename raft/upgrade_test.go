package raft

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testdata/datadir-0e07a39 is the data dir of a one-node cluster written
// by the code at 0e07a39 (the last before the write path changed): a
// snapshot after 12 "mem.put" commands "<0>".."<11>", then 8 more in the
// log, "<12>".."<19>". The current code must start on it, restore and
// replay all twenty in order, take new writes, and keep them across a
// restart.
func TestStartsOnADataDirOfThePreviousVersion(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/datadir-0e07a39")); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			_ = os.Chmod(p, map[bool]os.FileMode{true: 0o700, false: 0o600}[d.IsDir()])
		}
		return err
	})
	var want []byte
	for i := range 20 {
		want = fmt.Appendf(want, "<%d>", i)
	}
	start := func() (*Cluster, *memMachine) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c := New(Config{NodeID: "n1", DataDir: dir, BindAddr: ln.Addr().String(), Key: []byte("0123456789abcdef0123"),
			Peers: []Peer{{ID: "n1", Address: ln.Addr().String()}}, Listener: ln})
		m := &memMachine{}
		if err := c.Register("mem", m, "mem.put"); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(t.Context()); err != nil {
			t.Fatalf("start on the old data dir: %v", err)
		}
		if !c.HadState() {
			t.Fatal("the old data dir's raft state was not found")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := c.ReadIndex(ctx); err != nil {
			t.Fatalf("no leader on the old data dir: %v", err)
		}
		return c, m
	}
	c, m := start()
	if got := m.get(); string(got) != string(want) {
		_ = c.Close()
		t.Fatalf("state after start = %q, want %q", got, want)
	}
	want = append(want, "<new>"...)
	if _, err := c.Apply(t.Context(), "mem.put", []byte("<new>")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, m = start()
	defer c.Close()
	if got := m.get(); string(got) != string(want) {
		t.Fatalf("state after a restart = %q, want %q", got, want)
	}
}
