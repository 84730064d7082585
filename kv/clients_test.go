package kv_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

// needClient skips (fails under CI) when a real client is missing;
// scripts/test.sh installs them (scripts/lib/kvclients.sh).
func needClient(t *testing.T, what string, probe ...string) {
	t.Helper()
	if err := exec.Command(probe[0], probe[1:]...).Run(); err != nil {
		msg := fmt.Sprintf("%s is not installed (%v); scripts/test.sh installs it (scripts/lib/kvclients.sh)", what, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func runCmd(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestRealClients drives the store with clients nobody here wrote:
// redis-cli, redis-py and pymemcache, each against a different node.
func TestRealClients(t *testing.T) {
	needClient(t, "redis-cli (redis-tools)", "redis-cli", "--version")
	needClient(t, "python3-redis and python3-pymemcache", "/usr/bin/python3", "-c", "import redis, pymemcache")
	k := newKVCluster(t, 3)

	t.Run("redis-cli", func(t *testing.T) {
		p := port(k.redis["n1"])
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"SET", "cli", "v", "EX", "100"}, "OK"},
			{[]string{"GET", "cli"}, "v"},
			{[]string{"TTL", "cli"}, "100"},
			{[]string{"HSET", "h", "a", "1", "b", "2"}, "2"},
			{[]string{"HGETALL", "h"}, "a\n1\nb\n2"},
			{[]string{"FROB", "x"}, "ERR unknown command 'FROB', with args beginning with: 'x'"},
			{[]string{"-3", "HGETALL", "h"}, "a 1\nb 2"},
		} {
			args := append([]string{"-p", p}, c.args...)
			if c.args[0] == "-3" {
				args = append([]string{"-3", "-p", p}, c.args[1:]...)
			}
			out, err := runCmd(t, 20*time.Second, "redis-cli", args...)
			if err != nil || strings.TrimSpace(out) != c.want {
				t.Errorf("redis-cli %v: %q, %v; want %q", c.args, out, err, c.want)
			}
		}
	})

	t.Run("redis-py", func(t *testing.T) {
		script := `
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True, socket_timeout=20)
assert r.ping()
r.set("py", "1", ex=60)
assert r.get("py") == "1"
assert r.incr("py") == 2
assert r.set("py", "x", nx=True) is None
r.hset("sess:1", mapping={"user": "ann", "n": "1"})
assert r.hgetall("sess:1") == {"user": "ann", "n": "1"}
assert r.hincrby("sess:1", "n", 5) == 6
r.expire("sess:1", 30)
assert 0 < r.ttl("sess:1") <= 30
r.sadd("s", "a", "b")
assert r.smembers("s") == {"a", "b"}
p = r.pipeline(transaction=True)
p.set("t1", "a").set("t2", "b").mget("t1", "t2")
assert p.execute()[-1] == ["a", "b"]
with r.pipeline() as p:
    p.watch("t1")
    p.multi()
    p.set("t1", "c")
    p.execute()
assert r.get("t1") == "c"
keys = set()
for k in r.scan_iter(match="t*", count=1):
    keys.add(k)
assert keys == {"t1", "t2"}, keys
assert r.delete("t1", "t2", "nope") == 2
print("ok")
`
		out, err := runCmd(t, 60*time.Second, "/usr/bin/python3", "-c", script, port(k.redis["n2"]))
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Fatalf("redis-py: %v\n%s", err, out)
		}
		// What redis-py wrote on n2 is on n3.
		eventually(t, k.redis["n3"], "ann", "HGET", "sess:1", "user")
	})

	t.Run("pymemcache", func(t *testing.T) {
		script := `
import sys
from pymemcache.client.base import Client
c = Client(("127.0.0.1", int(sys.argv[1])), timeout=20, default_noreply=False)
c.set("k", b"hello", expire=100, flags=7)
assert c.get("k") == b"hello"
v, cas = c.gets("k")
assert v == b"hello"
assert c.cas("k", b"world", cas) is True
assert c.cas("k", b"again", cas) is False
assert c.add("k", b"x") is False
assert c.replace("k", b"r") is True
assert c.append("k", b"s") is True
assert c.prepend("k", b"p") is True
assert c.get("k") == b"prs"
c.set("n", b"10")
assert c.incr("n", 5) == 15
assert c.decr("n", 100) == 0
assert c.touch("n", 100) is True
assert c.delete("n") is True
assert c.get("n") is None
assert c.get_many(["k", "n"]) == {"k": b"prs"}
assert c.version()
print("ok")
`
		out, err := runCmd(t, 60*time.Second, "/usr/bin/python3", "-c", script, port(k.mc["n3"]))
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Fatalf("pymemcache: %v\n%s", err, out)
		}
	})
}

