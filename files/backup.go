package files

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// BackupTail names the section a backup carries after its snapshot: the
// contents (blobs) of every live file of the backed-up manifest. Its
// format, all lines ending in "\n":
//
//	blob <sha256> <size>      followed by exactly size bytes of content
//	missing <sha256> <path>   a blob no node could serve at backup time
//	end <blobs> <bytes> <missing>
//
// Every blob appears once, whatever number of files share it.
const BackupTail = "files-blobs 1"

// Section is the name of the files state machine in the replicated log
// and of its section in every snapshot.
const Section = "files"

// maxTailLine bounds one header line of the blob section.
const maxTailLine = 2048

// BlobRef is one blob a backup must hold: its hash and size, the nodes
// that held it at commit, and one path that names it (for messages).
type BlobRef struct {
	SHA256  string
	Size    int64
	Holders []string
	Path    string
}

// BackupSummary counts what a blob section holds.
type BackupSummary struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Missing lists the files whose content no node could serve when the
	// backup was taken: a restore lists them but cannot read them.
	Missing []string `json:"missing,omitempty"`
}

// ManifestBlobs reads the files section of a snapshot (one Info per line,
// as the state machine persists it) and returns the blobs its live files
// refer to, each once, sorted by hash. Memory is one entry per distinct
// blob, never content.
func ManifestBlobs(r io.Reader) ([]BlobRef, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	seen := make(map[string]int)
	var refs []BlobRef
	for {
		var in Info
		if err := dec.Decode(&in); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read files manifest: %w", err)
		}
		if in.Deleted || !validSum(in.SHA256) {
			continue
		}
		if _, ok := seen[in.SHA256]; ok {
			continue
		}
		seen[in.SHA256] = len(refs)
		refs = append(refs, BlobRef{SHA256: in.SHA256, Size: in.Size, Holders: in.Holders, Path: in.Path})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].SHA256 < refs[j].SHA256 })
	return refs, nil
}

// WriteBackupBlobs writes the blob section (see BackupTail) for refs to w,
// streaming each blob from the local store; a blob this node lacks is
// fetched from a peer first, as a read would. A blob no node can serve is
// recorded as missing and logged; any other error ends the backup.
func (s *Store) WriteBackupBlobs(ctx context.Context, w io.Writer, refs []BlobRef) (BackupSummary, error) {
	var sum BackupSummary
	bp := s.blobs.bufs.Get().(*[]byte)
	defer s.blobs.bufs.Put(bp)
	for _, ref := range refs {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		if err := s.ensureLocal(ctx, ref.SHA256, ref.Holders); err != nil {
			if ctx.Err() != nil {
				return sum, ctx.Err()
			}
			s.log.Error("backup: no node serves this file's content; the backup lists it as missing",
				"path", ref.Path, "sha256", ref.SHA256, "err", err)
			sum.Missing = append(sum.Missing, ref.Path)
			if _, err := fmt.Fprintf(w, "missing %s %s\n", ref.SHA256, strconv.Quote(ref.Path)); err != nil {
				return sum, err
			}
			continue
		}
		f, err := s.blobs.openBlob(ref.SHA256)
		if err != nil {
			return sum, err
		}
		n, err := writeBlobRecord(w, f, ref.SHA256, *bp)
		f.Close()
		if err != nil {
			return sum, fmt.Errorf("blob %s of %s: %w", ref.SHA256[:12], ref.Path, err)
		}
		sum.Blobs++
		sum.Bytes += n
	}
	_, err := fmt.Fprintf(w, "end %d %d %d\n", sum.Blobs, sum.Bytes, len(sum.Missing))
	return sum, err
}

// writeBlobRecord writes one "blob" record from the open blob f.
func writeBlobRecord(w io.Writer, f *os.File, sum string, buf []byte) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if _, err := fmt.Fprintf(w, "blob %s %d\n", sum, size); err != nil {
		return 0, err
	}
	n, err := io.CopyBuffer(w, io.LimitReader(f, size), buf)
	if err == nil && n != size {
		err = fmt.Errorf("blob shrank: %d of %d bytes", n, size)
	}
	return n, err
}

// ReadBackupBlobs reads a blob section from r and calls fn for each blob
// with a reader of exactly its content (fn must read it to the end or
// fail). It checks the framing and the end record, not the hashes.
func ReadBackupBlobs(r *bufio.Reader, fn func(sum string, size int64, content io.Reader) error) (BackupSummary, error) {
	var got BackupSummary
	for {
		line, err := readTailLine(r)
		if err != nil {
			return got, err
		}
		f := strings.SplitN(line, " ", 3)
		switch {
		case f[0] == "blob" && len(f) == 3 && validSum(f[1]):
			size, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil || size < 0 {
				return got, fmt.Errorf("backup blob section: bad size in %q", line)
			}
			lr := &io.LimitedReader{R: exactReader{r}, N: size}
			if err := fn(f[1], size, lr); err != nil {
				return got, err
			}
			if lr.N != 0 {
				if _, err := io.Copy(io.Discard, lr); err != nil || lr.N != 0 {
					return got, fmt.Errorf("backup truncated inside blob %s", f[1][:12])
				}
			}
			got.Blobs++
			got.Bytes += size
		case f[0] == "missing" && len(f) == 3 && validSum(f[1]):
			p, err := strconv.Unquote(f[2])
			if err != nil {
				return got, fmt.Errorf("backup blob section: bad path in %q", line)
			}
			got.Missing = append(got.Missing, p)
		case f[0] == "end":
			var blobs, missing int
			var bytes int64
			if _, err := fmt.Sscanf(line, "end %d %d %d", &blobs, &bytes, &missing); err != nil {
				return got, fmt.Errorf("backup blob section: bad end record %q", line)
			}
			if blobs != got.Blobs || bytes != got.Bytes || missing != len(got.Missing) {
				return got, fmt.Errorf("backup blob section announces %d blobs, %d bytes, %d missing; holds %d, %d, %d",
					blobs, bytes, missing, got.Blobs, got.Bytes, len(got.Missing))
			}
			return got, nil
		default:
			return got, fmt.Errorf("backup blob section: unexpected line %q", line[:min(len(line), 80)])
		}
	}
}

// exactReader turns the end of the backup inside a blob into an error, so
// a truncated backup is reported as such rather than as a wrong hash.
type exactReader struct{ r io.Reader }

func (e exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("backup truncated inside a blob: %w", io.ErrUnexpectedEOF)
	}
	return n, err
}

func readTailLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxTailLine {
			return "", fmt.Errorf("backup blob section: line longer than %d bytes", maxTailLine)
		}
		if err == nil {
			return strings.TrimSuffix(string(line), "\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("backup truncated in its blob section: %w", err)
		}
	}
}

// RestoreBlobs reads a blob section from r into the blob store under dir
// (a node's files directory, <data-dir>/files), verifying each blob's
// SHA-256 as it is written; one buffer of memory whatever the sizes.
func RestoreBlobs(ctx context.Context, dir string, r *bufio.Reader) (BackupSummary, error) {
	b := newBlobStore(dir)
	if err := b.open(); err != nil {
		return BackupSummary{}, err
	}
	return ReadBackupBlobs(r, func(sum string, size int64, content io.Reader) error {
		if b.has(sum) {
			return nil
		}
		res, err := b.ingest(ctx, content, ingestOpts{expect: sum})
		if err != nil {
			return fmt.Errorf("restore blob %s: %w", sum[:12], err)
		}
		if res.Size != size {
			return fmt.Errorf("restore blob %s: %d of %d bytes", sum[:12], res.Size, size)
		}
		return nil
	})
}
