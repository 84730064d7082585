package kv

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for the local store.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func argv(words ...string) [][]byte {
	out := make([][]byte, len(words))
	for i, w := range words {
		out[i] = []byte(w)
	}
	out[0] = bytes.ToUpper(out[0])
	return out
}

// show renders a reply compactly for comparisons.
func show(r Reply) string {
	switch r.Kind {
	case kindNil, kindNilArray:
		return "nil"
	case kindInt:
		return fmt.Sprint(r.Int)
	case kindBulk:
		return string(r.Str)
	case kindStatus:
		return "+" + string(r.Str)
	case kindErr:
		return "-" + string(r.Str)
	}
	parts := make([]string, len(r.Arr))
	for i, e := range r.Arr {
		parts[i] = show(e)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func run(t *testing.T, s *Store, ns byte, words ...string) string {
	t.Helper()
	r, err := s.Do(context.Background(), ns, argv(words...))
	if err != nil {
		t.Fatalf("%v: %v", words, err)
	}
	return show(r)
}

func TestCommands(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{MaxValue: 16}, clk.now)
	defer s.Close()
	steps := []struct{ cmd, want string }{
		{"get a", "nil"},
		{"set a 1", "+OK"},
		{"set a 2 NX", "nil"},
		{"set a 3 XX GET", "1"},
		{"set b 1 XX", "nil"},
		{"set a 4 EX 0", "-ERR invalid expire time in 'set' command"},
		{"set a 4 EX 1 PX 5", "-ERR syntax error"},
		{"set a 4 NX XX", "-ERR syntax error"},
		{"incr a", "4"},
		{"incrby a -10", "-6"},
		{"decrby a 4", "-10"},
		{"append a xy", "5"},
		{"incr a", "-ERR value is not an integer or out of range"},
		{"strlen a", "5"},
		{"set big 01234567890123456", "-ERR string exceeds maximum allowed size (proto-max-bulk-len)"},
		{"mset x 1 y 2", "+OK"},
		{"mget x y z", "[1 2 nil]"},
		{"msetnx y 3 z 3", "0"},
		{"msetnx z 3 w 4", "1"},
		{"del x y nope", "2"},
		{"exists x z w", "2"},
		{"hset h f 1 g 2", "2"},
		{"hget h f", "1"},
		{"hincrby h f 5", "6"},
		{"hgetall h", "[f 6 g 2]"},
		{"hmget h f q", "[6 nil]"},
		{"hdel h f g", "2"},
		{"exists h", "0"},
		{"get h", "nil"},
		{"sadd s a b a", "2"},
		{"smembers s", "[a b]"},
		{"get s", "-WRONGTYPE Operation against a key holding the wrong kind of value"},
		{"srem s a b", "2"},
		{"type s", "+none"},
		{"rename z zz", "+OK"},
		{"rename nope q", "-ERR no such key"},
		{"keys z*", "[zz]"},
		{"getdel zz", "3"},
		{"rpush l a b c", "3"},
		{"lpush l z", "4"},
		{"lrange l 0 -1", "[z a b c]"},
		{"lrange l -2 100", "[b c]"},
		{"lindex l -1", "c"},
		{"lpop l", "z"},
		{"rpop l 2", "[c b]"},
		{"llen l", "1"},
		{"rpop l", "a"},
		{"type l", "+none"},
		{"lpop l 1", "nil"},
		{"nosuch 1 2", "-ERR unknown command 'NOSUCH', with args beginning with: '1' '2' "},
		{"get", "-ERR wrong number of arguments for 'get' command"},
	}
	for _, st := range steps {
		if got := run(t, s, 0, strings.Fields(st.cmd)...); got != st.want {
			t.Errorf("%s: got %q, want %q", st.cmd, got, st.want)
		}
	}
	// Databases are separate namespaces.
	if got := run(t, s, 1, "get", "w"); got != "nil" {
		t.Errorf("db 1 sees db 0's key: %s", got)
	}
}

func TestExpiryIsJudgedOnRead(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	run(t, s, 0, "set", "k", "v", "EX", "2")
	run(t, s, 0, "set", "p", "v", "PX", "1500")
	if got := run(t, s, 0, "ttl", "k"); got != "2" {
		t.Fatalf("ttl %s", got)
	}
	clk.add(1999 * time.Millisecond)
	if got := run(t, s, 0, "get", "k"); got != "v" {
		t.Fatalf("before expiry: %s", got)
	}
	clk.add(time.Millisecond)
	// No deletion ran: the read itself must not return it.
	for _, c := range [][]string{{"get", "k"}, {"exists", "k"}, {"ttl", "k"}, {"keys", "*"}, {"dbsize"}} {
		got := run(t, s, 0, c...)
		if got != "nil" && got != "0" && got != "-2" && got != "[]" {
			t.Errorf("%v at expiry: %s", c, got)
		}
	}
	// KEEPTTL keeps, a plain SET clears, PERSIST removes the expiry.
	run(t, s, 0, "set", "a", "1", "EX", "10")
	run(t, s, 0, "set", "a", "2", "KEEPTTL")
	if got := run(t, s, 0, "ttl", "a"); got != "10" {
		t.Errorf("KEEPTTL: ttl %s", got)
	}
	run(t, s, 0, "persist", "a")
	if got := run(t, s, 0, "ttl", "a"); got != "-1" {
		t.Errorf("PERSIST: ttl %s", got)
	}
	// The background expiry removes only what is expired at its entry's time.
	run(t, s, 0, "set", "b", "1", "EX", "1")
	clk.add(2 * time.Second)
	keys, _ := s.expiredKeys(clk.now().UnixNano())
	if len(keys) != 3 { // k, p and b: reads never delete
		t.Fatalf("expired keys %q", keys)
	}
	if _, err := s.propose(context.Background(), encodeExpireOp(keys)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Keys != 1 {
		t.Errorf("after background expiry %d keys, want 1", st.Keys)
	}
}

func TestWatchAbortsOnChange(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	ctx := context.Background()
	run(t, s, 0, "set", "k", "1")
	exec := func(w []watch, idx uint64) string {
		r, err := s.Exec(ctx, 0, idx, w, [][][]byte{argv("incr", "k")})
		if err != nil {
			t.Fatal(err)
		}
		return show(r)
	}
	rev, idx := s.Watch(0, []byte("k"))
	if got := exec([]watch{{key: []byte("k"), rev: rev}}, idx); got != "[2]" {
		t.Fatalf("unchanged key: %s", got)
	}
	// The EXEC above changed k: the old revision must abort.
	if got := exec([]watch{{key: []byte("k"), rev: rev}}, idx); got != "nil" {
		t.Fatalf("changed key: %s", got)
	}
	// A missing key that is created and deleted meanwhile aborts too.
	rev, idx = s.Watch(0, []byte("m"))
	run(t, s, 0, "set", "m", "1")
	run(t, s, 0, "del", "m")
	if got := exec([]watch{{key: []byte("m"), rev: rev}}, idx); got != "nil" {
		t.Fatalf("key created and deleted: %s", got)
	}
	// A watched key that expires meanwhile aborts.
	run(t, s, 0, "set", "e", "1", "PX", "100")
	rev, idx = s.Watch(0, []byte("e"))
	clk.add(time.Second)
	if got := exec([]watch{{key: []byte("e"), rev: rev}}, idx); got != "nil" {
		t.Fatalf("key expired: %s", got)
	}
}

func TestMemoryCapRefusesGrowthWithRedisText(t *testing.T) {
	s := newLocal(Config{MaxMemory: 1000}, newFakeClock().now)
	defer s.Close()
	var got string
	for i := 0; i < 100; i++ {
		if got = run(t, s, 0, "set", fmt.Sprint("k", i), "0123456789"); got != "+OK" {
			break
		}
	}
	if got != "-"+errOOM {
		t.Fatalf("over the cap: %q", got)
	}
	if got := run(t, s, 0, "del", "k1"); got != "1" {
		t.Fatalf("DEL over the cap: %s", got)
	}
}

func TestGroupCommitBatchesConcurrentWrites(t *testing.T) {
	s := newLocal(Config{}, newFakeClock().now)
	defer s.Close()
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Do(context.Background(), 0, argv("incr", "n")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := run(t, s, 0, "get", "n"); got != "200" {
		t.Fatalf("counter %s, want 200", got)
	}
	st := s.Stats()
	t.Logf("%d operations in %d entries", st.BatchedOps, st.Batches)
}

// restored is a new local store restored from a snapshot of s; it is
// closed when the test ends.
func restored(t *testing.T, s *Store, clk *fakeClock) *Store {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	r := newLocal(Config{}, clk.now)
	t.Cleanup(func() { r.Close() })
	if err := r.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSnapshotRoundTrip(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	run(t, s, 0, "set", "a", "1", "EX", "100")
	run(t, s, 3, "hset", "h", "f", "v")
	run(t, s, 0, "sadd", "s", "x", "y")
	run(t, s, 0, "rpush", "l", "1", "2")
	run(t, s, 0, "set", "bin\x00key", "\x00\xff")
	r := restored(t, s, clk)
	for _, c := range []struct {
		ns   byte
		cmd  []string
		want string
	}{
		{0, []string{"get", "a"}, "1"},
		{0, []string{"ttl", "a"}, "100"},
		{3, []string{"hgetall", "h"}, "[f v]"},
		{0, []string{"smembers", "s"}, "[x y]"},
		{0, []string{"get", "bin\x00key"}, "\x00\xff"},
		{0, []string{"lrange", "l", "0", "-1"}, "[1 2]"},
	} {
		if got := run(t, r, c.ns, c.cmd...); got != c.want {
			t.Errorf("restored %v: %q, want %q", c.cmd, got, c.want)
		}
	}
	if a, b := s.Stats().UsedBytes, r.Stats().UsedBytes; a != b {
		t.Errorf("used bytes %d after restore, %d before", b, a)
	}
	if err := r.Restore(bytes.NewReader(nil)); err != nil || r.Stats().Keys != 0 {
		t.Errorf("empty restore: %v, %d keys", err, r.Stats().Keys)
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"h[ae]llo", "hello", true}, {"h[^e]llo", "hello", false}, {"h[a-b]llo", "hbllo", true},
		{`h\*o`, "h*o", true}, {`h\*o`, "hxo", false}, {"sess:*", "sess:1", true}, {"sess:*", "ses", false},
	} {
		if got := matchGlob(c.p, c.s); got != c.want {
			t.Errorf("match(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

// volatileKeys is the store's index of keys with an expiry, sorted.
func volatileKeys(s *Store) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.st.volatile))
	for k := range s.st.volatile {
		out = append(out, k[1:])
	}
	slices.Sort(out)
	return out
}

func TestBackgroundExpiryLooksOnlyAtKeysWithAnExpiry(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	mset := []string{"mset"}
	for i := range 50_000 {
		mset = append(mset, fmt.Sprintf("plain-%d", i), "v")
	}
	run(t, s, 0, mset...)
	for i := range 5 {
		run(t, s, 0, "set", fmt.Sprintf("ttl-%d", i), "v", "EX", "1")
	}
	// The index follows every way a key gains or loses its expiry.
	run(t, s, 0, "set", "kept", "1", "EX", "100")
	run(t, s, 0, "set", "kept", "2", "KEEPTTL")
	run(t, s, 0, "set", "cleared", "1", "EX", "100")
	run(t, s, 0, "set", "cleared", "2")
	run(t, s, 0, "set", "persisted", "1", "EX", "100")
	run(t, s, 0, "persist", "persisted")
	run(t, s, 0, "set", "deleted", "1", "EX", "100")
	run(t, s, 0, "del", "deleted")
	run(t, s, 0, "set", "expired", "1")
	run(t, s, 0, "pexpire", "expired", "100000")
	want := []string{"expired", "kept", "ttl-0", "ttl-1", "ttl-2", "ttl-3", "ttl-4"}
	if got := volatileKeys(s); !slices.Equal(got, want) {
		t.Fatalf("keys with an expiry %q, want %q", got, want)
	}
	clk.add(2 * time.Second)
	keys, examined := s.expiredKeys(clk.now().UnixNano())
	if len(keys) != 5 || examined != len(want) {
		t.Fatalf("a pass found %d expired keys looking at %d keys, want 5 looking at %d", len(keys), examined, len(want))
	}
	// A restored snapshot rebuilds the index.
	r := restored(t, s, clk)
	if got := volatileKeys(r); !slices.Equal(got, want) {
		t.Fatalf("restored keys with an expiry %q, want %q", got, want)
	}
}

func TestBackgroundExpiryRepeatsWhileItFindsFullBatches(t *testing.T) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	const n = 2*expireBatch + expireBatch/2
	for i := range n {
		run(t, s, 0, "set", fmt.Sprintf("k%d", i), "v", "PX", "10")
	}
	run(t, s, 0, "set", "stays", "v", "EX", "100")
	clk.add(time.Second)
	s.expireOnce(context.Background())
	if st := s.Stats(); st.Keys != 1 {
		t.Fatalf("one expiry pass left %d keys, want only the one not expired", st.Keys)
	}
	if got := volatileKeys(s); !slices.Equal(got, []string{"stays"}) {
		t.Fatalf("keys with an expiry after the pass: %d", len(got))
	}
}
