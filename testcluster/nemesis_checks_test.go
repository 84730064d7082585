package testcluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/jobs"
)

// The checkers of the nemesis tests must fail on the histories they are
// for; these tables feed them made-up histories with one violation each.

func TestJobChecksCatchViolations(t *testing.T) {
	f := func(term, index uint64) jobs.Fence { return jobs.Fence{Term: term, Index: index} }
	ex := func(job, key, node string, fence jobs.Fence, enter, exit int64) jobExec {
		return jobExec{Job: job, Key: key, Node: node, RunNode: node, Fence: fence, Enter: enter, Exit: exit, Write: "accepted"}
	}
	good := []jobExec{
		ex("once", "once@1", "n1", f(2, 10), 1, 2),
		ex("again", "again@1", "n1", f(2, 11), 3, 4),
		ex("again", "again@2", "n2", f(3, 20), 5, 6),
		ex("again", "again@2", "n3", f(4, 30), 7, 8), // rerun by the next leader, new token
		ex("once", "once@2", "n3", f(4, 31), 9, 10),
	}
	tests := []struct {
		name  string
		execs []jobExec
		want  string // a violation must contain this
	}{
		{"clean", good, ""},
		{"once key executed twice", append(good[:5:5], ex("once", "once@2", "n3", f(4, 40), 11, 12)), "although recover: skip"},
		{"same token twice", append(good[:5:5], ex("again", "again@2", "n3", f(4, 30), 11, 12)), "executed twice"},
		{"two nodes in one term", append(good[:5:5], ex("again", "again@3", "n1", f(4, 41), 11, 12)), "issued tokens to"},
		{"old leader runs after the new began", append(good[:5:5], ex("again", "again@3", "n2", f(3, 21), 11, 12)), "an old leader ran"},
		{"overlapping runs", []jobExec{ex("once", "once@1", "n1", f(2, 10), 1, 5), ex("once", "once@2", "n2", f(3, 20), 3, 6)}, "still ran"},
		{"index order against term order", []jobExec{ex("once", "once@1", "n1", f(2, 30), 1, 2), ex("again", "again@1", "n2", f(3, 20), 3, 4)}, "lower term"},
		{"fenced row refused a valid run", []jobExec{{Job: "once", Key: "once@1", Node: "n1", RunNode: "n1", Fence: f(2, 10), Enter: 1, Exit: 2, Write: "refused: token 10, the row holds 11"}}, "passed StillValid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFound(t, jobExecViolations(tt.execs), tt.want)
		})
	}

	rec := func(key, node, status string, fence jobs.Fence) jobs.RunRecord {
		return jobs.RunRecord{Key: key, Job: "once", Node: node, Status: status, Fence: fence}
	}
	execs := []jobExec{ex("once", "once@1", "n1", f(2, 10), 1, 2), ex("once", "once@2", "n1", f(2, 11), 3, 4)}
	htests := []struct {
		name string
		hist []jobs.RunRecord
		want string
	}{
		{"clean", []jobs.RunRecord{rec("once@1", "n1", jobs.StatusSucceeded, f(2, 10)), rec("once@2", "n2", jobs.StatusAbandoned, f(2, 11))}, ""},
		{"execution without a record", []jobs.RunRecord{rec("once@1", "n1", jobs.StatusSucceeded, f(2, 10))}, "has no record"},
		{"succeeded without an execution", []jobs.RunRecord{rec("once@1", "n1", jobs.StatusSucceeded, f(2, 10)), rec("once@2", "n1", jobs.StatusAbandoned, f(2, 11)),
			rec("once@3", "n1", jobs.StatusSucceeded, f(2, 12))}, "executed 0 times"},
		{"executed but recorded skipped", []jobs.RunRecord{rec("once@1", "n1", jobs.StatusSucceeded, f(2, 10)), rec("once@2", "n1", jobs.StatusSkipped, f(2, 11))}, "recorded skipped"},
		{"still running", []jobs.RunRecord{rec("once@1", "n1", jobs.StatusSucceeded, f(2, 10)), rec("once@2", "n1", jobs.StatusRunning, f(2, 11))}, "still running"},
	}
	for _, tt := range htests {
		t.Run("history "+tt.name, func(t *testing.T) {
			checkFound(t, jobHistoryViolations("once", true, tt.hist, execs, 0), tt.want)
		})
	}
}

