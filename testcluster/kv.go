package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
)

// kvCmd is the only command of the test key-value machine.
const kvCmd = "test.kv.put"

// KV is a tiny replicated key-value state machine for foundation tests:
// it proves that what Apply acknowledged is present on every node.
type KV struct {
	mu      sync.RWMutex
	data    map[string]string
	times   map[string]time.Time // entry time of each key's last put
	applied int
}

var _ raft.StateMachine = (*KV)(nil)

func newKV() *KV {
	return &KV{data: make(map[string]string), times: make(map[string]time.Time)}
}

// KVs tracks one KV per node, rebuilt when a node restarts.
type KVs struct {
	mu  sync.Mutex
	kvs map[string]*KV
}

// WithKV registers a KV on every node and returns the handle to reach them.
func WithKV() (Option, *KVs) {
	k := &KVs{kvs: make(map[string]*KV)}
	return WithNodeSetup(func(n *node.Node) {
		kv := newKV()
		if err := n.Cluster().Register("test-kv", kv, kvCmd); err != nil {
			panic(fmt.Sprintf("register test kv: %v", err)) // test setup only
		}
		k.mu.Lock()
		k.kvs[n.ID()] = kv
		k.mu.Unlock()
	}), k
}

// On returns the KV of node id.
func (k *KVs) On(id string) *KV {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kvs[id]
}

type kvPut struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Put writes key=value through n's cluster (from any node).
func Put(ctx context.Context, n *node.Node, key, value string) (raft.Result, error) {
	b, _ := json.Marshal(kvPut{key, value})
	return n.Cluster().Apply(ctx, kvCmd, b)
}

// MustPut writes or fails the test.
func MustPut(t testing.TB, n *node.Node, key, value string) raft.Result {
	t.Helper()
	res, err := Put(context.Background(), n, key, value)
	if err != nil {
		t.Fatalf("put %s on %s: %v", key, n.ID(), err)
	}
	return res
}

// Apply implements raft.StateMachine.
func (kv *KV) Apply(e raft.Entry) ([]byte, error) {
	var p kvPut
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return nil, fmt.Errorf("decode put: %w", err)
	}
	if p.Key == "" {
		return nil, errors.New("empty key refused")
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.data[p.Key] = p.Value
	kv.times[p.Key] = e.Time
	kv.applied++
	return []byte(p.Value), nil
}

// Get reads a key locally.
func (kv *KV) Get(key string) (string, bool) {
	kv.mu.RLock()
	defer kv.mu.RUnlock()
	v, ok := kv.data[key]
	return v, ok
}

// Time is the entry time (the leader's stamp) of key's last put.
func (kv *KV) Time(key string) time.Time {
	kv.mu.RLock()
	defer kv.mu.RUnlock()
	return kv.times[key]
}

// Len is the number of keys.
func (kv *KV) Len() int {
	kv.mu.RLock()
	defer kv.mu.RUnlock()
	return len(kv.data)
}

type kvSnap struct{ data map[string]string }

// Snapshot implements raft.StateMachine.
func (kv *KV) Snapshot() (raft.Snapshot, error) {
	kv.mu.RLock()
	defer kv.mu.RUnlock()
	cp := make(map[string]string, len(kv.data))
	for k, v := range kv.data {
		cp[k] = v
	}
	return &kvSnap{cp}, nil
}

// Persist implements raft.Snapshot.
func (s *kvSnap) Persist(w io.Writer) error { return json.NewEncoder(w).Encode(s.data) }

// Release implements raft.Snapshot.
func (s *kvSnap) Release() {}

// Restore implements raft.StateMachine.
func (kv *KV) Restore(r io.Reader) error {
	m := make(map[string]string)
	if err := json.NewDecoder(r).Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("decode kv snapshot: %w", err)
	}
	kv.mu.Lock()
	kv.data = m
	kv.times = make(map[string]time.Time) // entry times are not in snapshots
	kv.mu.Unlock()
	return nil
}
