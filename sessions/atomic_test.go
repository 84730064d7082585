package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// TestApplyAtomicOps drives the applier without Raft: every atomic op's
// result and stored value, and that a refused op leaves nothing of its
// commit behind.
func TestApplyAtomicOps(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	enc := func(v any) []byte { b, _ := encodeValue(v); return b }
	tests := []struct {
		name    string
		start   []op // applied first, in the session's creating commit
		ops     []op
		want    []int64 // results of the atomic ops
		wantErr error
		key     string
		wantVal any // decoded value of key afterwards
	}{
		{"incr absent", nil, []op{{kind: opIncr, key: "n", n: 3}}, []int64{3}, nil, "n", int64(3)},
		{"incr existing twice", []op{{kind: opSet, key: "n", val: enc(40)}}, []op{{kind: opIncr, key: "n", n: 1}, {kind: opIncr, key: "n", n: 1}}, []int64{41, 42}, nil, "n", int64(42)},
		{"incr a uint", []op{{kind: opSet, key: "n", val: enc(uint(7))}}, []op{{kind: opIncr, key: "n", n: -8}}, []int64{-1}, nil, "n", int64(-1)},
		{"incr after a put in the same commit", nil, []op{{kind: opSet, key: "n", val: enc(10)}, {kind: opIncr, key: "n", n: 5}}, []int64{15}, nil, "n", int64(15)},
		{"incr a string refuses the whole commit", []op{{kind: opSet, key: "n", val: enc("x")}}, []op{{kind: opSet, key: "o", val: enc(1)}, {kind: opIncr, key: "n", n: 1}}, nil, ErrWrongType, "o", nil},
		{"incr overflow", []op{{kind: opSet, key: "n", val: enc(int64(math.MaxInt64 - 1))}}, []op{{kind: opIncr, key: "n", n: 2}}, nil, ErrWrongType, "n", int64(math.MaxInt64 - 1)},
		{"cas hit", []op{{kind: opSet, key: "k", val: enc("a")}}, []op{{kind: opCAS, key: "k", old: enc("a"), val: enc("b")}}, []int64{1}, nil, "k", "b"},
		{"cas miss", []op{{kind: opSet, key: "k", val: enc("a")}}, []op{{kind: opCAS, key: "k", old: enc("z"), val: enc("b")}}, []int64{0}, nil, "k", "a"},
		{"cas absent hit", nil, []op{{kind: opCAS, key: "k", val: enc("b")}}, []int64{1}, nil, "k", "b"},
		{"cas absent miss", []op{{kind: opSet, key: "k", val: enc("a")}}, []op{{kind: opCAS, key: "k", val: enc("b")}}, []int64{0}, nil, "k", "a"},
		{"cas deletes", []op{{kind: opSet, key: "k", val: enc("a")}}, []op{{kind: opCAS, key: "k", old: enc("a")}}, []int64{1}, nil, "k", nil},
		{"cas int equals int64", []op{{kind: opSet, key: "k", val: enc(5)}}, []op{{kind: opCAS, key: "k", old: enc(int64(5)), val: enc(6)}}, []int64{1}, nil, "k", int64(6)},
		{"append absent", nil, []op{{kind: opAppend, key: "l", val: []byte(`"a"`)}}, []int64{1}, nil, "l", json.RawMessage(`["a"]`)},
		{"append twice", []op{{kind: opSet, key: "l", val: enc([]int{1})}}, []op{{kind: opAppend, key: "l", val: []byte(`2`)}, {kind: opAppend, key: "l", val: []byte(`{"x":3}`)}}, []int64{2, 3}, nil, "l", json.RawMessage(`[1,2,{"x":3}]`)},
		{"append to empty list", []op{{kind: opSet, key: "l", val: enc([]int{})}}, []op{{kind: opAppend, key: "l", val: []byte(`2`)}}, []int64{1}, nil, "l", json.RawMessage(`[2]`)},
		{"append to a nil slice", []op{{kind: opSet, key: "l", val: enc([]string(nil))}}, []op{{kind: opAppend, key: "l", val: []byte(`2`)}}, []int64{1}, nil, "l", json.RawMessage(`[2]`)},
		{"append to a string", []op{{kind: opSet, key: "l", val: enc("x")}}, []op{{kind: opAppend, key: "l", val: []byte(`2`)}}, nil, ErrWrongType, "l", "x"},
		{"append to a JSON object", []op{{kind: opSet, key: "l", val: enc(map[string]int{"a": 1})}}, []op{{kind: opAppend, key: "l", val: []byte(`2`)}}, nil, ErrWrongType, "l", json.RawMessage(`{"a":1}`)},
		{"set add", nil, []op{{kind: opSetAdd, key: "s", val: []byte("a")}, {kind: opSetAdd, key: "s", val: []byte("b")}, {kind: opSetAdd, key: "s", val: []byte("a")}}, []int64{1, 1, 0}, nil, "s", json.RawMessage(`["a","b"]`)},
		{"set remove", []op{{kind: opSet, key: "s", val: enc([]string{"a", "b"})}}, []op{{kind: opSetRemove, key: "s", val: []byte("a")}, {kind: opSetRemove, key: "s", val: []byte("z")}}, []int64{1, 0}, nil, "s", json.RawMessage(`["b"]`)},
		{"set add to a list of numbers", []op{{kind: opSet, key: "s", val: enc([]int{1})}}, []op{{kind: opSetAdd, key: "s", val: []byte("a")}}, nil, ErrWrongType, "s", json.RawMessage(`[1]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore()
			create(t, st, id(1), t0, tt.start...)
			c := commit{id: id(1), maxBytes: 1 << 20, ops: tt.ops}
			dec, err := decodeCommit(c.encode())
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			out, err := st.Apply(entry(cmdCommit, dec.encode(), t0.Add(time.Second)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				var ce raft.CodedError
				if !errors.As(err, &ce) || ce.ApplyCode() == "" {
					t.Fatalf("err %v has no apply code", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := decodeResults(out); !equalInts(got, tt.want) {
				t.Fatalf("results %v, want %v", got, tt.want)
			}
			got := decodeValue(blobGet(st.get(id(1)).data, tt.key))
			if gj, ok := got.(json.RawMessage); ok {
				got = json.RawMessage(gj)
				if w, ok := tt.wantVal.(json.RawMessage); !ok || string(w) != string(gj) {
					t.Fatalf("%s = %s, want %v", tt.key, gj, tt.wantVal)
				}
				return
			}
			if got != tt.wantVal {
				t.Fatalf("%s = %#v, want %#v", tt.key, got, tt.wantVal)
			}
		})
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sessionCtx returns a request context on session sid, as the middleware
// gives a handler that loaded it.
func sessionCtx(m *Manager, sid string) context.Context {
	return context.WithValue(context.Background(), ctxKey{}, &reqSession{m: m, id: sid})
}

func newLocalManager(t *testing.T, cfg Config) (*Manager, string) {
	t.Helper()
	m, err := New(&localLog{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := NewTestContext(context.Background(), m)
	m.Put(ctx, "init", 1)
	if err := m.Save(ctx); err != nil {
		t.Fatal(err)
	}
	return m, m.state(ctx).id
}

// TestConcurrentAtomicOpsLoseNothing runs 8 goroutines of 50 Incr, Update
// and AddToSet each on one session: every one counts.
func TestConcurrentAtomicOpsLoseNothing(t *testing.T) {
	m, sid := newLocalManager(t, Config{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				ctx := sessionCtx(m, sid)
				if _, err := m.Incr(ctx, "n", 1); err != nil {
					t.Error(err)
					return
				}
				if _, err := m.Update(ctx, "u", func(old any) (any, error) {
					n, _ := old.(int64)
					return n + 1, nil
				}); err != nil {
					t.Error(err)
					return
				}
				if _, err := m.AddToSet(ctx, "s", strconv.Itoa(g*100+i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ctx := sessionCtx(m, sid)
	if n, u, s := m.GetInt64(ctx, "n"), m.GetInt64(ctx, "u"), len(m.Members(ctx, "s")); n != 400 || u != 400 || s != 400 {
		t.Fatalf("incr %d, update %d, set %d members; want 400 each", n, u, s)
	}
}

// TestAtomicOpCommitsInOrderAndOnce: an atomic op commits the request's
// earlier changes with it, its result is what the request reads, and a
// refused one is not applied again when the response commits.
func TestAtomicOpCommitsInOrderAndOnce(t *testing.T) {
	m, sid := newLocalManager(t, Config{})
	ctx := sessionCtx(m, sid)
	m.Put(ctx, "n", 10)
	if n, err := m.Incr(ctx, "n", 1); err != nil || n != 11 {
		t.Fatalf("incr after put = %d, %v; want 11", n, err)
	}
	if got := m.GetInt64(ctx, "n"); got != 11 {
		t.Fatalf("read after incr %d", got)
	}
	m.Put(ctx, "s", "text")
	if _, err := m.Incr(ctx, "s", 1); !errors.Is(err, ErrWrongType) || StatusFor(err) != http.StatusInternalServerError {
		t.Fatalf("incr of a string: %v", err)
	}
	m.Put(ctx, "s", 1) // the handler recovers; the refused incr must not come back
	if err := m.Save(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.GetInt64(sessionCtx(m, sid), "s"); got != 1 {
		t.Fatalf("s = %d after a refused incr, want 1", got)
	}
	if ok, err := m.CompareAndSwap(ctx, "s", 2, 3); ok || err != nil {
		t.Fatalf("cas on a wrong old value: %v %v", ok, err)
	}
	if ok, err := m.CompareAndSwap(ctx, "s", 1, nil); !ok || err != nil || m.Exists(ctx, "s") {
		t.Fatalf("cas delete: %v %v", ok, err)
	}
	if n, err := m.Append(ctx, "l", map[string]int{"a": 1}); n != 1 || err != nil {
		t.Fatalf("append: %d %v", n, err)
	}
	var l []map[string]int
	if ok, err := m.GetJSON(ctx, "l", &l); !ok || err != nil || len(l) != 1 || l[0]["a"] != 1 {
		t.Fatalf("list %v %v %v", l, ok, err)
	}
	if _, err := m.Update(ctx, "big", func(any) (any, error) { return make([]byte, 300<<10), nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("update over the value limit: %v", err)
	}
	// Without a session, an atomic op creates one.
	fresh := NewTestContext(context.Background(), m)
	if n, err := m.Incr(fresh, "n", 2); n != 2 || err != nil || m.ID(fresh) == "" {
		t.Fatalf("incr on a new session: %d %v", n, err)
	}
}

// TestSessionLockSerializesReadModifyWrite sends 8 × 25 concurrent
// requests of one session through the middleware to a handler that reads,
// adds one and puts; with the lock none is lost.
func TestSessionLockSerializesReadModifyWrite(t *testing.T) {
	m, sid := newLocalManager(t, Config{NodeID: "self", Lock: true})
	_ = sid // the requests below use a session the middleware creates
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := m.GetInt64(r.Context(), "n")
		// Let the other requests run between the read and the write.
		for range 3 {
			runtime.Gosched()
		}
		m.Put(r.Context(), "n", n+1)
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	tok := w.Header().Get("Set-Cookie")
	if tok == "" {
		t.Fatal("no cookie")
	}
	cookie := (&http.Response{Header: http.Header{"Set-Cookie": {tok}}}).Cookies()[0]
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 1
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				r := httptest.NewRequest(http.MethodPost, "/", nil)
				r.AddCookie(cookie)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code == http.StatusOK {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	token, _, _ := ParseCookie(cookie.Value)
	got := m.GetInt64(sessionCtx(m, sessionID(token)), "n")
	if int(got) != ok || ok != 201 {
		t.Fatalf("count %d after %d answers 200 (of 201): updates lost", got, ok)
	}
	if n := m.locks.held(); n != 0 {
		t.Fatalf("%d locks left", n)
	}
}

// TestSessionLockWaitIsBoundedAndRefusedOnTakeover: a request waiting for
// a lock another one holds gets 503 + Retry-After after LockWait, and 409
// at once when another node takes the session over.
func TestSessionLockWaitIsBoundedAndRefusedOnTakeover(t *testing.T) {
	log := &localLog{origin: "self"}
	m, err := New(log, Config{NodeID: "self", Lock: true, LockWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	entered, leave := make(chan struct{}), make(chan struct{})
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-leave
		}
		m.Put(r.Context(), "k", "v")
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	cookie := w.Result().Cookies()[0]
	serve := func(path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		r.AddCookie(cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	held := make(chan *httptest.ResponseRecorder)
	go func() { held <- serve("/hold") }()
	<-entered
	if w := serve("/"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("waiter got %d %q, want 503 with Retry-After", w.Code, w.Body.String())
	}
	// A takeover by another node refuses the waiter at once (LockWait is long).
	m.cfg.LockWait = time.Minute
	waiter := make(chan *httptest.ResponseRecorder)
	go func() { waiter <- serve("/") }()
	token, _, _ := ParseCookie(cookie.Value)
	sid := sessionID(token)
	waitUntil(t, func() bool {
		m.locks.mu.Lock()
		defer m.locks.mu.Unlock()
		return m.locks.m[sid] != nil && m.locks.m[sid].refs == 2
	})
	log.mu.Lock()
	log.index++
	if _, err := log.sm.Apply(raft.Entry{Index: log.index, Type: cmdClaim, Time: time.Now(), Origin: "other", Payload: encodeIDs([]string{sid})}); err != nil {
		t.Fatal(err)
	}
	log.mu.Unlock()
	if w := <-waiter; w.Code != http.StatusConflict {
		t.Fatalf("waiter after a takeover got %d %q, want 409", w.Code, w.Body.String())
	}
	close(leave)
	if w := <-held; w.Code != http.StatusConflict {
		t.Fatalf("holder after a takeover got %d, want 409 (its commit must be refused)", w.Code)
	}
	if n := m.locks.held(); n != 0 {
		t.Fatalf("%d locks left", n)
	}
}

// waitUntil polls cond until it holds or 10 s pass.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		<-tick.C
	}
}
