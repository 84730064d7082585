package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// debianPeers maps each peer binary to the Debian package providing it.
var debianPeers = []struct{ bin, pkg string }{
	{"haproxy", "haproxy"},
	{"wrk", "wrk"},
	{"redis-server", "redis-server"},
	{"etcd", "etcd-server"},
	{"memcached", "memcached"},
}

// ensurePeers installs the Debian packages of missing peers (as root).
func ensurePeers(ctx context.Context, logf func(string, ...any)) error {
	var missing []string
	for _, p := range debianPeers {
		if _, err := exec.LookPath(p.bin); err != nil {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	logf("installing peers from Debian: %s", strings.Join(missing, " "))
	if os.Geteuid() != 0 {
		return fmt.Errorf("peers missing (%s) and not root: apt-get install -y %s", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("apt-get install %s: %w\n%s", strings.Join(missing, " "), err, out)
	}
	return nil
}

// startRedis starts a Redis with its Debian defaults for durability
// (no AOF) and without RDB snapshots, so no background save lands in a
// measured round.
func startRedis(ctx context.Context, p *procs, name string) (string, *proc, error) {
	return startRedisWith(ctx, p, name, "--save", "", "--appendonly", "no")
}

// startRedisWith starts a Redis whose persistence is set by persist
// (redis-server flags such as "--appendonly", "yes"); with none it keeps
// redis-server's built-in defaults (RDB snapshots by its save rules, no
// AOF). Its files go to a directory of its own.
func startRedisWith(ctx context.Context, p *procs, name string, persist ...string) (string, *proc, error) {
	port, err := p.freePort()
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(p.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("redis dir: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--dir", dir, "--protected-mode", "no"}, persist...)
	pr, err := p.start(name, "redis-server", args...)
	if err != nil {
		return "", nil, err
	}
	return addr, pr, waitTCP(ctx, pr, addr, 20*time.Second)
}

// startMemcached starts memcached with 256 MiB.
func startMemcached(ctx context.Context, p *procs, name string) (string, *proc, error) {
	port, err := p.freePort()
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"-l", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "0", "-m", "256", "-t", "2"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	pr, err := p.start(name, "memcached", args...)
	if err != nil {
		return "", nil, err
	}
	return addr, pr, waitTCP(ctx, pr, addr, 20*time.Second)
}

// startEtcd starts an etcd cluster of size members on loopback and
// returns their client URLs.
func startEtcd(ctx context.Context, p *procs, name string, size int) ([]string, []*proc, error) {
	type member struct{ name, client, peer string }
	var ms []member
	var initial []string
	for i := range size {
		ports, err := p.ports(2)
		if err != nil {
			return nil, nil, err
		}
		m := member{name: fmt.Sprintf("e%d", i+1),
			client: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
		ms = append(ms, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	var urls []string
	var list []*proc
	for _, m := range ms {
		pr, err := p.start(name+"-"+m.name, "etcd", "--name", m.name,
			"--data-dir", filepath.Join(p.dir, name, m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", name, "--logger", "zap", "--log-level", "warn")
		if err != nil {
			return nil, nil, err
		}
		urls = append(urls, m.client)
		list = append(list, pr)
	}
	for i, m := range ms {
		if err := waitHTTP(ctx, list[i], m.client+"/health", 60*time.Second); err != nil {
			return nil, nil, fmt.Errorf("etcd %s health: %w", m.name, err)
		}
	}
	return urls, list, nil
}

// haproxyConfig returns an HAProxy configuration: one frontend on bind,
// balancing over backends with an inserted sticky cookie (the
// conventional stack's front).
func haproxyConfig(bind string, backends []string, check string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fe
    bind %s
    default_backend be
backend be
    balance roundrobin
    cookie SERVERID insert indirect nocache
    option redispatch
    http-reuse safe
`, bind)
	for i, be := range backends {
		chk := ""
		if check != "" {
			chk = " check inter 1s"
		}
		fmt.Fprintf(&b, "    server s%d %s cookie s%d%s\n", i+1, be, i+1, chk)
	}
	if check != "" {
		fmt.Fprintf(&b, "    option httpchk GET %s\n", check)
	}
	return b.String()
}

// startHAProxy writes cfg and starts HAProxy in the foreground.
func startHAProxy(ctx context.Context, p *procs, name, bind, cfg string) (*proc, error) {
	file := filepath.Join(p.dir, name+".cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("haproxy config: %w", err)
	}
	pr, err := p.start(name, "haproxy", "-db", "-f", file)
	if err != nil {
		return nil, err
	}
	return pr, waitTCP(ctx, pr, bind, 20*time.Second)
}

// stackRig is the conventional stack: HAProxy with a sticky cookie in
// front of app servers keeping their sessions in Redis through scs.
type stackRig struct {
	front string // host:port of HAProxy
	apps  []string
	procs []*proc
}

// startStack starts Redis, n app servers (this binary's stack-app
// command) and HAProxy.
func startStack(ctx context.Context, p *procs, self string, n int) (*stackRig, error) {
	rs := &stackRig{}
	redisAddr, rp, err := startRedis(ctx, p, "stack-redis")
	if rp != nil {
		rs.procs = append(rs.procs, rp)
	}
	if err != nil {
		return rs, err
	}
	for i := range n {
		port, err := p.freePort()
		if err != nil {
			return rs, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		pr, err := p.start(fmt.Sprintf("stack-app%d", i+1), self, "stack-app",
			"--name", fmt.Sprintf("s%d", i+1), "--addr", addr, "--redis", redisAddr)
		if err != nil {
			return rs, err
		}
		rs.procs = append(rs.procs, pr)
		rs.apps = append(rs.apps, addr)
		if err := waitHTTP(ctx, pr, "http://"+addr+"/health", 20*time.Second); err != nil {
			return rs, err
		}
	}
	port, err := p.freePort()
	if err != nil {
		return rs, err
	}
	rs.front = fmt.Sprintf("127.0.0.1:%d", port)
	hp, err := startHAProxy(ctx, p, "stack-haproxy", rs.front, haproxyConfig(rs.front, rs.apps, "/health"))
	if hp != nil {
		rs.procs = append(rs.procs, hp)
	}
	return rs, err
}
