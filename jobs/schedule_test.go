package jobs

import (
	"testing"
	"time"
	_ "time/tzdata"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// occurrences lists the next n occurrences after from, as RFC3339 in UTC.
func occurrences(s Schedule, from time.Time, n int) []string {
	var out []string
	for t := from; len(out) < n; {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.UTC().Format(time.RFC3339))
	}
	return out
}

func TestScheduleDST(t *testing.T) {
	tests := []struct {
		name, zone, spec, from string
		want                   []string // UTC
	}{
		{
			// 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist
			// and runs at the transition (07:00Z), once.
			name: "new york spring forward runs skipped time at transition",
			zone: "America/New_York", spec: "30 2 * * *", from: "2026-03-07T00:00:00Z",
			want: []string{"2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"},
		},
		{
			// 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice
			// and runs once, at the first (EDT, 05:30Z).
			name: "new york fall back runs repeated time once",
			zone: "America/New_York", spec: "30 1 * * *", from: "2026-10-31T00:00:00Z",
			want: []string{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"},
		},
		{
			name: "new york hourly follows elapsed time through fall back",
			zone: "America/New_York", spec: "@hourly", from: "2026-11-01T04:30:00Z",
			want: []string{"2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"},
		},
		{
			name: "new york hourly through spring forward",
			zone: "America/New_York", spec: "0 * * * *", from: "2026-03-08T05:30:00Z",
			want: []string{"2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"},
		},
		{
			// 2026-03-29 02:00 CET jumps to 03:00 CEST.
			name: "berlin spring forward",
			zone: "Europe/Berlin", spec: "15 2 * * *", from: "2026-03-28T00:00:00Z",
			want: []string{"2026-03-28T01:15:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:15:00Z"},
		},
		{
			// 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:15 runs once.
			name: "berlin fall back",
			zone: "Europe/Berlin", spec: "15 2 * * *", from: "2026-10-24T00:00:00Z",
			want: []string{"2026-10-24T00:15:00Z", "2026-10-25T00:15:00Z", "2026-10-26T01:15:00Z"},
		},
		{
			name: "berlin every 30 minutes at 6 fields through fall back",
			zone: "Europe/Berlin", spec: "0 */30 2 * * *", from: "2026-10-24T23:50:00Z",
			want: []string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:00:00Z"},
		},
		{
			// Lord Howe shifts by 30 minutes: 2026-10-04 02:00 +10:30 becomes
			// 02:30 +11:00 (15:30Z on the 3rd). 02:15 does not exist and runs then.
			name: "lord howe spring forward by 30 minutes",
			zone: "Australia/Lord_Howe", spec: "15 2 * * *", from: "2026-10-02T12:00:00Z",
			want: []string{"2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"},
		},
		{
			// 2026-04-05 02:00 +11:00 falls back to 01:30 +10:30: 01:45 happens
			// twice and runs once (14:45Z).
			name: "lord howe fall back by 30 minutes",
			zone: "Australia/Lord_Howe", spec: "45 1 * * *", from: "2026-04-03T12:00:00Z",
			want: []string{"2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"},
		},
		{
			name: "lord howe every 15 minutes through fall back follows the clock",
			zone: "Australia/Lord_Howe", spec: "*/15 1 * * *", from: "2026-04-04T14:40:00Z",
			want: []string{"2026-04-04T14:45:00Z", "2026-04-05T14:30:00Z", "2026-04-05T14:45:00Z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.spec, mustLoc(t, tt.zone))
			if err != nil {
				t.Fatal(err)
			}
			from, _ := time.Parse(time.RFC3339, tt.from)
			got := occurrences(s, from, len(tt.want))
			for i := range tt.want {
				if i >= len(got) || got[i] != tt.want[i] {
					t.Fatalf("occurrences after %s:\n got %v\nwant %v", tt.from, got, tt.want)
				}
			}
		})
	}
}

func TestScheduleParse(t *testing.T) {
	tests := []struct {
		spec, from string
		want       string
		bad        bool
	}{
		{spec: "@every 30s", from: "2026-01-01T00:00:10Z", want: "2026-01-01T00:00:30Z"},
		{spec: "@every 1s", from: "2026-01-01T00:00:10.5Z", want: "2026-01-01T00:00:11Z"},
		{spec: "@daily", from: "2026-01-01T10:00:00Z", want: "2026-01-02T00:00:00Z"},
		{spec: "@weekly", from: "2026-01-01T10:00:00Z", want: "2026-01-04T00:00:00Z"},
		{spec: "@monthly", from: "2026-01-15T00:00:00Z", want: "2026-02-01T00:00:00Z"},
		{spec: "@yearly", from: "2026-01-15T00:00:00Z", want: "2027-01-01T00:00:00Z"},
		{spec: "*/5 * * * * *", from: "2026-01-01T00:00:07Z", want: "2026-01-01T00:00:10Z"},
		{spec: "0 9 * * mon-fri", from: "2026-01-02T10:00:00Z", want: "2026-01-05T09:00:00Z"},
		{spec: "0 0 13 * 5", from: "2026-01-01T00:00:00Z", want: "2026-01-02T00:00:00Z"}, // dom OR dow
		{spec: "0 0 29 feb *", from: "2026-01-01T00:00:00Z", want: "2028-02-29T00:00:00Z"},
		{spec: "0 0 * * 7", from: "2026-01-01T00:00:00Z", want: "2026-01-04T00:00:00Z"},
		{spec: "0 0 31 2 *", from: "2026-01-01T00:00:00Z", want: ""},
		{spec: "* * *", bad: true},
		{spec: "61 * * * *", bad: true},
		{spec: "5-1 * * * *", bad: true},
		{spec: "*/0 * * * *", bad: true},
		{spec: "@every 500ms", bad: true},
		{spec: "@every soon", bad: true},
		{spec: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			s, err := ParseSchedule(tt.spec, nil)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseSchedule(%q) = %v, want an error", tt.spec, s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			from, _ := time.Parse(time.RFC3339Nano, tt.from)
			got := ""
			if n := s.Next(from); !n.IsZero() {
				got = n.UTC().Format(time.RFC3339)
			}
			if got != tt.want {
				t.Fatalf("Next(%s) = %q, want %q", tt.from, got, tt.want)
			}
		})
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 0 1 1 *", "@every 1m", "@daily", "1-5/2,7 * * jan-mar sun", "0 */30 2 * * *", "? ? ? ? ?"} {
		f.Add(s)
	}
	loc := mustLoc(f, "Australia/Lord_Howe")
	from := time.Date(2026, 4, 4, 14, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSchedule(spec, loc)
		if err != nil {
			return
		}
		prev := from
		for range 3 {
			n := s.Next(prev)
			if n.IsZero() {
				return
			}
			if !n.After(prev) {
				t.Fatalf("%q: Next(%s) = %s is not after", spec, prev, n)
			}
			prev = n
		}
	})
}

