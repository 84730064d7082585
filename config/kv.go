package config

import (
	"net"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// KVConfig holds the settings of the replicated key-value store and its
// Redis and memcached listeners.
type KVConfig struct {
	RedisAddr            string // --redis-addr: serve RESP here; "" = off
	RedisPasswordFile    string // --redis-password-file: AUTH password; required unless RedisAddr is loopback
	RedisTLS             bool   // --redis-tls: serve RESP over TLS with the public certificate (--public-tls-cert-file)
	MemcachedAddr        string // --memcached-addr: serve the memcached text protocol; "" = off
	MemcachedAllowRemote bool   // --memcached-allow-remote: allow a non-loopback memcached address (it has no authentication)
	MaxValue             int64  // --kv-max-value: largest string, field or member in bytes
	MaxMemory            int64  // --kv-max-memory: writes that add data are refused beyond this many bytes; 0 = no cap

	bad []error
}

// DevRedisAddr is where `cohort dev` serves the Redis protocol.
const DevRedisAddr = "127.0.0.1:6380"

func defaultKV() KVConfig {
	return KVConfig{MaxValue: 1 << 20, MaxMemory: 1 << 30}
}

func (d KVConfig) flags(fs *pflag.FlagSet) {
	fs.String("redis-addr", d.RedisAddr, "serve the Redis protocol (RESP2/RESP3) over the replicated store at HOST:PORT (off unless set)")
	fs.String("redis-password-file", d.RedisPasswordFile, "AUTH password of the Redis listener; required unless --redis-addr is a loopback address")
	fs.Bool("redis-tls", d.RedisTLS, "serve the Redis protocol over TLS with the public certificate (--public-tls-cert-file and --public-tls-key-file)")
	fs.String("memcached-addr", d.MemcachedAddr, "serve the memcached text protocol over the replicated store at HOST:PORT (off unless set)")
	fs.Bool("memcached-allow-remote", d.MemcachedAllowRemote, "allow --memcached-addr on a non-loopback address (memcached has no authentication)")
	fs.String("kv-max-value", FormatBytes(d.MaxValue), "largest value (string, hash field or set member) of the replicated store")
	fs.String("kv-max-memory", FormatBytes(d.MaxMemory), "memory cap of the replicated store: beyond it, writes that add data are refused (0 = no cap)")
}

func (c *KVConfig) load(v *viper.Viper) {
	c.bad = nil
	c.RedisAddr = v.GetString("redis-addr")
	c.RedisPasswordFile = v.GetString("redis-password-file")
	c.RedisTLS = v.GetBool("redis-tls")
	c.MemcachedAddr = v.GetString("memcached-addr")
	c.MemcachedAllowRemote = v.GetBool("memcached-allow-remote")
	for _, s := range []struct {
		key string
		dst *int64
	}{{"kv-max-value", &c.MaxValue}, {"kv-max-memory", &c.MaxMemory}} {
		if !v.IsSet(s.key) {
			continue
		}
		n, err := ParseBytes(v.GetString(s.key))
		if err != nil {
			c.bad = append(c.bad, problem(s.key, "%v", err))
			continue
		}
		*s.dst = n
	}
}

// IsLoopback reports whether addr (HOST:PORT) names a loopback host only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *KVConfig) validate(add func(error)) {
	for _, e := range c.bad {
		add(e)
	}
	if c.RedisAddr != "" {
		if _, _, err := net.SplitHostPort(c.RedisAddr); err != nil {
			add(problem("redis-addr", "%q is not HOST:PORT", c.RedisAddr))
		} else if c.RedisPasswordFile == "" && !IsLoopback(c.RedisAddr) {
			add(problem("redis-password-file", "required when --redis-addr %q is not a loopback address: clients must AUTH", c.RedisAddr))
		}
	}
	if c.RedisPasswordFile != "" {
		if _, err := ReadSecret(c.RedisPasswordFile, 8); err != nil {
			add(problem("redis-password-file", "%v", err))
		}
	}
	if c.MemcachedAddr != "" {
		if _, _, err := net.SplitHostPort(c.MemcachedAddr); err != nil {
			add(problem("memcached-addr", "%q is not HOST:PORT", c.MemcachedAddr))
		} else if !IsLoopback(c.MemcachedAddr) && !c.MemcachedAllowRemote {
			add(problem("memcached-addr", "%q is not a loopback address; memcached has no authentication: bind 127.0.0.1, or pass --memcached-allow-remote on a private network", c.MemcachedAddr))
		}
	}
	if c.MaxValue < 1 || c.MaxValue > 512<<20 {
		add(problem("kv-max-value", "%d must be between 1 byte and 512MiB", c.MaxValue))
	}
	if c.MaxMemory < 0 {
		add(problem("kv-max-memory", "%d must be 0 (no cap) or positive", c.MaxMemory))
	}
}

// validateRedisTLS checks that --redis-tls has the public certificate.
func (c *Config) validateRedisTLS(add func(error)) {
	if c.KV.RedisTLS && c.Front.PublicTLSCertFile == "" {
		add(problem("redis-tls", "needs the public certificate: set --public-tls-cert-file and --public-tls-key-file"))
	}
}
