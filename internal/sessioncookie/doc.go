// Package sessioncookie owns the one rule for which session cookie of a
// request counts, shared by the sticky front (package proxy, both its
// net/http path and its own HTTP/1.1 fast path) and the sessions
// middleware (package sessions), so that the node a request is routed to
// and the session that node then loads are always the same cookie's.
//
// The rule: cookies are read from the request's Cookie header lines as
// net/http reads them (Request.CookiesNamed, with its limit on the number
// of cookies), and the session cookie is the first cookie of the
// configured name whose value is well-formed (TOKEN.ROUTE, see Parse).
// Every other cookie of that name — malformed, or after the first
// well-formed one — is ignored by everyone.
//
// It does not own the cookie's name, its attributes, token generation or
// what a route tag means: those belong to package sessions (and
// membership for the tags).
package sessioncookie
