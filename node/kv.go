package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/kv"
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
