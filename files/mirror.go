package files

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func fsMode(m uint64) fs.FileMode { return fs.FileMode(m).Perm() }

// mirrorTmpPrefix names the temp files of the mirror; the reconciler
// removes stray ones.
const mirrorTmpPrefix = ".cohort-tmp-"

func (s *Store) mirrorLoop(ctx context.Context) {
	retry := time.NewTicker(10 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.mirrorKick:
			select { // coalesce a burst of commits into one reconcile
			case <-ctx.Done():
				return
			case <-time.After(syncDebounce):
			}
		case <-retry.C:
		}
		if err := s.MirrorNow(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("mirror not fully up to date", "err", err)
		}
	}
}

// MirrorNow brings the mirror directory in line with the manifest: every
// live file whose blob is local is copied in (temp file, then an atomic
// rename), every other file is removed. A file whose blob has not arrived
// yet keeps its previous content until catch-up fetched it.
func (s *Store) MirrorNow(ctx context.Context) error {
	root := s.cfg.MirrorDir
	if root == "" {
		return nil
	}
	live := s.state.list("", false)
	want := make(map[string]Info, len(live))
	var errs []error
	for _, in := range live {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		want[in.Path] = in
		dst := filepath.Join(root, filepath.FromSlash(in.Path))
		if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == in.Size && fi.ModTime().Equal(in.ModTime) && fi.Mode().Perm() == in.Mode {
			continue
		}
		if !s.blobs.has(in.SHA256) {
			continue
		}
		if err := s.materialise(dst, in); err != nil {
			errs = append(errs, err)
		}
	}
	// Remove what the manifest no longer has, deepest first.
	var stale []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		if d.IsDir() {
			stale = append(stale, p) // removed below only if empty
			return nil
		}
		if _, ok := want[rel]; !ok {
			stale = append(stale, p)
		}
		return nil
	})
	for i := len(stale) - 1; i >= 0; i-- {
		fi, err := os.Lstat(stale[i])
		if err != nil {
			continue
		}
		if fi.IsDir() {
			_ = os.Remove(stale[i]) // fails unless empty
			continue
		}
		if err := os.Remove(stale[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Store) materialise(dst string, in Info) error {
	// A file standing where a directory must be (or the reverse) goes.
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	src, err := s.blobs.openBlob(in.SHA256)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), mirrorTmpPrefix+"*")
	if err != nil {
		return err
	}
	bp := s.blobs.bufs.Get().(*[]byte)
	_, err = io.CopyBuffer(tmp, src, *bp)
	s.blobs.bufs.Put(bp)
	if err == nil {
		err = tmp.Chmod(in.Mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(tmp.Name(), in.ModTime, in.ModTime)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
