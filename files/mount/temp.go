//go:build linux

package mount

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// tempPoolMax bounds the emptied temp files kept for the next writers:
// about the writers a node runs at once.
const tempPoolMax = 64

// tempPool hands write handles their temp files and keeps those of
// released handles, emptied, for the next ones. The files are unlinked
// from the start, so a crash leaves nothing behind and a kept file holds
// no disk space. Reusing them spares every file written through the
// mount an inode allocation and an unlink on this node: on ext4 without
// a journal, allocating an inode scans past every inode freed in the last
// few seconds, and a stream of small files made each create cost
// milliseconds of CPU (files/mount/DESIGN.md, Performance).
type tempPool struct {
	dir string

	mu     sync.Mutex
	free   []*os.File
	closed bool
}

// get returns an empty temp file, kept or new.
func (p *tempPool) get() (*os.File, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		f := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return f, nil
	}
	p.mu.Unlock()
	f, err := os.CreateTemp(p.dir, "w-*")
	if err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("temp file: unlink: %w", err)
	}
	return f, nil
}

// put empties f and keeps it for the next writer, or closes it when the
// pool is full or closed, or f cannot be emptied. The caller no longer
// uses f.
func (p *tempPool) put(f *os.File) {
	if f.Truncate(0) != nil {
		f.Close()
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return
	}
	p.mu.Lock()
	if !p.closed && len(p.free) < tempPoolMax {
		p.free = append(p.free, f)
		f = nil
	}
	p.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

// close closes the kept files; later puts close theirs.
func (p *tempPool) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, f := range free {
		f.Close()
	}
}
