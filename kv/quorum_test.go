package kv_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

// TestCutOffNodeRefusesAtOnce isolates a follower: once it knows it is cut
// off from its quorum, Redis and memcached commands through it are
// answered with the protocols' errors naming the lack of quorum, without
// waiting out the command timeout; after the heal it serves again.
func TestCutOffNodeRefusesAtOnce(t *testing.T) {
	k := newKVCluster(t, 3)
	k.WaitLeader(t)
	f := k.Followers()[0]
	c := dial(t, k.redis[f.ID])
	defer c.Close()
	doIdem(t, c, "SET", "k", "before")

	k.Isolate(f.ID)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		err := f.Node().Cluster().CutOff()
		return err != nil, "the isolated follower does not know it is cut off yet"
	})
	for _, cmd := range [][]any{{"SET", "k", "during"}, {"GET", "k"}, {"INCR", "n"}} {
		start := time.Now()
		_, err := c.Do(cmd[0].(string), cmd[1:]...)
		took := time.Since(start)
		t.Logf("%v through cut-off %s: %v in %s", cmd, f.ID, err, took.Round(time.Millisecond))
		if err == nil || !strings.HasPrefix(err.Error(), "CLUSTERDOWN this node cannot reach a quorum") {
			t.Fatalf("%v through cut-off %s: %v, want CLUSTERDOWN naming the quorum", cmd, f.ID, err)
		}
		if budget := f.Node().Cluster().WaitBudget(); took >= budget {
			t.Fatalf("%v through cut-off %s took %s, the wait budget is %s", cmd, f.ID, took, budget)
		}
	}
	mc, err := net.DialTimeout("tcp", k.mc[f.ID], 2*time.Second)
	if err != nil {
		t.Fatalf("dial memcached on %s: %v", f.ID, err)
	}
	defer mc.Close()
	_ = mc.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(mc)
	for _, req := range []string{"set m 0 0 1\r\nx\r\n", "get m\r\n"} {
		start := time.Now()
		fmt.Fprint(mc, req)
		line, err := r.ReadString('\n')
		t.Logf("memcached %q through cut-off %s: %q %v in %s", strings.Fields(req)[0], f.ID, line, err, time.Since(start).Round(time.Millisecond))
		if !strings.HasPrefix(line, "SERVER_ERROR this node cannot reach a quorum") {
			t.Fatalf("memcached %q through cut-off %s: %q %v, want SERVER_ERROR naming the quorum", req, f.ID, line, err)
		}
	}

	k.Heal()
	doIdem(t, c, "SET", "k", "after")
	eventually(t, k.redis[f.ID], "after", "GET", "k")
}
