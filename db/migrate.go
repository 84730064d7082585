package db

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// Migration is one SQL file of an application's ordered migrations.
type Migration struct {
	Name       string   // "<set>/<file>", e.g. "demo/0001_ticks.sql"; unique in the cluster
	Checksum   string   // SHA-256 of the file, hex
	Statements []string // the file split at top-level semicolons
}

// migrationLock names the MySQL advisory lock the leader holds while it
// runs migrations.
const migrationLock = "cohort.migrations"

// schemaTable is created in the business database on first migration.
const schemaTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
  name VARCHAR(191) NOT NULL PRIMARY KEY,
  checksum CHAR(64) NOT NULL,
  node VARCHAR(64) NOT NULL,
  applied_at DATETIME NOT NULL
)`

// LoadMigrations reads every *.sql file at the root of fsys, in file name
// order (name them 0001_x.sql, 0002_y.sql, ...), as the migrations of set.
func LoadMigrations(set string, fsys fs.FS) ([]Migration, error) {
	if set == "" || strings.ContainsAny(set, "/ ") {
		return nil, fmt.Errorf("migration set %q: %w", set, ErrBadMigration)
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations of %s: %w", set, err)
	}
	sort.Strings(names)
	var out []Migration
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s/%s: %w", set, n, err)
		}
		stmts := SplitStatements(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s/%s holds no statement: %w", set, n, ErrBadMigration)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Name: set + "/" + path.Base(n), Checksum: hex.EncodeToString(sum[:]), Statements: stmts})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("migration set %s: no *.sql file: %w", set, ErrBadMigration)
	}
	return out, nil
}

// SplitStatements splits SQL text at semicolons that end a statement,
// ignoring those inside quotes, backquotes and comments. Comment-only and
// empty pieces are dropped.
func SplitStatements(src string) []string {
	var out []string
	var cur strings.Builder
	meaningful := false
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" && meaningful {
			out = append(out, s)
		}
		cur.Reset()
		meaningful = false
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for j < len(src) {
				if src[j] == '\\' && c != '`' {
					j += 2
					continue
				}
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c { // doubled quote
						j += 2
						continue
					}
					break
				}
				j++
			}
			end := min(j+1, len(src))
			cur.WriteString(src[i:end])
			meaningful = true
			i = end - 1
		case c == '-' && i+1 < len(src) && src[i+1] == '-', c == '#':
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				i = len(src)
			} else {
				i += j
				cur.WriteByte('\n')
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			j := strings.Index(src[i+2:], "*/")
			if j < 0 {
				i = len(src)
			} else {
				i += j + 3
				cur.WriteByte(' ')
			}
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				meaningful = true
			}
		}
	}
	flush()
	return out
}

// StatementError is a migration statement the database refused.
type StatementError struct {
	Migration string
	Statement string
	Err       error
}

// Error names the migration, the statement and the database's error.
func (e *StatementError) Error() string {
	return fmt.Sprintf("migration %s failed at statement %q: %s", e.Migration, shorten(e.Statement, 200), e.Err.Error())
}

// Unwrap returns the database's error.
func (e *StatementError) Unwrap() error { return e.Err }

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// leaderMigrations runs while this node leads: it applies the pending
// migrations once, retrying while the database is unreachable, and stops
// the rollout at the first statement the database refuses.
func (d *Database) leaderMigrations(ctx context.Context, term uint64) {
	backoff := 250 * time.Millisecond
	lastErr := ""
	for {
		if len(d.pending()) == 0 {
			return
		}
		if !d.Configured() {
			// No database yet: wait quietly for a DSN to be replicated.
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		err := d.migrate(ctx)
		var se *StatementError
		switch {
		case err == nil:
			return
		case ctx.Err() != nil:
			return
		case errors.As(err, &se):
			d.log.Error("business database migration failed; rollout stopped until the next leader or restart",
				"migration", se.Migration, "statement", shorten(se.Statement, 500), "err", d.scrubErr(se.Err), "term", term)
			f := Failure{Migration: se.Migration, Statement: shorten(se.Statement, 500), Error: d.scrubErr(se.Err), Node: d.nodeID}
			if err := d.apply(ctx, cmdFailed, f); err != nil && ctx.Err() == nil {
				d.log.Warn("could not record the failed migration in raft", "err", err)
			}
			return
		default:
			if msg := d.scrubErr(err); msg != lastErr {
				d.log.Warn("business database migrations waiting; retrying", "err", msg)
				lastErr = msg
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// pending returns the registered migrations Raft has not recorded, in order.
func (d *Database) pending() []Migration {
	st := d.sm.view()
	var out []Migration
	for _, m := range d.migrations {
		if _, ok := st.Applied[m.Name]; !ok {
			out = append(out, m)
		}
	}
	return out
}

// migrate applies the pending migrations under the guards: the MySQL
// advisory lock, the schema_migrations table, then the Raft record.
func (d *Database) migrate(ctx context.Context) error {
	if !d.Configured() {
		return ErrNotConfigured
	}
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect for migrations: %w", err)
	}
	defer conn.Close()
	if d.dialect == DialectMySQL {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 30)", migrationLock).Scan(&got); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		if !got.Valid || got.Int64 != 1 {
			return fmt.Errorf("migration lock %s is held by another session: %w", migrationLock, ErrLocked)
		}
		defer func() {
			// A fresh context: release even when ctx ended.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = conn.ExecContext(rctx, "SELECT RELEASE_LOCK(?)", migrationLock)
			cancel()
		}()
	}
	if _, err := conn.ExecContext(ctx, schemaTable); err != nil {
		return &StatementError{Migration: "schema_migrations", Statement: schemaTable, Err: err}
	}
	for _, m := range d.pending() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var sum string
		err := conn.QueryRowContext(ctx, "SELECT checksum FROM schema_migrations WHERE name = ?", m.Name).Scan(&sum)
		switch {
		case err == nil:
			// It ran, but Raft missed the record (a leader died in between).
			if sum != m.Checksum {
				d.log.Warn("migration changed since it ran; not running it again", "migration", m.Name)
			}
		case errors.Is(err, sql.ErrNoRows):
			if err := d.runOne(ctx, conn, m); err != nil {
				return err
			}
		default:
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if err := d.apply(ctx, cmdMigrated, migratedCmd{Name: m.Name, Checksum: m.Checksum, Node: d.nodeID}); err != nil {
			return fmt.Errorf("record migration %s in raft: %w", m.Name, err)
		}
	}
	return nil
}

func (d *Database) runOne(ctx context.Context, conn *sql.Conn, m Migration) error {
	start := time.Now()
	for _, stmt := range m.Statements {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			if perr := conn.PingContext(ctx); perr != nil {
				// The database went away: not the statement's fault; retry later.
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			return &StatementError{Migration: m.Name, Statement: stmt, Err: err}
		}
	}
	if _, err := conn.ExecContext(ctx,
		"INSERT INTO schema_migrations (name, checksum, node, applied_at) VALUES (?, ?, ?, ?)",
		m.Name, m.Checksum, d.nodeID, time.Now().UTC()); err != nil {
		return fmt.Errorf("record migration %s in schema_migrations: %w", m.Name, err)
	}
	d.log.Info("business database migration applied", "migration", m.Name,
		"statements", len(m.Statements), "took", time.Since(start).Round(time.Millisecond))
	return nil
}
