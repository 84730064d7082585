package metrics

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cohortserver/cohort/raft"
)

type fakeRaft struct{ in raft.Info }

func (f fakeRaft) Info() raft.Info { return f.in }
func (f fakeRaft) Servers() ([]raft.Server, error) {
	return []raft.Server{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3"}}, nil
}

func scrape(t testing.TB, r *Registry) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_cohort/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d", rec.Code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, rec.Body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestRaftCollector(t *testing.T) {
	reg := New()
	rc := NewRaft(fakeRaft{raft.Info{State: "follower", Term: 7, CommitIndex: 100, AppliedIndex: 99, LastIndex: 101, LastContact: time.Now().Add(-2 * time.Second)}})
	if err := reg.Register(rc); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(rc); err == nil {
		t.Fatal("registering twice succeeded")
	}
	rc.LeaderChanged("n2")
	rc.LeaderChanged("")
	rc.Applied("member.state", 3*time.Millisecond)
	got := scrape(t, reg)
	tests := []struct {
		key  string
		want float64
	}{
		{"cohort_raft_term", 7},
		{"cohort_raft_commit_index", 100},
		{"cohort_raft_applied_index", 99},
		{"cohort_raft_last_index", 101},
		{"cohort_raft_state|state=follower", 1},
		{"cohort_raft_state|state=leader", 0},
		{"cohort_raft_servers|suffrage=voter", 2},
		{"cohort_raft_servers|suffrage=nonvoter", 1},
		{"cohort_raft_leader_changes_total", 2},
		{"cohort_raft_apply_duration_seconds|type=member.state", 1},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if v, ok := got[tt.key]; !ok || v != tt.want {
				t.Errorf("%s = %v (present %v), want %v", tt.key, v, ok, tt.want)
			}
		})
	}
	if c := got["cohort_raft_last_contact_seconds"]; c < 2 || c > 60 {
		t.Errorf("last contact %v s, want about 2", c)
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("go collector missing")
	}
}

func TestFuncCollector(t *testing.T) {
	reg := New()
	n := 0.0
	f := NewFunc("things", []Figure{
		{Name: "count", Help: "How many things."},
		{Name: "made_total", Help: "Things made.", Counter: true},
		{Name: "by_kind", Help: "Things by kind.", Labels: []string{"kind"}},
	}, func(emit Emit) {
		n++
		emit("count", n)
		emit("made_total", 10*n)
		emit("by_kind", 1, "a")
		emit("by_kind", 2, "b")
		emit("undeclared", 5)
	})
	if err := reg.Register(f); err != nil {
		t.Fatal(err)
	}
	got := scrape(t, reg)
	if got["cohort_things_count"] != 1 || got["cohort_things_made_total"] != 10 || got["cohort_things_by_kind|kind=b"] != 2 {
		t.Fatalf("scrape = %v", got)
	}
	got = scrape(t, reg)
	if got["cohort_things_count"] != 2 {
		t.Fatalf("second scrape read stale figures: %v", got["cohort_things_count"])
	}
	for k := range got {
		if strings.Contains(k, "undeclared") {
			t.Fatalf("undeclared figure exported: %s", k)
		}
	}
}

func BenchmarkScrape(b *testing.B) {
	reg := New()
	rc := NewRaft(fakeRaft{raft.Info{State: "leader", Term: 3}})
	_ = reg.Register(rc)
	for i := range 20 {
		rc.Applied("type"+string(rune('a'+i)), time.Millisecond)
	}
	req := httptest.NewRequest(http.MethodGet, "/_cohort/metrics", nil)
	h := reg.Handler()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}

func BenchmarkApplyObserve(b *testing.B) {
	rc := NewRaft(fakeRaft{})
	b.ReportAllocs()
	for b.Loop() {
		rc.Applied("member.state", time.Millisecond)
	}
}

// TestFuncUndeclaredFailsLoudly: a figure emitted under a name nobody
// declared (a typo) is a scrape error, not a silently missing series.
func TestFuncUndeclaredFailsLoudly(t *testing.T) {
	reg := New()
	f := NewFunc("things", []Figure{{Name: "count", Help: "How many things."}}, func(emit Emit) {
		emit("count", 1)
		emit("cuont", 2)
	})
	if err := reg.Register(f); err != nil {
		t.Fatal(err)
	}
	_, err := reg.Gatherer().Gather()
	if err == nil || !strings.Contains(err.Error(), "cohort_things_cuont") || !strings.Contains(err.Error(), ErrUndeclared.Error()) {
		t.Fatalf("gather error %v, want the undeclared figure named", err)
	}
	scrape(t, reg) // the handler still serves the rest
	if got := scrape(t, reg)[`promhttp_metric_handler_errors_total|cause=gathering`]; got < 1 {
		t.Fatalf("handler errors counted %v, want at least 1", got)
	}
}

type thingStats struct {
	count int
	kinds map[string]int
}

// TestStatsCollector: each stat is declared once, with its reader, and
// read from one snapshot per scrape.
func TestStatsCollector(t *testing.T) {
	reads := 0
	read := func() thingStats {
		reads++
		return thingStats{count: 3, kinds: map[string]int{"a": 1}}
	}
	reg := New()
	err := reg.Register(NewStats("things", read,
		Gauge("count", "How many things.", func(s thingStats) float64 { return float64(s.count) }),
		Counter("made_total", "Things made.", func(s thingStats) float64 { return 7 }),
		GaugeVec("by_kind", "Things by kind.", []string{"kind"}, func(s thingStats, emit func(float64, ...string)) {
			for k, n := range s.kinds {
				emit(float64(n), k)
			}
		}),
	))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gatherer().Gather(); err != nil {
		t.Fatal(err)
	}
	got := scrape(t, reg)
	if got["cohort_things_count"] != 3 || got["cohort_things_made_total"] != 7 || got["cohort_things_by_kind|kind=a"] != 1 || reads != 2 {
		t.Fatalf("scrape = %v after %d reads", got, reads)
	}
}
