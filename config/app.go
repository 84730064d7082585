package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// AppConfig holds the settings of an application cohort fronts (and
// optionally starts) beside itself: the upstream mode of docs/apps.md.
type AppConfig struct {
	// Upstream is --app-upstream: http://127.0.0.1:PORT or unix:/path.sock.
	// "" means the application is the Go handlers compiled in.
	Upstream string
	// Command is --app-command, run with /bin/sh -c in Dir; "" starts
	// nothing (an app cohort does not supervise).
	Command string
	// Dir is --app-dir, the command's working directory ("" = cohort's).
	Dir string
	// Env is --app-env K=V, repeatable: extra environment of the command.
	Env []string
	// SessionCookie is --app-session-cookie: the app's own session cookie
	// (JSESSIONID, PHPSESSID, …) whose requests keep to one node.
	SessionCookie string
	// Health is --app-health: a path of the app answering 2xx while it is
	// healthy. "" checks that the upstream accepts connections when cohort
	// starts the app, and nothing otherwise.
	Health string
	// HealthInterval is how often the health check runs.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check.
	HealthTimeout time.Duration
	// StopGrace is how long a stopping app has between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// StartTimeout bounds how long a rolling restart waits for a restarted
	// app to answer its health check.
	StartTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the app's response header
	// (0 = no limit: long polls and slow handlers are the app's business).
	ResponseHeaderTimeout time.Duration
	// Demo mounts the demo application although Upstream is set.
	Demo bool
	// EventsPath is --app-events-path: the app receives cluster events
	// (broadcasts, leadership, members) as JSON POSTs here.
	EventsPath string
	// Singletons are --singleton NAME=CMD: processes that run on one node
	// at a time, fenced — the leader, or their --singleton-nodes list.
	Singletons []Singleton
	// SingletonStopGrace is the time a singleton gets between SIGTERM and
	// SIGKILL once this node lost the leadership.
	SingletonStopGrace time.Duration
	// SingletonLease is --singleton-lease: a singleton placed by a
	// preference list stops on its node after this long without contact
	// with a leader, and the leader moves it away from an unreachable node
	// only after twice this plus SingletonStopGrace.
	SingletonLease time.Duration

	singletonErr []error
}

// Singleton is one --singleton NAME=CMD or one entry of the "singletons"
// list of --jobs-file (keys name, command, nodes).
type Singleton struct {
	Name    string `mapstructure:"name"`
	Command string `mapstructure:"command"` // run with /bin/sh -c in --app-dir
	// Nodes is its --singleton-nodes preference list: it runs on the first
	// healthy node of the list instead of on the leader (nil: the leader).
	Nodes []string `mapstructure:"nodes"`
}

func defaultApp() AppConfig {
	return AppConfig{
		HealthInterval: time.Second,
		HealthTimeout:  2 * time.Second,
		StopGrace:      10 * time.Second,
		StartTimeout:   60 * time.Second,

		SingletonStopGrace: 2 * time.Second,
		SingletonLease:     3 * time.Second,
	}
}

// flags registers this capability's flags with its defaults.
func (d AppConfig) flags(fs *pflag.FlagSet) {
	fs.String("app-upstream", d.Upstream, "http://127.0.0.1:PORT or unix:/path.sock: the front sends application requests to this local app")
	fs.String("app-command", d.Command, "start and supervise the app: run with /bin/sh -c in --app-dir (PORT and COHORT_* in its environment)")
	fs.String("app-dir", d.Dir, "working directory of --app-command")
	fs.StringArray("app-env", d.Env, "K=V added to the environment of --app-command (repeatable)")
	fs.String("app-session-cookie", d.SessionCookie, "the app's own session cookie (JSESSIONID, PHPSESSID, ...): its requests keep to one node")
	fs.String("app-health", d.Health, "health check path of the app; failing means not ready, no new sessions, sessions fail over")
	fs.Duration("app-health-interval", d.HealthInterval, "how often the app's health is checked")
	fs.Duration("app-health-timeout", d.HealthTimeout, "how long one health check may take")
	fs.Duration("app-stop-grace", d.StopGrace, "time between SIGTERM and SIGKILL when the app is stopped")
	fs.Duration("app-start-timeout", d.StartTimeout, "how long a rolling restart waits for a restarted app to be healthy")
	fs.Duration("app-response-header-timeout", d.ResponseHeaderTimeout, "bound on the app's time to answer a request's header (0 = none)")
	fs.Bool("app-demo", d.Demo, "mount the demo application although --app-upstream is set")
	fs.String("app-events-path", d.EventsPath, "path of the app that receives cluster events (broadcasts, leadership, members) as JSON POSTs")
	fs.StringArray("singleton", nil, "NAME=CMD: a process that runs on one node at a time (the leader, or see --singleton-nodes), fenced (repeatable; more in the \"singletons\" list of --jobs-file)")
	fs.Duration("singleton-stop-grace", d.SingletonStopGrace, "time a singleton gets between SIGTERM and SIGKILL when this node stops leading")
	fs.StringArray("singleton-nodes", nil, "NAME=N1,N2,...: run singleton NAME on the first healthy node of this preference list instead of on the leader (repeatable)")
	fs.Duration("singleton-lease", d.SingletonLease, "a singleton placed by --singleton-nodes stops after this long without a leader; the leader moves it off an unreachable node after twice this plus --singleton-stop-grace")
}

