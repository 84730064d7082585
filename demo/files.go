package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/cohortserver/cohort/httpapi"
)

// Upload limits of the demo.
const (
	maxUpload   = 10 << 20 // bytes per file
	maxNameLen  = 100
	uploadsDir  = "demo/uploads/"
	listedFiles = 50
)

// Errors of the demo's uploads.
var (
	// ErrBadName means an upload or download names no valid file.
	ErrBadName = errors.New("invalid file name")
	// ErrNoFiles means the node has no shared file store wired.
	ErrNoFiles = errors.New("the shared files are not available on this node")
)

// CleanName turns an uploaded file's name into the demo's file name: the
// base name, with every character outside [A-Za-z0-9._-] replaced by "_".
// It refuses names that end up empty, all dots, or longer than 100 bytes.
func CleanName(raw string) (string, error) {
	raw = path.Base(strings.ReplaceAll(raw, `\`, "/"))
	if raw == "/" {
		raw = ""
	}
	var b strings.Builder
	for _, r := range raw {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" || strings.Trim(name, ".") == "" || len(name) > maxNameLen {
		return "", fmt.Errorf("%q: %w (1-%d characters, not only dots)", raw, ErrBadName, maxNameLen)
	}
	return name, nil
}

// Upload is one row of demo_uploads.
type Upload struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	SHA256     string    `json:"sha256"`
	Node       string    `json:"node"`
	UploadedAt time.Time `json:"uploaded_at"`
	URL        string    `json:"url"`
}

// upload handles POST /demo/api/files (multipart field "file"): the
// content goes to the shared files, the listing row to the business DB.
func (b *Backend) upload(w http.ResponseWriter, r *http.Request) {
	if b.Files == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, ErrNoFiles.Error())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUpload+1<<20)
	name, part, err := filePart(r)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer part.Close()
	b.store(w, r, name, part)
}

// filePart finds the form field "file" of a multipart/form-data request
// and returns its cleaned file name and its content, unread. Every error
// says what the client must send instead.
func filePart(r *http.Request) (string, *multipart.Part, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return "", nil, errors.New("send the file as multipart/form-data in a field named \"file\"")
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return "", nil, errors.New("no field named \"file\" in the form (or the body ends early, or its boundary is not the one in Content-Type)")
		}
		if err != nil {
			return "", nil, fmt.Errorf("malformed multipart body: %w", err)
		}
		if part.FormName() != "file" {
			part.Close()
			continue
		}
		name, err := CleanName(part.FileName())
		if err != nil {
			part.Close()
			return "", nil, err
		}
		return name, part, nil
	}
}

func (b *Backend) store(w http.ResponseWriter, r *http.Request, name string, body io.Reader) {
	ctx := r.Context()
	lr := &capReader{r: body, left: maxUpload}
	size, sum, err := b.Files.Put(ctx, uploadsDir+name, lr)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, errTooLarge) || lr.left < 0 {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the demo takes files up to %d MiB", maxUpload>>20))
			return
		}
		b.log().Warn("demo upload failed", "name", name, "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "storing the file in the shared files failed: "+err.Error())
		return
	}
	up := Upload{Name: name, Size: size, SHA256: sum, Node: b.NodeID, UploadedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := b.recordUpload(ctx, up); err != nil {
		b.dbError(ctx, w, err)
		return
	}
	up.URL = "/demo/api/files/" + name
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"node": b.NodeID, "file": up})
}

// recordUpload replaces the listing row of the file, in one transaction.
func (b *Backend) recordUpload(ctx context.Context, up Upload) error {
	tx, err := b.DB.SQL().BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record upload: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM demo_uploads WHERE name = ?", up.Name); err != nil {
		return fmt.Errorf("record upload: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO demo_uploads (name, size, sha256, node, uploaded_at) VALUES (?, ?, ?, ?, ?)",
		up.Name, up.Size, up.SHA256, up.Node, unixMS(up.UploadedAt)); err != nil {
		return fmt.Errorf("record upload: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record upload: %w", err)
	}
	return nil
}

// Uploads returns the newest uploads, newest first.
func (b *Backend) Uploads(ctx context.Context) ([]Upload, error) {
	rows, err := b.DB.SQL().QueryContext(ctx,
		"SELECT name, size, sha256, node, uploaded_at FROM demo_uploads ORDER BY uploaded_at DESC, name LIMIT ?", listedFiles)
	if err != nil {
		return nil, fmt.Errorf("read demo_uploads: %w", err)
	}
	defer rows.Close()
	out := []Upload{}
	for rows.Next() {
		var u Upload
		var ms int64
		if err := rows.Scan(&u.Name, &u.Size, &u.SHA256, &u.Node, &ms); err != nil {
			return nil, fmt.Errorf("read demo_uploads: %w", err)
		}
		u.UploadedAt = time.UnixMilli(ms).UTC()
		u.URL = "/demo/api/files/" + u.Name
		out = append(out, u)
	}
	return out, rows.Err()
}

func (b *Backend) listFiles(w http.ResponseWriter, r *http.Request) {
	ups, err := b.Uploads(r.Context())
	if err != nil {
		b.dbError(r.Context(), w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"node": b.NodeID, "files": ups})
}

// download handles GET /demo/api/files/NAME from the shared files, on any
// node.
func (b *Backend) download(w http.ResponseWriter, r *http.Request) {
	if b.Files == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, ErrNoFiles.Error())
		return
	}
	name, err := CleanName(r.PathValue("name"))
	if err != nil || name != r.PathValue("name") {
		httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%q: %s", r.PathValue("name"), ErrBadName))
		return
	}
	rc, size, err := b.Files.Get(r.Context(), uploadsDir+name)
	if err != nil {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no uploaded file %q: %s", name, err))
		return
	}
	defer rc.Close()
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" || strings.HasPrefix(ctype, "text/html") || strings.Contains(ctype, "javascript") || strings.Contains(ctype, "svg") {
		ctype = "application/octet-stream" // never serve uploads as active content
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": name}))
	w.Header().Set("X-Cohort-Node", b.NodeID)
	_, _ = io.Copy(w, rc)
}

var errTooLarge = errors.New("upload too large")

// capReader fails the read that goes past left bytes, so an oversized
// upload is refused rather than stored truncated.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n, errTooLarge
	}
	return n, err
}
