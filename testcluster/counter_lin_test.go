package testcluster_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/testcluster"
)

// ctrInput is one operation on a session counter: an increment, a
// compare-and-swap from old to new, or a read.
type ctrInput struct {
	kind     string // "incr", "cas", "get"
	key      string
	old, new int64
}

// ctrOutput is what the operation answered: the new value of an incr, the
// value a get saw, whether a cas swapped; unknown marks a write whose
// outcome the client never learned.
type ctrOutput struct {
	value   int64
	swapped bool
	unknown bool
}

// counterModel is an integer per session key changed by atomic session
// operations: an incr returns the value after it, a cas swaps only from
// the value the counter holds, a get sees the value. A write with an
// unknown outcome may take effect at any point after its call (at the
// end, after every read, when it did not happen).
var counterModel = porcupine.Model{
	Partition: testcluster.PartitionBy(func(op porcupine.Operation) string { return op.Input.(ctrInput).key }),
	Init:      func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in, out, v := input.(ctrInput), output.(ctrOutput), state.(int64)
		switch in.kind {
		case "incr":
			return out.unknown || out.value == v+1, v + 1
		case "cas":
			if v == in.old {
				return out.unknown || out.swapped, in.new
			}
			return out.unknown || !out.swapped, v
		}
		return out.value == v, v
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(ctrInput), output.(ctrOutput)
		switch {
		case out.unknown:
			return fmt.Sprintf("%s(%s %d→%d) unknown", in.kind, in.key, in.old, in.new)
		case in.kind == "incr":
			return fmt.Sprintf("incr(%s) -> %d", in.key, out.value)
		case in.kind == "cas":
			return fmt.Sprintf("cas(%s, %d→%d) -> %v", in.key, in.old, in.new, out.swapped)
		}
		return fmt.Sprintf("get(%s) -> %d", in.key, out.value)
	},
}

// mountCounterLinHandlers adds /lin/incr, /lin/cas and /lin/geti, the
// atomic session operations the counter model checks.
func mountCounterLinHandlers(n *node.Node) {
	n.HandleApp("POST /lin/incr", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Lin-Node", n.ID())
		v, err := n.Sessions().Incr(r.Context(), r.URL.Query().Get("k"), 1)
		if err != nil {
			http.Error(w, err.Error(), sessions.StatusFor(err))
			return
		}
		fmt.Fprint(w, v)
	}))
	n.HandleApp("POST /lin/cas", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("X-Lin-Node", n.ID())
		old, _ := strconv.ParseInt(q.Get("old"), 10, 64)
		nv, _ := strconv.ParseInt(q.Get("new"), 10, 64)
		var oldv any = old
		if old == 0 {
			oldv = nil // 0 is the absent counter
		}
		ok, err := n.Sessions().CompareAndSwap(r.Context(), q.Get("k"), oldv, nv)
		if err != nil {
			http.Error(w, err.Error(), sessions.StatusFor(err))
			return
		}
		fmt.Fprint(w, ok)
	}))
	n.HandleApp("GET /lin/geti", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Lin-Node", n.ID())
		fmt.Fprint(w, n.Sessions().GetInt64(r.Context(), r.URL.Query().Get("k")))
	}))
}

// TestSessionCounterHistoriesAreLinearizableUnderFaults is the porcupine
// check of the atomic session operations: concurrent clients increment,
// compare-and-swap and read session counters through random nodes while
// the shared nemesis strikes. COHORT_LIN_SCHEDULES (default 6;
// COHORT_LONG=1 runs 200) and COHORT_LIN_SEED as for the register check.
func TestSessionCounterHistoriesAreLinearizableUnderFaults(t *testing.T) {
	runLinSchedules(t, 6, 200, runCounterSchedule)
}

func runCounterSchedule(t *testing.T, c *testcluster.Cluster, cookieName string, seed uint64) porcupine.CheckResult {
	rng, ck, now := startSchedule(t, c, cookieName, seed)
	var h linHistory
	record := h.record
	// The clients run until strikeDuring stops them; each waits longer than
	// the wait budget, so that a node holding a request past it is seen.
	timeout := c.Nodes()[0].Node().Cluster().WaitBudget() + 3*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := []string{"x", "y"}
	var wg sync.WaitGroup
	for client := 0; client < 4; client++ {
		crng := rand.New(rand.NewPCG(seed, uint64(client)))
		last := map[string]int64{} // the last value this client saw per key: its cas guesses from it
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				nodes := c.Nodes()
				nd := nodes[crng.IntN(len(nodes))]
				in := ctrInput{key: keys[crng.IntN(len(keys))]}
				var method, path string
				switch d := crng.IntN(10); {
				case d < 5:
					in.kind, method, path = "incr", http.MethodPost, "/lin/incr?k="+in.key
				case d < 7:
					in.kind, in.old = "cas", last[in.key]
					in.new = in.old + 100
					method, path = http.MethodPost, fmt.Sprintf("/lin/cas?k=%s&old=%d&new=%d", in.key, in.old, in.new)
				default:
					in.kind, method, path = "get", http.MethodGet, "/lin/geti?k="+in.key
				}
				rctx, rcancel := context.WithTimeout(context.Background(), timeout)
				call := now()
				body, served, err := linDoServed(rctx, nd, method, path, ck)
				ret := now()
				rcancel()
				meta := "via " + nd.ID + " served by " + served
				h.latency(opLatency{via: nd.ID, call: call, ret: ret, what: fmt.Sprintf("%s %v", meta, err)})
				var out ctrOutput
				if err == nil {
					switch in.kind {
					case "cas":
						out.swapped = body == "true"
						if out.swapped {
							last[in.key] = in.new
						}
					default:
						out.value, err = strconv.ParseInt(body, 10, 64)
						last[in.key] = out.value
					}
				}
				switch {
				case err == nil:
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret, Metadata: meta}, false)
				case errors.Is(err, errNotSent), in.kind == "get":
				case refusedBeforeCommit(err) || isMovedRefusal(err):
					// Nothing was applied: left out, so a history that
					// shows its effect is illegal.
				default:
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: ctrOutput{unknown: true}, Return: math.MaxInt64, Metadata: meta + " err " + err.Error()}, true)
				}
			}
		}()
	}
	what, leader := strikeDuring(t, c, rng, &h, now, cancel, &wg)
	for _, nd := range c.Nodes() {
		for _, k := range keys {
			call := now()
			var body string
			testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
				var err error
				body, err = linDo(context.Background(), nd, http.MethodGet, "/lin/geti?k="+k, ck)
				return err == nil, fmt.Sprint(err)
			})
			v, _ := strconv.ParseInt(body, 10, 64)
			record(porcupine.Operation{ClientId: 99, Input: ctrInput{kind: "get", key: k}, Call: call, Output: ctrOutput{value: v}, Return: now()}, false)
		}
	}
	ops, unknown := h.close(now())
	return checkHistory(t, counterModel, ops, unknown, seed, what, leader.ID)
}

// isMovedRefusal reports the 409 of a commit Apply refused because another
// node took the session over: nothing of it was applied.
func isMovedRefusal(err error) bool {
	return err != nil && len(err.Error()) > 8 && err.Error()[:8] == "HTTP 409"
}
