package files

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// File is an open shared file: an io.ReadSeekCloser over the local blob.
// A read that goes through the whole file from offset 0 without seeking
// elsewhere is verified against the SHA-256: the last bytes are handed out
// only once the hash matched, otherwise Read returns ErrCorrupt and the
// blob is queued for repair, so a sequential reader never receives a
// complete, silently corrupt file. Reads after a seek elsewhere are not
// verified (the scrubber covers them).
type File struct {
	info      Info
	f         *os.File
	pos       int64
	h         hash.Hash
	verifying bool // every byte from 0 to pos went through h
	verified  bool // the whole blob was hashed at Open
	good      bool // the blob was known good at Open (good.go)
	corrupt   func()
	// checked, if set, is called once a read through the whole file
	// found the hash right, with the blob's stamp at Open.
	checked func()
}

func newFile(info Info, f *os.File, corrupt func()) *File {
	return &File{info: info, f: f, h: sha256.New(), verifying: true, corrupt: corrupt}
}

// Verified reports whether Open hashed the whole blob before returning
// (Store.Open does up to Config.VerifyBelow bytes), so its bytes need no
// further check and may be read through Fd.
func (f *File) Verified() bool { return f.verified }

// Good reports whether the blob was known to hold this content at Open:
// hashed in full then (Verified), or written, received or checked by this
// node and unchanged on disk since (good.go). Only such a blob may be read
// by something that does not check it, such as the kernel in FUSE
// passthrough.
func (f *File) Good() bool { return f.verified || f.good }

// Fd is the descriptor of the local blob, valid until Close: for a
// zero-copy read (splice) of a Verified file, or of bytes Read has already
// passed through the hash. Reading through it moves no offset of the File.
func (f *File) Fd() uintptr { return f.f.Fd() }

// Info returns the metadata of the version this File reads.
func (f *File) Info() Info { return f.info }

// Read implements io.Reader.
func (f *File) Read(p []byte) (int, error) {
	left := f.info.Size - f.pos
	if left <= 0 {
		return 0, io.EOF
	}
	if !f.verifying || int64(len(p)) < left {
		if int64(len(p)) > left {
			p = p[:left]
		}
		n, err := f.f.Read(p)
		if f.verifying {
			f.h.Write(p[:n])
		}
		f.pos += int64(n)
		if err == io.EOF && f.pos < f.info.Size {
			err = fmt.Errorf("%w: blob is shorter than its %d bytes", ErrCorrupt, f.info.Size)
			f.fail()
		}
		return n, err
	}
	// This read reaches the end: read it all, check, then hand it out.
	n, err := io.ReadFull(f.f, p[:left])
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			f.fail()
			return 0, fmt.Errorf("%w: blob is shorter than its %d bytes", ErrCorrupt, f.info.Size)
		}
		return 0, fmt.Errorf("read %s: %w", f.info.Path, err)
	}
	f.h.Write(p[:n])
	if got := hex.EncodeToString(f.h.Sum(nil)); got != f.info.SHA256 {
		f.fail()
		return 0, fmt.Errorf("%w: %s hashes to %s, not %s", ErrCorrupt, f.info.Path, got[:12], f.info.SHA256[:12])
	}
	f.pos += int64(n)
	if f.checked != nil {
		f.checked()
		f.checked = nil
	}
	return n, nil
}

func (f *File) fail() {
	if f.corrupt != nil {
		f.corrupt()
		f.corrupt = nil
	}
}

// Seek implements io.Seeker. Seeking to 0 restarts verification.
// Offsets relative to the end use the recorded size.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		offset, whence = f.info.Size+offset, io.SeekStart
	}
	pos, err := f.f.Seek(offset, whence)
	if err != nil {
		return pos, fmt.Errorf("seek %s: %w", f.info.Path, err)
	}
	if pos != f.pos {
		f.verifying = pos == 0
		f.h.Reset()
	}
	f.pos = pos
	return pos, nil
}

// Close implements io.Closer.
func (f *File) Close() error { return f.f.Close() }
