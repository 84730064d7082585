package testcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/testcluster"
)

// linInput is one operation on a session key.
type linInput struct {
	put   bool
	key   string
	value string
}

// linOutput is what a get saw; unknown marks a put whose outcome the client
// never learned (it may or may not have taken effect).
type linOutput struct {
	value   string
	unknown bool
}

// registerModel is a register per session key: a put sets it, a get must
// see the latest put that linearizes before it.
var registerModel = porcupine.Model{
	Partition: testcluster.PartitionBy(func(op porcupine.Operation) string { return op.Input.(linInput).key }),
	Init:      func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(linInput), output.(linOutput)
		if in.put {
			return true, in.value
		}
		return out.value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		if in.put {
			return fmt.Sprintf("put(%s, %s) unknown=%v", in.key, in.value, out.unknown)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
	},
}

// mountLinHandlers adds /lin/get and /lin/put, which read and write one key
// of the request's session, on every node.
func mountLinHandlers(n *node.Node) {
	n.HandleApp("GET /lin/get", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Lin-Node", n.ID())
		v := n.Sessions().GetString(r.Context(), r.URL.Query().Get("k"))
		fmt.Fprint(w, v)
	}))
	n.HandleApp("POST /lin/put", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("X-Lin-Node", n.ID())
		n.Sessions().Put(r.Context(), q.Get("k"), q.Get("v"))
		fmt.Fprint(w, "ok")
	}))
	mountCounterLinHandlers(n)
	n.HandleApp("POST /lin/destroy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Lin-Node", n.ID())
		if err := n.Sessions().Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
}

// sharedCookie is the session cookie every client of a schedule sends; a
// re-stamped route from any answer is taken over by all.
type sharedCookie struct {
	mu    sync.Mutex
	name  string
	value string
}

func (s *sharedCookie) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value
}

func (s *sharedCookie) update(resp *http.Response) {
	for _, c := range resp.Cookies() {
		if c.Name == s.name && c.Value != "" {
			s.mu.Lock()
			s.value = c.Value
			s.mu.Unlock()
		}
	}
}

// errNotSent marks a request that surely never reached a node.
var errNotSent = errors.New("not sent")

func linDo(ctx context.Context, nd *testcluster.Node, method, path string, ck *sharedCookie) (string, error) {
	body, _, err := linDoServed(ctx, nd, method, path, ck)
	return body, err
}

// linDoServed also returns the node whose handler answered.
func linDoServed(ctx context.Context, nd *testcluster.Node, method, path string, ck *sharedCookie) (string, string, error) {
	req, _ := http.NewRequestWithContext(ctx, method, nd.URL(path), nil)
	if v := ck.get(); v != "" {
		req.AddCookie(&http.Cookie{Name: ck.name, Value: v})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return "", "", fmt.Errorf("%w: %w", errNotSent, err)
		}
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	ck.update(resp)
	served := resp.Header.Get("X-Lin-Node")
	if resp.StatusCode != http.StatusOK {
		return "", served, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), served, nil
}

// TestSessionHistoriesAreLinearizableUnderFaults runs randomized schedules
// (COHORT_LIN_SCHEDULES, default 20; COHORT_LONG=1 runs 500) of concurrent
// clients reading and writing session keys through random nodes while a
// nemesis kills, isolates, pauses or slows nodes. Every history must be
// linearizable; acknowledged writes must survive. Seeds are printed:
// COHORT_LIN_SEED=N replays one.
func TestSessionHistoriesAreLinearizableUnderFaults(t *testing.T) {
	runLinSchedules(t, 20, 500, runSchedule)
}

