package console_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/broadcast"
	"github.com/cohortserver/cohort/console"
	"github.com/cohortserver/cohort/internal/syncbuf"
	"github.com/cohortserver/cohort/testcluster"
)

// clusterLogin posts token to nd's console login from the loopback address from,
// so that every attempt counts against its own client bucket.
func clusterLogin(t *testing.T, nd *testcluster.Node, from, token string) int {
	t.Helper()
	client := &http.Client{
		Transport:     &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	resp, err := client.PostForm("http://"+nd.HTTPAddr+console.Prefix+"login", url.Values{"token": {token}})
	if err != nil {
		t.Fatalf("login on %s from %s: %v", nd.ID, from, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// sharedFailures sums the failed logins from origin that nd applied from
// the broadcast.
func sharedFailures(nd *testcluster.Node, origin string) int {
	sum := 0
	for _, m := range nd.Node().Broadcast().Since(0, time.Time{}, broadcast.TopicLoginFailures) {
		var f struct{ Failures int }
		if m.Origin == origin && json.Unmarshal(m.Payload, &f) == nil {
			sum += f.Failures
		}
	}
	return sum
}

// TestLoginLimitIsClusterWide: failed console logins spread over the nodes
// of a 3-node cluster, each node seeing fewer than the all-clients limit
// (30 a minute) and each client fewer than its own (5), hit the limit of
// the cluster: after 20 failures on n1, n2 refuses before its own 20th and
// n3 refuses too, and the refusals are logged. Without the sharing each
// node would check every wrong token it got.
func TestLoginLimitIsClusterWide(t *testing.T) {
	var logs syncbuf.Buffer
	c := testcluster.New(t, 3, testcluster.WithLogWriter(&logs))
	c.WaitLeader(t)
	c.WaitReady(t)
	nodes := c.Nodes()
	client := 0
	wrong := func(nd *testcluster.Node, n int) (tried, refused int) {
		for range n {
			client++
			switch code := clusterLogin(t, nd, fmt.Sprintf("127.0.1.%d", client), "wrong-token"); code {
			case http.StatusSeeOther:
				tried++
			case http.StatusTooManyRequests:
				refused++
			default:
				t.Fatalf("failed login on %s: HTTP %d", nd.ID, code)
			}
		}
		return tried, refused
	}
	if tried, _ := wrong(nodes[0], 20); tried != 20 {
		t.Fatalf("%s checked %d of 20 wrong tokens, want all (under its limit)", nodes[0].ID, tried)
	}
	// The others learn of them through the log.
	for _, nd := range nodes[1:] {
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			got := sharedFailures(nd, nodes[0].ID)
			return got == 20, fmt.Sprintf("%s applied %d of %s's 20 failures", nd.ID, got, nodes[0].ID)
		})
	}
	tried, refused := wrong(nodes[1], 20)
	t.Logf("%s: %d wrong tokens checked, %d refused", nodes[1].ID, tried, refused)
	if refused == 0 {
		t.Errorf("%s checked all 20 wrong tokens after %s's 20: its limit did not count them", nodes[1].ID, nodes[0].ID)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		got := sharedFailures(nodes[2], nodes[1].ID)
		return got == tried, fmt.Sprintf("%s applied %d of %s's %d failures", nodes[2].ID, got, nodes[1].ID, tried)
	})
	tried3, refused3 := wrong(nodes[2], 10)
	t.Logf("%s: %d wrong tokens checked, %d refused", nodes[2].ID, tried3, refused3)
	if refused3 == 0 {
		t.Errorf("%s checked all 10 wrong tokens after %d elsewhere: its limit did not count them", nodes[2].ID, 20+tried)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), "console login rate-limited") && strings.Contains(logs.String(), "limit=cluster"),
			"the cluster-wide refusal is logged"
	})
}

// TestLoginLimitWithoutQuorum: with two of three nodes stopped the
// failures cannot be shared, yet the survivor still limits its own to 30
// a minute (refill while the loop runs may let one or two more in).
func TestLoginLimitWithoutQuorum(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitLeader(t)
	c.WaitReady(t)
	nodes := c.Nodes()
	c.Stop(nodes[1].ID)
	c.Stop(nodes[2].ID)
	tried := 0
	for i := range 35 {
		if clusterLogin(t, nodes[0], fmt.Sprintf("127.0.3.%d", i+1), "wrong-token") == http.StatusSeeOther {
			tried++
		}
	}
	if tried < 30 || tried == 35 {
		t.Fatalf("%s checked %d of 35 wrong tokens without a quorum, want its own limit of 30", nodes[0].ID, tried)
	}
}
