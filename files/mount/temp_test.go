//go:build linux

package mount

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

// A temp file handed out again starts empty and at offset 0, whatever the
// writer before it left in it: a new file's content is only what its own
// writer wrote, and the copy of an existing file's content (io.Copy in
// openWriter, which writes at the offset) starts at its first byte.
func TestTempPoolHandsOutEmptyFiles(t *testing.T) {
	p := &tempPool{dir: t.TempDir()}
	defer p.close()
	f, err := p.get()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, strings.NewReader(strings.Repeat("previous writer ", 4096))); err != nil {
		t.Fatal(err)
	}
	p.put(f)

	g, err := p.get()
	if err != nil {
		t.Fatal(err)
	}
	if g != f {
		t.Fatalf("the pool made a new file while one was kept")
	}
	if fi, err := g.Stat(); err != nil || fi.Size() != 0 {
		t.Fatalf("a kept temp file handed out again holds %d bytes (%v), want 0", fi.Size(), err)
	}
	if _, err := io.Copy(g, strings.NewReader("next")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	n, _ := g.ReadAt(got, 0)
	if !bytes.Equal(got[:n], []byte("next")) {
		t.Fatalf("the next writer's copy reads back %q, want %q", got[:n], "next")
	}
	p.put(g)

	// The files are unlinked: nothing is left in the directory, and a
	// closed pool closes what it is given back.
	if ents, _ := os.ReadDir(p.dir); len(ents) != 0 {
		t.Fatalf("temp dir holds %d names, want none", len(ents))
	}
	p.close()
	h, err := p.get()
	if err != nil {
		t.Fatal(err)
	}
	p.put(h)
	if _, err := h.Stat(); err == nil {
		t.Fatalf("a file given back to a closed pool is still open")
	}
}

// A request the kernel interrupted (its caller got a signal; Go programs
// get one to preempt a goroutine) answers EINTR, which the caller may
// retry, not EIO: a Go program walking the mount once read EIO from an
// open whose blob check saw its request's context canceled. An error that
// merely wraps a canceled context of the store's own (a wait budget) is
// not an interrupt.
func TestInterruptedOpenAnswersEINTR(t *testing.T) {
	m := &Mount{log: slog.New(slog.DiscardHandler)}
	err := fmt.Errorf("open a.txt: read blob fb8e20fc2e4c: %w", context.Canceled)
	ctx, cancel := context.WithCancel(context.Background())
	if got := m.openErrno(ctx, "a.txt", err); got != syscall.EIO {
		t.Fatalf("an open that failed while its request went on answers %v, want EIO", got)
	}
	cancel()
	if got := m.openErrno(ctx, "a.txt", err); got != syscall.EINTR {
		t.Fatalf("an interrupted open answers %v, want EINTR", got)
	}
}