// runLinSchedules starts a 3-node cluster with the /lin handlers and a
// disk the nemesis can fill, and runs schedules of run on it:
// COHORT_LIN_SCHEDULES of them (default def, long with COHORT_LONG=1), or
// the one COHORT_LIN_SEED names.
func runLinSchedules(t *testing.T, def, long int, run func(*testing.T, *testcluster.Cluster, string, uint64) porcupine.CheckResult) {
	schedules := def
	if os.Getenv("COHORT_LONG") != "" {
		schedules = long
	}
	if v, err := strconv.Atoi(os.Getenv("COHORT_LIN_SCHEDULES")); err == nil && v > 0 {
		schedules = v
	}
	base := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("COHORT_LIN_SEED"), 10, 64); err == nil {
		base, schedules = v, 1
	}
	c := testcluster.New(t, 3, testcluster.WithDiskLimit(testcluster.NemesisDisk), testcluster.WithNodeSetup(mountLinHandlers), shortBudget)
	c.WaitLeader(t)
	cookieName := c.Nodes()[0].Node().Config().SessionCookie
	violations, undecided := 0, 0
	for s := 0; s < schedules; s++ {
		seed := base + uint64(s)
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			if run(t, c, cookieName, seed) == porcupine.Unknown {
				undecided++
			}
		})
		if !ok {
			violations++
		}
	}
	t.Logf("%d schedules, %d failed, %d undecided by the checker in 30 s (base seed %d)", schedules, violations, undecided, base)
}

// linHistory collects the operations of a schedule's clients.
type linHistory struct {
	mu      sync.Mutex
	ops     []porcupine.Operation
	unknown []int       // indexes of writes without a known outcome
	lats    []opLatency // every request's latency, by the node it went through
}

// latency records how long one request through a node took, answered or
// not: the nemesis' partition and pause faults must leave the cut-off side
// answering within the wait budget (cutOffTooSlow).
func (h *linHistory) latency(l opLatency) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lats = append(h.lats, l)
}

// record adds op; open marks a write whose outcome is unknown (it may
// linearize any time after its call: closed at the end of the history).
func (h *linHistory) record(op porcupine.Operation, open bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if open {
		h.unknown = append(h.unknown, len(h.ops))
	}
	h.ops = append(h.ops, op)
}

// close ends the open writes after end and returns the history.
func (h *linHistory) close(end int64) ([]porcupine.Operation, []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range h.unknown {
		h.ops[i].Return = end + 1
	}
	return h.ops, h.unknown
}

// startSchedule is the common start of a schedule: its rng, the session
// every client shares (created here), and the clock of its history.
func startSchedule(t *testing.T, c *testcluster.Cluster, cookieName string, seed uint64) (*rand.Rand, *sharedCookie, func() int64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ck := &sharedCookie{name: cookieName}
	start := time.Now()
	if _, err := linDo(context.Background(), c.WaitLeader(t), http.MethodPost, "/lin/put?k=init&v=1", ck); err != nil || ck.get() == "" {
		t.Fatalf("create session: %v (cookie %q)", err, ck.get())
	}
	return rng, ck, func() int64 { return int64(time.Since(start)) }
}

// strikeDuring lets the nemesis strike once in the middle of the clients'
// run, stops them (after 2.5 s at least), checks that the side the fault
// cut off answered within the wait budget, heals and returns the fault
// and the leader after. A third of the partition and pause faults last
// longer than the budget, so that a cut-off node holding requests until
// the heal fails the latency check.
func strikeDuring(t *testing.T, c *testcluster.Cluster, rng *rand.Rand, h *linHistory, now func() int64, stop context.CancelFunc, clients *sync.WaitGroup) (string, *testcluster.Node) {
	budget := c.Nodes()[0].Node().Cluster().WaitBudget()
	_, election, _ := raft.Timing(c.Nodes()[0].Node().Config().RaftTimeoutScale)
	<-time.After(time.Duration(300+rng.IntN(500)) * time.Millisecond) // when the fault starts
	struck := now()
	what, undo := c.Strike(rng)
	hold := time.Duration(500+rng.IntN(700)) * time.Millisecond // how long it lasts
	if cutOffVictim(what) != "" && rng.IntN(3) == 0 {
		hold = budget + election + 500*time.Millisecond
	}
	<-time.After(hold)
	undo()
	undone := now()
	if rest := 2500*time.Millisecond - time.Duration(now()); rest > 0 {
		<-time.After(rest) // the clients run 2.5 s at least
	}
	stop()
	clients.Wait()
	h.mu.Lock()
	slow := cutOffTooSlow(h.lats, cutOffVictim(what), struck, undone, budget+election)
	h.mu.Unlock()
	for _, s := range slow {
		t.Errorf("nemesis %q: %s", what, s)
	}
	c.Heal()
	return fmt.Sprintf("%s for %s", what, hold.Round(time.Millisecond)), c.WaitLeader(t)
}

