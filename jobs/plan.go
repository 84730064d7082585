package jobs

import "time"

// Planning limits of one scheduling step.
const (
	// maxScan bounds the occurrences one step walks (a long outage of a
	// frequent job); the rest wait for the next step.
	maxScan = 100_000
	// maxDue is how many of the newest walked occurrences a step keeps;
	// older ones are only counted.
	maxDue = 1000
	// maxMisfireTimes is how many misfired times one misfire record lists;
	// older ones are only counted.
	maxMisfireTimes = 100
)

// plan is what one scheduling step does with the occurrences due by now.
type plan struct {
	run    []time.Time // occurrences to start, oldest first
	missed []time.Time // misfired occurrences to record (at most maxMisfireTimes)
	more   int         // misfired occurrences beyond missed, only counted
	cursor time.Time   // where the misfire record moves the job's cursor
}

// plan decides, without side effects, which occurrences after cursor and
// not after now run and which misfired, under the job's misfire policy.
func (j *job) plan(cursor, now time.Time) plan {
	var due []time.Time
	more := 0
	for t, n := j.sched.Next(cursor), 0; !t.IsZero() && !t.After(now) && n < maxScan; t, n = j.sched.Next(t), n+1 {
		due = append(due, t)
		if len(due) > maxDue {
			due = due[1:]
			more++
		}
	}
	var run, missed []time.Time
	for _, t := range due {
		if now.Sub(t) <= j.threshold {
			run = append(run, t)
		} else {
			missed = append(missed, t)
		}
	}
	if len(missed) > 0 {
		switch j.misfire {
		case MisfireFireOnce:
			if len(run) == 0 {
				run = missed[len(missed)-1:]
				missed = missed[:len(missed)-1]
			}
		case MisfireFireAll:
			k := max(len(missed)-j.catchUp, 0)
			run = append(missed[k:], run...)
			missed = missed[:k]
		}
	}
	p := plan{run: run, more: more, cursor: cursor}
	if len(missed) > 0 {
		p.cursor = missed[len(missed)-1]
	}
	if len(missed) > maxMisfireTimes {
		p.more += len(missed) - maxMisfireTimes
		missed = missed[len(missed)-maxMisfireTimes:]
	}
	p.missed = missed
	return p
}
