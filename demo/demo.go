// Package demo is cohort's demo application: a page and a few JSON routes
// that show what the cluster gives an application (replicated sessions,
// shared files, a leader-only job).
//
// It owns only its handlers; state lives in the packages it calls
// (sessions, files, the business database). Every answer names the node
// that ran the handler, so a user can watch requests move between nodes.
//
// Each feature registers its routes in its own file through a method that
// Mount calls; add a line to Mount for a new file.
package demo

import (
	"log/slog"
	"net/http"

	"github.com/cohortserver/cohort/sessions"
)

// App is the demo application of one node. Fields a feature does not use
// may be nil; Mount skips the routes of a feature whose dependency is nil.
type App struct {
	// NodeID is the id of the node running the handlers.
	NodeID string
	// Sessions is the node's session manager (counter and login routes).
	Sessions *sessions.Manager
	// Logger receives the demo's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Mount registers every route of the demo with handle (for example
// node.HandleApp). Routes sit behind the sessions middleware.
func (a *App) Mount(handle func(pattern string, h http.Handler)) {
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	if a.Sessions != nil {
		a.mountCounter(handle)
		a.mountLogin(handle)
		a.mountEcho(handle)
	}
}
