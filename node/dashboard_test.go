package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/testport"
	"github.com/cohortserver/cohort/testcluster"
)

// dashboardFile is the Grafana dashboard shipped for operators.
const dashboardFile = "../ops/grafana-dashboard.json"

// notCharted are the cohort families that have no panel, each with why an
// operator would not alert on it.
var notCharted = map[string]string{
	"cohort_sessions_in_memory":              "Sessions minus passivated, charted as those two",
	"cohort_sessions_bytes":                  "capacity detail; memory_bytes is the figure that hurts",
	"cohort_sessions_principals":             "a business figure, not a health one",
	"cohort_sessions_applied_entries_total":  "follows the Raft apply rate",
	"cohort_sessions_touches_total":          "expiry extensions, follow session reads",
	"cohort_sessions_sweeps_total":           "one small proposal per sweep interval",
	"cohort_files_catchup_running":           "charted through missing - done files",
	"cohort_jobs_next_run_timestamp_seconds": "alerted through schedule_lag_seconds",
	"cohort_jobs_last_run_timestamp_seconds": "alerted through schedule_lag_seconds",
	"cohort_raft_last_index":                 "the commit index panel covers it",
}

// dashboardSeries returns every series name the dashboard's queries read.
func dashboardSeries(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	name := regexp.MustCompile(`\b(?:cohort|go|process|promhttp)_[a-zA-Z0-9_:]*`)
	out := map[string][]string{} // series -> panel titles
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, s := range name.FindAllString(tg.Expr, -1) {
				out[s] = append(out[s], p.Title)
			}
		}
	}
	return out
}

// family maps a series name to its family (histogram and summary series
// carry a suffix).
func family(series string, fams map[string]*dto.MetricFamily) (string, bool) {
	if _, ok := fams[series]; ok {
		return series, true
	}
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(series, suf); ok {
			if f, ok := fams[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
				return base, true
			}
		}
	}
	return "", false
}

// TestDashboardMatchesMetrics checks ops/grafana-dashboard.json against a
// node's /_cohort/metrics: every series a panel names exists, and every
// cohort family has a panel (or a reason in notCharted).
func TestDashboardMatchesMetrics(t *testing.T) {
	// The Redis and memcached listeners on, so their families exist.
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.KV.RedisAddr, cfg.KV.MemcachedAddr = testport.Addr(t), testport.Addr(t)
	}))
	nd := c.WaitLeader(t)
	c.WaitReady(t)
	// Traffic so the labelled families have children: a request through the
	// front and a job run.
	if code, b := nd.Do(t, http.MethodGet, "/demo/api/counter", nil); code != http.StatusOK {
		t.Fatalf("demo counter: HTTP %d %s", code, b)
	}
	if code, b := nd.Do(t, http.MethodPost, "/_cohort/api/jobs/demo-tick/run", nil); code >= 300 {
		t.Fatalf("run demo-tick: HTTP %d %s", code, b)
	}
	var fams map[string]*dto.MetricFamily
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		req, _ := http.NewRequest(http.MethodGet, nd.URL("/_cohort/metrics"), nil)
		req.Header.Set("Authorization", "Bearer "+c.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = parser.TextToMetricFamilies(&body)
		if err != nil {
			return false, err.Error()
		}
		_, runs := fams["cohort_jobs_runs_total"]
		_, reqs := fams["cohort_front_requests_total"]
		return runs && reqs, "no job run or front request counted yet"
	})
	if _, err := nd.Node().Metrics().Gatherer().Gather(); err != nil {
		t.Errorf("gathering the node's metrics: %v", err)
	}
	if f, ok := fams["promhttp_metric_handler_errors_total"]; ok {
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() > 0 {
				t.Errorf("the scrape had collector errors (an undeclared figure?): %v", m)
			}
		}
	}
	charted := map[string]bool{}
	for series, panels := range dashboardSeries(t) {
		fam, ok := family(series, fams)
		if !ok {
			t.Errorf("panel %q charts %s, which /_cohort/metrics does not have", panels[0], series)
			continue
		}
		charted[fam] = true
	}
	var missing []string
	for name := range fams {
		if strings.HasPrefix(name, "cohort_") && !charted[name] && notCharted[name] == "" {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("families without a panel (add one to %s, or a reason to notCharted): %v", dashboardFile, missing)
	}
	for name := range notCharted {
		if charted[name] {
			t.Errorf("%s has a panel and a reason not to: drop it from notCharted", name)
		}
	}
}
