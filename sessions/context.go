package sessions

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

type ctxKey struct{}

// reqSession is the session as one request sees it: the id it loaded and
// the changes it made, which the middleware (or Save) commits as one
// Raft entry. Reads see the request's own changes over the replicated
// state, which concurrent requests' committed changes update.
type reqSession struct {
	m *Manager

	mu          sync.Mutex
	id          string // loaded or committed session; "" when none
	token       string
	cookieRoute string // route the request's cookie carried
	renew       bool
	destroy     bool
	ops         []op
	err         error  // a refused change (too large, not encodable)
	setCookie   bool   // the cookie must be sent
	clearCookie bool   // the cookie must be deleted
	unlock      func() // releases the session lock (Config.Lock); nil when not held
}

// release gives the session lock back, if the request holds it.
func (rs *reqSession) release() {
	rs.mu.Lock()
	unlock := rs.unlock
	rs.unlock = nil
	rs.mu.Unlock()
	if unlock != nil {
		unlock()
	}
}

func (m *Manager) state(ctx context.Context) *reqSession {
	rs, _ := ctx.Value(ctxKey{}).(*reqSession)
	if rs == nil || rs.m != m {
		return nil
	}
	return rs
}

// value returns the stored bytes of key as this request sees them.
func (rs *reqSession) value(key string) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i := len(rs.ops) - 1; i >= 0; i-- {
		o := rs.ops[i]
		switch {
		case o.kind == opSet && o.key == key:
			return o.val
		case o.kind == opDelete && o.key == key, o.kind == opClear:
			return nil
		}
	}
	x := rs.current()
	if x == nil {
		return nil
	}
	return blobGet(x.data, key)
}

// current returns the replicated version of the loaded session (rs.mu held).
func (rs *reqSession) current() *session {
	if rs.id == "" || rs.destroy {
		return nil
	}
	x := rs.m.st.get(rs.id)
	if x != nil && x.passive {
		x = rs.m.lookup(rs.id, rs.m.now())
	}
	return x
}

func (rs *reqSession) add(o op) {
	rs.mu.Lock()
	rs.ops = append(rs.ops, o)
	rs.mu.Unlock()
}

// Get returns the value of key: string, []byte, bool, int64, uint64,
// float64, time.Time, time.Duration, or json.RawMessage for values Put as
// other types; nil when absent.
func (m *Manager) Get(ctx context.Context, key string) any {
	rs := m.state(ctx)
	if rs == nil {
		return nil
	}
	return decodeValue(rs.value(key))
}

// Exists reports whether key is set.
func (m *Manager) Exists(ctx context.Context, key string) bool {
	rs := m.state(ctx)
	return rs != nil && rs.value(key) != nil
}

// GetString returns the string value of key, or "" when absent or not a string.
func (m *Manager) GetString(ctx context.Context, key string) string {
	rs := m.state(ctx)
	if rs == nil {
		return ""
	}
	if b := rs.value(key); len(b) > 0 && b[0] == tagString {
		return string(b[1:])
	}
	return ""
}

// GetBytes returns a copy of the []byte value of key, or nil.
func (m *Manager) GetBytes(ctx context.Context, key string) []byte {
	b, _ := m.Get(ctx, key).([]byte)
	return b
}

// GetInt64 returns the integer value of key, or 0.
func (m *Manager) GetInt64(ctx context.Context, key string) int64 {
	rs := m.state(ctx)
	if rs == nil {
		return 0
	}
	b := rs.value(key)
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case tagInt:
		v, _ := binary.Varint(b[1:])
		return v
	case tagUint:
		v, _ := binary.Uvarint(b[1:])
		return int64(v)
	}
	return 0
}

// GetInt returns the integer value of key, or 0.
func (m *Manager) GetInt(ctx context.Context, key string) int { return int(m.GetInt64(ctx, key)) }

// GetBool returns the bool value of key, or false.
func (m *Manager) GetBool(ctx context.Context, key string) bool {
	b, _ := m.Get(ctx, key).(bool)
	return b
}

// GetFloat returns the float value of key, or 0.
func (m *Manager) GetFloat(ctx context.Context, key string) float64 {
	f, _ := m.Get(ctx, key).(float64)
	return f
}

