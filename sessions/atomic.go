package sessions

import (
	"context"
	"encoding/json"
	"fmt"
)

// Atomic operations. Put writes a value the handler computed from what it
// read, so of two requests that read-modify-write one key at once, the
// later commit wins and the other's change is lost. The operations here
// are computed by the state machine from the value the key holds at that
// point of the Raft log instead, so concurrent ones all count, on any
// node. Each commits at once, together with the request's pending
// changes (in the order the handler made them, the atomic op last), and
// returns its result, which this request then reads (Get, GetInt64...).
// They fail with ErrSessionMoved (409) when another node took the session
// over meanwhile (nothing applied), ErrWrongType when the key holds
// another type, and otherwise as Save does (a commit whose outcome is
// unknown may have applied: the client decides).

// maxUpdateTries bounds Update's compare-and-swap retries.
const maxUpdateTries = 64

// atomic adds o to the request's changes and commits them now; it returns
// o's result. A failed o is dropped (it must not apply again when the
// response commits); the changes before it stay pending, as after a
// failed Save.
func (rs *reqSession) atomic(ctx context.Context, o op) (int64, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.ops = append(rs.ops, o)
	n := len(rs.ops)
	results, err := rs.commitLocked(ctx)
	if err != nil {
		if len(rs.ops) == n {
			rs.ops = rs.ops[:n-1]
		}
		return 0, err
	}
	if len(results) == 0 {
		return 0, fmt.Errorf("session key %q: the commit returned no result", o.key)
	}
	return results[len(results)-1], nil
}

// Incr adds delta to the integer at key (absent counts as 0) and returns
// the new value. Concurrent Incrs on one session never lose a count.
func (m *Manager) Incr(ctx context.Context, key string, delta int64) (int64, error) {
	rs := m.state(ctx)
	if rs == nil {
		return 0, ErrNoSession
	}
	if err := m.checkSize(key, nil); err != nil {
		return 0, err
	}
	return rs.atomic(ctx, op{kind: opIncr, key: key, n: delta})
}

// CompareAndSwap sets key to new if it holds old now, and reports whether
// it did. old nil means "absent"; new nil deletes the key. Values compare
// by their stored encoding: 5 equals int64(5), values stored as JSON
// compare by their JSON text.
func (m *Manager) CompareAndSwap(ctx context.Context, key string, old, new any) (bool, error) {
	rs := m.state(ctx)
	if rs == nil {
		return false, ErrNoSession
	}
	var ob, nb []byte
	var err error
	if old != nil {
		if ob, err = encodeValue(old); err != nil {
			return false, fmt.Errorf("session key %q: %w: %w", key, ErrInvalidValue, err)
		}
	}
	if new != nil {
		if nb, err = m.encodeFor(key, new); err != nil {
			return false, err
		}
	}
	ok, err := rs.atomic(ctx, op{kind: opCAS, key: key, old: ob, val: nb})
	return ok == 1, err
}

// Update sets key to fn(old), where old is what Get returns (nil when
// absent), as a compare-and-swap: when another request changed the key
// meanwhile it calls fn again with the newer value, up to 64 times
// (ErrConflict). fn must be free of side effects. Returning nil deletes
// the key. It returns the value stored.
func (m *Manager) Update(ctx context.Context, key string, fn func(old any) (any, error)) (any, error) {
	rs := m.state(ctx)
	if rs == nil {
		return nil, ErrNoSession
	}
	for range maxUpdateTries {
		old := rs.value(key) // pending changes first, then this node's replicated state
		nv, err := fn(decodeValue(old))
		if err != nil {
			return nil, err
		}
		var nb []byte
		if nv != nil {
			if nb, err = m.encodeFor(key, nv); err != nil {
				return nil, err
			}
		}
		ok, err := rs.atomic(ctx, op{kind: opCAS, key: key, old: old, val: nb})
		if err != nil {
			return nil, err
		}
		if ok == 1 {
			return nv, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("session key %q: update: %w", key, err)
		}
	}
	return nil, fmt.Errorf("session key %q: %w (%d tries)", key, ErrConflict, maxUpdateTries)
}

// Append adds v (encoded as JSON) at the end of the list at key, a JSON
// array (absent counts as empty), and returns the list's new length. Read
// the list with GetJSON.
func (m *Manager) Append(ctx context.Context, key string, v any) (int, error) {
	rs := m.state(ctx)
	if rs == nil {
		return 0, ErrNoSession
	}
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("session key %q: %w: %w", key, ErrInvalidValue, err)
	}
	if err := m.checkSize(key, append([]byte{tagJSON}, b...)); err != nil {
		return 0, err
	}
	n, err := rs.atomic(ctx, op{kind: opAppend, key: key, val: b})
	return int(n), err
}

// AddToSet adds member to the set at key (a JSON array of distinct
// strings, in the order added) and reports whether it was new.
func (m *Manager) AddToSet(ctx context.Context, key, member string) (bool, error) {
	return m.setOp(ctx, opSetAdd, key, member)
}

// RemoveFromSet removes member from the set at key and reports whether it
// was there.
func (m *Manager) RemoveFromSet(ctx context.Context, key, member string) (bool, error) {
	return m.setOp(ctx, opSetRemove, key, member)
}

func (m *Manager) setOp(ctx context.Context, kind byte, key, member string) (bool, error) {
	rs := m.state(ctx)
	if rs == nil {
		return false, ErrNoSession
	}
	if err := m.checkSize(key, append([]byte{tagString}, member...)); err != nil {
		return false, err
	}
	n, err := rs.atomic(ctx, op{kind: kind, key: key, val: []byte(member)})
	return n == 1, err
}

// Members returns the members of the set at key (nil when absent or not a
// set).
func (m *Manager) Members(ctx context.Context, key string) []string {
	var out []string
	if ok, err := m.GetJSON(ctx, key, &out); !ok || err != nil {
		return nil
	}
	return out
}
