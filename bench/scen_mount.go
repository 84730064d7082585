package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runMount is scenario 9: the shared files mounted with FUSE on every
// node (--files-mount), driven by fio as a program would use a shared
// directory, against a plain directory on the same disk (and, for a large
// write, against an upload through the HTTP API in the same run).
func runMount(ctx context.Context, e *env) *section {
	size := int64(1 << 30)
	rounds, nrfiles := 3, 128
	if e.opts.short {
		size, rounds, nrfiles = 64<<20, 1, 32
	}
	small := 16 * nrfiles
	sec := &section{title: "9. Files mount: fio through the FUSE mount vs a local directory",
		intro: fmt.Sprintf("Three nodes of the built binary, each with `--files-mount`. Small files: `fio --rw=write --bs=4k "+
			"--filesize=4k --nrfiles=%d --numjobs=16 --create_on_open=1 --openfiles=1` (%d new files, each "+
			"created, written and closed; a close returns once the file is committed on a quorum), through the "+
			"leader's mount, through a follower's mount and into a local directory on the same disk; files/s = files ÷ "+
			"fio's wall time, and files ÷ the run time fio reports for its jobs (the wall time less fio's set-up, "+
			"which looks each file up three times before the jobs start). Large: `fio --rw=write` then `--rw=read` twice, %d MiB in 1 MiB requests (psync), wall "+
			"time including the close that commits, through the leader's mount (read: leader's and follower's) "+
			"and in the local directory, and a `PUT` of the same size through the HTTP API of the leader. "+
			"One unmeasured small-file run on each system first; each large write starts once the nodes wrote nothing for a second (the last write's third copy is done) and after a `sync`; rounds alternate the order of the systems.", nrfiles, small, size>>20)}
	if _, err := exec.LookPath("fio"); err != nil {
		sec.err = errors.New("fio is not installed (apt-get install fio)")
		return sec
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		sec.err = fmt.Errorf("no /dev/fuse (Docker: --device /dev/fuse --cap-add SYS_ADMIN): %w", err)
		return sec
	}
	mounts := make(map[string]string)
	cc, err := startCohortNodes(ctx, e.p, "s9-cohort", e.cohortCmd(), 3, nil, func(n *cohortNode) ([]string, error) {
		d := filepath.Join(e.p.dir, "s9-mnt-"+n.id)
		mounts[n.id] = d
		return []string{"--files-mount", d}, os.MkdirAll(d, 0o755)
	})
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	leader, follower, err := cc.leaderAndFollower(ctx)
	if err != nil {
		sec.err = err
		return sec
	}
	local := filepath.Join(e.p.dir, "s9-local")
	if err := os.MkdirAll(local, 0o755); err != nil {
		sec.err = fmt.Errorf("local dir: %w", err)
		return sec
	}
	const (
		viaLeader   = "mount, leader"
		viaFollower = "mount, follower"
		viaLocal    = "local directory"
		viaHTTP     = "HTTP API PUT, leader"
	)
	dirs := map[string]string{viaLeader: mounts[leader.id], viaFollower: mounts[follower.id], viaLocal: local}

	// Small files, after one unmeasured run on each (the first run on a
	// fresh cluster makes the blob store's directories, grows each node's
	// heap and, on the follower, takes its apply lease).
	const (
		smallParam    = "4 KiB files, 16 writers"
		smallRunParam = "4 KiB files, 16 writers, fio's run time"
	)
	order := []string{viaLeader, viaFollower, viaLocal}
	for _, sys := range order {
		if _, err := runFio(ctx, filepath.Join(dirs[sys], "warmup"), "--name=warmup", "--rw=write", "--bs=4k", "--filesize=4k",
			"--nrfiles="+strconv.Itoa(nrfiles), "--numjobs=16", "--create_on_open=1", "--openfiles=1", "--ioengine=psync"); err != nil {
			sec.err = fmt.Errorf("small files warm-up, %s: %w", sys, err)
			return sec
		}
	}
	for r := range rounds {
		for i := range order {
			sys := order[(i+r)%len(order)]
			d := filepath.Join(dirs[sys], fmt.Sprintf("small-%d", r))
			took, run, err := runFioOut(ctx, d, "--name=small", "--rw=write", "--bs=4k", "--filesize=4k",
				"--nrfiles="+strconv.Itoa(nrfiles), "--numjobs=16", "--create_on_open=1", "--openfiles=1", "--ioengine=psync")
			if err != nil {
				sec.err = fmt.Errorf("small files, %s: %w", sys, err)
				return sec
			}
			sec.add(sys, peerUnlessSelf(sys, viaLocal), smallParam, 16, "files/s", sample{ops: float64(small) / took.Seconds(), ok: small, p50: took, p99: took})
			sec.add(sys, peerUnlessSelf(sys, viaLocal), smallRunParam, 16, "files/s", sample{ops: float64(small) / run.Seconds(), ok: small, p50: run, p99: run})
		}
		e.logf("  small round %d: leader %.0f (%.0f), follower %.0f (%.0f), local %.0f (%.0f) files/s (in fio's run time)", r+1,
			sec.find(viaLeader, smallParam).samples[r].ops, sec.find(viaLeader, smallRunParam).samples[r].ops,
			sec.find(viaFollower, smallParam).samples[r].ops, sec.find(viaFollower, smallRunParam).samples[r].ops,
			sec.find(viaLocal, smallParam).samples[r].ops, sec.find(viaLocal, smallRunParam).samples[r].ops)
	}

	// Large sequential write and read.
	mb := float64(size) / (1 << 20)
	wParam, rParam := fmt.Sprintf("write %d MiB", size>>20), fmt.Sprintf("read %d MiB", size>>20)
	r2Param := fmt.Sprintf("read %d MiB again", size>>20)
	fioSize := "--size=" + strconv.FormatInt(size, 10)
	hc := &http.Client{Timeout: 10 * time.Minute}
	defer hc.CloseIdleConnections()
	bigRounds := min(rounds, 2)
	for r := range bigRounds {
		name := fmt.Sprintf("big-%d", r)
		writes := []string{viaLeader, viaLocal, viaHTTP}
		if r%2 == 1 {
			writes = []string{viaHTTP, viaLocal, viaLeader}
		}
		for _, sys := range writes {
			// Each write starts on an idle machine: the third copy of
			// the last cohort write (pushed after the quorum answered)
			// done, and no dirty pages left (the kernel throttles a
			// writer once they pass its limit).
			waitWritesDone(ctx, cc)
			syscall.Sync()
			var took time.Duration
			var err error
			if sys == viaHTTP {
				t0 := time.Now()
				err = putFile(ctx, hc, cc, leader, "bench/"+name+".http", newPatternReader(size), size)
				took = time.Since(t0)
			} else {
				took, err = runFio(ctx, dirs[sys], "--name="+name, "--filename="+name, "--rw=write", "--bs=1M", fioSize, "--ioengine=psync")
			}
			if err != nil {
				sec.err = fmt.Errorf("%s, %s: %w", wParam, sys, err)
				return sec
			}
			sec.add(sys, peerUnlessSelf(sys, viaHTTP), wParam, 0, "MiB/s", sample{ops: mb / took.Seconds(), ok: 1, p50: took, p99: took})
		}
		reads := []string{viaLeader, viaFollower, viaLocal}
		if r%2 == 1 {
			reads = []string{viaLocal, viaFollower, viaLeader}
		}
		for _, param := range []string{rParam, r2Param} {
			for _, sys := range reads {
				// --invalidate=0: fio drops the file's cached pages
				// before reading by default, which made the local
				// directory read from the disk while the mount read its
				// blob from the page cache. The first read through a
				// mount goes through cohort (and the blob's hash); the
				// second, of the same version, from the kernel's cache.
				took, err := runFio(ctx, dirs[sys], "--name="+name, "--filename="+name, "--rw=read", "--bs=1M", fioSize, "--ioengine=psync", "--invalidate=0")
				if err != nil {
					sec.err = fmt.Errorf("%s, %s: %w", param, sys, err)
					return sec
				}
				sec.add(sys, peerUnlessSelf(sys, viaLocal), param, 0, "MiB/s", sample{ops: mb / took.Seconds(), ok: 1, p50: took, p99: took})
			}
		}
		e.logf("  large round %d: write leader mount %.0f, local %.0f, HTTP %.0f MiB/s; read leader %.0f then %.0f, follower %.0f then %.0f, local %.0f then %.0f MiB/s", r+1,
			sec.find(viaLeader, wParam).samples[r].ops, sec.find(viaLocal, wParam).samples[r].ops, sec.find(viaHTTP, wParam).samples[r].ops,
			sec.find(viaLeader, rParam).samples[r].ops, sec.find(viaLeader, r2Param).samples[r].ops,
			sec.find(viaFollower, rParam).samples[r].ops, sec.find(viaFollower, r2Param).samples[r].ops,
			sec.find(viaLocal, rParam).samples[r].ops, sec.find(viaLocal, r2Param).samples[r].ops)
	}

	// The goal counts files created and closed by the 16 writers per
	// second: what fio itself reports (its IOPS and bandwidth divide by
	// the longest job's run time). The wall time adds fio's start and its
	// set-up, in which one process looks each name up three times before
	// any writer starts; it is reported beside.
	for _, sys := range []string{viaLeader, viaFollower} {
		g := goal{scenario: "9 files mount", text: "≥ 1,000 files/s of 4 KiB at 16 writers (fio's figure: its jobs' run time), " + sys}
		if s, w := sec.find(sys, smallRunParam), sec.find(sys, smallParam); s != nil && w != nil {
			r, _, _, _ := sec.ratio(s)
			g.checked, g.met = true, s.medOps() >= 1000
			g.measured = fmt.Sprintf("%s files/s (rounds: %s); %.2f× the local directory; by wall time %s files/s (rounds: %s)",
				fmtNum(s.medOps()), roundsOf(s), r, fmtNum(w.medOps()), roundsOf(w))
		}
		sec.goals = append(sec.goals, g)
	}
	for _, param := range []string{r2Param, rParam} {
		g := goal{scenario: "9 files mount", text: "sequential read ≥ 0.8× the local directory (" + param + ")"}
		if lr, fr := sec.find(viaLeader, param), sec.find(viaFollower, param); lr != nil && fr != nil {
			a, _, _, _ := sec.ratio(lr)
			b, _, _, _ := sec.ratio(fr)
			g.checked, g.met = size == 1<<30, min(a, b) >= 0.8
			g.measured = fmt.Sprintf("leader %.2f×, follower %.2f× (%s, %s vs %s MiB/s)", a, b, fmtNum(lr.medOps()), fmtNum(fr.medOps()),
				fmtNum(sec.find(viaLocal, param).medOps()))
		}
		sec.goals = append(sec.goals, g)
	}
	g := goal{scenario: "9 files mount", text: "1 GiB sequential write ≥ 0.8× the HTTP API's upload"}
	if s := sec.find(viaLeader, wParam); s != nil {
		r, _, _, _ := sec.ratio(s)
		g.checked, g.met = size == 1<<30, r >= 0.8
		g.measured = fmt.Sprintf("%.2f× (%s vs %s MiB/s)", r, fmtNum(s.medOps()), fmtNum(sec.find(viaHTTP, wParam).medOps()))
	}
	sec.goals = append(sec.goals, g)
	if size != 1<<30 {
		sec.extra = "-short writes and reads a smaller file: the large-file goals are not checked.\n"
	}
	e.chart(sec, "mount", "bar", "Scenario 9: files mount", "", "files/s or MiB/s (median)", func(s *series) float64 { return s.medOps() })
	return sec
}

