package config

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment variable: --node-id is COHORT_NODE_ID.
const EnvPrefix = "COHORT"

// Flags returns the flag set of `cohort serve` (dev=false) or `cohort dev`
// with its defaults. Every flag is also an environment variable and a
// config-file key of the same name.
func Flags(dev bool) *pflag.FlagSet {
	d := Default()
	name := "serve"
	if dev {
		d = Dev()
		name = "dev"
	}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.String("config", "", "configuration file (YAML, TOML or JSON)")
	fs.String("node-id", d.NodeID, "this node's id, [a-z0-9][a-z0-9-]{0,31}; fixed at first start")
	fs.String("data-dir", d.DataDir, "Raft log, snapshots, state and file blobs (default ./data/<node-id>)")
	fs.String("http-addr", d.HTTPAddr, "public front: the application and /_cohort/")
	fs.String("cluster-addr", d.ClusterAddr, "Raft and node-to-node traffic, on this one port")
	fs.String("advertise-addr", d.AdvertiseAddr, "cluster address other nodes dial (default: --cluster-addr when it names a host)")
	fs.String("peers", peersString(d.Peers), "ID=HOST:PORT,... the same on every node; bootstraps a node with an empty data dir")
	fs.String("join", "", "HOST:PORT,... cluster addresses of members to join through")
	fs.Duration("join-timeout", d.JoinTimeout, "how long --join keeps retrying")
	fs.String("cluster-key-file", d.ClusterKeyFile, "shared secret every node-to-node connection proves (required unless dev)")
	fs.String("tls-cert-file", "", "certificate for mutual TLS on the cluster port")
	fs.String("tls-key-file", "", "key for mutual TLS on the cluster port")
	fs.String("tls-ca-file", "", "CA that signs every node's certificate")
	fs.String("admin-token-file", d.AdminTokenFile, "bearer token for the admin API, status, metrics and console")
	fs.String("db-dsn", d.DBDSN, "MySQL business database (go-sql-driver DSN)")
	fs.String("balance", d.Balance, "where a request without a session goes: local, round-robin or least-loaded")
	fs.String("session-cookie", d.SessionCookie, "session cookie name")
	fs.Bool("no-demo", d.NoDemo, "do not mount the demo application")
	fs.String("log-level", d.LogLevel, "debug, info, warn or error; per component too: raft=warn,front=debug,info")
	fs.String("log-format", d.LogFormat, "text or json")
	fs.Float64("raft-timeout-scale", d.RaftTimeoutScale, "multiply every Raft timer (1 = LAN: failover under 2 s)")
	fs.Duration("cluster-wait-budget", d.ClusterWaitBudget, "how long an application request may wait on the cluster before a 503 (0: ten election timeouts, 5 s at scale 1); a node cut off from its quorum answers at once")
	fs.Duration("shutdown-timeout", d.ShutdownTimeout, "how long a graceful shutdown may take")
	d.Sessions.flags(fs)
	d.Front.flags(fs)
	d.Files.flags(fs)
	d.Jobs.flags(fs)
	d.DB.flags(fs)
	d.App.flags(fs)
	d.KV.flags(fs)
	return fs
}

func peersString(ps []Peer) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.ID + "=" + p.Address
	}
	return strings.Join(parts, ",")
}

// ErrHelp is returned by Load when -h or --help was asked for.
var ErrHelp = pflag.ErrHelp

