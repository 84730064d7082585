package demo

import (
	"net/http"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/sessions"
)

// counterKey is the session key of the demo counter.
const counterKey = "demo.count"

// counterReply is the answer of the counter routes.
type counterReply struct {
	Count int64  `json:"count"`
	Node  string `json:"node"`
}

// mountCounter registers GET and POST /demo/api/counter: a per-session
// counter that shows a session surviving moves between nodes.
func (a *App) mountCounter(handle func(string, http.Handler)) {
	handle("GET /demo/api/counter", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A read never creates a session.
		httpapi.WriteJSON(w, http.StatusOK, counterReply{Count: a.Sessions.GetInt64(r.Context(), counterKey), Node: a.NodeID})
	}))
	handle("POST /demo/api/counter", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		n := a.Sessions.GetInt64(ctx, counterKey) + 1
		a.Sessions.Put(ctx, counterKey, n)
		// Commit before answering so a failure answers an error, not a
		// count that was never stored.
		if err := a.Sessions.Save(ctx); err != nil {
			httpapi.WriteError(w, sessions.StatusFor(err), err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, counterReply{Count: n, Node: a.NodeID})
	}))
}