// roundsOf lists a series' figures round by round.
func roundsOf(s *series) string {
	var each []string
	for _, v := range s.opsList() {
		each = append(each, fmtNum(v))
	}
	return strings.Join(each, ", ")
}

// runFio runs fio in dir with args and returns its wall time.
func runFio(ctx context.Context, dir string, args ...string) (time.Duration, error) {
	took, _, err := runFioOut(ctx, dir, args...)
	return took, err
}

// runFioOut is runFio that also returns the run time fio reports for its
// jobs (the "Run status" line's longest): the wall time less fio's own
// set-up, which looks up each of the job's files before the jobs start.
func runFioOut(ctx context.Context, dir string, args ...string) (wall, run time.Duration, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, fmt.Errorf("fio dir: %w", err)
	}
	cmd := exec.CommandContext(ctx, "fio", append([]string{"--directory=" + dir}, args...)...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall = time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("fio %s: %w: %s", strings.Join(args, " "), err, lastLines(out, 5))
	}
	m := fioRun.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("fio %s: no run time in its output: %s", strings.Join(args, " "), lastLines(out, 5))
	}
	ms, err := strconv.Atoi(string(m[1]))
	if err != nil {
		return 0, 0, fmt.Errorf("fio run time %q: %w", m[1], err)
	}
	return wall, time.Duration(ms) * time.Millisecond, nil
}

