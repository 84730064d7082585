// Package db owns the business database of a cohort cluster: the tuned
// *sql.DB pool every node opens (MySQL/MariaDB through go-sql-driver/mysql,
// or an embedded pure-Go SQLite file in dev mode), its health as
// /_cohort/ready reports it, the replicated cluster-wide settings (the DSN,
// so a node that joins needs no copy of it), and the ordered SQL migrations
// applications register, which the Raft leader runs exactly once for the
// whole cluster.
//
// Exactly-once migrations rest on three guards: the Raft log records every
// applied migration (the "db" state machine), the schema_migrations table
// in the business database records it too, and on MySQL the leader holds
// GET_LOCK('cohort.migrations') while it runs them, so even two nodes that
// both believe they lead cannot run one migration twice. Followers report
// ready only once every migration they know is recorded in Raft.
//
// The DSN password never leaves this package in clear: Redact is applied to
// every DSN and error that reaches a log, a status or a reason.
//
// The package does not own the application's tables or queries (the
// application does, through DB().SQL()), nor HTTP routing beyond the small
// Require middleware that answers 503 while the database is down.
//
// DESIGN.md beside this file says what is replicated, what is local and
// what happens on leader change and restart.
package db
