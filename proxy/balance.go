package proxy

import (
	"net/http"

	"github.com/cohortserver/cohort/internal/sessioncookie"
	"github.com/cohortserver/cohort/membership"
)

// plan decides where a request goes first (see DESIGN.md, "Routing").
func (f *Front) plan(r *http.Request) plan {
	if f.cfg.Stateless != nil && f.cfg.Stateless.MatchString(r.URL.Path) && !f.selfOut() {
		return plan{kind: KindLocal, target: f.cfg.SelfID}
	}
	v, ok := cookieValue(r.Header, f.cfg.CookieName)
	return f.planCookie(v, ok)
}

// planCookie is plan given the session cookie's value (has: a cookie of
// that name was sent).
func (f *Front) planCookie(v string, has bool) plan {
	self := f.cfg.SelfID
	selfState := f.state(self)
	out := f.outIn(selfState)
	if has {
		// The value is well-formed (sessioncookie.Find): its route needs
		// no second check.
		_, route := sessioncookie.Split(v)
		if id, known := f.lookupRoute(route); known {
			if id == self {
				if out {
					p := plan{kind: KindFailover}
					p.target = f.fallback(&p, []string{self})
					return p
				}
				return plan{kind: KindLocal, target: self}
			}
			if f.servable(id) {
				return plan{kind: KindForwarded, target: id}
			}
			p := plan{kind: KindFailover}
			p.target = f.fallback(&p, []string{id})
			return p
		}
		// A cookie naming no member we know (a removed node, or a route made up):
		// serve it here; the sessions middleware decides what it is.
		if !out {
			return plan{kind: KindLocal, target: self}
		}
	}
	if f.cfg.Balance == BalanceLocal && selfState == membership.StateActive && !out {
		return plan{kind: KindLocal, target: self}
	}
	p := plan{kind: KindBalanced}
	p.target = f.pick(nil)
	return p
}

// owner is planCookie's forwarded case alone, without the side effects
// of the others (a balanced pick counts the session as sent): the fast
// front asks it for the member to forward to and leaves every other case
// to serve.
func (f *Front) owner(cookie []byte, has bool) (membership.Member, bool) {
	if !has {
		return membership.Member{}, false
	}
	_, route := sessioncookie.Split(cookie) // well-formed (sessioncookie.FindIn)
	id, known := f.lookupRoute(string(route))
	if !known || id == f.cfg.SelfID {
		return membership.Member{}, false
	}
	return f.servableMember(id)
}

// fallback chooses the next node after a failure or for a session whose
// owner is gone: this node serves an existing session unless it is
// disabled; a new session goes to the next balanced choice.
func (f *Front) fallback(p *plan, excluded []string) string {
	if p.kind == KindForwarded {
		p.kind = KindFailover
	}
	if p.kind != KindBalanced && !f.selfOut() && !contains(excluded, f.cfg.SelfID) {
		return f.cfg.SelfID
	}
	return f.pick(excluded)
}

// selfOut reports whether this node must not serve the application: it is
// disabled, or its local app is down (Config.LocalUp).
func (f *Front) selfOut() bool { return f.outIn(f.state(f.cfg.SelfID)) }

// outIn is selfOut given this node's state, read once by the caller.
func (f *Front) outIn(selfState string) bool {
	return selfState == membership.StateDisabled || (f.cfg.LocalUp != nil && !f.cfg.LocalUp())
}

// servable reports whether a peer may get a request for a session it owns:
// it is healthy and not disabled.
func (f *Front) servable(id string) bool {
	_, ok := f.servableMember(id)
	return ok
}

// servableMember is servable returning the member too.
func (f *Front) servableMember(id string) (membership.Member, bool) {
	m, ok := f.cfg.Members.Get(id)
	return m, ok && m.Address != "" && m.State != membership.StateDisabled && f.cfg.Members.Healthy(id)
}

// state is a member's state; a node not (yet) in the table is active.
func (f *Front) state(id string) string {
	m, ok := f.cfg.Members.Get(id)
	if !ok || m.State == "" {
		return membership.StateActive
	}
	return m.State
}

// pick chooses a node for a new session among the active, healthy
// members not excluded. With no such member it serves here.
func (f *Front) pick(excluded []string) string {
	var cands []string
	for _, m := range f.cfg.Members.All() {
		if m.State != membership.StateActive && m.State != "" {
			continue
		}
		if m.ID != f.cfg.SelfID && (m.Address == "" || !f.cfg.Members.Healthy(m.ID)) {
			continue
		}
		if contains(excluded, m.ID) || (m.ID == f.cfg.SelfID && f.cfg.LocalUp != nil && !f.cfg.LocalUp()) {
			continue
		}
		cands = append(cands, m.ID)
	}
	if len(cands) == 0 {
		return f.cfg.SelfID
	}
	if f.cfg.Balance == BalanceLeastLoaded {
		return f.leastLoaded(cands)
	}
	return cands[f.rr.Add(1)%uint64(len(cands))]
}

// leastLoaded picks the candidate with the lowest load score; equal
// scores are broken round-robin so that idle nodes share the work.
func (f *Front) leastLoaded(cands []string) string {
	start := int(f.rr.Add(1) % uint64(len(cands)))
	best, bestScore := "", 0.0
	for i := range cands {
		id := cands[(start+i)%len(cands)]
		var s float64
		if id == f.cfg.SelfID {
			s = score(float64(f.inflight.Load()), f.cpu.load()) + float64(f.loads.sentSince(id))
		} else {
			s = f.loads.score(id)
		}
		if best == "" || s < bestScore {
			best, bestScore = id, s
		}
	}
	f.loads.noteSent(best)
	return best
}

// lookupRoute maps a route tag to a node id through a cache; a miss asks
// the member table (which hashes every member's id) and remembers a hit.
func (f *Front) lookupRoute(tag string) (string, bool) {
	if s := f.selfRoute.Load(); s != nil && *s == tag {
		return f.cfg.SelfID, true
	}
	if id, ok := (*f.routes.Load())[tag]; ok {
		return id, true
	}
	m, ok := f.cfg.Members.ByRoute(tag)
	if !ok {
		return "", false
	}
	f.routesMu.Lock()
	old := *f.routes.Load()
	next := make(map[string]string, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[tag] = m.ID
	f.routes.Store(&next)
	f.routesMu.Unlock()
	return m.ID, true
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
