//go:build linux

package mount_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

// quota is --files-max-bytes of the test clusters.
const quota = 24 << 20

func setupCluster(t *testing.T) (*testcluster.Cluster, map[string]string) {
	return mountedCluster(t, 3, func(cfg *config.Config) { cfg.Files.MaxBytes = quota },
		testcluster.WithNodeSetup(func(n *node.Node) {
			n.FilesMount().SetCommitTimeout(8 * time.Second)
			// Kernel caches that never expire: only the invalidation on
			// apply (and at open) can refresh what a mount shows.
			n.FilesMount().SetCacheTimeout(time.Hour)
		}),
	)
}

// TestMount runs the mount's acceptance on one three-node cluster; the
// subtests that stop nodes come last.
func TestMount(t *testing.T) {
	c, dirs := setupCluster(t)
	a, b, cc := dirs["n1"], dirs["n2"], dirs["n3"]
	c.WaitReady(t)
	for _, nd := range c.Nodes() {
		if st := nd.Status(t); st.FilesMount == nil || !st.FilesMount.Mounted || st.FilesMount.Dir != dirs[nd.ID] || !st.Ready {
			t.Fatalf("%s status: ready %v, files_mount %+v; want mounted at %s", nd.ID, st.Ready, st.FilesMount, dirs[nd.ID])
		}
	}

	t.Run("close-to-open across nodes", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, a pushed blob
		for i, content := range [][]byte{[]byte("v1\n"), big, []byte("v3, shorter\n"), append(big, 'x')} {
			p := "c2o.txt"
			// a reader on n3 holds the previous version open meanwhile
			var old *os.File
			if i > 0 {
				var err error
				if old, err = os.Open(filepath.Join(cc, p)); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, filepath.Join(a, p), content)
			got, err := os.ReadFile(filepath.Join(cc, p))
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("round %d: n3 read %d bytes (err %v) right after close on n1; want %d", i, len(got), err, len(content))
			}
			if fi, err := os.Stat(filepath.Join(cc, p)); err != nil || fi.Size() != int64(len(content)) {
				t.Fatalf("round %d: stat on n3 after open: %v %v", i, fi, err)
			}
			if old != nil {
				old.Close()
			}
		}
	})

	t.Run("large files read in passthrough keep their version", func(t *testing.T) {
		// Where the kernel offers passthrough, it reads a large file's
		// blob itself; a writer, and a reader of a newer version, then
		// get a new inode for the name (passthrough.go), while the old
		// handles read on.
		p := "pt.bin"
		size := 5 << 20
		v1, v2, v3 := version("pt-one", size), version("pt-two", size), version("pt-three", size+1)
		writeFile(t, filepath.Join(a, p), v1)
		n3 := c.Node("n3").Node().FilesMount()
		before := n3.Status()
		r1, err := os.Open(filepath.Join(cc, p))
		must(t, err)
		defer r1.Close()
		head := make([]byte, 1<<20)
		_, err = io.ReadFull(r1, head)
		must(t, err)
		// A writer on the node that holds r1 open.
		writeFile(t, filepath.Join(cc, p), v2)
		r2, err := os.Open(filepath.Join(cc, p))
		must(t, err)
		defer r2.Close()
		// A newer version written elsewhere, opened here while r2 is.
		writeFile(t, filepath.Join(a, p), v3)
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			fi, err := os.Stat(filepath.Join(cc, p))
			return err == nil && fi.Size() == int64(len(v3)), fmt.Sprintf("n3 sees v3: %v", err)
		})
		if got := readFile(t, filepath.Join(cc, p)); !bytes.Equal(got, v3) {
			t.Fatalf("a new reader on n3 read %d bytes that are not v3", len(got))
		}
		rest, err := io.ReadAll(r1)
		must(t, err)
		if got := append(head, rest...); !bytes.Equal(got, v1) {
			t.Fatalf("the reader opened before the writes read %d bytes that are not v1", len(got))
		}
		if got, err := io.ReadAll(r2); err != nil || !bytes.Equal(got, v2) {
			t.Fatalf("the reader opened after the first write read %d bytes that are not v2 (%v)", len(got), err)
		}
		after := n3.Status()
		if !after.Passthrough {
			t.Logf("no FUSE passthrough here (kernel before 6.9, or not root): the reads above went through cohort")
			return
		}
		// r1 is passthrough, so the writer's open swaps the inode; r2
		// and the last reader are too unless the writer's release came
		// late (the kernel sends it after close returns).
		opens, swaps := after.PassthroughOpens-before.PassthroughOpens, after.InodeSwaps-before.InodeSwaps
		t.Logf("passthrough opens %d, inode swaps %d", opens, swaps)
		if opens < 1 || swaps < 1 {
			t.Fatalf("passthrough opens %d, inode swaps %d; want at least 1 of each", opens, swaps)
		}
	})

	t.Run("readers and writers of a large file on one node never fail", func(t *testing.T) {
		// Passthrough readers and writers of one name, at once: every
		// open succeeds (the kernel's retry after ESTALE lands on the new
		// inode) and every read is one whole version.
		p := filepath.Join(cc, "busy.bin")
		size := 5 << 20
		writeFile(t, p, version("busy-0", size))
		before := c.Node("n3").Node().FilesMount().Status()
		var readers, writers sync.WaitGroup
		errs := make(chan error, 8)
		stop := make(chan struct{})
		for r := range 3 {
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					got, err := os.ReadFile(p)
					if err != nil {
						errs <- fmt.Errorf("reader %d: %w", r, err)
						return
					}
					if !whole(got, size) {
						errs <- fmt.Errorf("reader %d read %d bytes, not one whole version", r, len(got))
						return
					}
				}
			})
		}
		for w := range 2 {
			writers.Go(func() {
				for i := range 8 {
					if err := os.WriteFile(p, version(fmt.Sprintf("busy-%d-%d", w, i), size), 0o644); err != nil {
						errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
						return
					}
				}
			})
		}
		writers.Wait()
		close(stop)
		readers.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		after := c.Node("n3").Node().FilesMount().Status()
		t.Logf("passthrough opens %d, inode swaps %d", after.PassthroughOpens-before.PassthroughOpens, after.InodeSwaps-before.InodeSwaps)
	})

	t.Run("many writers of one file on every node all close", func(t *testing.T) {
		// Last close wins: a close whose compare-and-set lost to another
		// writer's commit tries again on the new version, however many
		// commits came in between.
		p := "contended.txt"
		size := 1 << 10
		var writers sync.WaitGroup
		errs := make(chan error, 15)
		rewriteEverywhere(&writers, errs, []string{a, b, cc}, p, size, 6, nil)
		// A chmod and a touch of the file from each node meanwhile go on
		// whatever version is current (a setattr is a compare-and-set too).
		for _, d := range []string{a, b, cc} {
			writers.Go(func() {
				for i := range 6 {
					f := filepath.Join(d, p)
					err := os.Chmod(f, fs.FileMode(0o640+i%2*4))
					if err == nil {
						err = os.Chtimes(f, time.Time{}, time.Now())
					}
					if err != nil && !errors.Is(err, fs.ErrNotExist) { // not created yet
						errs <- fmt.Errorf("%s, setattr %d: %w", filepath.Base(d), i, err)
						return
					}
				}
			})
		}
		writers.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		want := readFile(t, filepath.Join(a, p))
		if !whole(want, size) {
			t.Fatalf("n1 reads %d bytes, not one whole version", len(want))
		}
		for _, d := range []string{b, cc} {
			if got := readFile(t, filepath.Join(d, p)); !bytes.Equal(got, want) {
				t.Errorf("%s reads %q…, n1 %q…", d, got[:16], want[:16])
			}
		}
	})

	t.Run("renames and unlinks of a file rewritten on every node never fail", func(t *testing.T) {
		// A rename or an unlink is a compare-and-set on the version this
		// node sees; one that loses to another writer's close tries again
		// on the new version, however many closes came in between.
		p := "spinning.txt"
		size := 1 << 10
		var writers sync.WaitGroup
		errs := make(chan error, 24)
		rewriteEverywhere(&writers, errs, []string{a, b, cc}, p, size, 8, func(err error) bool {
			return errors.Is(err, syscall.ESTALE) // moved or removed while written
		})
		for n, d := range []string{a, b, cc} {
			writers.Go(func() {
				for i := range 6 {
					var err error
					if i%2 == 0 {
						err = os.Rename(filepath.Join(d, p), filepath.Join(d, fmt.Sprintf("spun-%d-%d.txt", n, i)))
					} else {
						err = os.Remove(filepath.Join(d, p))
					}
					if err != nil && !errors.Is(err, fs.ErrNotExist) { // none there at that moment
						errs <- fmt.Errorf("%s, %s %d: %w", filepath.Base(d), map[bool]string{true: "rename", false: "unlink"}[i%2 == 0], i, err)
						return
					}
				}
			})
		}
		writers.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		ents, err := os.ReadDir(a)
		must(t, err)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "spun-") && e.Name() != p {
				continue
			}
			want := readFile(t, filepath.Join(a, e.Name()))
			if !whole(want, size) {
				t.Errorf("n1: %s holds %d bytes, not one whole version", e.Name(), len(want))
			}
			for _, d := range []string{b, cc} {
				if got := readFile(t, filepath.Join(d, e.Name())); !bytes.Equal(got, want) {
					t.Errorf("%s: %s differs from n1's", filepath.Base(d), e.Name())
				}
			}
		}
	})

	t.Run("handles of different content on one node never share pages", func(t *testing.T) {
		// The kernel keeps one page cache per file, and a page read
		// through one handle is served to every handle that reads it
		// next: each read below goes to a page the other handle put in
		// the cache just before, if it may.
		const page = 4096
		p := "pages.bin"
		at := func(f *os.File, pg int) string {
			t.Helper()
			buf := make([]byte, 4)
			_, err := f.ReadAt(buf, int64(pg*page))
			must(t, err)
			return string(buf)
		}
		want := func(what, got, w string) {
			t.Helper()
			if got != w {
				t.Fatalf("%s: %q, want %q", what, got, w)
			}
		}
		writeFile(t, filepath.Join(a, p), bytes.Repeat([]byte("a"), 1<<20))
		old, err := os.Open(filepath.Join(cc, p))
		must(t, err)
		defer old.Close()
		want("a reader of the first version", at(old, 0), "aaaa")
		writeFile(t, filepath.Join(b, p), bytes.Repeat([]byte("c"), 1<<20))
		cur, err := os.Open(filepath.Join(cc, p))
		must(t, err)
		defer cur.Close()
		want("a reader opened after the second version's close", at(cur, 0), "cccc")
		want("the old reader, first at page 100", at(old, 100), "aaaa")
		want("the new reader at page 100 after the old one", at(cur, 100), "cccc")
		want("the new reader, first at page 200", at(cur, 200), "cccc")
		want("the old reader at page 200 after the new one", at(old, 200), "aaaa")
		// The old reader's pages outlive it in the cache: an open after
		// it closed must not keep them.
		must(t, errors.Join(old.Close(), cur.Close()))
		cur, err = os.Open(filepath.Join(cc, p))
		must(t, err)
		defer cur.Close()
		want("a reader opened after the old reader closed", at(cur, 100), "cccc")

		// A writer's uncommitted content, read back through its handle,
		// reaches no reader.
		w, err := os.OpenFile(filepath.Join(cc, p), os.O_RDWR, 0)
		must(t, err)
		defer w.Close()
		_, err = w.WriteAt(bytes.Repeat([]byte("w"), page), 10*page)
		must(t, err)
		want("the writer reading back what it wrote", at(w, 10), "wwww")
		want("a reader after the writer read back", at(cur, 10), "cccc")
		during, err := os.Open(filepath.Join(cc, p))
		must(t, err)
		defer during.Close()
		want("a reader opened while the writer is open", at(during, 10), "cccc")
		must(t, w.Close())
		want("a reader of the committed version after the writer's close", at(cur, 11), "cccc")
		after := readFile(t, filepath.Join(cc, p))
		want("the writer's version read after its close", string(after[10*page:10*page+4]), "wwww")
		want("... elsewhere", string(after[20*page:20*page+4]), "cccc")

		// A writer bypasses the cache, and a program may still map the
		// file it writes (MAP_SHARED): its stores are committed at close.
		// (Another process: a page fault on the mount inside this one
		// can stop it with the mount's own server in it.)
		out, err := exec.Command("/usr/bin/python3", "-c", `import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[30 * 4096:30 * 4096 + 6] = b"mapped"
m.close()
os.close(fd)`, filepath.Join(cc, p)).CombinedOutput()
		if err != nil {
			t.Fatalf("mmap(MAP_SHARED) of a file open for writing: %v: %s", err, out)
		}
		mapFile := readFile(t, filepath.Join(b, p))
		want("n2 after a mapped write's close on n3", string(mapFile[30*page:30*page+6]), "mapped")

		// A large file read in full is kept in the page cache between
		// opens (its hash checked); a new version, through another node
		// or this one, is still what the next open reads.
		big := "pages-big.bin"
		for i, via := range []string{a, "", b, cc, cc} {
			content := version(fmt.Sprintf("big v%d", i), 6<<20)
			if via == "" {
				content = version("big v0", 6<<20) // read again, unchanged
			} else {
				writeFile(t, filepath.Join(via, big), content)
			}
			for range 2 {
				if got := readFile(t, filepath.Join(cc, big)); !bytes.Equal(got, content) {
					t.Fatalf("round %d: n3 read %d bytes starting %q, want %q", i, len(got), got[:min(len(got), 16)], content[:16])
				}
			}
		}
		must(t, errors.Join(os.Remove(filepath.Join(a, big)), os.Remove(filepath.Join(a, p)))) // the quota
	})

	t.Run("close-to-open with a lagging node", func(t *testing.T) {
		leader := c.WaitLeader(t)
		var lag, writer string
		for _, nd := range c.Nodes() {
			if nd.ID == leader.ID {
				continue
			}
			if lag == "" {
				lag = nd.ID
			} else {
				writer = nd.ID
			}
		}
		// The lagging node hears of every commit 100 ms late: only the
		// catch-up before lookup and open makes it see a close at once.
		c.Delay(leader.ID, lag, 100*time.Millisecond)
		defer c.Faults().MendAll()
		for i := range 3 {
			p := fmt.Sprintf("lag-%d.txt", i)
			writeFile(t, filepath.Join(dirs[writer], p), []byte(p))
			if got, err := os.ReadFile(filepath.Join(dirs[lag], p)); err != nil || string(got) != p {
				t.Fatalf("lagging %s read %q, %v right after the close on %s", lag, got, err, writer)
			}
			writeFile(t, filepath.Join(dirs[writer], p), []byte(p+" v2"))
			if got, err := os.ReadFile(filepath.Join(dirs[lag], p)); err != nil || string(got) != p+" v2" {
				t.Fatalf("lagging %s read %q, %v right after the second close on %s", lag, got, err, writer)
			}
		}
		// A name created and deleted elsewhere, then created on the
		// lagging node: the leader confirms the absence but holds a newer
		// tombstone than the lagging node, which must catch up before its
		// create (else its close would take the tombstone for a delete
		// made while the file was open: ESTALE).
		for i := range 3 {
			p := fmt.Sprintf("lag-recreate-%d.txt", i)
			writeFile(t, filepath.Join(dirs[writer], p), []byte("first"))
			if err := os.Remove(filepath.Join(dirs[writer], p)); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dirs[lag], p), os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatalf("create on lagging %s after a delete on %s: %v", lag, writer, err)
			}
			if _, err := f.WriteString("second"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("close on lagging %s of a name deleted on %s before the create: %v", lag, writer, err)
			}
			if got, err := os.ReadFile(filepath.Join(dirs[writer], p)); err != nil || string(got) != "second" {
				t.Fatalf("%s read %q, %v after the close on %s", writer, got, err, lag)
			}
		}
	})

	t.Run("changes through other nodes and the Go API show without an open", func(t *testing.T) {
		p := filepath.Join(cc, "watched.txt")
		writeFile(t, filepath.Join(a, "watched.txt"), []byte("1"))
		statSize := func(want int64) {
			t.Helper()
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				fi, err := os.Stat(p)
				if want < 0 {
					return errors.Is(err, fs.ErrNotExist), fmt.Sprintf("stat on n3: %v %v", fi, err)
				}
				return err == nil && fi.Size() == want, fmt.Sprintf("stat on n3: %v %v", fi, err)
			})
		}
		statSize(1)
		if _, err := c.Node("n2").Node().Files().Create(t.Context(), "watched.txt", bytes.NewReader([]byte("1234")), nil); err != nil {
			t.Fatal(err)
		}
		statSize(4)
		if _, err := c.Node("n1").Node().Files().Remove(t.Context(), "watched.txt", nil); err != nil {
			t.Fatal(err)
		}
		statSize(-1)
		if _, err := c.Node("n2").Node().Files().Create(t.Context(), "watched.txt", bytes.NewReader([]byte("12345")), nil); err != nil {
			t.Fatal(err)
		}
		statSize(5)
		if ents, err := os.ReadDir(cc); err != nil || !slices.ContainsFunc(ents, func(e fs.DirEntry) bool { return e.Name() == "watched.txt" }) {
			t.Fatalf("readdir on n3: %v %v", ents, err)
		}
	})

	t.Run("a name removed on one node is free on the others right after", func(t *testing.T) {
		// The other node applies the removal a moment after the call
		// returned: until then its lookups must not answer from its own
		// state (mkdir and O_EXCL would fail with EEXIST, open(O_CREAT)
		// with ENOENT). Every other round it looked the name up before
		// the removal, so its kernel also holds the name.
		ids := []string{"n1", "n2", "n3"}
		must(t, os.Mkdir(filepath.Join(a, "again"), 0o755))
		for round := range 12 {
			from, to := filepath.Join(dirs[ids[round%3]], "again"), filepath.Join(dirs[ids[(round+1)%3]], "again")
			looked := round%2 == 1
			what := fmt.Sprintf("round %d (%s, then %s; looked up there first: %v)", round, ids[round%3], ids[(round+1)%3], looked)
			look := func(name string) {
				if looked {
					if _, err := os.Stat(filepath.Join(to, name)); err != nil {
						t.Errorf("%s: stat %s right after it was made: %v", what, name, err)
					}
				}
			}
			d := fmt.Sprintf("d%d", round)
			must(t, os.Mkdir(filepath.Join(from, d), 0o755))
			look(d)
			must(t, syscall.Rmdir(filepath.Join(from, d)))
			if err := os.Mkdir(filepath.Join(to, d), 0o755); err != nil {
				t.Errorf("%s: mkdir after rmdir: %v", what, err)
			}

			x := fmt.Sprintf("x%d", round)
			writeFile(t, filepath.Join(from, x), []byte("old"))
			look(x)
			must(t, os.Remove(filepath.Join(from, x)))
			if f, err := os.OpenFile(filepath.Join(to, x), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err != nil {
				t.Errorf("%s: O_EXCL create after unlink: %v", what, err)
			} else {
				must(t, f.Close())
			}

			o := fmt.Sprintf("o%d", round)
			writeFile(t, filepath.Join(from, o), []byte("old"))
			look(o)
			must(t, os.Remove(filepath.Join(from, o)))
			if f, err := os.OpenFile(filepath.Join(to, o), os.O_CREATE|os.O_WRONLY, 0o644); err != nil {
				t.Errorf("%s: O_CREAT open after unlink: %v", what, err)
			} else {
				_, err := f.WriteString("new")
				must(t, errors.Join(err, f.Close()))
				if got := content(filepath.Join(from, o)); got != `"new"` {
					t.Errorf("%s: after the create %s reads %s", what, ids[round%3], got)
				}
			}

			r := fmt.Sprintf("r%d", round)
			writeFile(t, filepath.Join(from, r), []byte("old"))
			look(r)
			must(t, os.Remove(filepath.Join(from, r)))
			if _, err := os.Open(filepath.Join(to, r)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: open for reading after unlink: %v, want ENOENT", what, err)
			}
		}
	})

	t.Run("posix behaviour matches a local directory", func(t *testing.T) {
		local := t.TempDir()
		if err := os.Mkdir(filepath.Join(a, "posix"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tc := range posixCases {
			t.Run(tc.name, func(t *testing.T) {
				ld := filepath.Join(local, tc.name)
				md := filepath.Join(a, "posix", tc.name)
				od := filepath.Join(b, "posix", tc.name)
				for _, d := range []string{ld, md} {
					if err := os.Mkdir(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				want := tc.run(t, ld, ld)
				got := tc.run(t, md, od)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("mount answered\n  %q\nthe kernel's local directory\n  %q", got, want)
				}
			})
		}
	})

	t.Run("O_EXCL create race across nodes", func(t *testing.T) {
		for round := range 8 {
			p := fmt.Sprintf("excl-%d", round)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, d := range []string{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f, err := os.OpenFile(filepath.Join(d, p), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
					if err == nil {
						_, err = fmt.Fprintf(f, "winner %d", i)
						err = errors.Join(err, f.Close())
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, fs.ErrExist):
					t.Fatalf("round %d: loser got %v, want EEXIST", round, err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d creators won (errors %v), want exactly 1", round, won, errs)
			}
		}
	})

	t.Run("rename over from two nodes, readers see whole versions", func(t *testing.T) {
		const size = 96 << 10 // over the inline limit: blobs
		target := "renamed.dat"
		writeFile(t, filepath.Join(a, target), version("init", size))
		stop := make(chan struct{})
		var readers sync.WaitGroup
		var mu sync.Mutex
		reads, bad := 0, ""
		for _, d := range []string{cc, a} {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					got, err := os.ReadFile(filepath.Join(d, target))
					mu.Lock()
					reads++
					if err != nil {
						bad = fmt.Sprintf("read: %v", err)
					} else if !whole(got, size) {
						bad = fmt.Sprintf("a mixed or partial version: %d bytes starting %q", len(got), got[:min(len(got), 16)])
					}
					mu.Unlock()
				}
			}()
		}
		var writers sync.WaitGroup
		werrs := make(chan error, 2)
		for i, d := range []string{a, b} {
			writers.Add(1)
			go func() {
				defer writers.Done()
				for j := range 6 {
					tmp := filepath.Join(d, fmt.Sprintf(".tmp-%d-%d", i, j))
					if err := os.WriteFile(tmp, version(fmt.Sprintf("w%d-%d", i, j), size), 0o644); err != nil {
						werrs <- err
						return
					}
					if err := os.Rename(tmp, filepath.Join(d, target)); err != nil {
						werrs <- err
						return
					}
				}
			}()
		}
		writers.Wait()
		close(stop)
		readers.Wait()
		close(werrs)
		for err := range werrs {
			t.Fatal(err)
		}
		if bad != "" {
			t.Fatalf("after %d reads: %s", reads, bad)
		}
		// every node ends with the same whole version
		first := readFile(t, filepath.Join(a, target))
		for _, d := range []string{b, cc} {
			if got := readFile(t, filepath.Join(d, target)); !bytes.Equal(got, first) || !whole(got, size) {
				t.Fatalf("%s holds another version than n1", d)
			}
		}
		t.Logf("%d reads during the renames, all whole", reads)
	})

	t.Run("a file holds only what its writers wrote", func(t *testing.T) {
		// A node hands its writers' temp files out again (tempPool):
		// after a large file, a new file opened without O_TRUNC (as fio
		// opens) and an existing file changed in place must hold their
		// own bytes only, on every node.
		dir := filepath.Join(a, "reuse")
		writeFile(t, filepath.Join(dir, "base.txt"), []byte("hello"))
		for i := range 8 {
			writeFile(t, filepath.Join(dir, "big.bin"), bytes.Repeat([]byte{'x'}, 256<<10))
			name := fmt.Sprintf("new-%d.txt", i)
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY, 0o644)
			must(t, err)
			_, err = f.Write([]byte("ab"))
			must(t, err)
			must(t, f.Close())
			if got := string(readFile(t, filepath.Join(cc, "reuse", name))); got != "ab" {
				t.Fatalf("round %d: a new file written with %q reads %d bytes on n3: %.20q", i, "ab", len(got), got)
			}
			f, err = os.OpenFile(filepath.Join(dir, "base.txt"), os.O_RDWR, 0)
			must(t, err)
			first := []byte{"hH"[i%2]}
			_, err = f.WriteAt(first, 0)
			must(t, err)
			must(t, f.Close())
			if got, want := string(readFile(t, filepath.Join(cc, "reuse", "base.txt"))), string(first)+"ello"; got != want {
				t.Fatalf("round %d: a file changed in place reads %q on n3, want %q", i, got, want)
			}
		}
	})

	t.Run("a file staged while written holds every write", func(t *testing.T) {
		// Written in order past a log entry's size, a file is staged
		// while it is written (stager); a write elsewhere, a truncate, an
		// fsync or the writer's death must leave exactly what POSIX says.
		big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
		check := func(name string, want []byte) {
			t.Helper()
			if got := readFile(t, filepath.Join(cc, "stage", name)); !bytes.Equal(got, want) {
				t.Fatalf("%s on n3: %d bytes (%.12q…), want %d (%.12q…)", name, len(got), got, len(want), want)
			}
		}
		open := func(name string) *os.File {
			t.Helper()
			must(t, os.MkdirAll(filepath.Join(a, "stage"), 0o755))
			f, err := os.OpenFile(filepath.Join(a, "stage", name), os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
			must(t, err)
			return f
		}

		f := open("back.bin") // in order, then back to the start
		_, err := f.Write(big)
		must(t, err)
		_, err = f.WriteAt([]byte("HEAD"), 0)
		must(t, err)
		must(t, f.Close())
		check("back.bin", append([]byte("HEAD"), big[4:]...))

		f = open("hole.bin") // in order, then past the end
		_, err = f.Write(big[:100<<10])
		must(t, err)
		_, err = f.WriteAt([]byte("tail"), 300<<10)
		must(t, err)
		must(t, f.Close())
		check("hole.bin", slices.Concat(big[:100<<10], make([]byte, 200<<10), []byte("tail")))

		f = open("cut.bin") // in order, truncated, then on
		_, err = f.Write(big)
		must(t, err)
		must(t, f.Truncate(80<<10))
		_, err = f.WriteAt([]byte("more"), 80<<10)
		must(t, err)
		must(t, f.Close())
		check("cut.bin", append(slices.Clone(big[:80<<10]), "more"...))

		f = open("regrown.bin") // in order, cut, then grown back by a truncate
		_, err = f.Write(big)
		must(t, err)
		must(t, f.Truncate(80<<10))
		must(t, f.Truncate(int64(len(big))))
		must(t, f.Close())
		check("regrown.bin", append(slices.Clone(big[:80<<10]), make([]byte, len(big)-80<<10)...))

		f = open("sync.bin") // fsync halfway: each commit whole
		_, err = f.Write(big[:128<<10])
		must(t, err)
		must(t, f.Sync())
		check("sync.bin", big[:128<<10])
		_, err = f.Write(big[128<<10:])
		must(t, err)
		must(t, f.Close())
		check("sync.bin", big)

		p := filepath.Join(a, "stage", "killed.bin") // killed after 200 KiB
		writeFile(t, p, []byte("previous version\n"))
		killedWriterOf(t, p, 200<<10)
		check("killed.bin", []byte("previous version\n"))
	})

	t.Run("a writer killed mid-write leaves the previous version", func(t *testing.T) {
		p := filepath.Join(a, "killed.txt")
		writeFile(t, p, []byte("previous version\n"))
		// The shell truncates, writes half a file and is SIGKILLed with
		// the file open: the kernel closes it for the dying process.
		killedWriter(t, p)
		for _, d := range []string{a, b, cc} {
			if got := string(readFile(t, filepath.Join(d, "killed.txt"))); got != "previous version\n" {
				t.Fatalf("%s: %q after the writer was killed, want the previous version", d, got)
			}
		}
		// A new file (created without O_EXCL) is committed at its first
		// close only: killed before, it never existed.
		np := filepath.Join(a, "killed-new.txt")
		killedWriter(t, np)
		for _, d := range []string{a, cc} {
			if _, err := os.ReadFile(filepath.Join(d, "killed-new.txt")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s: a new file killed mid-write: %v, want ENOENT", d, err)
			}
		}
		// The kernel sends RELEASE only once no process holds the
		// descriptor (and then asynchronously): a forked child keeps it
		// open after its parent is killed, so the window in which a
		// reader on the node could see the killed writer's content stays
		// open until the child closes it.
		hp := filepath.Join(a, "killed-held.txt")
		closeChild := killedWriterWithChild(t, hp)
		if got, err := os.ReadFile(hp); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a new file whose killed writer's descriptor a child holds: %q, %v; want ENOENT", got, err)
		}
		// The child's own writes and close fail loudly (EIO) rather than
		// vanish with the killed writer's content.
		if got := closeChild(); got != "write 5, close 5" {
			t.Fatalf("the child's write and close after its parent was killed: %s, want EIO for both", got)
		}
		for _, d := range []string{a, cc} {
			if got, err := os.ReadFile(filepath.Join(d, "killed-held.txt")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s: after the child closed the killed writer's descriptor: %q, %v; want ENOENT", d, got, err)
			}
		}
	})

	t.Run("a corrupt local copy is repaired before a read returns it", func(t *testing.T) {
		// corrupt writes content to name through n1, then damages n3's
		// copy of its blob at off.
		corrupt := func(name string, content []byte, off int64) {
			t.Helper()
			writeFile(t, filepath.Join(a, name), content)
			sum := fmt.Sprintf("%x", sha256.Sum256(content))
			blob := filepath.Join(c.Dir(), "n3", "files", "blobs", sum[:2], sum)
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				_, err := os.Stat(blob)
				return err == nil, fmt.Sprintf("n3's blob: %v", err)
			})
			f, err := os.OpenFile(blob, os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("BAD"), off)
			must(t, errors.Join(err, f.Close()))
		}
		content := bytes.Repeat([]byte("good bytes "), 10<<10)
		corrupt("scrubbed.bin", content, 1000)
		if got := readFile(t, filepath.Join(cc, "scrubbed.bin")); !bytes.Equal(got, content) {
			t.Fatalf("n3 read %d bytes that differ from what was written", len(got))
		}

		// A large file is checked while it is read: the read that
		// reaches the end fails (the kernel's readahead sends READs
		// concurrently, out of order), and once repaired the file reads
		// whole; the bad bytes read before are not kept in the cache.
		rc := bytes.Repeat([]byte("read good bytes "), 6<<20/16)
		corrupt("read-corrupt.bin", rc, 3<<20)
		got, err := os.ReadFile(filepath.Join(cc, "read-corrupt.bin"))
		expectErrno(t, fmt.Sprintf("a read through a corrupt large blob (%d bytes read)", len(got)), err, syscall.EIO)
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			got, err := os.ReadFile(filepath.Join(cc, "read-corrupt.bin"))
			if err != nil {
				return false, err.Error()
			}
			if !bytes.Equal(got, rc) {
				t.Fatalf("after its repair n3 read %d bytes that differ from what was written", len(got))
			}
			return true, ""
		})
		must(t, os.Remove(filepath.Join(a, "read-corrupt.bin"))) // the quota

		// A large file patched in place is completed from its old
		// version at the close (lazybase.go): a corrupt old version fails
		// the close, and nothing of it is committed.
		large := bytes.Repeat([]byte("large good bytes "), 6<<20/17)
		corrupt("patched.bin", large, 5<<20)
		w, err := os.OpenFile(filepath.Join(cc, "patched.bin"), os.O_WRONLY, 0)
		must(t, err)
		_, err = w.WriteAt([]byte("PATCH"), 0)
		must(t, err)
		expectErrno(t, "close of a patch over a corrupt old version", w.Close(), syscall.EIO)
		if got := readFile(t, filepath.Join(a, "patched.bin")); !bytes.Equal(got, large) {
			t.Fatalf("after a patch over a corrupt old version n1 reads %d bytes that differ from the old content", len(got))
		}
	})

	t.Run("errors a program understands", func(t *testing.T) {
		expectErrno(t, "symlink", os.Symlink("x", filepath.Join(a, "link")), syscall.EPERM)
		expectErrno(t, "hard link", os.Link(filepath.Join(a, "c2o.txt"), filepath.Join(a, "hard")), syscall.EPERM)
		expectErrno(t, "backslash name", os.WriteFile(filepath.Join(a, `bad\name`), nil, 0o644), syscall.EINVAL)
		expectErrno(t, "marker name", os.WriteFile(filepath.Join(a, ".cohort-dir"), nil, 0o644), syscall.EINVAL)
		must(t, os.MkdirAll(filepath.Join(a, "full/sub"), 0o755))
		expectErrno(t, "rmdir non-empty", os.Remove(filepath.Join(a, "full")), syscall.ENOTEMPTY)
		expectErrno(t, "rename a directory", os.Rename(filepath.Join(a, "full"), filepath.Join(a, "full2")), syscall.EXDEV)

		// quota: the close fails with EDQUOT and the old content stays
		p := filepath.Join(a, "quota.bin")
		writeFile(t, p, []byte("small"))
		f, err := os.Create(p)
		must(t, err)
		_, err = f.Write(make([]byte, quota+1))
		must(t, err)
		expectErrno(t, "close over the quota", f.Close(), syscall.EDQUOT)
		if got := string(readFile(t, filepath.Join(cc, "quota.bin"))); got != "small" {
			t.Fatalf("after a refused write n3 reads %q, want the old content", got)
		}
		var st syscall.Statfs_t
		must(t, syscall.Statfs(a, &st))
		if total := int64(st.Blocks) * st.Bsize; total != quota {
			t.Fatalf("statfs size %d, want the quota %d", total, quota)
		}
		// flock is local to the node (documented): it works between
		// processes of one node.
		f1, err := os.Open(filepath.Join(a, "c2o.txt"))
		must(t, err)
		defer f1.Close()
		f2, err := os.Open(filepath.Join(a, "c2o.txt"))
		must(t, err)
		defer f2.Close()
		must(t, syscall.Flock(int(f1.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
		expectErrno(t, "second flock on the node", syscall.Flock(int(f2.Fd()), syscall.LOCK_EX|syscall.LOCK_NB), syscall.EWOULDBLOCK)
	})

	t.Run("a node down while files change comes back with the same tree", func(t *testing.T) {
		for i := range 5 {
			writeFile(t, filepath.Join(a, "down", fmt.Sprintf("keep-%d", i)), []byte("before"))
			writeFile(t, filepath.Join(a, "down", fmt.Sprintf("gone-%d", i)), []byte("before"))
		}
		c.Kill("n3")
		for i := range 5 {
			must(t, os.Remove(filepath.Join(b, "down", fmt.Sprintf("gone-%d", i))))
			writeFile(t, filepath.Join(a, "down", fmt.Sprintf("keep-%d", i)), bytes.Repeat([]byte{byte('a' + i)}, 70<<10))
			writeFile(t, filepath.Join(b, "down", "new", fmt.Sprintf("n-%d", i)), []byte("while down"))
		}
		must(t, os.Mkdir(filepath.Join(a, "down", "empty"), 0o755))
		c.Restart("n3")
		waitMounted(t, c)
		want, got := tree(t, a), tree(t, cc)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("n3's tree after its restart:\n%v\nn1's:\n%v", got, want)
		}
		if _, ok := got["down/gone-0"]; ok {
			t.Fatal("a file deleted while n3 was down came back")
		}
	})

	t.Run("no quorum: close fails with EIO and the old content stays", func(t *testing.T) {
		p := filepath.Join(a, "quorum.txt")
		writeFile(t, p, []byte("committed"))
		c.Kill("n2")
		c.Kill("n3")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		must(t, err)
		_, err = f.WriteString("never committed")
		must(t, err)
		expectErrno(t, "close without a quorum", f.Close(), syscall.EIO)
		if got := string(readFile(t, p)); got != "committed" {
			t.Fatalf("read without a quorum: %q, want the old content", got)
		}
		// A large file written in order is staged while written; without
		// a quorum its close fails alike.
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		must(t, err)
		_, err = f.Write(bytes.Repeat([]byte("never committed "), 16<<10))
		must(t, err)
		expectErrno(t, "close of a large file without a quorum", f.Close(), syscall.EIO)
		if got := string(readFile(t, p)); got != "committed" {
			t.Fatalf("read without a quorum after a large write: %q, want the old content", got)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p string, content []byte) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, content, 0o644))
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

func expectErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// version is a file of size bytes that names tag in every line, so a
// mix of two versions is visible.
func version(tag string, size int) []byte {
	line := []byte(fmt.Sprintf("%-15s\n", tag))
	return bytes.Repeat(line, size/len(line))
}

func whole(b []byte, size int) bool {
	if len(b) != size/16*16 || len(b) < 16 {
		return false
	}
	return bytes.Equal(b, bytes.Repeat(b[:16], len(b)/16))
}

// killedWriter runs a process that opens p with O_TRUNC, writes half a
// file and kills itself with SIGKILL while the file is open (no close(2)
// of any descriptor of it: a shell's redirections would close a dup).
func killedWriter(t *testing.T, p string) { killedWriterOf(t, p, len("partial content, never clo")) }

// killedWriterOf is killedWriter writing size bytes before it is killed.
func killedWriterOf(t *testing.T, p string, size int) {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", `import os, signal, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
n = int(sys.argv[2])
data = (b"partial content, never clo" * (n // 26 + 1))[:n]
while data:
    data = data[os.write(fd, data):]
os.kill(os.getpid(), signal.SIGKILL)`, p, strconv.Itoa(size))
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the writer was not killed: %v", err)
	}
}

// killedWriterWithChild is killedWriter whose process first forks a child
// that holds the descriptor open. The returned func makes the child write
// to it and close it, and returns what each call did ("write ok" or
// "write 5" for EIO, then the same of close), once both returned.
func killedWriterWithChild(t *testing.T, p string) func() string {
	t.Helper()
	toChild, tell, err := os.Pipe()
	must(t, err)
	fromChild, closed, err := os.Pipe()
	if err != nil {
		toChild.Close()
		tell.Close()
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", "-c", `import os, signal, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"partial content, never clo")
if os.fork() == 0:
    sys.stdin.buffer.read(1)
    said = []
    for what, op in (("write", lambda: os.write(fd, b"more")), ("close", lambda: os.close(fd))):
        try:
            op()
            said.append(what + " ok")
        except OSError as e:
            said.append(what + " " + str(e.errno))
    sys.stdout.buffer.write(", ".join(said).encode())
    sys.stdout.flush()
    os._exit(0)
os.kill(os.getpid(), signal.SIGKILL)`, p)
	cmd.Stdin, cmd.Stdout = toChild, closed
	err = cmd.Run()
	toChild.Close()
	closed.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		tell.Close()
		fromChild.Close()
		t.Fatalf("the writer was not killed: %v", err)
	}
	done := false
	finish := func() string {
		done = true
		tell.Close() // the child's read returns: it writes, closes and says so
		got, err := io.ReadAll(fromChild)
		fromChild.Close()
		if err != nil || len(got) == 0 {
			t.Fatalf("the child did not report: %q, %v", got, err)
		}
		return string(got)
	}
	t.Cleanup(func() {
		if !done {
			done = true
			tell.Close()
			fromChild.Close()
		}
	})
	return finish
}

// tree maps every file under dir to its size and SHA-256, and every
// directory to "dir".
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
		return nil
	}))
	return out
}

// rewriteEverywhere starts four writers in each of dirs (the mounts of
// different nodes), each writing file p whole, as one tagged version of
// size bytes, rounds times. A writer stops at its first error that ok
// (nil: none) does not accept, and sends it to errs.
func rewriteEverywhere(writers *sync.WaitGroup, errs chan<- error, dirs []string, p string, size, rounds int, ok func(error) bool) {
	for _, d := range dirs {
		for w := range 4 {
			writers.Go(func() {
				for i := range rounds {
					tag := fmt.Sprintf("%s-%d-%d", filepath.Base(d), w, i)
					err := os.WriteFile(filepath.Join(d, p), version(tag, size), 0o644)
					if err != nil && (ok == nil || !ok(err)) {
						errs <- fmt.Errorf("%s: %w", tag, err)
						return
					}
				}
			})
		}
	}
}
