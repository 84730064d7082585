package db

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// redacted replaces a password wherever one would be shown.
const redacted = "***"

// Redact returns dsn with its password replaced by "***". A DSN that does
// not parse is redacted whole, since its password cannot be located.
func Redact(dsn string) string {
	if dsn == "" {
		return ""
	}
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if c.Passwd != "" {
		c.Passwd = redacted
	}
	return c.FormatDSN()
}

// scrub removes the DSN's password from a message (an error text that some
// driver path might have built from the DSN).
func scrub(msg, dsn string) string {
	if dsn == "" {
		return msg
	}
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return strings.ReplaceAll(msg, dsn, "(DSN)")
	}
	if c.Passwd != "" {
		msg = strings.ReplaceAll(msg, dsn, Redact(dsn))
		msg = strings.ReplaceAll(msg, c.Passwd, redacted)
	}
	return msg
}

// mysqlConfig parses dsn and fills the pool's defaults the DSN leaves out:
// parseTime is always on (cohort code scans DATETIME into time.Time), and the
// dial, read and write timeouts come from the node's settings when absent.
// Errors never contain the DSN.
func mysqlConfig(dsn string, dial, read, write time.Duration) (*mysql.Config, error) {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("--db-dsn: %w: %w (format: user:password@tcp(host:3306)/dbname?param=value)", ErrBadDSN, err)
	}
	c.ParseTime = true
	if c.Timeout == 0 {
		c.Timeout = dial
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = read
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = write
	}
	if c.DBName == "" {
		return nil, fmt.Errorf("--db-dsn: names no database: %w (format: user:password@tcp(host:3306)/dbname)", ErrBadDSN)
	}
	return c, nil
}

// CheckDSN reports whether dsn is a usable MySQL DSN, without echoing it.
func CheckDSN(dsn string) error {
	_, err := mysqlConfig(dsn, 0, 0, 0)
	return err
}
