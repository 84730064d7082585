package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileRound runs load (one extra, unmeasured round) while perf samples
// the process pid's call stacks, and adds to sec a text file in the
// results directory with the cumulative ("children") share of the
// hottest functions: where that cohort process spends its CPU under that
// load. Without perf, or with -profile=false, it does nothing.
func (e *env) profileRound(ctx context.Context, sec *section, name string, pid int, load func()) {
	if !e.opts.profile {
		return
	}
	if _, err := exec.LookPath("perf"); err != nil {
		return
	}
	data := filepath.Join(e.p.dir, name+".perf")
	secs := int(e.opts.round.Seconds())
	if secs < 1 {
		secs = 1
	}
	rec := exec.CommandContext(ctx, "perf", "record", "-q", "-F", "499", "-g", "-p", fmt.Sprint(pid), "-o", data, "--", "sleep", fmt.Sprint(secs))
	var recOut bytes.Buffer
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		sec.extra += fmt.Sprintf("\n(profile %s: perf record: %v)\n", name, err)
		return
	}
	time.Sleep(200 * time.Millisecond) // let perf attach before the load starts
	load()
	if err := rec.Wait(); err != nil {
		sec.extra += fmt.Sprintf("\n(profile %s: perf record: %v: %s)\n", name, err, strings.TrimSpace(recOut.String()))
		return
	}
	rep := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "--percent-limit", "2", "-g", "none")
	out, err := rep.Output()
	if err != nil {
		sec.extra += fmt.Sprintf("\n(profile %s: perf report: %v)\n", name, err)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# perf, %s: cumulative share of samples (children), functions over 2%%\n", name)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " -")
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString(line + "\n")
	}
	file := e.stamp + "-profile-" + name + ".txt"
	if err := os.WriteFile(filepath.Join(e.out, file), []byte(b.String()), 0o644); err != nil {
		sec.extra += fmt.Sprintf("\n(profile %s: %v)\n", name, err)
		return
	}
	sec.extra += fmt.Sprintf("\nCPU profile of %s: [%s](%s).\n", name, file, file)
}
