package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Balance policies for requests that carry no session.
const (
	BalanceLocal       = "local"
	BalanceRoundRobin  = "round-robin"
	BalanceLeastLoaded = "least-loaded"
)

// Peer is one entry of --peers.
type Peer struct {
	ID      string
	Address string
}

// Config is the whole configuration of one node. Build it with Load (flags,
// environment, file), Default or Dev; check it with Validate.
type Config struct {
	NodeID        string        // required; [a-z0-9][a-z0-9-]{0,31}
	DataDir       string        // default ./data/<node-id>
	HTTPAddr      string        // public front
	ClusterAddr   string        // Raft and node-to-node traffic
	AdvertiseAddr string        // cluster address other nodes dial
	Peers         []Peer        // bootstrap configuration, same on every node
	Join          []string      // cluster addresses of members to join through
	JoinTimeout   time.Duration // how long --join keeps trying

	ClusterKeyFile string // shared secret; required unless Dev
	TLSCertFile    string // mutual TLS on the cluster port (all three or none)
	TLSKeyFile     string
	TLSCAFile      string
	AdminTokenFile string // bearer token of the admin surface; none means 403

	DBDSN         string // MySQL business database (go-sql-driver DSN); see also DB
	Balance       string // local, round-robin or least-loaded
	SessionCookie string // session cookie name
	NoDemo        bool   // do not mount the demo application

	LogLevel  string // debug, info, warn, error
	LogFormat string // text or json

	// RaftTimeoutScale multiplies every Raft timer (1 = LAN defaults).
	RaftTimeoutScale float64
	// ClusterWaitBudget bounds how long an application request waits on
	// the cluster (catch-up, read index, commit, claim, a forward) before
	// it is answered 503 with Retry-After; 0 derives it from the Raft
	// timers (raft.DefaultWaitBudget: ten election timeouts, 5 s at
	// scale 1).
	ClusterWaitBudget time.Duration
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration

	// Per-capability settings, each defined (flags, defaults, checks) in
	// its own file of this package.
	Sessions SessionsConfig
	Front    FrontConfig
	Files    FilesConfig
	Jobs     JobsConfig
	DB       DBConfig
	App      AppConfig
	KV       KVConfig

	// Dev is single-node dev mode: the cluster key and admin token are
	// generated into the data dir when no file is given.
	Dev bool

	// Logger receives every log line; nil builds one from LogLevel and
	// LogFormat on stderr. Not settable from flags or files.
	Logger *slog.Logger `mapstructure:"-"`
}

// Default returns the defaults of `cohort serve`.
func Default() Config {
	c := Config{
		HTTPAddr:         ":8080",
		ClusterAddr:      ":7070",
		JoinTimeout:      5 * time.Minute,
		Balance:          BalanceLocal,
		SessionCookie:    "cohort_session",
		LogLevel:         "info",
		LogFormat:        "text",
		RaftTimeoutScale: 1,
		ShutdownTimeout:  30 * time.Second,
	}
	c.Sessions = defaultSessions()
	c.Front = defaultFront()
	c.Files = defaultFiles()
	c.Jobs = defaultJobs()
	c.DB = defaultDB()
	c.App = defaultApp()
	c.KV = defaultKV()
	return c
}

// Dev returns the defaults of `cohort dev`: one node that needs no flags.
func Dev() Config {
	c := Default()
	c.Dev = true
	c.NodeID = "dev"
	c.DataDir = filepath.Join("data", "dev")
	c.HTTPAddr = "127.0.0.1:8080"
	c.ClusterAddr = "127.0.0.1:7070"
	c.Peers = []Peer{{ID: "dev", Address: "127.0.0.1:7070"}}
	c.KV.RedisAddr = DevRedisAddr
	return c
}

var (
	nodeIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	cookieRe = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+\-.^_` + "`" + `|~]{1,64}$`)
)

// ValidNodeID reports whether id is a valid node id.
func ValidNodeID(id string) bool { return nodeIDRe.MatchString(id) }

// Errors is every problem Validate found, each naming its key.
type Errors []error

