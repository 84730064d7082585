package testcluster

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/testport"

	"github.com/go-sql-driver/mysql"
)

// MySQLDSN returns a DSN for a fresh, empty database on the server named
// by COHORT_TEST_MYSQL_DSN (scripts/test.sh sets it), dropped when the test
// ends. Without that variable the test is skipped with the reason.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("COHORT_TEST_MYSQL_DSN")
	if base == "" {
		t.Skip("COHORT_TEST_MYSQL_DSN is empty: no MariaDB for this test (run it through scripts/test.sh)")
	}
	return freshDatabase(t, base)
}

// freshDatabase creates a uniquely named database on the server of base
// and returns base pointing at it; the database is dropped at cleanup.
func freshDatabase(t testing.TB, base string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("COHORT_TEST_MYSQL_DSN: %v", err)
	}
	raw := make([]byte, 6)
	_, _ = rand.Read(raw)
	name := "cohort_t_" + hex.EncodeToString(raw)
	admin := cfg.Clone()
	admin.DBName = ""
	conn, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatalf("open test server: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		c, err := sql.Open("mysql", admin.FormatDSN())
		if err != nil {
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// MariaDB is a private mariadbd this test started on a temp dir and port,
// for tests that stop the database (every node shares the server of
// COHORT_TEST_MYSQL_DSN otherwise, which must never be stopped).
type MariaDB struct {
	t    testing.TB
	dir  string
	port int
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMariaDB installs a data dir and starts mariadbd on a free port. The
// test is skipped when COHORT_TEST_MYSQL_DSN is empty (no MariaDB wanted)
// or mariadbd is not installed. The server is killed at cleanup.
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	if os.Getenv("COHORT_TEST_MYSQL_DSN") == "" {
		t.Skip("COHORT_TEST_MYSQL_DSN is empty: no MariaDB for this test (run it through scripts/test.sh)")
	}
	find := func(names ...string) string {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
			for _, d := range []string{"/usr/sbin", "/usr/bin"} {
				if _, err := os.Stat(filepath.Join(d, n)); err == nil {
					return filepath.Join(d, n)
				}
			}
		}
		return ""
	}
	bin, install := find("mariadbd"), find("mariadb-install-db")
	if bin == "" || install == "" {
		t.Skip("mariadbd or mariadb-install-db not installed")
	}
	dir, err := os.MkdirTemp("", "cohort-mdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	if out, err := exec.Command(install, args...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	_, ps, err := net.SplitHostPort(testport.Addr(t))
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	m := &MariaDB{t: t, dir: dir, port: port, bin: bin}
	t.Cleanup(m.Kill)
	m.Start()
	// Root over the socket creates the test user.
	sock := filepath.Join(dir, "mysql.sock")
	root, err := sql.Open("mysql", "root@unix("+sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, q := range []string{
		"CREATE USER IF NOT EXISTS 'cohort'@'127.0.0.1' IDENTIFIED BY 'cohort'",
		"GRANT ALL PRIVILEGES ON *.* TO 'cohort'@'127.0.0.1'",
		"CREATE DATABASE IF NOT EXISTS cohort_down",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("set up private mariadb: %s: %v", q, err)
		}
	}
	return m
}

// DSN is the DSN of the test database on this server.
func (m *MariaDB) DSN() string {
	return fmt.Sprintf("cohort:cohort@tcp(127.0.0.1:%d)/cohort_down?parseTime=true", m.port)
}

// Start (re)starts mariadbd on the same data dir and port and waits until
// it answers.
func (m *MariaDB) Start() {
	m.t.Helper()
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(m.dir, "data"),
		"--socket=" + filepath.Join(m.dir, "mysql.sock"), "--pid-file=" + filepath.Join(m.dir, "mariadbd.pid"),
		"--log-error=" + filepath.Join(m.dir, "error.log"), "--tmpdir=" + m.dir,
		"--bind-address=127.0.0.1", fmt.Sprintf("--port=%d", m.port), "--skip-name-resolve",
		"--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0", "--skip-log-bin"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	m.cmd = exec.Command(m.bin, args...)
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mariadbd: %v", err)
	}
	m.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(m.cmd, m.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			log, _ := os.ReadFile(filepath.Join(m.dir, "error.log"))
			m.t.Fatalf("mariadbd exited during start:\n%s", tail(string(log), 3000))
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mariadbd did not listen within 60 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait
	}
}

// Freeze stops mariadbd with SIGSTOP: it keeps its port but answers
// nothing, like a hung server. Thaw resumes it.
func (m *MariaDB) Freeze() { m.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen mariadbd (SIGCONT).
func (m *MariaDB) Thaw() { m.signal(syscall.SIGCONT) }

func (m *MariaDB) signal(sig syscall.Signal) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Logf("signal mariadbd: %v", err)
	}
}

// Kill stops mariadbd with SIGKILL (a crash) and waits for it to exit.
func (m *MariaDB) Kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT) // a frozen server must run to die
	if err := m.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		m.t.Logf("kill mariadbd: %v", err)
	}
	<-m.done
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
