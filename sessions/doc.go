// Package sessions owns cohort's replicated HTTP sessions: the session
// state machine (every session of the cluster, on every node), the
// middleware that loads a request's session from its cookie and commits
// the request's changes through Raft before the response starts, and the
// API handlers use from the request context (in the spirit of
// alexedwards/scs: Get, Put, Delete, Keys, typed getters, RenewToken,
// Destroy, SetIdleTimeout, SetLifetime, SetPrincipal, Save).
//
// What it guarantees:
//   - A change a handler made is durable on a majority and applied on the
//     serving node before the first byte of the response (read your writes).
//   - Changes are attribute deltas (set, delete per key), one Raft entry per
//     request that changed something: concurrent requests on one session
//     writing different keys all survive; two Puts of one key are
//     last-writer-wins.
//   - Atomic operations (Incr, CompareAndSwap, Update, Append, AddToSet,
//     RemoveFromSet) are computed by the state machine at their log
//     position and commit at once: concurrent ones all count.
//   - Optionally (Config.Lock), one session's requests run one at a time
//     on a node, with a bounded wait.
//   - Reads are local: no network, no Raft. A read-only request costs no
//     Raft entry; last-access times are kept locally and replicated only
//     when a quarter of the idle timeout passed, coalesced across sessions.
//   - Only tokens the cluster issued are accepted (256 bits from
//     crypto/rand); the cookie is TOKEN.ROUTE with ROUTE the opaque tag of
//     the node that served it last, re-stamped when a session moves.
//   - Idle timeout and absolute lifetime are enforced on every read; the
//     leader sweeps expired sessions in batches.
//
// What it does not own: routing requests to nodes (package proxy), which
// cookie of a request is the session's (internal/sessioncookie, the rule
// the front routes by too), node wiring and the admin HTTP surface (package
// node), consensus (package raft). See DESIGN.md for the invariants.
package sessions
