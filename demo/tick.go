package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cohortserver/cohort/httpapi"

	"github.com/cohortserver/cohort/db"
)

// TickJob is the name of the demo's job; TickSchedule its schedule.
const (
	TickJob      = "demo-tick"
	TickSchedule = "@every 2s"
)

// ErrStaleToken means a demo-tick run held an older fencing token than one
// that already wrote: a deposed leader's run, refused.
var ErrStaleToken = errors.New("stale fencing token")

// Tick is the demo-tick job: it writes one row (run id, node, fencing
// token, time) to the business database, guarded by the fencing token: the
// row is written only if no run with a newer token wrote before, in the
// same transaction. With no business database configured it does nothing.
func (b *Backend) Tick(ctx context.Context, run TickRun) error {
	if b.DB == nil || !b.DB.Configured() {
		return nil
	}
	now := time.Now()
	tx, err := b.DB.SQL().BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("demo-tick %s: begin: %w", run.ID, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "UPDATE demo_fence SET token = ? WHERE name = ? AND token < ?",
		int64(run.Token), TickJob, int64(run.Token))
	if err != nil {
		return fmt.Errorf("demo-tick %s: fence: %w", run.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("demo-tick %s: token %d: %w", run.ID, run.Token, ErrStaleToken)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO demo_ticks (run_id, node, fencing_token, ran_at) VALUES (?, ?, ?, ?)",
		run.ID, run.Node, int64(run.Token), unixMS(now)); err != nil {
		return fmt.Errorf("demo-tick %s: insert: %w", run.ID, err)
	}
	// Keep the table small: an hour of ticks is plenty for the page.
	if _, err := tx.ExecContext(ctx, "DELETE FROM demo_ticks WHERE ran_at < ?", unixMS(now.Add(-time.Hour))); err != nil {
		return fmt.Errorf("demo-tick %s: trim: %w", run.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("demo-tick %s: commit: %w", run.ID, err)
	}
	return nil
}

// TickRow is one row of demo_ticks.
type TickRow struct {
	RunID        string    `json:"run_id"`
	Node         string    `json:"node"`
	FencingToken uint64    `json:"fencing_token"`
	RanAt        time.Time `json:"ran_at"`
}

// LastTicks returns the newest n rows of demo_ticks.
func (b *Backend) LastTicks(ctx context.Context, n int) ([]TickRow, error) {
	rows, err := b.DB.SQL().QueryContext(ctx,
		"SELECT run_id, node, fencing_token, ran_at FROM demo_ticks ORDER BY ran_at DESC, fencing_token DESC LIMIT ?", n)
	if err != nil {
		return nil, fmt.Errorf("read demo_ticks: %w", err)
	}
	defer rows.Close()
	out := []TickRow{}
	for rows.Next() {
		var t TickRow
		var tok, ms int64
		if err := rows.Scan(&t.RunID, &t.Node, &tok, &ms); err != nil {
			return nil, fmt.Errorf("read demo_ticks: %w", err)
		}
		t.FencingToken, t.RanAt = uint64(tok), time.UnixMilli(ms).UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

func (b *Backend) listTicks(w http.ResponseWriter, r *http.Request) {
	ticks, err := b.LastTicks(r.Context(), 10)
	if err != nil {
		b.dbError(r.Context(), w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"node": b.NodeID, "ticks": ticks})
}

// dbError answers a failed query: 503 when the database is down, 500
// otherwise (e.g. its migrations have not run yet).
func (b *Backend) dbError(ctx context.Context, w http.ResponseWriter, err error) {
	if cerr := b.DB.Recheck(ctx); cerr != nil {
		db.WriteUnavailable(w, cerr)
		return
	}
	if errors.Is(err, sql.ErrNoRows) {
		httpapi.WriteError(w, http.StatusNotFound, "not found")
		return
	}
	b.log().Warn("demo query failed", "err", err)
	httpapi.WriteError(w, http.StatusInternalServerError, "the business database refused the demo's query: "+err.Error())
}
