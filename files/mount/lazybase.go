//go:build linux

package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/cohortserver/cohort/files"
)

// lazyCopyMin is the size from which a write handle opened on existing
// content (no O_TRUNC) does not copy it into its temp file at open: the
// bytes the writer does not overwrite are copied from the base version at
// its first commit (or its first read). A program that rewrites a large
// file from its start without truncating it (fio, a database rewriting in
// place) then writes it once, not twice, and its in-order writes are
// staged as they come. Smaller content is copied at open, which costs
// less than the bookkeeping.
const lazyCopyMin = 1 << 20

// lazyBase is the content a write handle started from, not yet copied:
// the temp file holds the bytes written (filled), and the base version's
// bytes elsewhere below limit are still to be copied from f.
type lazyBase struct {
	f      *files.File // the base version, pinned until copied
	limit  int64       // base bytes beyond it were cut by a truncate
	filled []span      // sorted, disjoint, not adjacent
}

// span is the byte range [off, end).
type span struct{ off, end int64 }

// mark records that [off, end) of the temp file was written.
func (b *lazyBase) mark(off, end int64) {
	if end <= off {
		return
	}
	// The usual case: a write continuing the last span.
	if n := len(b.filled); n > 0 && b.filled[n-1].off <= off && off <= b.filled[n-1].end {
		b.filled[n-1].end = max(b.filled[n-1].end, end)
		return
	}
	// First span ending at or after off, and the first starting after end.
	i := sort.Search(len(b.filled), func(i int) bool { return b.filled[i].end >= off })
	j := sort.Search(len(b.filled), func(j int) bool { return b.filled[j].off > end })
	merged := span{off, end}
	if i < j {
		merged.off = min(merged.off, b.filled[i].off)
		merged.end = max(merged.end, b.filled[j-1].end)
	}
	b.filled = append(b.filled[:i], append([]span{merged}, b.filled[j:]...)...)
}

// holes returns the ranges below upto that are not filled.
func (b *lazyBase) holes(upto int64) []span {
	var hs []span
	at := int64(0)
	for _, s := range b.filled {
		if s.off >= upto {
			break
		}
		if s.off > at {
			hs = append(hs, span{at, s.off})
		}
		at = max(at, s.end)
	}
	if at < upto {
		hs = append(hs, span{at, upto})
	}
	return hs
}

// fill copies into tmp the base bytes below min(limit, size) that were
// not written, reading the base through its hash from the first byte to
// the last (a corrupt base fails the fill rather than end up in the new
// version), and releases the base.
func (b *lazyBase) fill(tmp *os.File, size int64) error {
	defer b.f.Close()
	hs := b.holes(min(b.limit, size))
	if len(hs) == 0 {
		return nil
	}
	buf := make([]byte, 1<<20)
	var pos int64
	for {
		n, err := b.f.Read(buf)
		if n > 0 {
			chunk := span{pos, pos + int64(n)}
			for _, h := range hs {
				lo, hi := max(h.off, chunk.off), min(h.end, chunk.end)
				if lo < hi {
					if _, werr := tmp.WriteAt(buf[lo-pos:hi-pos], lo); werr != nil {
						return fmt.Errorf("copy the base version: %w", werr)
					}
				}
			}
			pos += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the base version: %w", err)
		}
	}
}