// load reads the merged flag/env/file values. jobsFile and fileSingletons
// are the --jobs-file and the singletons it declares: they join the
// --singleton ones (see addFileSingletons).
func (c *AppConfig) load(v *viper.Viper, jobsFile string, fileSingletons []Singleton) {
	c.Upstream = v.GetString("app-upstream")
	c.Command = v.GetString("app-command")
	c.Dir = v.GetString("app-dir")
	c.Env = envList(v.Get("app-env"))
	c.SessionCookie = v.GetString("app-session-cookie")
	c.Health = v.GetString("app-health")
	c.HealthInterval = v.GetDuration("app-health-interval")
	c.HealthTimeout = v.GetDuration("app-health-timeout")
	c.StopGrace = v.GetDuration("app-stop-grace")
	c.StartTimeout = v.GetDuration("app-start-timeout")
	c.ResponseHeaderTimeout = v.GetDuration("app-response-header-timeout")
	c.Demo = v.GetBool("app-demo")
	c.EventsPath = v.GetString("app-events-path")
	c.SingletonStopGrace = v.GetDuration("singleton-stop-grace")
	c.Singletons, c.singletonErr = nil, nil
	seen := map[string]bool{}
	for _, e := range envList(v.Get("singleton")) {
		name, cmd, ok := strings.Cut(e, "=")
		name, cmd = strings.TrimSpace(name), strings.TrimSpace(cmd)
		switch {
		case !ok || cmd == "" || !singletonNameRe.MatchString(name):
			c.singletonErr = append(c.singletonErr, problem("singleton", "%q is not NAME=CMD with NAME of [a-z0-9][a-z0-9_-]{0,31}", e))
		case seen[name]:
			c.singletonErr = append(c.singletonErr, problem("singleton", "%q named twice", name))
		default:
			seen[name] = true
			c.Singletons = append(c.Singletons, Singleton{Name: name, Command: cmd})
		}
	}
	c.addFileSingletons(jobsFile, fileSingletons)
	c.SingletonLease = v.GetDuration("singleton-lease")
	placed := map[string]bool{}
	for _, e := range envList(v.Get("singleton-nodes")) {
		name, list, _ := strings.Cut(e, "=")
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(c.Singletons, func(s Singleton) bool { return s.Name == name })
		nodes := nodeList(strings.Split(list, ","))
		switch {
		case i < 0:
			c.singletonErr = append(c.singletonErr, problem("singleton-nodes", "%q names no --singleton or singleton of --jobs-file", e))
		case len(nodes) == 0:
			c.singletonErr = append(c.singletonErr, problem("singleton-nodes", "%q is not NAME=NODE,NODE,...", e))
		case placed[name]:
			c.singletonErr = append(c.singletonErr, problem("singleton-nodes", "%q named twice", name))
		case c.Singletons[i].Nodes != nil:
			c.singletonErr = append(c.singletonErr, problem("singleton-nodes", "%q: singleton %q already has nodes in %s", e, name, jobsFile))
		default:
			placed[name] = true
			c.Singletons[i].Nodes = nodes
		}
	}
}

// addFileSingletons appends the singletons of --jobs-file (file) to the
// --singleton ones, so that the node runs both alike. A name given twice —
// in the file and by --singleton, or twice in the file — a bad name and
// an empty command are problems naming the file's entry.
func (c *AppConfig) addFileSingletons(file string, specs []Singleton) {
	inFile := map[string]int{}
	for i, s := range specs {
		where := fmt.Sprintf("%s: singleton %d (%q)", file, i+1, s.Name)
		name, cmd := strings.TrimSpace(s.Name), strings.TrimSpace(s.Command)
		nodes := nodeList(s.Nodes)
		switch {
		case !singletonNameRe.MatchString(name):
			c.singletonErr = append(c.singletonErr, problem("jobs-file", "%s: name must match [a-z0-9][a-z0-9_-]{0,31}", where))
			continue
		case inFile[name] > 0:
			c.singletonErr = append(c.singletonErr, problem("jobs-file", "%s: name already used by singleton %d of the file", where, inFile[name]))
			continue
		}
		inFile[name] = i + 1
		if slices.ContainsFunc(c.Singletons, func(f Singleton) bool { return f.Name == name }) {
			c.singletonErr = append(c.singletonErr, problem("jobs-file", "%s: name also defined by --singleton %s=...: define it in one place", where, name))
			continue
		}
		switch {
		case cmd == "":
			c.singletonErr = append(c.singletonErr, problem("jobs-file", "%s: command is required (run with /bin/sh -c)", where))
		case len(s.Nodes) > 0 && len(nodes) == 0:
			c.singletonErr = append(c.singletonErr, problem("jobs-file", "%s: nodes %q names no node (leave it out to run on the leader)", where, s.Nodes))
		default:
			c.Singletons = append(c.Singletons, Singleton{Name: name, Command: cmd, Nodes: nodes})
		}
	}
}

