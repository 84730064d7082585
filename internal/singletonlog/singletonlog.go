// Package singletonlog reads the file a test singleton appends to — one
// line "NAME NODE FENCE UNIX-NANOS" per tick — and checks from it that one
// instance ran at a time. It owns nothing the product uses; the node and
// e2e singleton tests share it.
package singletonlog

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Command is a shell loop for --singleton that appends a line to out every
// period (e.g. "0.05").
func Command(out, period string) string {
	return `while :; do echo "$COHORT_SINGLETON $COHORT_NODE $COHORT_FENCE $(date +%s%N)" >> ` + out + `; sleep ` + period + `; done`
}

// Run is one stretch of ticks from one node under one fence.
type Run struct {
	Node        string
	Fence       uint64
	First, Last time.Time
}

// Read parses the file into runs. It returns an error naming the line
// where two instances overlapped: a fence that goes back (an old instance
// still writing after a newer one started), or one fence written by two
// nodes.
func Read(out string) ([]Run, error) {
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read ticks: %w", err)
	}
	var runs []Run
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d %q: want 'NAME NODE FENCE NANOS'", i+1, l)
		}
		fence, err1 := strconv.ParseUint(f[2], 10, 64)
		ns, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || fence == 0 {
			return nil, fmt.Errorf("line %d %q: bad fence or time", i+1, l)
		}
		at := time.Unix(0, ns)
		if len(runs) > 0 {
			r := &runs[len(runs)-1]
			switch {
			case fence < r.Fence:
				return runs, fmt.Errorf("line %d %q: fence went back from %d (node %s): two instances ran at once", i+1, l, r.Fence, r.Node)
			case fence == r.Fence && f[1] != r.Node:
				return runs, fmt.Errorf("line %d %q: node %s wrote the same fence %d: two instances ran at once", i+1, l, r.Node, fence)
			case fence == r.Fence:
				r.Last = at
				continue
			}
		}
		runs = append(runs, Run{Node: f[1], Fence: fence, First: at, Last: at})
	}
	return runs, nil
}

// Last returns the node of the file's last complete line ("" if none).
func Last(out string) string {
	b, _ := os.ReadFile(out)
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if f := strings.Fields(l[len(l)-1]); len(f) == 4 {
		return f[1]
	}
	return ""
}

// Lines counts the complete lines in the file.
func Lines(out string) int {
	b, _ := os.ReadFile(out)
	return strings.Count(string(b), "\n")
}