// Error joins the problems on one line.
func (e Errors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the problems.
func (e Errors) Unwrap() []error { return e }

// ErrInvalid is wrapped by every problem Validate reports.
var ErrInvalid = errors.New("invalid configuration")

func problem(key, format string, args ...any) error {
	return fmt.Errorf("--%s: %s: %w", key, fmt.Sprintf(format, args...), ErrInvalid)
}

// Validate checks the configuration and fills derived defaults (data dir,
// advertise address). It returns every problem at once as Errors, each
// naming the key, the value and what would be valid. It reads the key and
// token files to check they are usable.
func (c *Config) Validate() error {
	var errs Errors
	add := func(err error) { errs = append(errs, err) }

	switch {
	case c.NodeID == "":
		add(problem("node-id", "required: name this node, e.g. --node-id n1"))
	case !nodeIDRe.MatchString(c.NodeID):
		add(problem("node-id", "%q must match [a-z0-9][a-z0-9-]{0,31}", c.NodeID))
	}
	if c.DataDir == "" && c.NodeID != "" {
		c.DataDir = filepath.Join("data", c.NodeID)
	}
	checkAddr := func(key, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			add(problem(key, "%q is not HOST:PORT", v))
		}
	}
	checkAddr("http-addr", c.HTTPAddr)
	checkAddr("cluster-addr", c.ClusterAddr)

	seen := map[string]bool{}
	selfInPeers := ""
	for _, p := range c.Peers {
		if !nodeIDRe.MatchString(p.ID) {
			add(problem("peers", "node id %q must match [a-z0-9][a-z0-9-]{0,31}", p.ID))
		}
		if seen[p.ID] {
			add(problem("peers", "node id %q listed twice", p.ID))
		}
		seen[p.ID] = true
		if host, _, err := net.SplitHostPort(p.Address); err != nil || host == "" {
			add(problem("peers", "address %q of %q is not HOST:PORT with a host other nodes can dial", p.Address, p.ID))
		}
		if p.ID == c.NodeID {
			selfInPeers = p.Address
		}
	}
	if len(c.Peers) > 0 && c.NodeID != "" && selfInPeers == "" {
		add(problem("peers", "the list does not name this node %q; give every node the same list, including itself", c.NodeID))
	}
	if len(c.Peers) > 0 && len(c.Join) > 0 {
		add(problem("join", "use --peers (first start of a new cluster) or --join (add to a running one), not both"))
	}
	for _, j := range c.Join {
		if host, _, err := net.SplitHostPort(j); err != nil || host == "" {
			add(problem("join", "%q is not HOST:PORT of a member's cluster port", j))
		}
	}
	if c.JoinTimeout <= 0 {
		add(problem("join-timeout", "%s must be positive", c.JoinTimeout))
	}

	if c.AdvertiseAddr == "" {
		host, _, _ := net.SplitHostPort(c.ClusterAddr)
		switch {
		case host != "" && !net.ParseIP(host).IsUnspecified():
			c.AdvertiseAddr = c.ClusterAddr
		case selfInPeers != "":
			c.AdvertiseAddr = selfInPeers
		case len(c.Join) > 0 || len(c.Peers) > 0:
			add(problem("advertise-addr", "required when --cluster-addr %q names no host: give the address other nodes dial", c.ClusterAddr))
		default:
			c.AdvertiseAddr = c.ClusterAddr
		}
	} else if host, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		add(problem("advertise-addr", "%q is not HOST:PORT with a host other nodes can dial", c.AdvertiseAddr))
	}

	if c.ClusterKeyFile == "" {
		if !c.Dev {
			add(problem("cluster-key-file", "required: every node needs the same secret file (generate one with `head -c 32 /dev/urandom | base64 > cluster.key`)"))
		}
	} else if _, err := ReadSecret(c.ClusterKeyFile, 16); err != nil {
		add(problem("cluster-key-file", "%v", err))
	}
	tlsSet := 0
	for _, f := range []struct{ key, path string }{{"tls-cert-file", c.TLSCertFile}, {"tls-key-file", c.TLSKeyFile}, {"tls-ca-file", c.TLSCAFile}} {
		if f.path == "" {
			continue
		}
		tlsSet++
		if _, err := os.Stat(f.path); err != nil {
			add(problem(f.key, "%v", err))
		}
	}
	if tlsSet != 0 && tlsSet != 3 {
		add(problem("tls-cert-file", "mutual TLS needs all of --tls-cert-file, --tls-key-file and --tls-ca-file"))
	}
	if c.AdminTokenFile != "" {
		if _, err := ReadSecret(c.AdminTokenFile, 16); err != nil {
			add(problem("admin-token-file", "%v", err))
		}
	}
	switch c.Balance {
	case BalanceLocal, BalanceRoundRobin, BalanceLeastLoaded:
	default:
		add(problem("balance", "%q must be local, round-robin or least-loaded", c.Balance))
	}
	if !cookieRe.MatchString(c.SessionCookie) {
		add(problem("session-cookie", "%q is not a valid cookie name (1-64 token characters)", c.SessionCookie))
	}
	if _, err := ParseLogLevels(c.LogLevel); err != nil {
		add(problem("log-level", "%v (e.g. info or raft=warn,front=debug,info)", err))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		add(problem("log-format", "%q must be text or json", c.LogFormat))
	}
	if c.RaftTimeoutScale < 0.1 || c.RaftTimeoutScale > 20 {
		add(problem("raft-timeout-scale", "%g must be between 0.1 and 20", c.RaftTimeoutScale))
	}
	if c.ClusterWaitBudget < 0 || c.ClusterWaitBudget > 10*time.Minute {
		add(problem("cluster-wait-budget", "%s must be between 0 (derived from the Raft timers) and 10m", c.ClusterWaitBudget))
	}
	if c.ShutdownTimeout <= 0 {
		add(problem("shutdown-timeout", "%s must be positive", c.ShutdownTimeout))
	}
	for _, check := range []func(add func(error)){c.Sessions.validate, c.Front.validate, c.Files.validate, c.Jobs.validate, c.DB.validate, c.App.validate, c.KV.validate, c.validateRedisTLS} {
		check(add)
	}
	for _, j := range c.Jobs.Specs {
		if j.HTTP != nil && j.HTTP.Path != "" && c.App.Upstream == "" {
			add(problem("jobs-file", "%s: job %q calls http.path %s of the local app: set --app-upstream", c.Jobs.File, j.Name, j.HTTP.Path))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// ReadSecret reads a secret file: surrounding white space is trimmed and at
// least min bytes must remain.
func ReadSecret(path string, min int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	s := []byte(strings.TrimSpace(string(b)))
	if len(s) < min {
		return nil, fmt.Errorf("%s holds %d bytes; at least %d are needed", path, len(s), min)
	}
	return s, nil
}

// NewLogger builds the process logger from LogLevel (with per-component
// levels, see ParseLogLevels) and LogFormat.
func (c *Config) NewLogger(w *os.File) *slog.Logger {
	ll, _ := ParseLogLevels(c.LogLevel) // Validate reported a bad value
	return slog.New(newLogHandler(w, c.LogFormat, ll))
}
