package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// runReads is scenario 3.
func runReads(ctx context.Context, e *env) *section {
	sec := &section{title: "3. Session reads: a handler's session read vs Redis GET vs memcached get",
		intro: "What a request handler pays to read its session. cohort: the time `GET /bench/read` (a handler that reads the " +
			"demo counter from its session and writes it as text) spends inside the node's application chain (sticky " +
			"front, sessions middleware, handler; measured by a middleware the harness's `cohort-node` puts around that " +
			"chain) — the session is in the node's memory. Redis and memcached: " +
			"one GET of a 100-byte session blob on loopback from a Go client, the round trip an scs or " +
			"memcached-session-manager handler pays on every request. One client, closed loop; the row `cohort (HTTP)` " +
			"is the whole HTTP request as the client sees it, for scale."}
	cc, err := startCohort(ctx, e.p, "s3-cohort", e.benchNodeCmd(), 3)
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	redisAddr, rp, err := startRedis(ctx, e.p, "s3-redis")
	defer e.p.stopSome(rp)
	if err != nil {
		sec.err = err
		return sec
	}
	mcAddr, mp, err := startMemcached(ctx, e.p, "s3-memcached")
	defer e.p.stopSome(mp)
	if err != nil {
		sec.err = err
		return sec
	}
	n1 := cc.nodes[0]
	clients, err := newSessions(ctx, 1, []string{"http://" + n1.http}, "/demo/api/counter", nil)
	if err != nil {
		sec.err = err
		return sec
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	httpGet := func(ctx context.Context, _ int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, clients[0].base+"/bench/read", nil)
		req.Header.Set("Cookie", clients[0].cookie)
		res, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil || string(b) != "1" {
			return fmt.Errorf("get: %s %q %v", res.Status, b, err)
		}
		return nil
	}
	value := strings.Repeat("s", 100)
	rc, err := redis.Dial("tcp", redisAddr)
	if err != nil {
		sec.err = fmt.Errorf("redis dial: %w", err)
		return sec
	}
	defer rc.Close()
	if _, err := rc.Do("SET", "scs:session:bench", value); err != nil {
		sec.err = fmt.Errorf("redis set: %w", err)
		return sec
	}
	redisGet := func(context.Context, int) error {
		b, err := redis.Bytes(rc.Do("GET", "scs:session:bench"))
		if err != nil || len(b) != len(value) {
			return fmt.Errorf("redis get: %d bytes: %w", len(b), err)
		}
		return nil
	}
	mc, err := newMemcache(mcAddr)
	if err != nil {
		sec.err = err
		return sec
	}
	defer mc.Close()
	if err := mc.set("session:bench", value); err != nil {
		sec.err = err
		return sec
	}
	mcGet := func(context.Context, int) error { return mc.get("session:bench", len(value)) }

	for r := range e.opts.rounds + 1 { // the first round is the warm-up
		if _, err := fetchTiming(ctx, hc, n1); err != nil { // reset
			sec.err = err
			return sec
		}
		smpHTTP := closedLoop(ctx, 1, e.opts.round, httpGet)
		tm, err := fetchTiming(ctx, hc, n1)
		if err != nil {
			sec.err = err
			return sec
		}
		smpRedis := closedLoop(ctx, 1, e.opts.round, redisGet)
		smpMC := closedLoop(ctx, 1, e.opts.round, mcGet)
		if r == 0 {
			continue
		}
		inside := sample{ok: tm.Count, p50: time.Duration(tm.P50ns), p99: time.Duration(tm.P99ns)}
		inside.ops = float64(tm.Count) / e.opts.round.Seconds()
		sec.add("cohort (handler)", "redis GET", "c=1", 1, "reads/s", inside)
		sec.add("cohort (HTTP)", "", "c=1", 1, "req/s", smpHTTP)
		sec.add("redis GET", "", "c=1", 1, "ops/s", smpRedis)
		sec.add("memcached get", "", "c=1", 1, "ops/s", smpMC)
		e.logf("  round %d: cohort handler p50 %s, HTTP p50 %s, redis p50 %s, memcached p50 %s", r,
			fmtDur(inside.p50), fmtDur(smpHTTP.p50), fmtDur(smpRedis.p50), fmtDur(smpMC.p50))
	}
	sec.extra = "The `ops/s` of `cohort (handler)` is the HTTP loop's rate (the handler cannot run faster than its client " +
		"sends); compare the p50 and p99 columns. The ratio column's p50 figure is the goal's ratio.\n"
	g := goal{scenario: "3 reads", text: "p50 of a handler's session read ≤ 0.1× Redis GET's"}
	if s := sec.find("cohort (handler)", "c=1"); s != nil {
		if _, p50, _, ok := sec.ratio(s); ok {
			g.checked, g.met = true, p50 <= 0.1
			g.measured = fmt.Sprintf("%.3f× (%s vs %s; memcached %s)", p50, fmtDur(s.medP50()),
				fmtDur(sec.find("redis GET", "c=1").medP50()), fmtDur(sec.find("memcached get", "c=1").medP50()))
		}
	}
	sec.goals = append(sec.goals, g)
	e.chart(sec, "reads-p50", "bar", "Scenario 3: p50 of one session read", "", "p50 (µs)",
		func(s *series) float64 { return float64(s.medP50()) / 1e3 })
	return sec
}

