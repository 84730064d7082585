package proxy

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// InternalHandler serves the front's node-to-node endpoints; mount it on
// the cluster port at /_internal/front/:
//
//	/_internal/front/app/...  a request forwarded by a peer's front,
//	                          served here through the inner chain
//	GET /_internal/front/load this node's Load
//
// Arriving over the authenticated cluster port is what marks a request as
// already forwarded: it is always served here, never forwarded again, so
// loops are impossible and no client can forge the mark.
func (f *Front) InternalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_internal/front/load", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.currentLoad())
	})
	mux.HandleFunc(internalAppPrefix+"/", f.serveHop)
	return mux
}

func (f *Front) serveHop(w http.ResponseWriter, r *http.Request) {
	from := ""
	if f.cfg.PeerID != nil {
		from = f.cfg.PeerID(r.Context())
	}
	if from == "" {
		writeError(w, http.StatusForbidden, "forwarded requests are accepted only from cluster members")
		return
	}
	next := f.next.Load()
	if next == nil || (f.cfg.Ready != nil && !f.cfg.Ready()) {
		w.Header().Set(hdrUnready, "1")
		writeError(w, http.StatusServiceUnavailable, "this node's front is not serving yet")
		return
	}
	start := time.Now()
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	f.serving.Add(1)
	defer f.serving.Add(-1)

	r.URL.Path = strings.TrimPrefix(r.URL.Path, internalAppPrefix)
	if r.URL.RawPath != "" {
		r.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, internalAppPrefix)
	}
	r.RequestURI = r.URL.RequestURI()
	if c := r.Header.Get(hdrClient); c != "" {
		if _, _, err := net.SplitHostPort(c); err == nil {
			r.RemoteAddr = c
		}
	}
	if r.Header.Get(hdrNoHost) != "" {
		r.Host = ""
	}
	if r.Header.Get(hdrTLS) != "" {
		// The client spoke TLS to the entry node: show the application a
		// TLS request, as it would have seen had it entered here.
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: hostOnly(r.Host)}
	}
	stripHop(r.Header)
	lw := &logWriter{ResponseWriter: w}
	if f.cfg.AccessLog && f.log.Enabled(r.Context(), slog.LevelInfo) {
		defer func() {
			f.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", lw.status()), slog.Duration("duration", time.Since(start)),
				slog.String("route", KindHop), slog.String("from", from),
				slog.String("client", r.RemoteAddr), slog.Int64("bytes", lw.bytes))
		}()
	}
	(*next).ServeHTTP(lw, r)
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