// nodeList is a preference list as given, without blanks and repeats; nil
// when it names no node.
func nodeList(ids []string) []string {
	var nodes []string
	for _, id := range ids {
		if id = strings.TrimSpace(id); id != "" && !slices.Contains(nodes, id) {
			nodes = append(nodes, id)
		}
	}
	return nodes
}

var singletonNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// envList reads --app-env: a list (flag, file) or one string (the
// environment variable, entries separated by newlines). Values may hold
// commas, so they are not split there.
func envList(v any) []string {
	var raw []string
	switch x := v.(type) {
	case nil:
	case string:
		raw = strings.Split(x, "\n")
	case []string:
		raw = x
	case []any:
		for _, e := range x {
			raw = append(raw, fmt.Sprint(e))
		}
	}
	var out []string
	for _, r := range raw {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// UpstreamTarget splits --app-upstream into the network and address to
// dial: ("tcp", "127.0.0.1:9000") or ("unix", "/run/app.sock").
func (c *AppConfig) UpstreamTarget() (network, addr string, err error) {
	if p, ok := strings.CutPrefix(c.Upstream, "unix:"); ok {
		if p == "" {
			return "", "", fmt.Errorf("%q names no socket path", c.Upstream)
		}
		return "unix", p, nil
	}
	u, err := url.Parse(c.Upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", "", fmt.Errorf("%q is not http://HOST:PORT or unix:/path.sock", c.Upstream)
	}
	if u.Port() == "" {
		return "tcp", u.Host + ":80", nil
	}
	return "tcp", u.Host, nil
}

// Port is the port of a tcp --app-upstream ("" for a unix socket): the
// PORT a supervised app is told to listen on.
func (c *AppConfig) Port() string {
	network, addr, err := c.UpstreamTarget()
	if err != nil || network != "tcp" {
		return ""
	}
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:]
}

// validate reports each problem through add, naming the flag (see problem).
func (c *AppConfig) validate(add func(error)) {
	if c.Upstream == "" {
		for _, f := range []struct{ key, val string }{{"app-command", c.Command}, {"app-session-cookie", c.SessionCookie}, {"app-health", c.Health}, {"app-events-path", c.EventsPath}} {
			if f.val != "" {
				add(problem(f.key, "needs --app-upstream: the address where the app listens (e.g. http://127.0.0.1:9000)"))
			}
		}
	} else if _, _, err := c.UpstreamTarget(); err != nil {
		add(problem("app-upstream", "%v", err))
	}
	if c.SessionCookie != "" && !cookieRe.MatchString(c.SessionCookie) {
		add(problem("app-session-cookie", "%q is not a valid cookie name (1-64 token characters)", c.SessionCookie))
	}
	if c.Health != "" && !strings.HasPrefix(c.Health, "/") {
		add(problem("app-health", "%q must be a path starting with /", c.Health))
	}
	if c.EventsPath != "" && !strings.HasPrefix(c.EventsPath, "/") {
		add(problem("app-events-path", "%q must be a path starting with /", c.EventsPath))
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(k, " \t") {
			add(problem("app-env", "%q is not K=V", e))
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"app-health-interval", c.HealthInterval}, {"app-health-timeout", c.HealthTimeout}, {"app-stop-grace", c.StopGrace}, {"app-start-timeout", c.StartTimeout}} {
		if d.v <= 0 {
			add(problem(d.key, "%s must be positive", d.v))
		}
	}
	for _, e := range c.singletonErr {
		add(e)
	}
	if c.SingletonStopGrace <= 0 {
		add(problem("singleton-stop-grace", "%s must be positive", c.SingletonStopGrace))
	}
	if c.SingletonLease <= 0 {
		add(problem("singleton-lease", "%s must be positive", c.SingletonLease))
	}
	if c.ResponseHeaderTimeout < 0 {
		add(problem("app-response-header-timeout", "%s must not be negative", c.ResponseHeaderTimeout))
	}
}