// GetTime returns the time value of key, or the zero time.
func (m *Manager) GetTime(ctx context.Context, key string) time.Time {
	t, _ := m.Get(ctx, key).(time.Time)
	return t
}

// GetDuration returns the duration value of key, or 0.
func (m *Manager) GetDuration(ctx context.Context, key string) time.Duration {
	d, _ := m.Get(ctx, key).(time.Duration)
	return d
}

// GetJSON decodes the value of key (Put as a struct, map, slice...) into
// dst. It reports whether the key was set.
func (m *Manager) GetJSON(ctx context.Context, key string, dst any) (bool, error) {
	rs := m.state(ctx)
	if rs == nil {
		return false, ErrNoSession
	}
	b := rs.value(key)
	if b == nil {
		return false, nil
	}
	if b[0] != tagJSON {
		return true, fmt.Errorf("session key %q: not a JSON value", key)
	}
	if err := json.Unmarshal(b[1:], dst); err != nil {
		return true, fmt.Errorf("session key %q: %w", key, err)
	}
	return true, nil
}

// Keys lists the keys set in the session, in the order first set.
func (m *Manager) Keys(ctx context.Context) []string {
	rs := m.state(ctx)
	if rs == nil {
		return nil
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var keys []string
	if x := rs.current(); x != nil {
		keys = blobKeys(x.data)
	}
	for _, o := range rs.ops {
		switch o.kind {
		case opSet:
			found := false
			for _, k := range keys {
				if k == o.key {
					found = true
					break
				}
			}
			if !found {
				keys = append(keys, o.key)
			}
		case opDelete:
			for i, k := range keys {
				if k == o.key {
					keys = append(keys[:i], keys[i+1:]...)
					break
				}
			}
		case opClear:
			keys = keys[:0]
		}
	}
	return keys
}

// Put sets key to val (creating the session if the request has none).
// Strings, []byte, bools, integers, floats, time.Time and time.Duration
// are stored as such, other values as JSON. A value over the value limit
// or not encodable is refused when the request commits: Save returns the
// error and the middleware answers 413 (too large) or 500.
func (m *Manager) Put(ctx context.Context, key string, val any) {
	rs := m.state(ctx)
	if rs == nil {
		return
	}
	b, err := m.encodeFor(key, val)
	if err != nil {
		rs.fail(err)
		return
	}
	rs.add(op{kind: opSet, key: key, val: b})
}

// encodeFor encodes a value for key, within the value limit.
func (m *Manager) encodeFor(key string, val any) ([]byte, error) {
	b, err := encodeValue(val)
	if err != nil {
		return nil, fmt.Errorf("session key %q: %w: %w", key, ErrInvalidValue, err)
	}
	return b, m.checkSize(key, b)
}

// checkSize refuses a key or an encoded value over the value limit.
func (m *Manager) checkSize(key string, b []byte) error {
	switch {
	case int64(len(b)-1) > m.cfg.MaxValueBytes:
		return fmt.Errorf("session key %q: %w", key, &limitError{what: "value", size: int64(len(b) - 1), limit: m.cfg.MaxValueBytes})
	case int64(len(key)) > m.cfg.MaxValueBytes:
		return fmt.Errorf("session key: %w", &limitError{what: "key", size: int64(len(key)), limit: m.cfg.MaxValueBytes})
	}
	return nil
}

func (rs *reqSession) fail(err error) {
	rs.mu.Lock()
	if rs.err == nil {
		rs.err = err
	}
	rs.mu.Unlock()
}

// Delete removes key.
func (m *Manager) Delete(ctx context.Context, key string) {
	if rs := m.state(ctx); rs != nil {
		rs.add(op{kind: opDelete, key: key})
	}
}

// PopString returns the string value of key and removes it (flash messages).
func (m *Manager) PopString(ctx context.Context, key string) string {
	s := m.GetString(ctx, key)
	if s != "" {
		m.Delete(ctx, key)
	}
	return s
}

// Clear removes every key (the session and its token stay).
func (m *Manager) Clear(ctx context.Context) {
	if rs := m.state(ctx); rs != nil {
		rs.add(op{kind: opClear})
	}
}

// SetIdleTimeout sets this session's idle timeout (0 = the default).
func (m *Manager) SetIdleTimeout(ctx context.Context, d time.Duration) {
	if rs := m.state(ctx); rs != nil {
		if d <= 0 {
			d = m.cfg.IdleTimeout
		}
		rs.add(op{kind: opIdle, n: int64(d)})
	}
}

// SetLifetime sets this session's absolute lifetime, counted from its
// creation (0 = the default).
func (m *Manager) SetLifetime(ctx context.Context, d time.Duration) {
	if rs := m.state(ctx); rs != nil {
		if d <= 0 {
			d = m.cfg.Lifetime
		}
		rs.add(op{kind: opLifetime, n: int64(d)})
	}
}

// SetPrincipal attaches a principal (user name) to the session, indexed so
// PrincipalSessions and DestroyPrincipal find it; "" detaches it.
func (m *Manager) SetPrincipal(ctx context.Context, name string) {
	if rs := m.state(ctx); rs != nil {
		rs.add(op{kind: opPrincipal, key: name})
	}
}

// GetPrincipal returns the session's principal ("" when none).
func (m *Manager) GetPrincipal(ctx context.Context) string {
	rs := m.state(ctx)
	if rs == nil {
		return ""
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i := len(rs.ops) - 1; i >= 0; i-- {
		if rs.ops[i].kind == opPrincipal {
			return rs.ops[i].key
		}
	}
	if x := rs.current(); x != nil {
		return x.principal
	}
	return ""
}

// ID returns the short non-secret id of the request's session ("" when it
// has none yet): the first 12 hex digits of the hash of its token.
func (m *Manager) ID(ctx context.Context) string {
	rs := m.state(ctx)
	if rs == nil {
		return ""
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.id == "" || rs.destroy {
		return ""
	}
	return idPrefix(rs.id)
}

// RenewToken gives the session a new token at commit, keeping its data;
// the old token stops working on every node. Call it on login and on any
// change of privilege.
func (m *Manager) RenewToken(ctx context.Context) error {
	rs := m.state(ctx)
	if rs == nil {
		return ErrNoSession
	}
	rs.mu.Lock()
	rs.renew = true
	rs.mu.Unlock()
	return nil
}

// Destroy ends the session on every node at commit and deletes the
// cookie. Changes made after Destroy start a new session with a new token.
func (m *Manager) Destroy(ctx context.Context) error {
	rs := m.state(ctx)
	if rs == nil {
		return ErrNoSession
	}
	rs.mu.Lock()
	rs.destroy, rs.renew, rs.ops = true, false, nil
	rs.mu.Unlock()
	return nil
}

// DestroyOtherSessions ends every other session of this session's
// principal (limit a user to one session), now.
func (m *Manager) DestroyOtherSessions(ctx context.Context) (int, error) {
	rs := m.state(ctx)
	if rs == nil {
		return 0, ErrNoSession
	}
	if err := m.Save(ctx); err != nil {
		return 0, err
	}
	p := m.GetPrincipal(ctx)
	if p == "" {
		return 0, nil
	}
	rs.mu.Lock()
	id := rs.id
	rs.mu.Unlock()
	return m.destroyPrincipal(ctx, p, id)
}

// Save commits the request's changes now, through Raft: when it returns
// nil they are durable on a majority and visible on this node. The
// middleware saves by itself before the first byte of the response; call
// Save to act on the error or to commit before a long-running response.
func (m *Manager) Save(ctx context.Context) error {
	rs := m.state(ctx)
	if rs == nil {
		return ErrNoSession
	}
	return rs.commit(ctx)
}

// commit proposes the pending changes as one entry.
func (rs *reqSession) commit(ctx context.Context) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	_, err := rs.commitLocked(ctx)
	return err
}

// commitLocked proposes the pending changes as one entry (rs.mu held) and
// returns the results of its atomic ops.
func (rs *reqSession) commitLocked(ctx context.Context) ([]int64, error) {
	if rs.err != nil {
		return nil, rs.err
	}
	m := rs.m
	c := commit{id: rs.id, maxBytes: m.cfg.MaxBytes}
	var newTok string
	switch {
	case rs.destroy && rs.id == "" && len(rs.ops) == 0:
		rs.destroy = false
		rs.clearCookie = rs.cookieRoute != ""
		return nil, nil
	case rs.destroy:
		c.flags |= flagDestroy
		if len(rs.ops) > 0 {
			c.flags |= flagCreate
		}
	case rs.renew && rs.id != "":
		c.flags |= flagRenew
		if len(rs.ops) > 0 {
			// Should the session end meanwhile, a login still succeeds
			// with a new session holding this request's changes.
			c.flags |= flagCreate
		}
	case rs.id == "" && len(rs.ops) > 0:
		c.flags |= flagCreate
	case len(rs.ops) == 0:
		rs.renew = false
		return nil, nil
	}
	if c.flags&(flagCreate|flagRenew) != 0 {
		tok, err := newToken()
		if err != nil {
			return nil, err
		}
		newTok, c.newID = tok, sessionID(tok)
	}
	c.idle, c.lifetime, c.ops = int64(m.cfg.IdleTimeout), int64(m.cfg.Lifetime), rs.ops
	res, err := m.apply(ctx, cmdCommit, c.encode())
	if err != nil {
		return nil, err
	}
	m.commits.Add(1)
	now := m.now()
	switch {
	case newTok != "":
		rs.id, rs.token, rs.setCookie, rs.clearCookie = c.newID, newTok, true, false
		if x := m.st.get(rs.id); x != nil {
			x.loc.access.Store(now)
		}
	case rs.destroy:
		rs.id, rs.token, rs.setCookie, rs.clearCookie = "", "", false, true
	}
	rs.destroy, rs.renew, rs.ops = false, false, nil
	return decodeResults(res.Data), nil
}

// apply proposes one entry and returns its answer (the results of a
// commit's atomic ops); a commit outlives the client's disconnect (it may
// already be in flight) but not CommitTimeout.
func (m *Manager) apply(ctx context.Context, typ string, payload []byte) (raft.Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.CommitTimeout)
	defer cancel()
	// No retry when the outcome is unknown: the first attempt may have
	// committed, and applying the same deltas again after another request's
	// writes would undo them (the linearizability check caught exactly
	// that). The client gets 503 and decides.
	res, err := m.cluster.Apply(ctx, typ, payload)
	return res, fromApplyError(err)
}

// fromApplyError maps a refused command back to the package's errors.
func fromApplyError(err error) error {
	if err == nil {
		return nil
	}
	var ae *raft.ApplyError
	if errors.As(err, &ae) {
		switch ae.Code {
		case "sessions.too_large":
			return fmt.Errorf("%w: %s", ErrTooLarge, ae.Message)
		case "sessions.gone":
			return ErrSessionGone
		case "sessions.moved":
			return ErrSessionMoved
		case "sessions.wrong_type":
			return fmt.Errorf("%w (%s)", ErrWrongType, ae.Message)
		}
	}
	return fmt.Errorf("commit session: %w", err)
}

// cookie writes the Set-Cookie the commit calls for into h.
func (rs *reqSession) cookie(h http.Header, r *http.Request) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := rs.m
	route := m.routeTag()
	var c *http.Cookie
	switch {
	case rs.id != "" && (rs.setCookie || rs.cookieRoute != route):
		c = &http.Cookie{Name: m.cfg.CookieName, Value: FormatCookie(rs.token, route)}
		rs.cookieRoute = route
	case rs.clearCookie:
		c = &http.Cookie{Name: m.cfg.CookieName, Value: "", MaxAge: -1, Expires: time.Unix(1, 0)}
	default:
		return
	}
	rs.setCookie, rs.clearCookie = false, false
	c.Path, c.HttpOnly, c.SameSite, c.Secure = "/", true, http.SameSiteLaxMode, secure(r)
	h.Add("Set-Cookie", c.String())
	h.Add("Vary", "Cookie")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", `no-cache="Set-Cookie"`)
	}
}

type tlsKey struct{}

// WithTLS marks a request context as received over TLS by a front that
// terminated it, so the session cookie is set Secure.
func WithTLS(ctx context.Context) context.Context { return context.WithValue(ctx, tlsKey{}, true) }

func secure(r *http.Request) bool {
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		return true
	}
	v, _ := r.Context().Value(tlsKey{}).(bool)
	return v
}