func runSchedule(t *testing.T, c *testcluster.Cluster, cookieName string, seed uint64) porcupine.CheckResult {
	rng, ck, now := startSchedule(t, c, cookieName, seed)
	var h linHistory
	record := h.record
	// The clients run until strikeDuring stops them; each waits longer than
	// the wait budget, so that a node holding a request past it is seen.
	timeout := c.Nodes()[0].Node().Cluster().WaitBudget() + 3*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := []string{"a", "b"}
	var wg sync.WaitGroup
	for client := 0; client < 4; client++ {
		crng := rand.New(rand.NewPCG(seed, uint64(client)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				nodes := c.Nodes()
				nd := nodes[crng.IntN(len(nodes))]
				in := linInput{key: keys[crng.IntN(len(keys))], put: crng.IntN(2) == 0}
				rctx, rcancel := context.WithTimeout(context.Background(), timeout)
				call := now()
				var out, served string
				var err error
				if in.put {
					in.value = fmt.Sprintf("c%d-%d", client, i)
					_, served, err = linDoServed(rctx, nd, http.MethodPost, "/lin/put?k="+in.key+"&v="+url.QueryEscape(in.value), ck)
				} else {
					out, served, err = linDoServed(rctx, nd, http.MethodGet, "/lin/get?k="+in.key, ck)
				}
				meta := "via " + nd.ID + " served by " + served
				ret := now()
				rcancel()
				h.latency(opLatency{via: nd.ID, call: call, ret: ret, what: fmt.Sprintf("%s %v", meta, err)})
				switch {
				case err == nil:
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: linOutput{value: out}, Return: ret, Metadata: meta}, false)
				case errors.Is(err, errNotSent):
					// Never reached a node: it did not happen.
				case in.put && refusedBeforeCommit(err):
					// The node says nothing was proposed: left out of the
					// history, so that a read of its value would make the
					// history illegal if the claim were false.
				case in.put:
					// May have committed: it may linearize any time after its call.
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: linOutput{unknown: true}, Return: math.MaxInt64, Metadata: meta + " err " + err.Error()}, true)
				}
			}
		}()
	}
	what, leader := strikeDuring(t, c, rng, &h, now, cancel, &wg)

	// Final reads through every node: acknowledged writes must be there.
	for _, nd := range c.Nodes() {
		for _, k := range keys {
			call := now()
			var v string
			var err error
			testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
				v, err = linDo(context.Background(), nd, http.MethodGet, "/lin/get?k="+k, ck)
				return err == nil, fmt.Sprint(err)
			})
			record(porcupine.Operation{ClientId: 99, Input: linInput{key: k}, Call: call, Output: linOutput{value: v}, Return: now()}, false)
		}
	}
	ops, unknown := h.close(now())
	return checkHistory(t, registerModel, ops, unknown, seed, what, leader.ID)
}