func TestFileChecksCatchViolations(t *testing.T) {
	put := func(c int, sha, outcome string, call, ret int64) fileOp {
		return fileOp{Client: c, Path: "p", Kind: "put", SHA: sha, Outcome: outcome, Call: call, Return: ret}
	}
	del := func(c int, outcome string, call, ret int64) fileOp {
		return fileOp{Client: c, Path: "p", Kind: "delete", Outcome: outcome, Call: call, Return: ret}
	}
	read := func(sha string, call int64) fileOp {
		return fileOp{Client: 99, Path: "p", Kind: "read", SHA: sha, Outcome: fileOK, Call: call, Return: call + 1, Node: "n1"}
	}
	tests := []struct {
		name         string
		history      []fileOp
		lost         string // fileLostWrites must report this ("" = nothing)
		content      string // fileContentViolations must report this
		linearizable bool
	}{
		{"last put served", []fileOp{put(0, "a", fileOK, 1, 2), put(1, "b", fileOK, 3, 4), read("b", 10)}, "", "", true},
		{"unknown put may land", []fileOp{put(0, "a", fileOK, 1, 2), put(1, "b", fileUnknown, 3, 4), read("b", 10)}, "", "", true},
		{"unknown put may be lost", []fileOp{put(0, "a", fileOK, 1, 2), put(1, "b", fileUnknown, 3, 4), read("a", 10)}, "", "", true},
		{"acknowledged put lost", []fileOp{put(0, "a", fileOK, 1, 2), put(1, "b", fileOK, 3, 4), read("a", 10)}, "acknowledged put lost", "", false},
		{"acknowledged delete undone", []fileOp{put(0, "a", fileOK, 1, 2), del(1, fileOK, 3, 4), read("a", 10)}, "acknowledged delete undone", "", false},
		{"partial content", []fileOp{put(0, "a", fileOK, 1, 2), read("torn", 10)}, "acknowledged put lost", "nobody wrote there", false},
		{"refused put visible", []fileOp{put(0, "a", fileOK, 1, 2), put(1, "b", fileNone, 3, 4), read("b", 10)}, "acknowledged put lost", "surely failed", false},
		{"delete 404 on a file", []fileOp{put(0, "a", fileOK, 1, 2), {Client: 1, Path: "p", Kind: "delete", Absent: true, Outcome: fileOK, Call: 3, Return: 4}, read("a", 10)}, "acknowledged delete undone", "", false},
		{"concurrent puts, either wins", []fileOp{put(0, "a", fileOK, 1, 5), put(1, "b", fileOK, 2, 6), read("a", 10)}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFound(t, fileLostWrites(tt.history), tt.lost)
			checkFound(t, fileContentViolations(tt.history, nil), tt.content)
			if ok, _ := fileHistoryLinearizable(tt.history); ok != tt.linearizable {
				t.Errorf("linearizable = %v, want %v", ok, tt.linearizable)
			}
		})
	}
}

// checkFound fails unless a violation contains want, or, with want "",
// unless there is none.
func checkFound(t *testing.T, bad []string, want string) {
	t.Helper()
	if want == "" {
		if len(bad) > 0 {
			t.Errorf("violations on a clean history:\n  %s", strings.Join(bad, "\n  "))
		}
		return
	}
	for _, b := range bad {
		if strings.Contains(b, want) {
			return
		}
	}
	t.Errorf("no violation containing %q; got:\n  %s", want, strings.Join(bad, "\n  "))
}

func TestCutOffLatencyCheckCatchesSlowOperations(t *testing.T) {
	ms := int64(time.Millisecond)
	ops := []opLatency{
		{via: "n1", call: 100 * ms, ret: 150 * ms},   // before the fault
		{via: "n1", call: 1100 * ms, ret: 1200 * ms}, // through the victim, quick
		{via: "n2", call: 1100 * ms, ret: 9000 * ms}, // the majority side is not checked
		{via: "n1", call: 5000 * ms, ret: 9000 * ms}, // after the heal
	}
	slow := append(ops[:4:4], opLatency{via: "n1", call: 900 * ms, ret: 7000 * ms, what: "held"}) // began before, held past the budget
	tests := []struct {
		name, what string
		ops        []opLatency
		want       string
	}{
		{"clean", "isolate leader n1", ops, ""},
		{"held past the budget", "isolate leader n1", slow, "longer than the wait budget"},
		{"paused", "pause leader n1", slow, "cut-off n1 took 6.1s"},
		{"not a cut-off fault", "kill n1", slow, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFound(t, cutOffTooSlow(tt.ops, cutOffVictim(tt.what), 1000*ms, 4000*ms, 3*time.Second), tt.want)
		})
	}
}
