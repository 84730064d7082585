package config

import (
	"strings"
	"testing"
	"time"
)

func TestSessionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*SessionsConfig)
		want   string // substring of the problem; "" = valid
	}{
		{"defaults", func(*SessionsConfig) {}, ""},
		{"idle too short", func(c *SessionsConfig) { c.IdleTimeout = time.Millisecond }, "--session-idle-timeout"},
		{"lifetime too short", func(c *SessionsConfig) { c.Lifetime = 0 }, "--session-lifetime"},
		{"max bytes too small", func(c *SessionsConfig) { c.MaxBytes, c.MaxValueBytes = 10, 5 }, "--session-max-bytes"},
		{"value over session", func(c *SessionsConfig) { c.MaxValueBytes = c.MaxBytes + 1 }, "--session-max-value-bytes"},
		{"negative budget", func(c *SessionsConfig) { c.MemoryBudget = -1 }, "--session-memory-budget"},
		{"negative count", func(c *SessionsConfig) { c.MemorySessions = -1 }, "--session-memory-sessions"},
		{"bad regexp", func(c *SessionsConfig) { c.Ignore = "(" }, "--session-ignore"},
		{"no ignore", func(c *SessionsConfig) { c.Ignore = "" }, ""},
		{"sweep too often", func(c *SessionsConfig) { c.SweepInterval = time.Microsecond }, "--session-sweep-interval"},
		{"lock wait zero", func(c *SessionsConfig) { c.LockWait = 0 }, "--session-lock-wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultSessions()
			tt.change(&c)
			var got []string
			c.validate(func(err error) { got = append(got, err.Error()) })
			if tt.want == "" {
				if len(got) > 0 {
					t.Fatalf("unexpected problems: %v", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tt.want) {
				t.Fatalf("problems %v, want one naming %s", got, tt.want)
			}
		})
	}
	if re := defaultSessions().IgnoreRegexp(); !re.MatchString("/static/app.JS") || re.MatchString("/demo/api/counter") {
		t.Fatal("default ignore pattern")
	}
}

func TestSessionsFlags(t *testing.T) {
	c, err := Load(false, []string{"--node-id", "n1", "--cluster-key-file", "/dev/null", "--session-idle-timeout", "5m",
		"--session-memory-budget", "1000000", "--session-ignore", `\.txt$`}, &strings.Builder{})
	if c.Sessions.IdleTimeout != 5*time.Minute || c.Sessions.MemoryBudget != 1_000_000 || c.Sessions.Ignore != `\.txt$` {
		t.Fatalf("loaded %+v (err %v)", c.Sessions, err)
	}
}
