package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// runWrk measures url with wrk (one thread, conns connections, closed
// loop) for d, sending cookie with every request. wrk is C on epoll: it
// adds less of its own time to a latency than a Go client does, which
// matters when the figure is the few tens of microseconds a hop adds.
func runWrk(ctx context.Context, conns int, d time.Duration, url, cookie string) (sample, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s", "--latency"}
	if cookie != "" {
		args = append(args, "-H", "Cookie: "+cookie)
	}
	out, err := exec.CommandContext(ctx, "wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads the figures of wrk --latency's report.
func parseWrk(out string) (sample, error) {
	var smp sample
	var total, bad int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "50%":
			smp.p50, _ = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			smp.p99, _ = time.ParseDuration(f[1])
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			total, _ = strconv.Atoi(f[0])
		case len(f) == 2 && f[0] == "Requests/sec:":
			smp.ops, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 5 && f[0] == "Non-2xx":
			n, _ := strconv.Atoi(f[4])
			bad += n
		case len(f) >= 2 && f[0] == "Socket" && f[1] == "errors:":
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				bad += n
			}
		}
	}
	if total == 0 || smp.p50 == 0 {
		return smp, fmt.Errorf("wrk printed no figures:\n%s", out)
	}
	smp.ok, smp.fail = total-bad, bad
	if bad > 0 {
		smp.errs = map[string]int{"non-2xx or socket error": bad}
	}
	smp.ops *= float64(smp.ok) / float64(total) // successful ones only, like the rest
	return smp, nil
}

// cpuTicks is the user+system CPU time of process pid, in clock ticks
// (1/100 s on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return u + st, nil
}

// cpuMeter reads the CPU time several processes spend over a stretch.
type cpuMeter struct {
	pids  []int
	start []int64
}

func newCPUMeter(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: make([]int64, len(pids))}
	for i, p := range pids {
		m.start[i], _ = cpuTicks(p)
	}
	return m
}

// perOp is each process's CPU time since the meter started, divided by
// ops.
func (m *cpuMeter) perOp(ops int) []time.Duration {
	out := make([]time.Duration, len(m.pids))
	if ops <= 0 {
		return out
	}
	for i, p := range m.pids {
		end, err := cpuTicks(p)
		if err != nil {
			continue
		}
		out[i] = time.Duration(end-m.start[i]) * 10 * time.Millisecond / time.Duration(ops)
	}
	return out
}
