// Package upstream sends a node's application requests to the web
// application running beside it (--app-upstream: http://HOST:PORT or
// unix:/path.sock), after the sticky front picked the node. It owns:
//
//   - the reverse proxy to the local app (httputil.ReverseProxy with
//     Rewrite, a tuned Transport and buffer pool): streaming, websockets,
//     1xx, trailers and large bodies pass as for Go handlers;
//   - what the app sees: client-sent Cohort-* and X-Cohort-* headers are
//     removed, cohort's own (Cohort-Node, X-Forwarded-* as the front
//     resolved them) are set, and cohort's session cookie is taken out of
//     the Cookie header;
//   - affinity for the app's own session cookie (--app-session-cookie):
//     when a request carries the app's cookie, or the answer sets it, and
//     the request's cohort cookie does not already name this node, the
//     answer inserts cohort's session cookie with this node's route tag
//     (HAProxy's "cookie insert indirect nocache"). The front routes by
//     that tag, so the app session keeps to this node, fails over when the
//     node or its app is down and is re-stamped by the node that served
//     it;
//   - the app's health (--app-health, or a TCP connect when cohort starts
//     the app): Healthy drives the node's readiness and the front's
//     routing.
//
// It does not start the app (package appproc) nor route between nodes
// (package proxy).
package upstream
