package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/kv"
	"github.com/cohortserver/cohort/metrics"
)

// setupKV wires the replicated key-value store on every node (its state
// machine must be registered everywhere, whether or not this node serves
// the protocols), the Redis and memcached listeners when configured, and
// the admin endpoint that inspects a key.
func (n *Node) setupKV() error {
	kc := n.cfg.KV
	st, err := kv.New(n.cluster, kv.Config{MaxValue: kc.MaxValue, MaxMemory: kc.MaxMemory, Now: n.opts.now, Logger: n.log})
	if err != nil {
		return err
	}
	n.kv = st
	n.OnStart(st.Start, st.Close)
	if kc.RedisAddr != "" {
		var password string
		if kc.RedisPasswordFile != "" {
			p, err := config.ReadSecret(kc.RedisPasswordFile, 8)
			if err != nil {
				return fmt.Errorf("redis password: %w", err)
			}
			password = string(p)
		}
		n.redis = kv.NewRESPServer(st, kv.RESPConfig{
			Addr:       kc.RedisAddr,
			Password:   password,
			AdminToken: n.validToken,
			NodeID:     n.cfg.NodeID,
			Logger:     n.log,
		})
		start := n.redis.Start
		if kc.RedisTLS {
			start = func(ctx context.Context) error {
				fc := n.cfg.Front
				cf, err := loadCertFile(fc.PublicTLSCertFile, fc.PublicTLSKeyFile, n.log)
				if err != nil {
					return fmt.Errorf("--redis-tls: %w", err)
				}
				n.redis.SetTLS(&tls.Config{GetCertificate: cf.getCertificate, MinVersion: tls.VersionTLS12})
				return n.redis.Start(ctx)
			}
		}
		n.OnStart(start, n.redis.Close)
	}
	if kc.MemcachedAddr != "" {
		n.memcached = kv.NewMemcacheServer(st, kv.MemcacheConfig{Addr: kc.MemcachedAddr, Logger: n.log})
		n.OnStart(n.memcached.Start, n.memcached.Close)
	}
	n.HandleAdmin("GET /_cohort/api/kv", n.handleKV)
	return nil
}

// KV returns the node's replicated key-value store.
func (n *Node) KV() *kv.Store { return n.kv }

// RedisAddr is the address of the Redis listener ("" when off).
func (n *Node) RedisAddr() string {
	if n.redis == nil {
		return ""
	}
	return n.redis.Addr()
}

// MemcachedAddr is the address of the memcached listener ("" when off).
func (n *Node) MemcachedAddr() string {
	if n.memcached == nil {
		return ""
	}
	return n.memcached.Addr()
}

// KVStatus is the store's part of /_cohort/status.
type KVStatus struct {
	kv.Stats
	RedisAddr     string             `json:"redis_addr,omitempty"`
	MemcachedAddr string             `json:"memcached_addr,omitempty"`
	Protocols     map[string]KVProto `json:"protocols,omitempty"`
}

// KVProto counts one protocol's traffic on this node.
type KVProto struct {
	Commands    int64 `json:"commands"`
	Errors      int64 `json:"errors"`
	Connections int64 `json:"connections"`
}

func (n *Node) kvStatus() *KVStatus {
	if n.kv == nil {
		return nil
	}
	out := &KVStatus{Stats: n.kv.Stats(), RedisAddr: n.RedisAddr(), MemcachedAddr: n.MemcachedAddr(), Protocols: map[string]KVProto{}}
	for name, c := range n.kvCounters() {
		out.Protocols[name] = KVProto{Commands: c.Commands.Load(), Errors: c.Errors.Load(), Connections: c.Connections.Load()}
	}
	return out
}

func (n *Node) kvCounters() map[string]*kv.Counters {
	m := map[string]*kv.Counters{}
	if n.redis != nil {
		m["redis"] = n.redis.Counters()
	}
	if n.memcached != nil {
		m["memcached"] = n.memcached.Counters()
	}
	return m
}

// handleKV describes one key: ?key=K, with ?db=N (Redis database, default
// 0) or ?ns=memcached. The answer is linearizable.
func (n *Node) handleKV(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("key")
	if key == "" {
		WriteJSON(w, http.StatusOK, map[string]any{"node": n.cfg.NodeID, "kv": n.kvStatus()})
		return
	}
	ns := byte(0)
	switch {
	case q.Get("ns") == "memcached":
		ns = kv.NamespaceMemcached
	case q.Get("db") != "":
		db, err := strconv.Atoi(q.Get("db"))
		if err != nil || db < 0 || db >= kv.NumDBs {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("db %q must be 0..%d", q.Get("db"), kv.NumDBs-1))
			return
		}
		ns = byte(db)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	info, err := n.kv.Inspect(ctx, ns, []byte(key))
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, info)
}

// kvMetrics is the store's collector: keys, memory, batching and the
// commands, errors and connections of each protocol.
func (n *Node) kvMetrics() prometheus.Collector {
	return metrics.NewFunc("kv", []metrics.Figure{
		{Name: "keys", Help: "Keys in the replicated store (every namespace, expired ones not yet removed included)."},
		{Name: "used_bytes", Help: "Approximate bytes the store's data takes."},
		{Name: "max_bytes", Help: "Memory cap of the store (0 = none)."},
		{Name: "batches_total", Help: "Raft entries of store writes this node proposed (group commit).", Counter: true},
		{Name: "batched_ops_total", Help: "Store writes in those entries.", Counter: true},
		{Name: "read_indexes_total", Help: "Read index rounds passed for store reads.", Counter: true},
		{Name: "lease_reads_total", Help: "Store reads the leader answered under its read lease: its own, and the read indexes it gave followers without a quorum round.", Counter: true},
		{Name: "holder_reads_total", Help: "Store reads this follower answered from its own state under an apply lease, with no round trip.", Counter: true},
		{Name: "visible_waits_total", Help: "Store reads that waited until every apply lease holder applied an entry they would show.", Counter: true},
		{Name: "commands_total", Help: "Commands served, per protocol.", Labels: []string{"protocol"}, Counter: true},
		{Name: "errors_total", Help: "Error replies, per protocol.", Labels: []string{"protocol"}, Counter: true},
		{Name: "connections_total", Help: "Client connections accepted, per protocol.", Labels: []string{"protocol"}, Counter: true},
	}, func(emit metrics.Emit) {
		st := n.kv.Stats()
		emit("keys", float64(st.Keys))
		emit("used_bytes", float64(st.UsedBytes))
		emit("max_bytes", float64(st.MaxBytes))
		emit("batches_total", float64(st.Batches))
		emit("batched_ops_total", float64(st.BatchedOps))
		emit("read_indexes_total", float64(st.ReadIndexes))
		emit("lease_reads_total", float64(st.LeaseReads))
		emit("holder_reads_total", float64(st.HolderReads))
		emit("visible_waits_total", float64(st.VisibleWaits))
		for proto, c := range n.kvCounters() {
			emit("commands_total", float64(c.Commands.Load()), proto)
			emit("errors_total", float64(c.Errors.Load()), proto)
			emit("connections_total", float64(c.Connections.Load()), proto)
		}
	})
}
