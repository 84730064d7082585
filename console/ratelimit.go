package console

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Login limits: failed logins per client address (on each node), and for
// all clients together (of the whole cluster when the console shares its
// failures through the log, see share.go; else of this node), each a
// bucket that refills at its rate per minute.
const (
	DefaultLoginFailuresPerClient = 5  // per minute, per client address
	DefaultLoginFailuresTotal     = 30 // per minute, all clients together
	maxTrackedClients             = 4096
)

// bucket is a token bucket of failed login attempts left.
type bucket struct {
	tokens float64
	at     time.Time
}

// take refills b at perMin per minute up to perMin, then takes one token
// if there is one.
func (b *bucket) take(now time.Time, perMin int) bool {
	b.refill(now, perMin)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, perMin int) {
	b.tokens = min(float64(perMin), b.tokens+now.Sub(b.at).Minutes()*float64(perMin))
	b.at = now
}

// loginLimiter refuses logins once a client, or all clients together,
// failed too often. Only failures are charged: a right token always passes
// while its client has attempts left.
type loginLimiter struct {
	perClient, total int
	now              func() time.Time
	allName          string // what the all-clients limit is called in logs: "node" or "cluster"

	mu      sync.Mutex
	clients map[string]*bucket
	all     bucket
}

func newLoginLimiter(perClient, total int, now func() time.Time) *loginLimiter {
	if perClient <= 0 {
		perClient = DefaultLoginFailuresPerClient
	}
	if total <= 0 {
		total = DefaultLoginFailuresTotal
	}
	t := now()
	return &loginLimiter{perClient: perClient, total: total, now: now, allName: "node", clients: map[string]*bucket{},
		all: bucket{tokens: float64(total), at: t}}
}

// clientOf is the address a login is charged to.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// allow reports whether a login from client may be tried now, and if not,
// which limit refused it ("client", or "node"/"cluster" for all clients).
func (l *loginLimiter) allow(client string) (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if b := l.clients[client]; b != nil {
		b.refill(now, l.perClient)
		if b.tokens < 1 {
			return false, "client"
		}
	}
	l.all.refill(now, l.total)
	if l.all.tokens < 1 {
		return false, l.allName
	}
	return true, ""
}

// failed charges one failed login to client and to the node's total.
func (l *loginLimiter) failed(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.clients[client]
	if b == nil {
		l.prune(now)
		b = &bucket{tokens: float64(l.perClient), at: now}
		l.clients[client] = b
	}
	b.take(now, l.perClient)
	l.all.take(now, l.total)
}

// maxDebtMinutes bounds how far below empty other nodes' failures can
// drive the all-clients bucket: a burst spread over the nodes faster than
// their batches commit is paid back by a longer refusal, up to this many
// minutes of the limit.
const maxDebtMinutes = 4

// chargeAll charges n failed logins of other nodes to the all-clients
// bucket. It goes below zero when they exceed what is left: they happened,
// and the refill pays them back before the next login is tried.
func (l *loginLimiter) chargeAll(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.refill(l.now(), l.total)
	l.all.tokens = max(l.all.tokens-float64(n), -float64(maxDebtMinutes*l.total))
}

// prune forgets clients whose buckets refilled, when there are many.
func (l *loginLimiter) prune(now time.Time) {
	if len(l.clients) < maxTrackedClients {
		return
	}
	for k, b := range l.clients {
		if b.refill(now, l.perClient); b.tokens >= float64(l.perClient) {
			delete(l.clients, k)
		}
	}
}
