package files

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/raft"
)

// HTTP headers of the files API.
const (
	// HeaderVersion carries a file's version in answers.
	HeaderVersion = "X-Cohort-Version"
	// HeaderSHA256 carries a file's SHA-256 (hex) in answers.
	HeaderSHA256 = "X-Cohort-Sha256"
	// HeaderMode sets the permission bits of a written file (octal).
	HeaderMode = "X-Cohort-Mode"
)

// HandleFile serves PUT, GET, HEAD, DELETE and POST (rename) on one file;
// the file's path is the request's "path" path value (mount it as
// /_cohort/api/files/{path...}). The caller authenticates.
func (s *Store) HandleFile(w http.ResponseWriter, r *http.Request) {
	p, err := CleanPath(r.PathValue("path"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.serveFile(w, r, p)
	case http.MethodPut:
		s.putFile(w, r, p)
	case http.MethodDelete:
		opts, ok := condition(w, r)
		if !ok {
			return
		}
		in, err := s.Remove(r.Context(), p, opts)
		if err != nil {
			writeErr(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, in)
	case http.MethodPost:
		to := r.URL.Query().Get("rename_to")
		if to == "" {
			writeErr(w, http.StatusBadRequest, "POST renames a file: give the new path as ?rename_to=NEW/PATH")
			return
		}
		opts, ok := condition(w, r)
		if !ok {
			return
		}
		in, err := s.Rename(r.Context(), p, to, opts)
		if err != nil {
			writeErr(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, in)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE, POST")
		writeErr(w, http.StatusMethodNotAllowed, "use GET, HEAD, PUT, DELETE or POST ?rename_to=")
	}
}

// condition reads If-Match ("VERSION" or "*") and If-None-Match: * into a
// compare-and-set.
func condition(w http.ResponseWriter, r *http.Request) (*WriteOptions, bool) {
	o := &WriteOptions{}
	if inm := strings.TrimSpace(r.Header.Get("If-None-Match")); inm != "" {
		if inm != "*" {
			writeErr(w, http.StatusBadRequest, `If-None-Match on a write must be "*" (create only)`)
			return nil, false
		}
		o.IfVersion = Version(0)
	}
	if im := strings.TrimSpace(r.Header.Get("If-Match")); im != "" && im != "*" {
		v, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || v == 0 {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("If-Match %q: give the version (ETag) the file must have, e.g. If-Match: \"42\"", im))
			return nil, false
		}
		o.IfVersion = Version(v)
	}
	return o, true
}

func (s *Store) putFile(w http.ResponseWriter, r *http.Request, p string) {
	opts, ok := condition(w, r)
	if !ok {
		return
	}
	if m := r.Header.Get(HeaderMode); m != "" {
		mode, err := strconv.ParseUint(m, 8, 32)
		if err != nil || mode > 0o777 {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("%s %q: give octal permission bits, e.g. 0644", HeaderMode, m))
			return
		}
		opts.Mode = fsMode(mode)
	}
	if r.ContentLength >= 0 {
		opts.Size, opts.SizeKnown = r.ContentLength, true
	}
	existed := false
	if cur, ok := s.state.get(p); ok && !cur.Deleted {
		existed = true
	}
	in, err := s.Create(r.Context(), p, r.Body, opts)
	if err != nil {
		if errors.Is(err, ErrFileTooLarge) || errors.Is(err, ErrQuotaExceeded) || errors.Is(err, ErrDiskFull) {
			// The rest of the body is not wanted; do not read it.
			w.Header().Set("Connection", "close")
		}
		writeErr(w, statusOf(err), err.Error())
		return
	}
	w.Header().Set("ETag", etag(in))
	code := http.StatusCreated
	if existed {
		code = http.StatusOK
	}
	writeJSON(w, code, in)
}

func (s *Store) serveFile(w http.ResponseWriter, r *http.Request, p string) {
	f, err := s.Open(r.Context(), p)
	if err != nil {
		writeErr(w, statusOf(err), err.Error())
		return
	}
	defer f.Close()
	in := f.Info()
	h := w.Header()
	h.Set("ETag", etag(in))
	h.Set(HeaderVersion, strconv.FormatUint(in.Version, 10))
	h.Set(HeaderSHA256, in.SHA256)
	ct := mime.TypeByExtension(path.Ext(in.Path))
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	// ServeContent answers Range, If-None-Match and HEAD; a full read goes
	// through File's verification and is cut short on a mismatch.
	http.ServeContent(w, r, "", in.ModTime, f)
}

func etag(in Info) string { return `"` + strconv.FormatUint(in.Version, 10) + `"` }

// HandleList serves GET ?prefix=P: the live files under P (with
// &deleted=1, the tombstones too).
func (s *Store) HandleList(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	list := s.List
	if r.URL.Query().Get("deleted") == "1" {
		list = s.ListAll
	}
	files, err := list(r.Context(), prefix)
	if err != nil {
		writeErr(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"prefix": prefix, "files": files})
}

// HandleStatus serves the node's Status as JSON.
func (s *Store) HandleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// HandleScrub runs a scrub now and answers its result.
func (s *Store) HandleScrub(w http.ResponseWriter, r *http.Request) {
	st, err := s.ScrubNow(r.Context())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// StatusOf maps an error of this package to an HTTP status.
func StatusOf(err error) int { return statusOf(err) }

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadPath):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrVersionMismatch):
		return http.StatusPreconditionFailed
	case errors.Is(err, ErrFileTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrQuotaExceeded), errors.Is(err, ErrDiskFull), errors.Is(err, syscall.ENOSPC):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrNoQuorum), errors.Is(err, ErrUnavailable), errors.Is(err, raft.ErrNoLeader),
		errors.Is(err, raft.ErrNotStarted), errors.Is(err, ErrClosed), errors.Is(err, raft.ErrLogUnwritable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, raft.ErrOutcomeUnknown):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) { httpapi.WriteJSON(w, code, v) }

func writeErr(w http.ResponseWriter, code int, msg string) { httpapi.WriteError(w, code, msg) }
