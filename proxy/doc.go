// Package proxy is cohort's built-in sticky HTTP front: every node runs
// one in front of its application routes, so a request can enter through
// any node and still reach the node that owns its session.
//
// The front owns routing only: it reads the ROUTE half of the session
// cookie (TOKEN.ROUTE), forwards the request over the authenticated
// cluster port to the owning node when that node is healthy and not
// disabled, fails over to a live node when it is not, retries within the
// limits of what is safe, places requests without a session according to
// the balance policy (local, round-robin, least-loaded), normalises the
// X-Forwarded-* headers, and writes the access log. On the receiving side
// it serves forwarded requests through the inner application chain.
//
// It does not own sessions: creating, reading, replicating and re-stamping
// a session's cookie belong to package sessions, whose middleware sits
// inside the front. It does not own node states or liveness: those come
// from package membership (states replicated through Raft, liveness from
// probes and from the failures the front reports with MarkFailed). Package
// node owns the public listener and its TLS; on a plain-HTTP port it lets
// the front's fast path (Front.Listen) accept first, which forwards the
// body-less reads of sessions owned elsewhere itself and hands every other
// connection to node's http.Server.
//
// See DESIGN.md for the invariants and docs/front.md for the user view.
package proxy
