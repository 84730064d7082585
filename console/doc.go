// Package console owns the operator's web console served at /_cohort/ui/:
// the embedded page (html/template, a stylesheet and a little vanilla
// JavaScript, no build step) and the console's login — the admin token is
// posted once, and an HttpOnly, SameSite=Strict cookie holding an
// HMAC-derived session value (never the token) authenticates afterwards.
//
// The console has no API of its own: its JavaScript calls the admin API
// (/_cohort/api/..., /_cohort/status) with that cookie. The node's admin
// guard accepts the cookie through Console.Authorized, which for every
// state-changing method also demands the CSRF header the page sends and a
// same-origin Origin header.
//
// It limits failed logins per client address on each node and for all
// clients across the cluster: failures are shared on the cluster
// broadcast (share.go), nothing is shared for a successful login.
//
// It does not own the admin API, the token, or any replicated state.
package console