// fioRun finds the longest job's run time in fio's "Run status" line.
var fioRun = regexp.MustCompile(`run=\d+-(\d+)msec`)

// lastLines is the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// putFile uploads length bytes of body to path through n's HTTP API.
func putFile(ctx context.Context, hc *http.Client, cc *cohortCluster, n *cohortNode, path string, body io.Reader, length int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, n.url("/_cohort/api/files/"+path), body)
	if err != nil {
		return fmt.Errorf("put request: %w", err)
	}
	req.ContentLength = length
	req.Header.Set("Authorization", "Bearer "+cc.token)
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("put %s: %w", path, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("put %s: %s %s", path, res.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// peerUnlessSelf is the peer a system's row compares with: none for the peer
// itself.
func peerUnlessSelf(sys, peer string) string {
	if sys == peer {
		return ""
	}
	return peer
}

// waitWritesDone waits (at most a minute) until the nodes of cc have
// written nothing for a second, from /proc/PID/io.
func waitWritesDone(ctx context.Context, cc *cohortCluster) {
	written := func() int64 {
		var sum int64
		for _, n := range cc.nodes {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", n.proc.pid()))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					sum += n
				}
			}
		}
		return sum
	}
	last, quiet := written(), 0
	for range 240 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		now := written()
		if now-last < 1<<20 {
			quiet++
		} else {
			quiet = 0
		}
		last = now
		if quiet >= 4 {
			return
		}
	}
}
