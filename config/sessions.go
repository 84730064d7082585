package config

import (
	"regexp"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultSessionIgnore matches paths of static files, which never load or
// save a session (memcached-session-manager's requestUriIgnorePattern).
const DefaultSessionIgnore = `(?i)\.(css|js|mjs|map|png|jpe?g|gif|svg|ico|webp|avif|woff2?|ttf|otf|eot)$`

// SessionsConfig holds the settings of the sessions capability. The
// cookie name is Config.SessionCookie (--session-cookie).
type SessionsConfig struct {
	IdleTimeout    time.Duration // --session-idle-timeout
	Lifetime       time.Duration // --session-lifetime
	MaxBytes       int64         // --session-max-bytes: attribute data of one session
	MaxValueBytes  int64         // --session-max-value-bytes: one value
	MemoryBudget   int64         // --session-memory-budget: bytes in memory before passivation; 0 = unlimited
	MemorySessions int           // --session-memory-sessions: sessions in memory before passivation; 0 = unlimited
	Ignore         string        // --session-ignore: regexp of paths that never touch sessions; "" = none
	SweepInterval  time.Duration // --session-sweep-interval: how often the leader removes expired sessions
	Lock           bool          // --session-lock: run one session's requests one at a time on its owner
	LockWait       time.Duration // --session-lock-wait: longest wait for the session lock before 503
}

func defaultSessions() SessionsConfig {
	return SessionsConfig{
		IdleTimeout:   30 * time.Minute,
		Lifetime:      24 * time.Hour,
		MaxBytes:      1 << 20,
		MaxValueBytes: 256 << 10,
		Ignore:        DefaultSessionIgnore,
		SweepInterval: time.Minute,
		LockWait:      5 * time.Second,
	}
}

// flags registers this capability's flags with its defaults.
func (d SessionsConfig) flags(fs *pflag.FlagSet) {
	fs.Duration("session-idle-timeout", d.IdleTimeout, "end a session not used for this long")
	fs.Duration("session-lifetime", d.Lifetime, "end a session this long after it was created, used or not")
	fs.Int64("session-max-bytes", d.MaxBytes, "largest session (bytes of keys and values); larger answers 413")
	fs.Int64("session-max-value-bytes", d.MaxValueBytes, "largest single session value in bytes; larger answers 413")
	fs.Int64("session-memory-budget", d.MemoryBudget, "session bytes kept in memory before cold sessions move to disk (0 = unlimited)")
	fs.Int("session-memory-sessions", d.MemorySessions, "sessions kept in memory before cold ones move to disk (0 = unlimited)")
	fs.String("session-ignore", d.Ignore, "regexp of request paths that never load or save a session and are served where they enter, without a hop (\"\" = none)")
	fs.Duration("session-sweep-interval", d.SweepInterval, "how often the leader removes expired sessions")
	fs.Bool("session-lock", d.Lock, "run the requests of one session one at a time on its owner (each waits until the previous one committed); off: they run at once, use the atomic session operations")
	fs.Duration("session-lock-wait", d.LockWait, "with --session-lock, longest wait for the session before answering 503 with Retry-After")
}

// load reads the merged flag/env/file values.
func (c *SessionsConfig) load(v *viper.Viper) {
	c.IdleTimeout = v.GetDuration("session-idle-timeout")
	c.Lifetime = v.GetDuration("session-lifetime")
	c.MaxBytes = v.GetInt64("session-max-bytes")
	c.MaxValueBytes = v.GetInt64("session-max-value-bytes")
	c.MemoryBudget = v.GetInt64("session-memory-budget")
	c.MemorySessions = v.GetInt("session-memory-sessions")
	c.Ignore = v.GetString("session-ignore")
	c.SweepInterval = v.GetDuration("session-sweep-interval")
	c.Lock = v.GetBool("session-lock")
	c.LockWait = v.GetDuration("session-lock-wait")
}

// validate reports each problem through add, naming the flag (see problem).
func (c *SessionsConfig) validate(add func(error)) {
	if c.IdleTimeout < time.Second {
		add(problem("session-idle-timeout", "%s must be at least 1s", c.IdleTimeout))
	}
	if c.Lifetime < time.Second {
		add(problem("session-lifetime", "%s must be at least 1s", c.Lifetime))
	}
	if c.MaxBytes < 1024 {
		add(problem("session-max-bytes", "%d must be at least 1024", c.MaxBytes))
	}
	if c.MaxValueBytes < 1 || c.MaxValueBytes > c.MaxBytes {
		add(problem("session-max-value-bytes", "%d must be between 1 and --session-max-bytes (%d)", c.MaxValueBytes, c.MaxBytes))
	}
	if c.MemoryBudget < 0 {
		add(problem("session-memory-budget", "%d must be 0 (unlimited) or positive", c.MemoryBudget))
	}
	if c.MemorySessions < 0 {
		add(problem("session-memory-sessions", "%d must be 0 (unlimited) or positive", c.MemorySessions))
	}
	if _, err := regexp.Compile(c.Ignore); err != nil {
		add(problem("session-ignore", "%q is not a regular expression: %v", c.Ignore, err))
	}
	if c.SweepInterval < 10*time.Millisecond {
		add(problem("session-sweep-interval", "%s must be at least 10ms", c.SweepInterval))
	}
	if c.LockWait < time.Millisecond {
		add(problem("session-lock-wait", "%s must be at least 1ms", c.LockWait))
	}
}

// IgnoreRegexp compiles Ignore (nil when empty); Validate checked it.
func (c SessionsConfig) IgnoreRegexp() *regexp.Regexp {
	if c.Ignore == "" {
		return nil
	}
	re, err := regexp.Compile(c.Ignore)
	if err != nil {
		return nil
	}
	return re
}
