package config

import (
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DBConfig holds the pool settings of the business database. The DSN
// itself is Config.DBDSN (--db-dsn); in dev mode with no DSN the node uses
// an embedded SQLite file under the data dir instead.
type DBConfig struct {
	MaxOpen         int           // --db-max-open: connections open at most (0 = no limit)
	MaxIdle         int           // --db-max-idle: idle connections kept
	ConnMaxLifetime time.Duration // --db-conn-max-lifetime: a connection is recycled after this
	ConnMaxIdleTime time.Duration // --db-conn-max-idle-time: an idle connection is closed after this
	// DialTimeout, ReadTimeout and WriteTimeout apply when the DSN does
	// not set timeout, readTimeout or writeTimeout itself.
	DialTimeout  time.Duration // --db-dial-timeout
	ReadTimeout  time.Duration // --db-read-timeout
	WriteTimeout time.Duration // --db-write-timeout
}

func defaultDB() DBConfig {
	return DBConfig{
		MaxOpen:         32,
		MaxIdle:         8,
		ConnMaxLifetime: 5 * time.Minute,
		ConnMaxIdleTime: time.Minute,
		DialTimeout:     3 * time.Second,
		ReadTimeout:     30 * time.Second,
		WriteTimeout:    30 * time.Second,
	}
}

// flags registers this capability's flags with its defaults.
func (d DBConfig) flags(fs *pflag.FlagSet) {
	fs.Int("db-max-open", d.MaxOpen, "business database: open connections at most per node (0 = no limit)")
	fs.Int("db-max-idle", d.MaxIdle, "business database: idle connections kept per node")
	fs.Duration("db-conn-max-lifetime", d.ConnMaxLifetime, "business database: recycle a connection after this long")
	fs.Duration("db-conn-max-idle-time", d.ConnMaxIdleTime, "business database: close a connection idle this long")
	fs.Duration("db-dial-timeout", d.DialTimeout, "business database: connect timeout, unless the DSN sets timeout=")
	fs.Duration("db-read-timeout", d.ReadTimeout, "business database: I/O read timeout, unless the DSN sets readTimeout=")
	fs.Duration("db-write-timeout", d.WriteTimeout, "business database: I/O write timeout, unless the DSN sets writeTimeout=")
}

// load reads the merged flag/env/file values.
func (c *DBConfig) load(v *viper.Viper) {
	c.MaxOpen = v.GetInt("db-max-open")
	c.MaxIdle = v.GetInt("db-max-idle")
	c.ConnMaxLifetime = v.GetDuration("db-conn-max-lifetime")
	c.ConnMaxIdleTime = v.GetDuration("db-conn-max-idle-time")
	c.DialTimeout = v.GetDuration("db-dial-timeout")
	c.ReadTimeout = v.GetDuration("db-read-timeout")
	c.WriteTimeout = v.GetDuration("db-write-timeout")
}

// validate reports each problem through add, naming the flag (see problem).
// The DSN is checked when the node is built (node.New), where a parse error
// can be reported without echoing the password.
func (c *DBConfig) validate(add func(error)) {
	if c.MaxOpen < 0 {
		add(problem("db-max-open", "%d must be 0 (no limit) or positive", c.MaxOpen))
	}
	if c.MaxIdle < 0 {
		add(problem("db-max-idle", "%d must not be negative", c.MaxIdle))
	}
	if c.MaxOpen > 0 && c.MaxIdle > c.MaxOpen {
		add(problem("db-max-idle", "%d is more than --db-max-open %d", c.MaxIdle, c.MaxOpen))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"db-conn-max-lifetime", c.ConnMaxLifetime}, {"db-conn-max-idle-time", c.ConnMaxIdleTime},
		{"db-dial-timeout", c.DialTimeout}, {"db-read-timeout", c.ReadTimeout}, {"db-write-timeout", c.WriteTimeout},
	} {
		if d.v < 0 {
			add(problem(d.key, "%s must not be negative (0 means no limit)", d.v))
		}
	}
}
