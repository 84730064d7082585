package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The kv scenario (issue 19): cohort's Redis- and memcached-compatible
// store against the servers a user would run instead.
const (
	kvValueSize = 100  // bytes of every value written and read
	kvKeys      = 1000 // keys read by GETs; keys each writer cycles through
	kvPipeline  = 16   // commands per pipeline in the pipelined settings
)

// The systems of the kv scenario, as the results note names them.
const (
	kvLeader    = "cohort leader"
	kvFollower  = "cohort follower"
	kvRedisAOF  = "redis appendfsync always"
	kvRedisDef  = "redis defaults (RDB, no AOF)"
	kvMemcached = "memcached"
	kvFloor     = "go floor (redcon, nothing stored)"
)

// kvSetting is one load setting of the kv scenario.
type kvSetting struct {
	param string // as the note names it
	unit  string // what ops/s counts
	write bool   // SET (set) rather than GET (get)
	conc  int    // connections, one closed-loop worker each
	depth int    // commands per round trip (1: no pipelining)
}

// kvRESPSettings are the Redis-protocol settings, in the order they run.
var kvRESPSettings = []kvSetting{
	{"SET c=1", "SET/s", true, 1, 1},
	{"GET c=1", "GET/s", false, 1, 1},
	{"SET c=50", "SET/s", true, 50, 1},
	{"GET c=50", "GET/s", false, 50, 1},
	{"SET P16 c=50", "SET/s", true, 50, kvPipeline},
	{"GET P16 c=50", "GET/s", false, 50, kvPipeline},
}

// kvMCSettings are the memcached-protocol settings.
var kvMCSettings = []kvSetting{
	{"mc set c=50", "sets/s", true, 50, 1},
	{"mc get c=50", "gets/s", false, 50, 1},
}

// kvKeyset holds the keys of the load, built once so that building them
// costs the load generator nothing during a round.
type kvKeyset struct {
	value []byte
	text  string   // value as a string, for the memcached client
	gets  []string // kvKeys keys, written before the GET settings
	sets  []string // kvKeys keys per writer: writer w uses sets[w*kvKeys:(w+1)*kvKeys]
}

func newKVKeyset(writers int) *kvKeyset {
	ks := &kvKeyset{value: bytes.Repeat([]byte("v"), kvValueSize)}
	ks.text = string(ks.value)
	for i := range kvKeys {
		ks.gets = append(ks.gets, "bench:get:"+strconv.Itoa(i))
	}
	for i := range writers * kvKeys {
		ks.sets = append(ks.sets, "bench:set:"+strconv.Itoa(i))
	}
	return ks
}

// key returns the key of worker w's n-th operation.
func (ks *kvKeyset) key(write bool, w, n int) string {
	if write {
		return ks.sets[w*kvKeys+n%kvKeys]
	}
	return ks.gets[(w*37+n)%kvKeys] // workers start at different keys
}

// respLoad is one setting's load on one Redis-protocol server: a
// connection per worker, dialled on first use and again after an error
// (a failed pipeline leaves replies unread).
type respLoad struct {
	addr  string
	ks    *kvKeyset
	set   kvSetting
	conns []redis.Conn
	ops   []int // operations done per worker, to pick keys
}

func newRESPLoad(addr string, ks *kvKeyset, set kvSetting) *respLoad {
	return &respLoad{addr: addr, ks: ks, set: set, conns: make([]redis.Conn, set.conc), ops: make([]int, set.conc)}
}

// op is the closed loop's operation: one command, or one pipeline of
// set.depth commands, on worker w's connection.
func (l *respLoad) op(_ context.Context, w int) error {
	c := l.conns[w]
	if c == nil {
		var err error
		c, err = redis.Dial("tcp", l.addr, redis.DialConnectTimeout(5*time.Second),
			redis.DialReadTimeout(30*time.Second), redis.DialWriteTimeout(30*time.Second))
		if err != nil {
			return fmt.Errorf("redis dial: %w", err)
		}
		l.conns[w] = c
	}
	if err := l.roundTrip(c, w); err != nil {
		c.Close()
		l.conns[w] = nil
		return err
	}
	return nil
}

