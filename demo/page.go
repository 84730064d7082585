package demo

import (
	"bytes"
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/cohortserver/cohort/httpapi"
)

//go:embed page.html
var pageSource string

// parsePage parses the embedded page (a test checks it parses).
func parsePage() (*template.Template, error) {
	return template.New("page").Funcs(template.FuncMap{
		"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() + " ago" },
		"kib": func(n int64) string {
			if n < 1024 {
				return strconv.FormatInt(n, 10) + " B"
			}
			return strconv.FormatInt((n+512)/1024, 10) + " KiB"
		},
	}).Parse(pageSource)
}

// pageData is what the page shows on first paint; the script refreshes it.
type pageData struct {
	Node     string
	Leader   bool
	Count    int64
	User     string
	Members  []Member
	Ticks    []TickRow
	Uploads  []Upload
	DBError  string
	Dialect  string
	Rendered time.Time
}

// servePage renders GET /: which node served you, and the current state;
// the page's script then keeps it fresh and drives the buttons.
func (b *Backend) servePage(w http.ResponseWriter, r *http.Request) {
	b.pageOnce.Do(func() { b.page, b.pageErr = parsePage() })
	tmpl, err := b.page, b.pageErr
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "demo page template: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	d := pageData{Node: b.NodeID, Leader: b.leader(), Members: b.members(ctx), Rendered: time.Now()}
	if b.Session != nil {
		d.Count = b.Session.GetInt64(ctx, counterKey)
		d.User = b.Session.GetString(ctx, userKey)
	}
	if b.DB != nil {
		d.Dialect = b.DB.Dialect()
		if err := b.DB.Check(ctx); err != nil {
			d.DBError = err.Error()
		} else {
			if d.Ticks, err = b.LastTicks(ctx, 10); err != nil {
				d.DBError = err.Error()
			}
			if d.Uploads, err = b.Uploads(ctx); err != nil && d.DBError == "" {
				d.DBError = err.Error()
			}
		}
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, d); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "render the demo page: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:")
	w.Header().Set("X-Cohort-Node", b.NodeID)
	_, _ = w.Write(buf.Bytes())
}
