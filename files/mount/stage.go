//go:build linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cohortserver/cohort/files"
)

// errStageDropped ends a stager whose file stopped being written in
// order: its close commits from the temp file instead.
var errStageDropped = errors.New("files mount: write out of order; content staged at close")

// stager stages a file's content (files.Store.Stage: a blob pushed to a
// quorum) while a program writes it from its first byte in order, reading
// each byte back from the writer's temp file once it is there. The close
// then waits only for what is left and commits a log entry, instead of
// reading the whole file and pushing it afterwards: a large sequential
// write costs about the slower of writing the temp file and pushing the
// blob, not their sum. A write out of order, a truncate or a release
// drops it, and the close commits from the temp file as before. Writes
// never wait for it: it follows the temp file (avail), so a slow peer
// slows the close only, as the close-time push did.
type stager struct {
	f *os.File

	mu    sync.Mutex
	cond  *sync.Cond
	read  int64 // given to the store so far
	avail int64 // written in order so far
	end   bool  // the writer closed: avail is the size
	err   error // dropped

	done   chan struct{}
	cancel context.CancelFunc
	st     *files.Staged
	stErr  error
}

// startStager starts staging f, whose first avail bytes are written.
func startStager(ctx context.Context, store *files.Store, f *os.File, avail int64) *stager {
	ctx, cancel := context.WithCancel(ctx)
	g := &stager{f: f, avail: avail, done: make(chan struct{}), cancel: cancel}
	g.cond = sync.NewCond(&g.mu)
	stop := context.AfterFunc(ctx, func() { g.drop(ctx.Err()) })
	go func() {
		defer close(g.done)
		defer stop()
		g.st, g.stErr = store.Stage(ctx, g, nil)
	}()
	return g
}

// Read implements io.Reader for the store: the next bytes written, waiting
// for them until the writer closes (io.EOF) or the stager is dropped.
func (g *stager) Read(p []byte) (int, error) {
	g.mu.Lock()
	for g.read >= g.avail && !g.end && g.err == nil {
		g.cond.Wait()
	}
	if g.err != nil {
		err := g.err
		g.mu.Unlock()
		return 0, err
	}
	if g.read >= g.avail {
		g.mu.Unlock()
		return 0, io.EOF
	}
	off, n := g.read, min(int64(len(p)), g.avail-g.read)
	g.mu.Unlock()
	// Bytes below avail are final: writes go on above them.
	m, err := g.f.ReadAt(p[:n], off)
	g.mu.Lock()
	g.read += int64(m)
	g.mu.Unlock()
	if err == io.EOF && m > 0 {
		err = nil
	}
	return m, err
}

// wrote tells the stager that the first avail bytes are written.
func (g *stager) wrote(avail int64) {
	g.mu.Lock()
	g.avail = avail
	g.mu.Unlock()
	g.cond.Broadcast()
}

// finish ends the content at the bytes written and waits for the blob, at
// most until ctx ends (the commit's budget), as the close-time push waited.
// The caller releases the result.
func (g *stager) finish(ctx context.Context) (*files.Staged, error) {
	g.mu.Lock()
	g.end = true
	g.mu.Unlock()
	g.cond.Broadcast()
	select {
	case <-g.done:
	case <-ctx.Done():
		g.stop()
		return nil, fmt.Errorf("stage the content: %w", ctx.Err())
	}
	g.cancel()
	if g.stErr != nil {
		return nil, g.stErr
	}
	return g.st, nil
}

// drop abandons the staging; wait for done before the temp file is reused.
func (g *stager) drop(why error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = why
	}
	g.mu.Unlock()
	g.cond.Broadcast()
}

// stop drops the staging and waits until it no longer reads the temp file;
// a blob it finished is released.
func (g *stager) stop() {
	g.drop(errStageDropped)
	g.cancel() // a push waiting on a slow peer ends too
	<-g.done
	if g.st != nil {
		g.st.Release()
	}
}
