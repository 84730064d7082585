package config

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// FrontConfig holds the settings of the sticky front (package proxy). The
// balance policy and the session cookie name are top-level settings
// (Config.Balance, Config.SessionCookie) because the contract names them.
type FrontConfig struct {
	// TrustedProxies are the addresses (CIDR or single IP) whose
	// X-Forwarded-For/Proto/Host the front believes. Empty trusts no one.
	TrustedProxies []string
	// MaxRequestBody bounds a request body in bytes; 0 means no limit.
	MaxRequestBody int64
	// PublicTLSCertFile and PublicTLSKeyFile serve the public port over
	// TLS with HTTP/2 (both or neither).
	PublicTLSCertFile string
	PublicTLSKeyFile  string
	// MaxTries bounds the attempts for one request (first try included).
	MaxTries int
	// DrainTimeout bounds how long a graceful shutdown waits for in-flight
	// requests after marking the node draining.
	DrainTimeout time.Duration
	// AccessLog logs one line per request (component=front).
	AccessLog bool
	// FastPath lets the front forward body-less GET and HEAD requests of
	// sessions owned elsewhere without net/http's server (proxy's fast
	// front). Only without TLS on the public port.
	FastPath bool
}

func defaultFront() FrontConfig {
	return FrontConfig{
		MaxRequestBody: 64 << 20,
		MaxTries:       3,
		DrainTimeout:   20 * time.Second,
		AccessLog:      true,
		FastPath:       true,
	}
}

// flags registers this capability's flags with its defaults.
func (d FrontConfig) flags(fs *pflag.FlagSet) {
	fs.String("trusted-proxies", strings.Join(d.TrustedProxies, ","), "CIDR,... whose X-Forwarded-* headers the front believes (default: none)")
	fs.String("max-request-body", FormatSize(d.MaxRequestBody), "largest request body the front accepts, e.g. 64MiB (0 = no limit)")
	fs.String("public-tls-cert-file", d.PublicTLSCertFile, "certificate for TLS (and HTTP/2) on --http-addr; re-read when it or the key changes on disk")
	fs.String("public-tls-key-file", d.PublicTLSKeyFile, "key for TLS on --http-addr")
	fs.Int("front-max-tries", d.MaxTries, "attempts per request across nodes, first try included")
	fs.Duration("drain-timeout", d.DrainTimeout, "on graceful shutdown, how long to wait for in-flight requests after draining")
	fs.Bool("access-log", d.AccessLog, "log one line per request of the front")
	fs.Bool("front-fast-path", d.FastPath, "forward GET/HEAD of sessions owned elsewhere without net/http's server (plain HTTP only)")
}

// load reads the merged flag/env/file values.
func (c *FrontConfig) load(v *viper.Viper) {
	c.TrustedProxies = list(v.Get("trusted-proxies"))
	if n, err := ParseSize(v.GetString("max-request-body")); err == nil {
		c.MaxRequestBody = n
	} else {
		c.MaxRequestBody = -1 // reported by validate
	}
	c.PublicTLSCertFile = v.GetString("public-tls-cert-file")
	c.PublicTLSKeyFile = v.GetString("public-tls-key-file")
	c.MaxTries = v.GetInt("front-max-tries")
	c.DrainTimeout = v.GetDuration("drain-timeout")
	c.AccessLog = v.GetBool("access-log")
	c.FastPath = v.GetBool("front-fast-path")
}

// validate reports each problem through add, naming the flag (see problem).
func (c *FrontConfig) validate(add func(error)) {
	if _, err := ParsePrefixes(c.TrustedProxies); err != nil {
		add(problem("trusted-proxies", "%v", err))
	}
	if c.MaxRequestBody < 0 {
		add(problem("max-request-body", "must be a size such as 64MiB, 1048576 or 0 for no limit"))
	}
	if (c.PublicTLSCertFile == "") != (c.PublicTLSKeyFile == "") {
		add(problem("public-tls-cert-file", "TLS on the public port needs both --public-tls-cert-file and --public-tls-key-file"))
	}
	for _, f := range []struct{ key, path string }{{"public-tls-cert-file", c.PublicTLSCertFile}, {"public-tls-key-file", c.PublicTLSKeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add(problem(f.key, "%v", err))
		}
	}
	if c.MaxTries < 1 || c.MaxTries > 10 {
		add(problem("front-max-tries", "%d must be between 1 and 10", c.MaxTries))
	}
	if c.DrainTimeout < 0 {
		add(problem("drain-timeout", "%s must not be negative", c.DrainTimeout))
	}
}

// ParsePrefixes parses CIDRs or single IPs (taken as /32 or /128).
func ParsePrefixes(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", e)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", e)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses a byte size: a plain number of bytes or a number with
// a binary unit (K, KB, KiB, M, MB, MiB, G, GB, GiB; all powers of 1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return n * mult, nil
}

// FormatSize prints a size the way ParseSize reads it.
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}
