package demo

import (
	"encoding/json"
	"net/http"
	"regexp"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/sessions"
)

// userKey is the session key of the logged-in demo user.
const userKey = "demo.user"

var userRe = regexp.MustCompile(`^[\pL\pN_.@-]{1,64}$`)

// mountLogin registers POST /demo/api/login {"user":"NAME"}: it renews the
// session token (the old one dies on every node), stores the user and
// makes it the session's principal. There is no password: it is a demo.
func (a *App) mountLogin(handle func(string, http.Handler)) {
	handle("POST /demo/api/login", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			User string `json:"user"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, `body must be JSON {"user":"NAME"}: `+err.Error())
			return
		}
		if !userRe.MatchString(req.User) {
			httpapi.WriteError(w, http.StatusBadRequest, "user must be 1-64 letters, digits, or _ . @ -")
			return
		}
		ctx := r.Context()
		if err := a.Sessions.RenewToken(ctx); err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		a.Sessions.Put(ctx, userKey, req.User)
		a.Sessions.SetPrincipal(ctx, req.User)
		if err := a.Sessions.Save(ctx); err != nil {
			httpapi.WriteError(w, sessions.StatusFor(err), err.Error())
			return
		}
		a.Logger.Info("demo login", "user", req.User, "session", a.Sessions.ID(ctx))
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"user": req.User, "node": a.NodeID})
	}))
}
