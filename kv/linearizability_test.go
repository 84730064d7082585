package kv_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/gomodule/redigo/redis"

	"github.com/cohortserver/cohort/testcluster"
)

// regOp is one operation on a key: SET when put, else GET.
type regOp struct {
	put   bool
	key   string
	value string
}

type regOut struct {
	value   string // "" = missing
	unknown bool
}

// kvModel is one register per key.
var kvModel = porcupine.Model{
	Partition: testcluster.PartitionBy(func(op porcupine.Operation) string { return op.Input.(regOp).key }),
	Init:      func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(regOp), output.(regOut)
		if in.put {
			return true, in.value
		}
		return out.value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regOp), output.(regOut)
		if in.put {
			return fmt.Sprintf("SET %s %s unknown=%v", in.key, in.value, out.unknown)
		}
		return fmt.Sprintf("GET %s -> %q", in.key, out.value)
	},
}

// TestRESPHistoriesAreLinearizableUnderFaults runs schedules of clients
// that SET and GET keys over RESP through random nodes while the shared
// nemesis kills, isolates, pauses, slows or fills the disk of a node.
// Every history must be linearizable. Schedules: 20 by default (as in CI),
// COHORT_LONG=1 runs 500, COHORT_KV_LIN_SCHEDULES=N sets the count,
// COHORT_KV_LIN_SEED=N replays one.
func TestRESPHistoriesAreLinearizableUnderFaults(t *testing.T) {
	schedules := 20
	if os.Getenv("COHORT_LONG") != "" {
		schedules = 500
	}
	if v, err := strconv.Atoi(os.Getenv("COHORT_KV_LIN_SCHEDULES")); err == nil && v > 0 {
		schedules = v
	}
	base := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("COHORT_KV_LIN_SEED"), 10, 64); err == nil {
		base, schedules = v, 1
	}
	k := newKVCluster(t, 3, testcluster.WithDiskLimit(testcluster.NemesisDisk))
	failed := 0
	for s := 0; s < schedules; s++ {
		seed := base + uint64(s)
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runKVSchedule(t, k, seed) }) {
			failed++
		}
	}
	t.Logf("%d schedules, %d failed (base seed %d)", schedules, failed, base)
}

func runKVSchedule(t *testing.T, k *kvCluster, seed uint64) {
	ids := []string{"n1", "n2", "n3"}
	keys := []string{fmt.Sprintf("a%d", seed), fmt.Sprintf("b%d", seed)}
	h := newHistory()
	what := underNemesis(t, k, seed, func(ctx context.Context, client int, crng *rand.Rand) {
		for i := 0; ctx.Err() == nil; i++ {
			id := ids[crng.IntN(len(ids))]
			in := regOp{key: keys[crng.IntN(len(keys))], put: crng.IntN(2) == 0}
			c, err := redis.Dial("tcp", k.redis[id], redis.DialConnectTimeout(500*time.Millisecond),
				redis.DialReadTimeout(3*time.Second), redis.DialWriteTimeout(time.Second))
			if err != nil {
				continue // node down: nothing sent
			}
			call := h.now()
			var v string
			if in.put {
				in.value = fmt.Sprintf("c%d-%d", client, i)
				_, err = c.Do("SET", in.key, in.value)
			} else {
				v, err = redis.String(c.Do("GET", in.key))
				if errors.Is(err, redis.ErrNil) {
					v, err = "", nil
				}
			}
			ret := h.now()
			c.Close()
			meta := "via " + id
			switch {
			case err == nil:
				h.add(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: regOut{value: v}, Return: ret, Metadata: meta}, false)
			case in.put:
				// Any failed write may have committed.
				h.add(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: regOut{unknown: true}, Return: math.MaxInt64, Metadata: meta + " err " + err.Error()}, true)
			}
		}
	})
	// Final reads through every node.
	for _, id := range ids {
		for _, key := range keys {
			var v string
			var call int64
			testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
				c, err := redis.Dial("tcp", k.redis[id], redis.DialReadTimeout(5*time.Second))
				if err != nil {
					return false, err.Error()
				}
				defer c.Close()
				call = h.now()
				v, err = redis.String(c.Do("GET", key))
				if errors.Is(err, redis.ErrNil) {
					v, err = "", nil
				}
				return err == nil, fmt.Sprintf("final GET %s on %s: %v", key, id, err)
			})
			h.add(porcupine.Operation{ClientId: 99, Input: regOp{key: key}, Call: call, Output: regOut{value: v}, Return: h.now(), Metadata: "final via " + id}, false)
		}
	}
	ops := h.done()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, 30*time.Second)
	t.Logf("seed %d: nemesis %q, %d operations (%d unknown outcomes): %s", seed, what, len(ops), len(h.open), res)
	if res == porcupine.Illegal {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("cohort-kv-lin-%d.html", seed))
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(kvModel, info, f)
			f.Close()
		}
		sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
		var b strings.Builder
		for _, op := range ops {
			fmt.Fprintf(&b, "%8.3f %8.3f c%-2d %-40s %v\n", float64(op.Call)/1e9, float64(op.Return)/1e9, op.ClientId,
				kvModel.DescribeOperation(op.Input, op.Output), op.Metadata)
		}
		txt := strings.TrimSuffix(path, ".html") + ".txt"
		_ = os.WriteFile(txt, []byte(b.String()), 0o644)
		t.Fatalf("seed %d: RESP history is not linearizable (nemesis %q); see %s; replay with COHORT_KV_LIN_SEED=%d", seed, what, txt, seed)
	}
}
