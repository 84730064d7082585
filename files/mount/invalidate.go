//go:build linux

package mount

import (
	"path"
	"strings"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/cohortserver/cohort/files"
)

// invalidateLoop drops what the kernel caches about each path a change
// applied on this node touched (through any node, the HTTP API or the Go
// API), so every mount shows it without a remount. It runs until the
// watch ends (Close).
func (m *Mount) invalidateLoop(changes <-chan files.Event) {
	for ev := range changes {
		if ev.Reset {
			m.invalidateTree(m.root.EmbeddedInode())
			continue
		}
		m.invalidate(ev.Info)
	}
}

// invalidate handles one changed path. Only names the kernel knows (the
// inodes go-fuse tracks) need it: negative lookups are never cached.
func (m *Mount) invalidate(in files.Info) {
	p := in.Path
	if path.Base(p) == marker {
		p = path.Dir(p) // a directory made, removed or changed
		if p == "." {
			return
		}
	}
	parent := m.root.EmbeddedInode()
	segs := strings.Split(p, "/")
	for _, s := range segs[:len(segs)-1] {
		if parent = parent.GetChild(s); parent == nil {
			return
		}
	}
	name := segs[len(segs)-1]
	ch := parent.GetChild(name)
	if ch == nil {
		return
	}
	fn, isFile := ch.Operations().(*fileNode)
	switch {
	case in.Deleted && !m.store.IsDir(p), isFile == m.store.IsDir(p):
		// gone, or its type changed: the name must be looked up again
		parent.NotifyEntry(name)
		if in.Deleted {
			m.invalidateEmptyDirs(p)
		}
	case isFile:
		if cur, ok := m.store.Local(p); ok && !cur.Deleted {
			fn.observe(cur)
		}
		ch.NotifyContent(0, 0) // attributes and cached pages
	default:
		ch.NotifyContent(-1, 0) // a directory's attributes
	}
}

// invalidateEmptyDirs drops the names of the directories above p that no
// longer exist (a directory without a marker exists while it holds files).
func (m *Mount) invalidateEmptyDirs(p string) {
	for dir := path.Dir(p); dir != "." && !m.store.IsDir(dir); dir = path.Dir(dir) {
		parent := m.root.EmbeddedInode()
		segs := strings.Split(dir, "/")
		for _, s := range segs[:len(segs)-1] {
			if parent = parent.GetChild(s); parent == nil {
				break
			}
		}
		if parent != nil {
			parent.NotifyEntry(segs[len(segs)-1])
		}
	}
}

// invalidateTree drops every name the kernel knows under dir (the tree was
// replaced from a snapshot).
func (m *Mount) invalidateTree(dir *gofs.Inode) {
	for name, ch := range dir.Children() {
		if ch.IsDir() {
			m.invalidateTree(ch)
		} else {
			ch.NotifyContent(0, 0)
		}
		dir.NotifyEntry(name)
	}
}
