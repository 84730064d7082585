package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWriteErrorShape(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "999") // a stale length from the handler
	WriteError(rec, http.StatusConflict, "node n9 is not a member; add it first")
	if rec.Code != http.StatusConflict {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	if rec.Header().Get("Content-Length") != "" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("headers %v", rec.Header())
	}
	var e Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error != "node n9 is not a member; add it first" {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
}

func TestWriteJSONIsCompactLikeTheContract(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, map[string]any{"count": 0, "node": "n1"})
	if got := rec.Body.String(); got != `{"count":0,"node":"n1"}`+"\n" {
		t.Fatalf("body %q", got)
	}
}