// checkHistory runs porcupine on a schedule's history, logs the outcome,
// and on a violation writes the history (HTML and text) to the temp dir
// and fails the test with the seed to replay.
func checkHistory(t *testing.T, model porcupine.Model, ops []porcupine.Operation, unknown []int, seed uint64, what, leader string) porcupine.CheckResult {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(model, ops, 30*time.Second)
	t.Logf("seed %d: nemesis %q, %d operations (%d with unknown outcome), leader now %s: %s", seed, what, len(ops), len(unknown), leader, res)
	if len(unknown) > 0 {
		t.Logf("seed %d: unknown outcomes by answer: %s", seed, errorHistogram(ops, unknown))
	}
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("cohort-lin-%d.html", seed))
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(model, info, f)
			f.Close()
		}
		txt := filepath.Join(os.TempDir(), fmt.Sprintf("cohort-lin-%d.txt", seed))
		sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
		var b strings.Builder
		for _, op := range ops {
			fmt.Fprintf(&b, "%8.3f %8.3f c%-2d %-40s %v\n", float64(op.Call)/1e9, float64(op.Return)/1e9, op.ClientId,
				model.DescribeOperation(op.Input, op.Output), op.Metadata)
		}
		_ = os.WriteFile(txt, []byte(b.String()), 0o644)
		t.Logf("history: %s and %s", path, txt)
		t.Fatalf("seed %d: history is not linearizable (nemesis %q); replay with COHORT_LIN_SEED=%d", seed, what, seed)
	case porcupine.Unknown:
		t.Logf("seed %d: checker timed out; history too large to decide", seed)
	}
	return res
}

// errorHistogram counts the answers of the operations at idx (their
// Metadata after "err "), most frequent first, so that a schedule with
// many unknown outcomes says what they were.
func errorHistogram(ops []porcupine.Operation, idx []int) string {
	counts := map[string]int{}
	for _, i := range idx {
		m, _ := ops[i].Metadata.(string)
		_, e, _ := strings.Cut(m, " err ")
		if len(e) > 90 {
			e = e[:90]
		}
		counts[e]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return counts[keys[a]] > counts[keys[b]] })
	var b strings.Builder
	for i, k := range keys {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "%d× %q; ", counts[k], k)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// refusedBeforeCommit reports answers that say a put was refused before
// anything was proposed: the session could not be read (the middleware
// stops before the handler), this follower cannot write its Raft log and
// so forwards nothing (raft.Cluster.Apply; "committed as entry N, but this
// node cannot apply it" is the other case, and stays unknown), or the node
// cannot reach a quorum and does not say the write's outcome is unknown
// (raft.RefusalMessage adds that whenever the write may have been
// proposed). Without this, a full disk, and a node cut off for 5.5 s that
// refuses at once, left hundreds of unknown outcomes and the checker
// could not decide the history in time; and a refusal that lies (a write
// committed, then reported as refused) makes the history illegal.
func refusedBeforeCommit(err error) bool {
	m := err.Error()
	return strings.Contains(m, "read session: ") ||
		strings.Contains(m, "apply sessions.commit: "+raft.ErrLogUnwritable.Error()) ||
		(strings.Contains(m, raft.ErrNoQuorum.Error()) && !strings.Contains(m, "outcome is unknown"))
}

// opLatency is one operation of a schedule: the node it entered, when it
// was called and returned (nanoseconds since the schedule began).
type opLatency struct {
	via       string
	call, ret int64
	what      string
}

// cutOffVictim names the node a partition or pause fault cut off ("" for
// the other faults): "isolate leader n1", "pause leader n1", "isolate n2".
func cutOffVictim(what string) string {
	if !strings.HasPrefix(what, "isolate ") && !strings.HasPrefix(what, "pause leader ") {
		return ""
	}
	f := strings.Fields(what)
	return f[len(f)-1]
}

// cutOffTooSlow lists the operations through victim that ran while it was
// cut off (between struck and undone) and took longer than limit (the wait
// budget, plus one election timeout for scheduling): a node cut off from
// its quorum must answer, not hold requests until the client gives up.
func cutOffTooSlow(ops []opLatency, victim string, struck, undone int64, limit time.Duration) []string {
	if victim == "" {
		return nil
	}
	var out []string
	for _, op := range ops {
		if op.via != victim || op.call >= undone || op.ret <= struck {
			continue
		}
		if took := time.Duration(op.ret - op.call); took > limit {
			out = append(out, fmt.Sprintf("an operation through cut-off %s took %s, longer than the wait budget (%s with slack): %s", victim, took.Round(time.Millisecond), limit, op.what))
		}
	}
	return out
}