// Load parses args (without the command name) for `cohort serve` or
// `cohort dev`, merges the environment and the --config file with
// precedence flag > env > file > default, and validates the result.
// Usage goes to usage on a flag error or -h.
func Load(dev bool, args []string, usage io.Writer) (Config, error) {
	fs := Flags(dev)
	fs.SetOutput(usage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags start with --): %w", fs.Arg(0), ErrInvalid)
	}
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(fs); err != nil {
		return Config{}, fmt.Errorf("bind flags: %w", err)
	}
	if path := v.GetString("config"); path != "" {
		if err := checkFileKeys(path, fs); err != nil {
			return Config{}, err
		}
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("--config %s: %w: %w", path, err, ErrInvalid)
		}
	}
	c := Default()
	if dev {
		c = Dev()
	}
	c.NodeID = v.GetString("node-id")
	c.DataDir = v.GetString("data-dir")
	c.HTTPAddr = v.GetString("http-addr")
	c.ClusterAddr = v.GetString("cluster-addr")
	c.AdvertiseAddr = v.GetString("advertise-addr")
	peers, err := ParsePeers(list(v.Get("peers")))
	if err != nil {
		return Config{}, err
	}
	c.Peers = peers
	if dev && !fs.Changed("peers") && v.GetString("cluster-addr") != Dev().ClusterAddr {
		// Dev mode bootstraps itself at whatever cluster address it was given.
		c.Peers = []Peer{{ID: c.NodeID, Address: c.ClusterAddr}}
	}
	c.Join = list(v.Get("join"))
	c.JoinTimeout = v.GetDuration("join-timeout")
	c.ClusterKeyFile = v.GetString("cluster-key-file")
	c.TLSCertFile = v.GetString("tls-cert-file")
	c.TLSKeyFile = v.GetString("tls-key-file")
	c.TLSCAFile = v.GetString("tls-ca-file")
	c.AdminTokenFile = v.GetString("admin-token-file")
	c.DBDSN = v.GetString("db-dsn")
	c.Balance = v.GetString("balance")
	c.SessionCookie = v.GetString("session-cookie")
	c.NoDemo = v.GetBool("no-demo")
	c.LogLevel = v.GetString("log-level")
	c.LogFormat = v.GetString("log-format")
	c.RaftTimeoutScale = v.GetFloat64("raft-timeout-scale")
	c.ClusterWaitBudget = v.GetDuration("cluster-wait-budget")
	c.ShutdownTimeout = v.GetDuration("shutdown-timeout")
	if c.DataDir == "" && c.NodeID != "" {
		c.DataDir = filepath.Join("data", c.NodeID)
	}
	c.Sessions.load(v)
	c.Front.load(v)
	c.Files.load(v)
	c.Jobs.load(v)
	c.DB.load(v)
	c.App.load(v, c.Jobs.File, c.Jobs.Singletons)
	c.KV.load(v)
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// checkFileKeys refuses keys the flag set does not know: a typo in a
// config file must not be silently ignored.
func checkFileKeys(path string, fs *pflag.FlagSet) error {
	fv := viper.New()
	fv.SetConfigFile(path)
	if err := fv.ReadInConfig(); err != nil {
		return fmt.Errorf("--config %s: %w: %w", path, err, ErrInvalid)
	}
	var unknown []string
	for _, k := range fv.AllKeys() {
		if k == "config" || fs.Lookup(k) == nil {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("--config %s: unknown key %s (keys are the flag names, e.g. node-id): %w", path, strings.Join(unknown, ", "), ErrInvalid)
	}
	return nil
}

// list turns a flag, env or file value into a list: a comma-separated
// string or a list of such strings.
func list(v any) []string {
	var raw []string
	switch x := v.(type) {
	case nil:
	case string:
		raw = []string{x}
	case []string:
		raw = x
	case []any:
		for _, e := range x {
			raw = append(raw, fmt.Sprint(e))
		}
	default:
		raw = []string{fmt.Sprint(x)}
	}
	var out []string
	for _, r := range raw {
		for _, p := range strings.Split(r, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// ParsePeers parses ID=HOST:PORT entries.
func ParsePeers(entries []string) ([]Peer, error) {
	var out []Peer
	for _, e := range entries {
		id, addr, ok := strings.Cut(e, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--peers: entry %q is not ID=HOST:PORT: %w", e, ErrInvalid)
		}
		out = append(out, Peer{ID: strings.TrimSpace(id), Address: strings.TrimSpace(addr)})
	}
	return out, nil
}
