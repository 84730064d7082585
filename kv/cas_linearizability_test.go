package kv_test

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohortserver/cohort/testcluster"
)

// casOp is a memcached read (gets) or compare-and-swap of one key. Every
// value written is unique, so a value names one version of the key.
type casOp struct {
	cas    bool
	key    string
	expect string // cas: the value the client read (and whose unique it sends)
	value  string // cas: the new value
}

type casOut struct {
	value   string // read: what gets returned
	stored  bool   // cas: STORED (else EXISTS)
	unknown bool
}

var casModel = porcupine.Model{
	Partition: testcluster.PartitionBy(func(op porcupine.Operation) string { return op.Input.(casOp).key }),
	Init:      func() any { return "init" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(casOp), output.(casOut)
		st := state.(string)
		switch {
		case !in.cas:
			return out.value == st, st
		case out.unknown:
			if st == in.expect {
				return true, in.value
			}
			return true, st
		case out.stored:
			return st == in.expect, in.value
		default:
			return st != in.expect, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(casOp), output.(casOut)
		if in.cas {
			return fmt.Sprintf("cas %s %s->%s stored=%v unknown=%v", in.key, in.expect, in.value, out.stored, out.unknown)
		}
		return fmt.Sprintf("gets %s -> %q", in.key, out.value)
	},
}

// mcClient is a minimal memcached text client for the checker.
type mcClient struct {
	c  net.Conn
	br *bufio.Reader
}

func mcDial(addr string) (*mcClient, error) {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	return &mcClient{c: c, br: bufio.NewReader(c)}, nil
}

func (m *mcClient) line() (string, error) {
	l, err := m.br.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// gets returns the value and unique of key.
func (m *mcClient) gets(key string) (string, uint64, error) {
	fmt.Fprintf(m.c, "gets %s\r\n", key)
	l, err := m.line()
	if err != nil {
		return "", 0, err
	}
	f := strings.Fields(l)
	if len(f) != 5 || f[0] != "VALUE" {
		return "", 0, fmt.Errorf("gets: %q", l)
	}
	n, _ := strconv.Atoi(f[3])
	u, _ := strconv.ParseUint(f[4], 10, 64)
	v, err := m.line()
	if err != nil || len(v) != n {
		return "", 0, fmt.Errorf("gets data %q: %v", v, err)
	}
	if end, err := m.line(); err != nil || end != "END" {
		return "", 0, fmt.Errorf("gets end %q: %v", end, err)
	}
	return v, u, nil
}

func (m *mcClient) cas(key, value string, unique uint64) (string, error) {
	fmt.Fprintf(m.c, "cas %s 0 0 %d %d\r\n%s\r\n", key, len(value), unique, value)
	return m.line()
}

// TestMemcachedCasIsLinearizableUnderFaults: clients read with gets and
// swap with cas through random nodes under the shared nemesis; porcupine
// checks the histories (20 schedules by default, 500 with COHORT_LONG=1).
func TestMemcachedCasIsLinearizableUnderFaults(t *testing.T) {
	schedules := 20
	if os.Getenv("COHORT_LONG") != "" {
		schedules = 500
	}
	if v, err := strconv.Atoi(os.Getenv("COHORT_KV_LIN_SCHEDULES")); err == nil && v > 0 {
		schedules = v
	}
	base := uint64(time.Now().UnixNano())
	k := newKVCluster(t, 3, testcluster.WithDiskLimit(testcluster.NemesisDisk))
	for s := 0; s < schedules; s++ {
		seed := base + uint64(s)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runCasSchedule(t, k, seed) })
	}
}

func runCasSchedule(t *testing.T, k *kvCluster, seed uint64) {
	ids := []string{"n1", "n2", "n3"}
	key := fmt.Sprintf("cas%d", seed)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		m, err := mcDial(k.mc["n1"])
		if err != nil {
			return false, err.Error()
		}
		defer m.c.Close()
		fmt.Fprintf(m.c, "set %s 0 0 4\r\ninit\r\n", key)
		l, err := m.line()
		return l == "STORED", fmt.Sprintf("set: %q %v", l, err)
	})
	h := newHistory()
	what := underNemesis(t, k, seed, func(ctx context.Context, client int, crng *rand.Rand) {
		for i := 0; ctx.Err() == nil; i++ {
			id := ids[crng.IntN(3)]
			m, err := mcDial(k.mc[id])
			if err != nil {
				continue
			}
			call := h.now()
			v, u, err := m.gets(key)
			ret := h.now()
			if err != nil {
				m.c.Close()
				continue
			}
			h.add(porcupine.Operation{ClientId: client, Input: casOp{key: key}, Call: call, Output: casOut{value: v}, Return: ret, Metadata: "via " + id}, false)
			in := casOp{cas: true, key: key, expect: v, value: fmt.Sprintf("c%d-%d", client, i)}
			call = h.now()
			l, err := m.cas(key, in.value, u)
			ret = h.now()
			m.c.Close()
			switch {
			case err == nil && l == "STORED":
				h.add(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: casOut{stored: true}, Return: ret, Metadata: "via " + id}, false)
			case err == nil && l == "EXISTS":
				h.add(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: casOut{}, Return: ret, Metadata: "via " + id}, false)
			default:
				h.add(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: casOut{unknown: true}, Return: math.MaxInt64, Metadata: fmt.Sprintf("via %s: %q %v", id, l, err)}, true)
			}
		}
	})
	for _, id := range ids {
		var v string
		var call int64
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			m, err := mcDial(k.mc[id])
			if err != nil {
				return false, err.Error()
			}
			defer m.c.Close()
			call = h.now()
			v, _, err = m.gets(key)
			return err == nil, fmt.Sprintf("final gets via %s: %v", id, err)
		})
		h.add(porcupine.Operation{ClientId: 99, Input: casOp{key: key}, Call: call, Output: casOut{value: v}, Return: h.now()}, false)
	}
	ops := h.done()
	res := porcupine.CheckOperationsTimeout(casModel, ops, 30*time.Second)
	t.Logf("seed %d: nemesis %q, %d operations (%d unknown): %s", seed, what, len(ops), len(h.open), res)
	if res == porcupine.Illegal {
		t.Fatalf("seed %d: memcached gets/cas history is not linearizable (nemesis %q)", seed, what)
	}
}
