package node_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

func TestLocalEndpointsAnswerTheLoopbackAppOnly(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(t)
	get := func(nd *testcluster.Node, path string, hdr map[string]string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, nd.URL(path), nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	for _, nd := range c.Nodes() {
		code, out := get(nd, "/_cohort/local/is-leader", nil)
		if code != http.StatusOK || out["leader"] != (nd.ID == leader.ID) || out["leader_id"] != leader.ID || out["node_id"] != nd.ID {
			t.Fatalf("%s: is-leader = %d %v, want leader=%v", nd.ID, code, out, nd.ID == leader.ID)
		}
	}
	f := c.Followers()[0]
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		code, out := get(f, "/_cohort/local/members", nil)
		ms, _ := out["members"].([]any)
		return code == http.StatusOK && len(ms) == 3 && out["leader_id"] == leader.ID, "members"
	})
	for _, h := range []map[string]string{{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}} {
		if code, out := get(f, "/_cohort/local/is-leader", h); code != http.StatusForbidden {
			t.Fatalf("a request through a proxy (%v) got %d %v, want 403", h, code, out)
		}
	}
}