// fetchTiming reads and resets the node's handler timings.
func fetchTiming(ctx context.Context, hc *http.Client, n *cohortNode) (timingReply, error) {
	var tr timingReply
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url("/bench/timing"), nil)
	res, err := hc.Do(req)
	if err != nil {
		return tr, fmt.Errorf("bench timing: %w", err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&tr); err != nil {
		return tr, fmt.Errorf("bench timing: %s: %w", res.Status, err)
	}
	return tr, nil
}

// memcache is a minimal memcached text-protocol client (get and set of
// one key), enough for a round-trip measurement.
type memcache struct {
	conn net.Conn
	rw   *bufio.ReadWriter
}

func newMemcache(addr string) (*memcache, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("memcached dial: %w", err)
	}
	return &memcache{conn: c, rw: bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))}, nil
}

func (m *memcache) Close() error { return m.conn.Close() }

func (m *memcache) set(key, val string) error {
	fmt.Fprintf(m.rw, "set %s 0 0 %d\r\n%s\r\n", key, len(val), val)
	if err := m.rw.Flush(); err != nil {
		return fmt.Errorf("memcached set: %w", err)
	}
	line, err := m.rw.ReadString('\n')
	if err != nil || line != "STORED\r\n" {
		return fmt.Errorf("memcached set: %q %v", line, err)
	}
	return nil
}

func (m *memcache) get(key string, size int) error {
	fmt.Fprintf(m.rw, "get %s\r\n", key)
	if err := m.rw.Flush(); err != nil {
		return fmt.Errorf("memcached get: %w", err)
	}
	// VALUE key flags bytes\r\n data\r\n END\r\n
	line, err := m.rw.ReadString('\n')
	if err != nil {
		return fmt.Errorf("memcached get: %w", err)
	}
	if f := strings.Fields(line); len(f) != 4 || f[0] != "VALUE" || f[3] != strconv.Itoa(size) {
		return fmt.Errorf("memcached get: %q, want a value of %d bytes", strings.TrimSpace(line), size)
	}
	buf := make([]byte, size+2+5)
	if _, err := io.ReadFull(m.rw, buf); err != nil {
		return fmt.Errorf("memcached get body: %w", err)
	}
	if !bytes.HasSuffix(buf, []byte("\r\nEND\r\n")) {
		return fmt.Errorf("memcached get: reply does not end with END: %q", buf[size:])
	}
	return nil
}
