// Package httpapi owns the shape of cohort's HTTP API answers: JSON bodies
// that are never cached, and errors as {"error": "..."} with a fitting
// status, in words a user can act on. Every package that answers HTTP
// (node, files, jobs, sessions, proxy, db, demo) writes through it, so the
// contract's error shape lives in one place.
package httpapi

import (
	"encoding/json"
	"net/http"
)

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// WriteJSON answers v as compact JSON (the contract's form) with status
// code; people read it through the CLI or a JSON tool.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	// A handler may have prepared another body; its length no longer holds.
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error": msg} with status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, Error{Error: msg})
}