// roundTrip sends set.depth commands on c, then reads and checks every
// reply.
func (l *respLoad) roundTrip(c redis.Conn, w int) error {
	name := "GET"
	if l.set.write {
		name = "SET"
	}
	for range l.set.depth {
		k := l.ks.key(l.set.write, w, l.ops[w])
		l.ops[w]++
		var err error
		if l.set.write {
			err = c.Send(name, k, l.ks.value)
		} else {
			err = c.Send(name, k)
		}
		if err != nil {
			return fmt.Errorf("redis send %s: %w", name, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redis flush: %w", err)
	}
	for range l.set.depth {
		reply, err := c.Receive()
		if err != nil {
			return fmt.Errorf("redis %s: %w", name, err)
		}
		if l.set.write {
			s, err := redis.String(reply, nil)
			if err != nil {
				return fmt.Errorf("redis SET: %w", err)
			}
			if s != "OK" {
				return fmt.Errorf("redis SET: reply %q", s)
			}
			continue
		}
		b, err := redis.Bytes(reply, nil)
		if err != nil {
			return fmt.Errorf("redis GET: %w", err)
		}
		if len(b) != kvValueSize {
			return fmt.Errorf("redis GET: %d bytes, want %d", len(b), kvValueSize)
		}
	}
	return nil
}

func (l *respLoad) close() {
	for i, c := range l.conns {
		if c != nil {
			c.Close()
			l.conns[i] = nil
		}
	}
}

// mcLoad is one setting's load on one memcached-protocol server, a
// connection per worker as respLoad.
type mcLoad struct {
	addr  string
	ks    *kvKeyset
	set   kvSetting
	conns []*memcache
	ops   []int
}

func newMCLoad(addr string, ks *kvKeyset, set kvSetting) *mcLoad {
	return &mcLoad{addr: addr, ks: ks, set: set, conns: make([]*memcache, set.conc), ops: make([]int, set.conc)}
}

func (l *mcLoad) op(_ context.Context, w int) error {
	c := l.conns[w]
	if c == nil {
		var err error
		if c, err = newMemcache(l.addr); err != nil {
			return err
		}
		l.conns[w] = c
	}
	k := l.ks.key(l.set.write, w, l.ops[w])
	l.ops[w]++
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	var err error
	if l.set.write {
		err = c.set(k, l.ks.text)
	} else {
		err = c.get(k, kvValueSize)
	}
	if err != nil {
		c.Close()
		l.conns[w] = nil
	}
	return err
}

func (l *mcLoad) close() {
	for i, c := range l.conns {
		if c != nil {
			c.Close()
			l.conns[i] = nil
		}
	}
}

// kvFill writes the keys the GET settings read, in one pipeline per
// Redis-protocol server and one set each on memcached-protocol servers.
func kvFill(ks *kvKeyset, resp, mc []string) error {
	for _, addr := range resp {
		c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(30*time.Second))
		if err != nil {
			return fmt.Errorf("fill %s: %w", addr, err)
		}
		for _, k := range ks.gets {
			if err := c.Send("SET", k, ks.value); err != nil {
				c.Close()
				return fmt.Errorf("fill %s: %w", addr, err)
			}
		}
		replies, err := redis.Values(c.Do("")) // flushes and reads every reply
		c.Close()
		if err != nil {
			return fmt.Errorf("fill %s: %w", addr, err)
		}
		for _, r := range replies {
			if err, ok := r.(redis.Error); ok {
				return fmt.Errorf("fill %s: %w", addr, err)
			}
		}
	}
	for _, addr := range mc {
		c, err := newMemcache(addr)
		if err != nil {
			return fmt.Errorf("fill %s: %w", addr, err)
		}
		for _, k := range ks.gets {
			if err := c.set(k, ks.text); err != nil {
				c.Close()
				return fmt.Errorf("fill %s: %w", addr, err)
			}
		}
		c.Close()
	}
	return nil
}

// kvSystem is one server the kv scenario loads.
type kvSystem struct {
	name, peer, addr string
	procs            []*proc // whose CPU time a command costs (all of cohort's nodes)
}

// kvMeasure runs the settings on the systems: a warm-up each, then
// rounds alternating between the systems. newOp gives a system's load
// at a setting and a function that closes its connections. after, if
// not nil, runs once a setting's rounds are done with that setting's
// loads by system name. cost gets, per "system setting", each round's CPU
// time per command of the system's processes and, last, the harness's.
func (e *env) kvMeasure(ctx context.Context, sec *section, cost map[string][][]time.Duration, settings []kvSetting, systems []kvSystem,
	newOp func(addr string, set kvSetting) (func(context.Context, int) error, func()),
	after func(set kvSetting, ops map[string]func(context.Context, int) error)) error {
	for _, set := range settings {
		ops := map[string]func(context.Context, int) error{}
		var closers []func()
		for _, s := range systems {
			op, closeFn := newOp(s.addr, set)
			ops[s.name] = op
			closers = append(closers, closeFn)
			closedLoop(ctx, set.conc, e.opts.warmup, op)
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				meter := newCPUMeter(append(pids(s.procs), os.Getpid())...)
				smp := closedLoop(ctx, set.conc, e.opts.round, ops[s.name])
				per := meter.perOp(smp.ok * set.depth)
				key := s.name + " " + set.param
				cost[key] = append(cost[key], per)
				smp.ops *= float64(set.depth) // commands, not pipelines
				e.logf("  %s %s round %d: %.0f %s p50 %s p99 %s failed %d %v; CPU per command: servers %s, harness %s",
					s.name, set.param, r+1, smp.ops, set.unit, fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, smp.errs,
					fmtDur(sumDur(per[:len(per)-1])), fmtDur(per[len(per)-1]))
				sec.add(s.name, s.peer, set.param, float64(set.conc), set.unit, smp)
			}
		}
		if ctx.Err() == nil && after != nil {
			after(set, ops)
		}
		for _, c := range closers {
			c()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// runKV is scenario 8.
func runKV(ctx context.Context, e *env) *section {
	sec := &section{title: "8. The replicated store (kv): cohort's Redis and memcached protocols vs Redis and memcached",
		intro: "cohort: 3 nodes of the real binary, each with `--redis-addr` and `--memcached-addr` on loopback; the load " +
			"goes to the leader's listeners (`cohort leader`) and, as a separate system, to a follower's (`cohort follower`: " +
			"its writes are forwarded to the leader, its reads wait for a read index from the leader). Every cohort write is " +
			"committed on a majority, fsync'd, before its reply. Against: Redis (Debian's redis-server) with " +
			"`appendonly yes`, `appendfsync always` — the durable single node a user would pick so that an acknowledged " +
			"write survives a crash — and, for reference, Redis with its built-in persistence defaults (RDB snapshots by " +
			"its save rules, no AOF: acknowledged writes since the last snapshot are lost in a crash); memcached " +
			"(Debian's, 2 threads, nothing durable) for the memcached protocol. Load: the harness's closed loop, one " +
			"connection per worker (redigo for RESP, a small text-protocol client for memcached), `SET`/`GET` of " +
			"100-byte values over 1,000 keys per writer and 1,000 keys read (written before the load). `P16`: " +
			"each worker sends 16 commands, then reads the 16 replies. The systems alternate round by round."}
	ks := newKVKeyset(50)
	addrs := map[string][2]string{} // node id → RESP, memcached address
	cc, err := startCohortNodes(ctx, e.p, "s8-cohort", e.cohortCmd(), 3, nil, func(n *cohortNode) ([]string, error) {
		ports, err := e.p.ports(2)
		if err != nil {
			return nil, err
		}
		a := [2]string{fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])}
		addrs[n.id] = a
		return []string{"--redis-addr", a[0], "--memcached-addr", a[1]}, nil
	})
	if cc != nil {
		defer cc.stop()
	}
	if err != nil {
		sec.err = err
		return sec
	}
	for _, n := range cc.nodes {
		for _, a := range addrs[n.id] {
			if err := waitTCP(ctx, n.proc, a, 20*time.Second); err != nil {
				sec.err = fmt.Errorf("cohort %s kv listener: %w", n.id, err)
				return sec
			}
		}
	}
	leader, err := cc.leader(ctx)
	if err != nil {
		sec.err = err
		return sec
	}
	var follower *cohortNode
	for _, n := range cc.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	redisAOF, rp1, err := startRedisWith(ctx, e.p, "s8-redis-always", "--appendonly", "yes", "--appendfsync", "always", "--save", "")
	defer e.p.stopSome(rp1)
	if err != nil {
		sec.err = err
		return sec
	}
	redisDef, rp2, err := startRedisWith(ctx, e.p, "s8-redis-defaults")
	defer e.p.stopSome(rp2)
	if err != nil {
		sec.err = err
		return sec
	}
	mcAddr, mp, err := startMemcached(ctx, e.p, "s8-memcached")
	defer e.p.stopSome(mp)
	if err != nil {
		sec.err = err
		return sec
	}
	if err := kvFill(ks, []string{addrs[leader.id][0], redisAOF, redisDef}, []string{addrs[leader.id][1], mcAddr}); err != nil {
		sec.err = err
		return sec
	}
	e.logf("  leader %s, follower %s", leader.id, follower.id)

	floorPort, err := e.p.freePort()
	if err != nil {
		sec.err = err
		return sec
	}
	floorAddr := fmt.Sprintf("127.0.0.1:%d", floorPort)
	fp, err := e.p.start("s8-floor", e.self, "resp-floor", "-addr", floorAddr)
	if err == nil {
		defer e.p.stopSome(fp)
		err = waitTCP(ctx, fp, floorAddr, 20*time.Second)
	}
	if err != nil {
		sec.err = fmt.Errorf("resp-floor: %w", err)
		return sec
	}
	if err := kvFill(ks, []string{floorAddr}, nil); err != nil {
		sec.err = err
		return sec
	}
	nodes := make([]*proc, 0, len(cc.nodes))
	for _, n := range cc.nodes {
		nodes = append(nodes, n.proc)
	}
	resp := []kvSystem{
		{kvLeader, kvRedisAOF, addrs[leader.id][0], nodes},
		{kvFollower, kvRedisAOF, addrs[follower.id][0], nodes},
		{kvRedisAOF, "", redisAOF, []*proc{rp1}},
		{kvRedisDef, "", redisDef, []*proc{rp2}},
		{kvFloor, kvRedisAOF, floorAddr, []*proc{fp}},
	}
	newRESP := func(addr string, set kvSetting) (func(context.Context, int) error, func()) {
		l := newRESPLoad(addr, ks, set)
		return l.op, l.close
	}
	profile := func(set kvSetting, ops map[string]func(context.Context, int) error) {
		if set.param == "SET c=50" {
			e.profileRound(ctx, sec, "kv-set-c50-leader", leader.proc.pid(), func() {
				closedLoop(ctx, set.conc, e.opts.round, ops[kvLeader])
			})
		}
	}
	cost := map[string][][]time.Duration{}
	if err := e.kvMeasure(ctx, sec, cost, kvRESPSettings, resp, newRESP, profile); err != nil {
		sec.err = err
		return sec
	}
	mc := []kvSystem{
		{kvLeader, kvMemcached, addrs[leader.id][1], nodes},
		{kvMemcached, "", mcAddr, []*proc{mp}},
	}
	newMC := func(addr string, set kvSetting) (func(context.Context, int) error, func()) {
		l := newMCLoad(addr, ks, set)
		return l.op, l.close
	}
	if err := e.kvMeasure(ctx, sec, cost, kvMCSettings, mc, newMC, nil); err != nil {
		sec.err = err
		return sec
	}
	sec.extra = "ops/s counts commands (a `P16` round trip is 16); p50 and p99 are of one round trip, so of a whole " +
		"pipeline of 16 in the `P16` settings, and `failed` counts round trips. The ratio column compares with Redis " +
		"`appendfsync always` (RESP) or memcached.\n"
	sec.extra += kvCPUTable(cost, append(kvRESPSettings, kvMCSettings...), append(resp, mc...))
	sec.goals = append(sec.goals, kvGoals(sec)...)
	subset := func(params ...string) []*series {
		var out []*series
		for _, s := range sec.series {
			for _, p := range params {
				if s.param == p {
					out = append(out, s)
				}
			}
		}
		return out
	}
	e.chartSeries(sec, subset("SET c=50", "GET c=50", "SET P16 c=50", "GET P16 c=50"), "kv-throughput", "bar",
		"Scenario 8: Redis protocol, 50 connections", "", "commands/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	e.chartSeries(sec, subset("GET c=1", "GET c=50"), "kv-get-p50", "bar",
		"Scenario 8: p50 of a GET", "", "p50 (µs)",
		func(s *series) float64 { return float64(s.medP50()) / 1e3 })
	e.chartSeries(sec, subset("mc set c=50", "mc get c=50"), "kv-memcached", "bar",
		"Scenario 8: memcached protocol, 50 connections", "", "commands/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	return sec
}

// kvCPUTable reports the CPU time a command cost each system's processes
// (cohort: its three nodes summed) and the harness that drove the load,
// median of the rounds. The harness and every server share the machine's
// cores, so at 50 connections these sums, not the disk, set the rates.
func kvCPUTable(cost map[string][][]time.Duration, settings []kvSetting, systems []kvSystem) string {
	var b strings.Builder
	b.WriteString("\nCPU time per command (from `/proc/PID/stat`, 10 ms ticks; median of the rounds): the system's " +
		"processes (cohort: its three nodes summed) and the harness process that drives the load. `" + kvFloor + "` is " +
		"this harness's `resp-floor`: cohort's RESP library (tidwall/redcon, one goroutine per connection) over a map, " +
		"with no log, fsync or replication — what a command costs in Go's wire path alone on this machine:\n\n" +
		"| system | setting | servers | harness |\n|---|---|---|---|\n")
	seen := map[string]bool{}
	for _, set := range settings {
		for _, sys := range systems {
			key := sys.name + " " + set.param
			rounds := cost[key]
			if len(rounds) == 0 || seen[key] {
				continue
			}
			seen[key] = true
			servers, harness := medianCPU(rounds)
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", sys.name, set.param, fmtDur(servers), fmtDur(harness))
		}
	}
	return b.String()
}

// kvGoals are the kv scenario's goals: those of the lead's brief for the
// harness, then the two further ones issue 19 states.
func kvGoals(sec *section) []goal {
	const scen = "8 kv"
	// vs returns system's series at param and its peer's, or nils.
	vs := func(system, peer, param string) (*series, *series) {
		s, pe := sec.find(system, param), sec.find(peer, param)
		if s == nil || pe == nil || pe.medOps() == 0 || pe.medP50() == 0 {
			return nil, nil
		}
		return s, pe
	}
	opsGoal := func(text, system, peer, param string, min float64, alsoFollower bool) goal {
		g := goal{scenario: scen, text: text}
		s, pe := vs(system, peer, param)
		if s == nil {
			return g
		}
		r := s.medOps() / pe.medOps()
		g.checked, g.met = true, r >= min
		g.measured = fmt.Sprintf("%.2f× (%s vs %s)", r, fmtNum(s.medOps()), fmtNum(pe.medOps()))
		if f, _ := vs(kvFollower, peer, param); alsoFollower && f != nil {
			g.measured += fmt.Sprintf("; follower %.2f× (%s)", f.medOps()/pe.medOps(), fmtNum(f.medOps()))
		}
		return g
	}
	p50Goal := func(text, system, peer string, maxRatio float64, params ...string) goal {
		g := goal{scenario: scen, text: text, checked: true, met: true}
		var parts []string
		for _, param := range params {
			s, pe := vs(system, peer, param)
			if s == nil {
				return goal{scenario: scen, text: text}
			}
			r := float64(s.medP50()) / float64(pe.medP50())
			g.met = g.met && r <= maxRatio
			parts = append(parts, fmt.Sprintf("%s: %.2f× (%s vs %s)", param, r, fmtDur(s.medP50()), fmtDur(pe.medP50())))
		}
		g.measured = strings.Join(parts, "; ")
		return g
	}
	return []goal{
		opsGoal("cohort SET/s at 50 connections ≥ 1.0× Redis `appendfsync always`'s (on the leader)",
			kvLeader, kvRedisAOF, "SET c=50", 1.0, true),
		p50Goal("GET p50 on the leader ≤ Redis `appendfsync always`'s, at 1 and at 50 connections",
			kvLeader, kvRedisAOF, 1.0, "GET c=1", "GET c=50"),
		opsGoal("memcached-protocol gets/s at 50 connections ≥ 0.5× memcached's (on the leader)",
			kvLeader, kvMemcached, "mc get c=50", 0.5, false),
		opsGoal("issue 19: GET/s at 50 connections ≥ 0.7× Redis without AOF's (on the leader)",
			kvLeader, kvRedisDef, "GET c=50", 0.7, true),
		p50Goal("issue 19: GET p50 on a follower ≤ 2× Redis's, at 50 connections",
			kvFollower, kvRedisAOF, 2.0, "GET c=50"),
	}
}