// phpCounter is a PHP script that increments a counter in a session kept
// by the save handler given on the command line.
const phpCounter = `<?php
session_id("cohortphpsession0123456789");
if (!session_start()) { fwrite(STDERR, "session_start failed\n"); exit(1); }
$_SESSION["n"] = ($_SESSION["n"] ?? 0) + 1;
if (!session_write_close()) { fwrite(STDERR, "session_write_close failed\n"); exit(1); }
echo $_SESSION["n"];
`

// TestPHPSessionCounterSurvivesNodeKill increments a PHP session counter
// (session.save_handler=redis, php-redis) through random nodes while one
// node is killed and restarted: every increment PHP reported as written
// counts.
func TestPHPSessionCounterSurvivesNodeKill(t *testing.T) {
	needClient(t, "php with php-redis", "php", "-r", `exit(extension_loaded("redis") ? 0 : 1);`)
	k := newKVCluster(t, 3)
	script := t.TempDir() + "/counter.php"
	if err := os.WriteFile(script, []byte(phpCounter), 0o644); err != nil {
		t.Fatal(err)
	}
	ids := []string{"n1", "n2", "n3"}
	rng := rand.New(rand.NewPCG(1, 2))
	run := func(id string) (int, error) {
		out, err := runCmd(t, 30*time.Second, "php", "-d", "session.save_handler=redis",
			"-d", `session.save_path="tcp://`+k.redis[id]+`?timeout=5&read_timeout=10"`, "-d", "display_errors=stderr", script)
		if err != nil {
			return 0, fmt.Errorf("%w: %s", err, out)
		}
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			return 0, fmt.Errorf("php said %q", out)
		}
		return n, nil
	}
	acked, failed, last := 0, 0, 0
	victim := ""
	for i := 0; i < 30; i++ {
		if i == 10 {
			victim = k.WaitLeader(t).ID
			k.Kill(victim)
		}
		if i == 20 {
			k.Restart(victim)
		}
		id := ids[rng.IntN(3)]
		n, err := run(id)
		if err != nil {
			failed++
			t.Logf("increment %d via %s: %v", i, id, err)
			continue
		}
		acked++
		if n < last+1 {
			t.Errorf("increment %d via %s read %d, but %d was acknowledged before", i, id, n, last)
		}
		last = n
	}
	k.WaitReady(t)
	for _, id := range ids {
		var n int
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			out, err := runCmd(t, 30*time.Second, "php", "-d", "session.save_handler=redis",
				"-d", "session.save_path=tcp://"+k.redis[id], "-r",
				`session_id("cohortphpsession0123456789"); session_start(); echo $_SESSION["n"] ?? -1;`)
			var perr error
			n, perr = strconv.Atoi(strings.TrimSpace(out))
			return err == nil && perr == nil, fmt.Sprintf("read via %s: %v %q", id, err, out)
		})
		if n < acked || n > acked+failed {
			t.Errorf("node %s: counter %d, want %d acknowledged increments (+ up to %d failed ones)", id, n, acked, failed)
		}
	}
	t.Logf("killed %s: %d increments acknowledged, %d failed", victim, acked, failed)
}

// TestPHPMemcachedSessions keeps a PHP session with php-memcached's
// handler (session.save_handler=memcached) and reads it on another node.
func TestPHPMemcachedSessions(t *testing.T) {
	needClient(t, "php with php-memcached", "php", "-r", `exit(extension_loaded("memcached") ? 0 : 1);`)
	k := newKVCluster(t, 3)
	script := t.TempDir() + "/counter.php"
	if err := os.WriteFile(script, []byte(phpCounter), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"n1", "n2", "n3", "n1"} {
		out, err := runCmd(t, 30*time.Second, "php", "-d", "session.save_handler=memcached",
			"-d", "session.save_path="+k.mc[id], "-d", "memcached.sess_binary_protocol=0", "-d", "display_errors=stderr", script)
		if err != nil || strings.TrimSpace(out) != strconv.Itoa(i+1) {
			t.Fatalf("increment %d via %s: %q, %v", i+1, id, out, err)
		}
	}
}
