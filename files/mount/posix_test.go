//go:build linux

package mount_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// posixCase runs the same steps in dir and returns what a program saw;
// other is where "another machine" makes its changes (dir itself for the
// local run, another node's mount of the same directory for the mount).
type posixCase struct {
	name string
	run  func(t *testing.T, dir, other string) []string
}

func errName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e.Error()
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

func names(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errName(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}

// fstat opens p and stats the open file: what another node may cache of
// a name's attributes lags like NFS's, but an open sees the current
// version (close-to-open), so the other side looks through open.
func fstat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	fi, err := f.Stat()
	must(t, err)
	return fi
}

func content(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return errName(err)
	}
	return fmt.Sprintf("%q", b)
}

var posixCases = []posixCase{
	{"create-excl", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		out := []string{errName(err)}
		if err == nil {
			f.Close()
		}
		_, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		out = append(out, errName(err))
		fi, err := os.Stat(p)
		if err == nil {
			out = append(out, fi.Mode().String(), fmt.Sprint(fi.Size()))
		}
		return append(out, content(filepath.Join(other, "f")))
	}},
	{"rename-over", func(t *testing.T, dir, other string) []string {
		must(t, os.WriteFile(filepath.Join(dir, "a"), []byte("A"), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "b"), []byte("B"), 0o644))
		t0 := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC) // rename keeps the mtime (rsync sets it on its temp file)
		must(t, os.Chtimes(filepath.Join(dir, "a"), t0, t0))
		err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
		_, serr := os.Stat(filepath.Join(dir, "a"))
		return []string{errName(err), content(filepath.Join(dir, "b")), errName(serr), content(filepath.Join(other, "b")), names(t, other),
			fstat(t, filepath.Join(other, "b")).ModTime().UTC().String()}
	}},
	{"unlink-open-file", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		must(t, os.WriteFile(p, []byte("still readable"), 0o644))
		f, err := os.Open(p)
		must(t, err)
		defer f.Close()
		uerr := os.Remove(p)
		b, rerr := io.ReadAll(f)
		_, serr := os.Stat(p)
		_, oerr := os.Open(filepath.Join(other, "f"))
		return []string{errName(uerr), string(b), errName(rerr), errName(serr), errName(oerr), names(t, dir)}
	}},
	{"truncate", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		must(t, os.WriteFile(p, []byte("hello world"), 0o644))
		out := []string{errName(os.Truncate(p, 5)), content(p), content(filepath.Join(other, "f"))}
		out = append(out, errName(os.Truncate(p, 8)), content(p))
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		must(t, err)
		out = append(out, errName(f.Truncate(2)), errName(f.Close()), content(filepath.Join(other, "f")))
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		must(t, err)
		return append(out, errName(f.Close()), content(p))
	}},
	{"mtime-and-mode", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		must(t, os.WriteFile(p, []byte("x"), 0o644))
		t0 := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		out := []string{errName(os.Chtimes(p, t0, t0)), errName(os.Chmod(p, 0o600))}
		for _, q := range []string{p, filepath.Join(other, "f")} {
			fi := fstat(t, q)
			out = append(out, fi.ModTime().UTC().String(), fi.Mode().String())
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = f.WriteString("y")
		must(t, err)
		must(t, f.Close())
		fi, err := os.Stat(p)
		must(t, err)
		return append(out, fmt.Sprint(fi.ModTime().After(t0)), fi.Mode().String(), content(p))
	}},
	{"fchmod-before-write", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		must(t, os.WriteFile(p, []byte("x"), 0o644))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		must(t, f.Chmod(0o600))
		_, err = f.WriteString("y")
		must(t, err)
		must(t, f.Close())
		fi := fstat(t, filepath.Join(other, "f"))
		return []string{fi.Mode().String(), content(filepath.Join(other, "f"))}
	}},
	{"readdir-after-changes-elsewhere", func(t *testing.T, dir, other string) []string {
		out := []string{names(t, dir)}
		must(t, os.WriteFile(filepath.Join(other, "x"), []byte("1"), 0o644))
		out = append(out, names(t, dir), content(filepath.Join(dir, "x")))
		must(t, os.WriteFile(filepath.Join(other, "y"), []byte("2"), 0o644))
		must(t, os.Remove(filepath.Join(other, "x")))
		out = append(out, names(t, dir), content(filepath.Join(dir, "x")))
		must(t, os.Rename(filepath.Join(other, "y"), filepath.Join(other, "z")))
		must(t, os.WriteFile(filepath.Join(other, "z"), []byte("3"), 0o644))
		return append(out, names(t, dir), content(filepath.Join(dir, "y")), content(filepath.Join(dir, "z")))
	}},
	{"mkdir-rmdir", func(t *testing.T, dir, other string) []string {
		d := filepath.Join(dir, "e")
		out := []string{errName(os.Mkdir(d, 0o755)), errName(os.Mkdir(d, 0o755)), names(t, filepath.Join(other, "e"))}
		must(t, os.WriteFile(filepath.Join(d, "f"), nil, 0o644))
		out = append(out, errName(syscall.Rmdir(d)), errName(os.Remove(filepath.Join(d, "f"))), names(t, d))
		return append(out, errName(syscall.Rmdir(d)), names(t, dir), names(t, other))
	}},
	{"open-for-writing-on-this-node", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		must(t, err)
		_, err = f.WriteString("abc")
		must(t, err)
		fi, err := os.Stat(p)
		must(t, err)
		out := []string{fmt.Sprint(fi.Size()), names(t, dir), content(p)}
		must(t, f.Close())
		return append(out, content(filepath.Join(other, "f")), names(t, other))
	}},
	{"sparse-and-append", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
		must(t, err)
		_, err = f.WriteAt([]byte("end"), 1<<20)
		must(t, err)
		_, err = f.WriteAt([]byte("start"), 0)
		must(t, err)
		buf := make([]byte, 6)
		_, err = f.ReadAt(buf, 1<<20-3)
		must(t, err)
		must(t, f.Close())
		out := []string{fmt.Sprintf("%q", buf), fmt.Sprint(fstat(t, filepath.Join(other, "f")).Size())}
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = f.WriteString("+tail")
		must(t, err)
		must(t, f.Close())
		b, err := os.ReadFile(filepath.Join(other, "f"))
		must(t, err)
		return append(out, fmt.Sprint(len(b)), string(b[:5]), string(b[len(b)-8:]))
	}},
	// A large file rewritten in place without O_TRUNC: the mount copies
	// what the writer leaves of the old content only when it needs it.
	{"rewrite-in-place", func(t *testing.T, dir, other string) []string {
		p := filepath.Join(dir, "f")
		base := make([]byte, 3<<20+123)
		for i := range base {
			base[i] = byte(i % 251)
		}
		must(t, os.WriteFile(p, base, 0o644))
		var out []string
		step := func(name string, fn func(f *os.File)) {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			fn(f)
			must(t, f.Close())
			out = append(out, name+" "+digest(t, filepath.Join(other, "f")))
		}
		step("patch", func(f *os.File) { writeAt(t, f, []byte("PATCH"), 1<<20+7) })
		step("read-then-write", func(f *os.File) {
			buf := make([]byte, 10)
			_, err := f.ReadAt(buf, 2<<20)
			must(t, err)
			out = append(out, fmt.Sprintf("%q", buf))
			writeAt(t, f, []byte("head"), 0)
		})
		step("cut-and-extend", func(f *os.File) {
			must(t, f.Truncate(2<<20))
			writeAt(t, f, []byte("X"), 2<<20+1<<19)
		})
		whole := make([]byte, 2<<20+1<<19+1)
		for i := range whole {
			whole[i] = byte(i % 241)
		}
		step("overwrite-all", func(f *os.File) {
			for off := 0; off < len(whole); off += 1 << 17 {
				writeAt(t, f, whole[off:min(off+1<<17, len(whole))], int64(off))
			}
		})
		step("overwrite-first-half", func(f *os.File) {
			for off := 0; off < len(whole)/2; off += 1 << 17 {
				writeAt(t, f, base[off:min(off+1<<17, len(whole)/2)], int64(off))
			}
		})
		return out
	}},
}

func writeAt(t *testing.T, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// digest is a file's size and SHA-256 (or the error reading it).
func digest(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return errName(err)
	}
	return fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
}