func BenchmarkScheduleNext(b *testing.B) {
	for _, bb := range []struct{ name, spec, zone string }{
		{"every-minute-utc", "* * * * *", "UTC"},
		{"daily-new-york", "30 2 * * *", "America/New_York"},
		{"weekdays-lord-howe", "*/15 9-17 * * mon-fri", "Australia/Lord_Howe"},
		{"every-30s", "@every 30s", "UTC"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			s, err := ParseSchedule(bb.spec, mustLoc(b, bb.zone))
			if err != nil {
				b.Fatal(err)
			}
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			end := start.AddDate(2, 0, 0) // stay in years with explicit tz transitions
			t := start
			for b.Loop() {
				if t = s.Next(t); t.After(end) {
					t = start
				}
			}
		})
	}
}

// TestPlan checks the pure planning of a step against a fixed clock.
func TestPlan(t *testing.T) {
	sched, err := ParseSchedule("@every 1m", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	now := base.Add(30 * time.Second)
	cursor := base.Add(-10*time.Minute - time.Second) // 11 occurrences due, all late
	tests := []struct {
		name      string
		misfire   string
		catchUp   int
		threshold time.Duration
		run       int
		missed    int
	}{
		{"fire once", MisfireFireOnce, 0, time.Second, 1, 10},
		{"skip", MisfireSkip, 0, time.Second, 0, 11},
		{"fire all, catch up 3", MisfireFireAll, 3, time.Second, 3, 8},
		{"on time", MisfireSkip, 0, time.Hour, 11, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &job{sched: sched, misfire: tt.misfire, catchUp: tt.catchUp, threshold: tt.threshold}
			p := j.plan(cursor, now)
			if len(p.run) != tt.run || len(p.missed) != tt.missed || p.more != 0 {
				t.Fatalf("plan run %d missed %d more %d, want %d and %d", len(p.run), len(p.missed), p.more, tt.run, tt.missed)
			}
			if tt.missed > 0 && !p.cursor.Equal(p.missed[len(p.missed)-1]) {
				t.Fatalf("cursor %s, want the newest missed", p.cursor)
			}
		})
	}
	// Nothing due before the first occurrence.
	j := &job{sched: sched, misfire: MisfireSkip, threshold: time.Second}
	if p := j.plan(now, now); len(p.run)+len(p.missed)+p.more != 0 {
		t.Fatalf("plan %+v, want nothing due", p)
	}
}
