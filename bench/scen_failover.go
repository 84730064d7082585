package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// foClient is one session under load during a failover: it remembers
// the last count a POST acknowledged and the highest count any POST may
// have reached (a POST whose answer was lost may or may not have
// committed).
type foClient struct {
	cookie   string
	owner    string // node that created the session
	entry    int    // index of the node it talks to
	acked    int64
	possible int64
	stale    int       // GETs that answered less than an acknowledged count
	staleAft int       // of which after the kill
	firstOK  time.Time // first success after the kill
	history  []string  // the last requests, for the log of a lost write
}

// note keeps the last 12 requests of the client.
func (c *foClient) note(killAt int64, method, entry string, code int, r counterReply, err error) {
	at := "before"
	if killAt != 0 {
		at = "+" + time.Since(time.Unix(0, killAt)).Round(time.Millisecond).String()
	}
	h := fmt.Sprintf("%s %s via %s → %d count=%d node=%s", at, method, entry, code, r.Count, r.Node)
	if err != nil {
		h += " err=" + err.Error()
	}
	c.history = append(c.history, h)
	if len(c.history) > 12 {
		c.history = c.history[1:]
	}
}

// foCounts are the failover's request counters.
type foCounts struct {
	gets, posts, failedGets, failedPosts, redirects atomic.Int64

	mu      sync.Mutex
	reasons map[string]int // why requests failed
}

