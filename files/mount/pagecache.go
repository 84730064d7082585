//go:build linux

package mount

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The kernel keeps one page cache per inode, while every handle here reads
// its own version (readHandle) or its own temp file (writeHandle). A page
// read through one handle is served to every other handle of the inode
// that reads it afterwards, so handles that read different bytes must not
// share that cache: a reader of the new version would get pages an older
// reader put there, and a reader of the committed version pages a writer
// read back from its uncommitted temp file.
//
// So the cache belongs to one committed version at a time (pageCache.ver):
// only read handles of that version read through it (cached handles);
// every other handle opens with FOPEN_DIRECT_IO, whose reads and writes go
// to this process and leave the cache alone. The version changes once no
// cached handle of the old one is open: the next reader's open then
// answers without FOPEN_KEEP_CACHE, so the kernel drops the old pages.
//
// Cached pages are kept across opens (FOPEN_KEEP_CACHE, no READ reaches
// this process for them) only once every byte they may hold is known to
// match the version's hash: the blob was hashed in full at open, or a
// cached handle read it from the first byte to the last and the hash
// matched (readHandle). A corrupt blob found by a cached handle drops the
// pages; the handles open then may hold bytes of the corrupt blob (their
// descriptors keep it after its repair), so the pages count as checked
// again only after the last of them closed.
//
// What the kernel does regardless (DESIGN.md): a shared writable mapping of
// a write handle and any mapping of a direct handle go through the inode's
// cache (so pages are not trusted across opens after a write), and a cached
// handle's reads stop at the size the kernel holds for the inode, which a
// writer on this node moves (so a reader opened while a writer is open is
// direct, and a writer that opens while cached readers are takes a new
// inode, passthrough.go).
type pageCache struct {
	ver  uint64 // the version whose bytes the cache may hold; 0: none known
	good bool   // every byte the cache may hold is ver's and passed its hash
	// readers are the cached read handles open (all of ver), each true
	// when it was open when a corrupt blob was found.
	readers map[*readHandle]bool
}

// Open flags of the two kinds of handles: a direct handle neither reads
// nor drops the cached pages.
const (
	directOpen = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_KEEP_CACHE
	cachedOpen = fuse.FOPEN_KEEP_CACHE
)

// openRead decides how read handle h of version h.f.Info().Version uses
// the page cache and returns its open flags.
func (fn *fileNode) openRead(h *readHandle) uint32 {
	v := h.f.Info().Version
	fn.mu.Lock()
	defer fn.mu.Unlock()
	pc := &fn.cache
	if fn.writing() || (len(pc.readers) > 0 && pc.ver != v) || fn.retrying() {
		// Another version's pages are in use, or a writer on this node
		// moves the size the kernel holds for the inode (a cached read
		// stops there): the writer may not have written yet, or may be
		// closed and its release not come yet. A writer that opens while
		// cached readers are open takes a new inode instead (openOther),
		// so the two never share one; nor while a retry is expected
		// (passthrough.go).
		fn.pt.direct++
		return directOpen
	}
	var flags uint32
	if pc.ver == v && pc.good {
		flags = cachedOpen
	} else {
		// The kernel drops every cached page at this open.
		pc.ver, pc.good = v, false
	}
	if pc.readers == nil {
		pc.readers = make(map[*readHandle]bool)
	}
	pc.readers[h] = false
	h.cached = true
	if h.f.Verified() { // hashed in full at open
		pc.markGood()
	}
	return flags
}

// markGood records that the cache holds only checked bytes of ver, unless
// a handle open when a corrupt blob was found may still add its bytes.
func (pc *pageCache) markGood() {
	for _, tainted := range pc.readers {
		if tainted {
			return
		}
	}
	pc.good = true
}

// readChecked records that cached handle h read its whole blob through the
// hash, which matched.
func (fn *fileNode) readChecked(h *readHandle) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if h.cached && fn.cache.ver == h.f.Info().Version {
		fn.cache.markGood()
	}
}

// readCorrupt records that h found its blob corrupt: pages read through a
// cached handle may hold its bad bytes, so they are dropped and trusted
// again only as described on pageCache.
func (fn *fileNode) readCorrupt(h *readHandle) {
	fn.mu.Lock()
	pc := &fn.cache
	pc.good = false
	for r := range pc.readers {
		pc.readers[r] = true
	}
	fn.mu.Unlock()
	if h.cached {
		// Not from this READ's handler: the kernel holds the pages this
		// READ fills locked until its answer, and the invalidation waits
		// for them.
		go fn.NotifyContent(0, 0)
	}
}

// closeRead forgets read handle h.
func (fn *fileNode) closeRead(h *readHandle) {
	if !h.cached {
		fn.closeDirect()
		return
	}
	fn.mu.Lock()
	delete(fn.cache.readers, h)
	fn.mu.Unlock()
}

// written records a write through a write handle: it may come from a
// shared mapping, whose pages were in the cache (and stay there if the
// commit fails and the version does not change).
func (fn *fileNode) written() {
	fn.mu.Lock()
	fn.cache.good = false
	fn.mu.Unlock()
}
