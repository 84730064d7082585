package testcluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/testcluster"
)

// TestRestartedOwnerServesOnlyAfterCatchingUp kills the node that owns a
// session while the cluster keeps committing, restarts it, and reads the
// session through it at once. hashicorp/raft's heartbeats carry no commit
// index, so a restarted follower hears from the leader before it learns the
// commit index; a catch-up check resting on that contact opened the node
// with nothing applied, and the owner answered as if the session did not
// exist (found by the linearizability checker, seed 1795375272276741276).
func TestRestartedOwnerServesOnlyAfterCatchingUp(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(mountLinHandlers))
	leader := c.WaitLeader(t)
	cookieName := leader.Node().Config().SessionCookie
	for round := 0; round < 3; round++ {
		var owner *testcluster.Node
		for _, nd := range c.Nodes() {
			if nd.ID != c.WaitLeader(t).ID {
				owner = nd
				break
			}
		}
		ck := &sharedCookie{name: cookieName}
		last := ""
		for i := 0; i < 20; i++ {
			last = fmt.Sprintf("r%d-v%d", round, i)
			if _, err := linDo(context.Background(), owner, http.MethodPost, "/lin/put?k=x&v="+last, ck); err != nil {
				t.Fatalf("write through %s: %v", owner.ID, err)
			}
		}
		cookie := ck.get()
		c.Kill(owner.ID)
		// Keep the leader busy while the owner is down, so the restarted
		// node has entries to catch up with.
		other := &sharedCookie{name: cookieName}
		deadline := time.Now().Add(1500 * time.Millisecond)
		for i := 0; time.Now().Before(deadline); i++ {
			nd := c.WaitLeader(t)
			_, _ = linDo(context.Background(), nd, http.MethodPost, fmt.Sprintf("/lin/put?k=y&v=%d", i), other)
		}
		c.Restart(owner.ID)
		var got string
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, owner.URL("/lin/get?k=x"), nil)
			req.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b := make([]byte, 256)
			n, _ := resp.Body.Read(b)
			if resp.StatusCode != http.StatusOK {
				return false, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, b[:n])
			}
			got = string(b[:n])
			return true, ""
		})
		if got != last {
			t.Fatalf("round %d: the restarted owner %s answered %q for the session, want its last acknowledged value %q", round, owner.ID, got, last)
		}
	}
}

// TestDestroyedSessionStaysDestroyed: a node that was down while a session
// was destroyed must not bring it back when it returns, whichever node the
// old cookie names, and a write with the old cookie starts a new session
// under a new token instead of reviving the old one.
func TestDestroyedSessionStaysDestroyed(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(mountLinHandlers))
	leader := c.WaitLeader(t)
	cookieName := leader.Node().Config().SessionCookie
	var down *testcluster.Node
	for _, nd := range c.Nodes() {
		if nd.ID != leader.ID {
			down = nd // a follower owns the session, then misses its end
			break
		}
	}
	ck := &sharedCookie{name: cookieName}
	if _, err := linDo(context.Background(), down, http.MethodPost, "/lin/put?k=x&v=alive", ck); err != nil {
		t.Fatal(err)
	}
	old := ck.get()
	token, _, err := sessions.ParseCookie(old)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(down.ID)
	if _, err := linDo(context.Background(), c.WaitLeader(t), http.MethodPost, "/lin/destroy", ck); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	c.Restart(down.ID)
	for _, nd := range c.Nodes() {
		for _, route := range []string{down.ID, nd.ID} {
			stale := &sharedCookie{name: cookieName, value: sessions.FormatCookie(token, leader.Node().Members().Route(route))}
			var got string
			testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
				v, err := linDo(context.Background(), nd, http.MethodGet, "/lin/get?k=x", stale)
				got = v
				return err == nil, fmt.Sprint(err)
			})
			if got != "" {
				t.Fatalf("the destroyed session answered %q through %s with its cookie routed to %s", got, nd.ID, route)
			}
		}
	}
	fresh := &sharedCookie{name: cookieName, value: old}
	if _, err := linDo(context.Background(), down, http.MethodPost, "/lin/put?k=y&v=new", fresh); err != nil {
		t.Fatal(err)
	}
	newToken, _, err := sessions.ParseCookie(fresh.get())
	if err != nil || newToken == token {
		t.Fatalf("a write with the destroyed session's cookie kept its token (%v)", err)
	}
	if v, err := linDo(context.Background(), down, http.MethodGet, "/lin/get?k=x", fresh); err != nil || v != "" {
		t.Fatalf("the new session carries the destroyed one's data: %q %v", v, err)
	}
}
