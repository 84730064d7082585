package db

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, dsn, want string
	}{
		{"password", "app:s3cr3t-pw@tcp(db:3306)/shop?parseTime=true", "app:***@tcp(db:3306)/shop?parseTime=true"},
		{"no password", "app@tcp(db:3306)/shop", "app@tcp(db:3306)/shop"},
		{"empty", "", ""},
		{"unparsable", "app:s3cr3t-pw@nonsense", "(unparsable DSN)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.dsn)
			if got != tt.want {
				t.Fatalf("Redact(%q) = %q, want %q", tt.dsn, got, tt.want)
			}
			if strings.Contains(got, "s3cr3t-pw") {
				t.Fatalf("password leaked: %q", got)
			}
		})
	}
}

func TestCheckDSNNeverEchoesPassword(t *testing.T) {
	tests := []struct{ name, dsn string }{
		{"no database", "app:s3cr3t-pw@tcp(db:3306)/"},
		{"bad param", "app:s3cr3t-pw@tcp(db:3306)/shop?timeout=banana"},
		{"no slash", "app:s3cr3t-pw@tcp(db:3306)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDSN(tt.dsn)
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), "s3cr3t-pw") {
				t.Fatalf("password in error: %v", err)
			}
		})
	}
}

func TestMySQLConfigDefaults(t *testing.T) {
	c, err := mysqlConfig("u:p@tcp(h:1)/d?readTimeout=7s", time.Second, 2*time.Second, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !c.ParseTime || c.Timeout != time.Second || c.ReadTimeout != 7*time.Second || c.WriteTimeout != 3*time.Second {
		t.Fatalf("got parseTime=%v timeout=%s read=%s write=%s", c.ParseTime, c.Timeout, c.ReadTimeout, c.WriteTimeout)
	}
}

func TestScrub(t *testing.T) {
	dsn := "u:hunter22@tcp(h:1)/d"
	msg := scrub(errors.New("dial u:hunter22@tcp(h:1)/d: hunter22 refused").Error(), dsn)
	if strings.Contains(msg, "hunter22") {
		t.Fatalf("scrub left the password: %q", msg)
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{"u:p@tcp(h:3306)/d", "u@/d", "", ":@/", "u:p@unix(/tmp/s)/d?x=y", "a:b:c@tcp(x)/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		out := Redact(dsn)
		c, err := parseForTest(dsn)
		if err == nil && len(c) >= 4 && strings.Contains(out, ":"+c+"@") {
			t.Fatalf("password %q visible in %q", c, out)
		}
	})
}

func BenchmarkRedact(b *testing.B) {
	for b.Loop() {
		_ = Redact("app:s3cr3t@tcp(db.internal:3306)/shop?parseTime=true&timeout=3s")
	}
}
