package node_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/testcluster"
)

// TestHTTPJobPathCallsTheLeadersOwnApp declares http jobs by path: the
// leader calls the app behind --app-upstream with the run's headers; a
// redirect fails the run with a clear message.
func TestHTTPJobPathCallsTheLeadersOwnApp(t *testing.T) {
	var mu sync.Mutex
	var calls []http.Header
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/jobs/tick":
			mu.Lock()
			calls = append(calls, r.Header.Clone())
			mu.Unlock()
		case "/jobs/moved":
			http.Redirect(w, r, "http://203.0.113.1/elsewhere", http.StatusFound)
		}
	}))
	t.Cleanup(app.Close)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.App.Upstream = app.URL
		cfg.Jobs.Specs = []config.JobSpec{
			{Name: "tick", Schedule: "@every 1s", HTTP: &config.JobHTTP{Path: "/jobs/tick"}},
			{Name: "moved", Schedule: "@every 1s", HTTP: &config.JobHTTP{Path: "/jobs/moved"}},
		}
	}))
	leader := c.WaitLeader(t)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 2, "no call of the app's job path yet"
	})
	mu.Lock()
	for _, h := range calls {
		if h.Get("X-Cohort-Job") != "tick" || h.Get("X-Cohort-Fence") == "" || h.Get("X-Cohort-Run-Key") == "" || h.Get("X-Cohort-Node") != leader.ID {
			t.Errorf("job call headers %v: want X-Cohort-Job tick, a fence, a run key, X-Cohort-Node %s", h, leader.ID)
		}
	}
	mu.Unlock()
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		_, b := leader.Do(t, http.MethodGet, "/_cohort/api/jobs/moved/runs", nil)
		return strings.Contains(string(b), "redirect"), "no failed run naming the redirect: " + string(b)
	})
}
