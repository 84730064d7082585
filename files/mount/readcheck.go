//go:build linux

package mount

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/cohortserver/cohort/files"
)

// checker reads a large blob through the store's streaming hash on its own
// goroutine, from the first byte to the last, a little ahead of the READs
// of its handle. The READs are spliced from the blob without waiting for
// it; only the READ that reaches the end waits for its verdict. So the
// hash (about 1.4 GiB/s on one core here) runs beside the kernel's copies
// instead of before each of them, and it stops when the reader stops: it
// hashes at most checkAhead past the furthest byte asked for, and its
// goroutine runs only while there is something to hash.
type checker struct {
	f        *files.File
	size     int64 // the size the version records
	blobSize int64 // the size of the blob on disk, as found at the start

	mu      sync.Mutex
	cond    sync.Cond
	asked   int64 // the furthest byte a READ asked for
	done    int64 // hashed up to here
	ended   bool  // the hash reached the end, or failed (err)
	err     error
	closed  bool
	running bool // the goroutine hashes
}

// checkAhead is how far past the furthest byte asked for the checker
// hashes: two READs of the kernel's readahead.
const checkAhead = 2 << 20

// maxReadGap is how far past the furthest byte asked for a READ may start
// and stay in the check: beyond the kernel's readahead window (1 MiB)
// times the READs it sends at once (max_background, 12).
const maxReadGap = 32 << 20

// checkChunk is the size of the checker's reads.
const checkChunk = 1 << 20

func startChecker(f *files.File) *checker {
	c := &checker{f: f, size: f.Info().Size, blobSize: f.Info().Size}
	c.cond.L = &c.mu
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) == nil {
		c.blobSize = st.Size
	}
	return c
}

// kick starts the goroutine if there is something to hash (c.mu held).
func (c *checker) kick() {
	if !c.running && !c.closed && !c.ended && c.done < min(c.asked+checkAhead, c.size) {
		c.running = true
		go c.run()
	}
}

// ask records a READ of [off, end); false when it starts too far past the
// others for the check to follow (the caller then reads unchecked).
func (c *checker) ask(off, end int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off > c.asked+maxReadGap {
		return false
	}
	if end > c.asked {
		c.asked = end
		c.kick()
	}
	return true
}

// wait returns the verdict once the hash reached the end: nil, or the
// error of the blob's read (files.ErrCorrupt on a mismatch or a short
// blob).
func (c *checker) wait() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = c.size
	c.kick()
	for !c.ended {
		c.cond.Wait()
	}
	return c.err
}

// stop ends the checker's goroutine and waits for it (before the File is
// closed).
func (c *checker) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.running {
		c.cond.Wait()
	}
}

// checkBufs are the checkers' read buffers (a goroutine starts each time
// a reader continues after a pause).
var checkBufs = sync.Pool{New: func() any { b := make([]byte, checkChunk); return &b }}

func (c *checker) run() {
	bp := checkBufs.Get().(*[]byte)
	defer checkBufs.Put(bp)
	buf := *bp
	c.mu.Lock()
	defer func() {
		c.running = false
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	for !c.closed && c.done < min(c.asked+checkAhead, c.size) {
		// A read that reaches the end is held by the File until the hash
		// matched, so the last one covers exactly what is left.
		k := min(int64(len(buf)), c.size-c.done)
		c.mu.Unlock()
		n, err := io.ReadFull(c.f, buf[:k])
		c.mu.Lock()
		c.done += int64(n)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: the blob ends at %d of %d bytes", files.ErrCorrupt, c.done, c.size)
		}
		if err != nil || c.done == c.size {
			c.ended, c.err = true, err
			return
		}
	}
}
