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
// counter that shows a session surviving moves between nodes; and POST
// /demo/api/counter/rmw, the same counter incremented by read-modify-write,
// to show what --session-lock is for.
func (a *App) mountCounter(handle func(string, http.Handler)) {
	handle("GET /demo/api/counter", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A read never creates a session.
		httpapi.WriteJSON(w, http.StatusOK, counterReply{Count: a.Sessions.GetInt64(r.Context(), counterKey), Node: a.NodeID})
	}))
	handle("POST /demo/api/counter", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An atomic increment: concurrent POSTs of one session (two tabs,
		// a double click, through any node) all count. It commits before
		// returning, so a failure answers an error, not a count that was
		// never stored.
		n, err := a.Sessions.Incr(r.Context(), counterKey, 1)
		if err != nil {
			httpapi.WriteError(w, sessions.StatusFor(err), err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, counterReply{Count: n, Node: a.NodeID})
	}))
	handle("POST /demo/api/counter/rmw", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The same counter with a plain read, add one, Put: what most
		// session code does. Concurrent POSTs of one session lose
		// increments (last writer wins) unless --session-lock is on.
		ctx := r.Context()
		n := a.Sessions.GetInt64(ctx, counterKey) + 1
		a.Sessions.Put(ctx, counterKey, n)
		if err := a.Sessions.Save(ctx); err != nil {
			httpapi.WriteError(w, sessions.StatusFor(err), err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, counterReply{Count: n, Node: a.NodeID})
	}))
}