func (c *foCounts) fail(method string, code int, err error) {
	why := fmt.Sprintf("%s %d", method, code)
	if err != nil {
		// Keep what went wrong, not which ports: "GET connection reset by peer".
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		why = method + " " + msg
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reasons == nil {
		c.reasons = map[string]int{}
	}
	c.reasons[why]++
}

// foRep is one repetition's figures.
type foRep struct {
	killed       string
	newLeader    time.Duration
	served       time.Duration // until every session of the killed node answered elsewhere
	jobRun       time.Duration // until the next run of the declared job started (0: not measured)
	gets, posts  int64
	failG, failP int64
	redirects    int64
	stale, lost  int
	staleAfter   int
	reasons      map[string]int
	err          error
}

type counterReply struct {
	Count int64  `json:"count"`
	Node  string `json:"node"`
}

// runFailover is scenario 5.
func runFailover(ctx context.Context, e *env) *section {
	sec := &section{title: "5. Failover: kill -9 of the leader under load",
		intro: "30 clients, each with its own session (ten created on each node), each sending 90% GET / 10% POST " +
			"`/demo/api/counter` one request at a time, through an entry node (a third of them through the session's " +
			"owner, the rest through another node, so the front forwards). After a steady period the harness sends " +
			"SIGKILL to the leader (which owns a third of the sessions) and measures: time until a surviving node " +
			"names a new leader; time until every session the dead node owned answered again (through another " +
			"node); failed requests; acknowledged writes lost (at the end every session is read back through a " +
			"survivor and its count compared with the last count a POST acknowledged). A client whose entry node " +
			"refuses the connection moves to the next node and resends (no byte was sent: what a browser or an L4 " +
			"balancer does; counted as a redirect, not a failure). Clients keep a cookie the answer sets again (the " +
			"route re-stamped to the node now serving the session), as a browser does. A GET cut mid-flight is retried once elsewhere " +
			"(idempotent); a POST cut mid-flight counts as failed and its outcome as uncertain."}
	reps := e.opts.failReps
	var results []foRep
	for r := range reps {
		rep := failoverOnce(ctx, e, r)
		if rep.err != nil {
			e.logf("  failover rep %d: %v", r+1, rep.err)
		} else {
			e.logf("  failover rep %d: killed %s, new leader %s, sessions served %s, job %s, failed GET %d POST %d, lost %d",
				r+1, rep.killed, fmtDur(rep.newLeader), fmtDur(rep.served), fmtDur(rep.jobRun), rep.failG, rep.failP, rep.lost)
		}
		results = append(results, rep)
		if ctx.Err() != nil {
			break
		}
	}
	var b strings.Builder
	b.WriteString("| rep | killed | new leader after | its sessions served elsewhere after | next job run after | GET (failed) | POST (failed) | redirects | stale reads (after the kill) | lost acknowledged writes | why requests failed |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var leaders []float64
	failG, lost := int64(0), 0
	measured := 0
	for i, r := range results {
		if r.err != nil {
			fmt.Fprintf(&b, "| %d | failed: %s |||||||||| \n", i+1, strings.ReplaceAll(r.err.Error(), "|", "/"))
			continue
		}
		measured++
		leaders = append(leaders, float64(r.newLeader))
		failG += r.failG
		lost += r.lost
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %d (%d) | %d (%d) | %d | %d (%d) | %d | %s |\n", i+1, r.killed,
			fmtDur(r.newLeader), fmtDur(r.served), fmtDur(r.jobRun), r.gets, r.failG, r.posts, r.failP, r.redirects,
			r.stale, r.staleAfter, r.lost, reasonList(r.reasons))
	}
	sec.extra = b.String()
	g := goal{scenario: "5 failover", text: "new leader ≤ 2 s median, 0 failed GETs, 0 lost writes"}
	if measured > 0 {
		med := time.Duration(median(leaders))
		g.checked = true
		g.met = med <= 2*time.Second && failG == 0 && lost == 0
		g.measured = fmt.Sprintf("new leader median %s over %d kills; %d failed GETs; %d lost acknowledged writes", fmtDur(med), measured, failG, lost)
	}
	sec.goals = append(sec.goals, g)
	return sec
}

// failoverOnce runs one kill on a fresh cluster.
func failoverOnce(ctx context.Context, e *env, rep int) foRep {
	var out foRep
	name := fmt.Sprintf("s5-cohort-%d", rep+1)
	cmd := e.cohortCmd()
	jobs := ""
	if hasFlag(e.cohort, "--jobs-file") {
		jobs = filepath.Join(e.p.dir, name+"-jobs.json")
		spec := `{"jobs":[{"name":"bench-tick","schedule":"@every 1s","command":["/bin/true"]}]}`
		if err := os.WriteFile(jobs, []byte(spec), 0o644); err != nil {
			out.err = fmt.Errorf("jobs file: %w", err)
			return out
		}
	}
	cc, err := startCohortWith(ctx, e.p, name, cmd, 3, jobsArgs(jobs))
	if err != nil {
		out.err = err
		return out
	}
	defer cc.stop()
	var bases []string
	for _, n := range cc.nodes {
		bases = append(bases, "http://"+n.http)
	}
	const path = "/demo/api/counter"
	const nClients = 30
	raw, err := newSessions(ctx, nClients, bases, path, nil)
	if err != nil {
		out.err = err
		return out
	}
	clients := make([]*foClient, nClients)
	for i, c := range raw {
		owner := i % 3
		clients[i] = &foClient{cookie: c.cookie, owner: cc.nodes[owner].id,
			entry: (owner + (i/3)%3) % 3, acked: 1, possible: 1}
	}
	var cnt foCounts
	var killAt atomic.Int64 // unix nanos of the kill; 0 before
	dead := make([]atomic.Bool, len(cc.nodes))
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			foLoop(loadCtx, c, bases, dead, &cnt, &killAt)
		}()
	}
	steady := 3 * time.Second
	if e.opts.short {
		steady = 2 * time.Second
	}
	sleepCtx(ctx, steady)
	leader, err := cc.leader(ctx)
	if err != nil {
		stopLoad()
		wg.Wait()
		out.err = err
		return out
	}
	out.killed = leader.id
	li := slices.Index(cc.nodes, leader)
	t0 := time.Now()
	killAt.Store(t0.UnixNano())
	dead[li].Store(true)
	leader.proc.kill() // SIGKILL to its process group
	// Time to a new leader, seen by any survivor.
	err = waitFor(ctx, 30*time.Second, func() (bool, string) {
		for _, n := range cc.nodes {
			if n == leader {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := cc.status(sctx, n)
			cancel()
			if err == nil && st.LeaderID != "" && st.LeaderID != leader.id {
				return true, ""
			}
		}
		return false, "no new leader"
	})
	if err != nil {
		out.err = fmt.Errorf("new leader: %w", err)
	} else {
		out.newLeader = time.Since(t0)
	}
	// Time until the dead node's sessions answered elsewhere.
	_ = waitFor(ctx, 30*time.Second, func() (bool, string) {
		for _, c := range clients {
			if c.owner == leader.id && firstOK(c).IsZero() {
				return false, "a session of the dead node has not answered yet"
			}
		}
		return true, ""
	})
	var last time.Time
	for _, c := range clients {
		if f := firstOK(c); c.owner == leader.id && f.After(last) {
			last = f
		}
	}
	if !last.IsZero() {
		out.served = last.Sub(t0)
	}
	if jobs != "" {
		survivor := cc.nodes[(li+1)%len(cc.nodes)]
		out.jobRun = nextJobRun(ctx, cc, survivor, t0)
	}
	sleepCtx(ctx, steady)
	stopLoad()
	wg.Wait()
	out.gets, out.posts = cnt.gets.Load(), cnt.posts.Load()
	out.failG, out.failP, out.redirects = cnt.failedGets.Load(), cnt.failedPosts.Load(), cnt.redirects.Load()
	out.reasons = cnt.reasons
	// Read every session back through a survivor, once the survivors
	// applied everything the new leader committed.
	live := &cohortCluster{p: cc.p, token: cc.token, hc: cc.hc}
	for _, n := range cc.nodes {
		if n != leader {
			live.nodes = append(live.nodes, n)
		}
	}
	if err := caughtUp(ctx, live); err != nil {
		out.err = errors.Join(out.err, fmt.Errorf("survivors catch up: %w", err))
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for i, c := range clients {
		out.stale += c.stale
		out.staleAfter += c.staleAft
		base := bases[(li+1+i%2)%len(bases)]
		var got counterReply
		err := waitFor(ctx, 20*time.Second, func() (bool, string) {
			r, code, err := counterReq(ctx, hc, http.MethodGet, base+path, c.cookie)
			if err != nil || code != http.StatusOK {
				return false, fmt.Sprintf("read back: %d %v", code, err)
			}
			got = r
			return true, ""
		})
		if err != nil {
			out.err = errors.Join(out.err, err)
			continue
		}
		if got.Count < c.acked {
			out.lost++
			e.logf("  session %d (owner %s) lost writes: read %d through %s, acknowledged %d; its last requests:\n    %s",
				i, c.owner, got.Count, base, c.acked, strings.Join(c.history, "\n    "))
		}
	}
	return out
}

// firstOK reads c.firstOK, which the client's goroutine sets once.
func firstOK(c *foClient) time.Time {
	foMu.Lock()
	defer foMu.Unlock()
	return c.firstOK
}

var foMu sync.Mutex

// foLoop is one client's request loop.
func foLoop(ctx context.Context, c *foClient, bases []string, dead []atomic.Bool, cnt *foCounts, killAt *atomic.Int64) {
	tr := &http.Transport{MaxIdleConnsPerHost: 2}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	const path = "/demo/api/counter"
	for j := 0; ctx.Err() == nil; j++ {
		method := http.MethodGet
		if j%10 == 9 {
			method = http.MethodPost
		}
		if method == http.MethodGet {
			cnt.gets.Add(1)
		} else {
			cnt.posts.Add(1)
		}
		ok := false
		for attempt := 0; attempt < 2*len(bases) && ctx.Err() == nil; attempt++ {
			r, code, set, err := counterReqCookie(ctx, hc, method, bases[c.entry]+path, c.cookie)
			if ctx.Err() != nil {
				return
			}
			if set != "" {
				c.cookie = set // a browser keeps the re-stamped route
			}
			c.note(killAt.Load(), method, bases[c.entry], code, r, err)
			if err != nil && isRefused(err) {
				cnt.redirects.Add(1)
				c.entry = (c.entry + 1) % len(bases)
				continue // nothing was sent: safe for any method
			}
			if err != nil || code != http.StatusOK {
				cnt.fail(method, code, err)
				if method == http.MethodPost {
					cnt.failedPosts.Add(1)
					c.possible++
					c.entry = (c.entry + 1) % len(bases)
					break
				}
				if attempt == 0 { // a GET is idempotent: one retry elsewhere
					c.entry = (c.entry + 1) % len(bases)
					continue
				}
				cnt.failedGets.Add(1)
				break
			}
			ok = true
			if method == http.MethodPost {
				c.acked = r.Count
				if r.Count > c.possible {
					c.possible = r.Count
				}
			} else if r.Count < c.acked {
				c.stale++
				if killAt.Load() != 0 {
					c.staleAft++
				}
			}
			break
		}
		if ok && killAt.Load() != 0 {
			foMu.Lock()
			if c.firstOK.IsZero() {
				c.firstOK = time.Now()
			}
			foMu.Unlock()
		}
	}
}

// counterReq sends one counter request with the cookie.
func counterReq(ctx context.Context, hc *http.Client, method, url, cookie string) (counterReply, int, error) {
	r, code, _, err := counterReqCookie(ctx, hc, method, url, cookie)
	return r, code, err
}

// counterReqCookie is counterReq that also returns the cookie the answer
// set again (a re-stamped route after failover), as a browser keeps it.
func counterReqCookie(ctx context.Context, hc *http.Client, method, url, cookie string) (counterReply, int, string, error) {
	var r counterReply
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return r, 0, "", fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Cookie", cookie)
	res, err := hc.Do(req)
	if err != nil {
		return r, 0, "", err
	}
	defer res.Body.Close()
	set := ""
	for _, c := range res.Cookies() {
		if c.Name == "cohort_session" && c.Value != "" {
			set = c.Name + "=" + c.Value
		}
	}
	if res.StatusCode != http.StatusOK {
		return r, res.StatusCode, set, nil
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return r, res.StatusCode, set, fmt.Errorf("decode counter: %w", err)
	}
	return r, res.StatusCode, set, nil
}

// isRefused reports a connection the server refused (nothing was sent).
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// nextJobRun waits for the first run of bench-tick started after t0.
func nextJobRun(ctx context.Context, cc *cohortCluster, n *cohortNode, t0 time.Time) time.Duration {
	var found time.Duration
	_ = waitFor(ctx, 20*time.Second, func() (bool, string) {
		var runs struct {
			Runs []struct {
				StartedAt time.Time `json:"started_at"`
			} `json:"runs"`
		}
		raw := json.RawMessage{}
		if err := cc.adminJSON(ctx, n, http.MethodGet, "/_cohort/api/jobs/bench-tick/runs", &raw); err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal(raw, &runs); err != nil {
			// The answer may be a bare list.
			if err := json.Unmarshal(raw, &runs.Runs); err != nil {
				return false, "decode runs: " + err.Error()
			}
		}
		for _, r := range runs.Runs {
			if r.StartedAt.After(t0) {
				found = r.StartedAt.Sub(t0)
				return true, ""
			}
		}
		return false, "no run after the kill yet"
	})
	return found
}

// hasFlag reports whether `bin serve --help` mentions flag.
func hasFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	return strings.Contains(string(out), flag)
}

func jobsArgs(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"--jobs-file", file}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// reasonList renders failure reasons for a table cell.
func reasonList(m map[string]int) string {
	if len(m) == 0 {
		return "—"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s ×%d", strings.ReplaceAll(k, "|", "/"), v))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
