package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs starts and stops every process of a run. Each process gets its
// own process group so a stop reaches its children too; stopAll runs on
// every exit path of the harness (defer and signal).
type procs struct {
	dir string

	mu   sync.Mutex
	list []*proc
	port int
}

// proc is one started process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func newProcs(dir string) *procs { return &procs{dir: dir, port: portBase} }

// Ports used by the harness: everything it starts listens on 127.0.0.1
// inside [portBase, portLimit).
const (
	portBase  = 20000
	portLimit = 21000
)

// freePort returns the next port of the range that nothing listens on.
func (p *procs) freePort() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for tries := 0; tries < portLimit-portBase; tries++ {
		port := p.port
		p.port++
		if p.port >= portLimit {
			p.port = portBase
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, errors.New("no free port in 127.0.0.1:20000-20999")
}

// ports returns n free ports.
func (p *procs) ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		var err error
		if out[i], err = p.freePort(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// start runs name with args; its output goes to DIR/logs/NAME.log.
func (p *procs) start(name, bin string, args ...string) (*proc, error) {
	logDir := filepath.Join(p.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s %s): %w", name, bin, strings.Join(args, " "), err)
	}
	pr := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		f.Close()
		close(pr.done)
	}()
	p.mu.Lock()
	p.list = append(p.list, pr)
	p.mu.Unlock()
	return pr, nil
}

// pid returns the process id.
func (pr *proc) pid() int { return pr.cmd.Process.Pid }

// exited reports whether the process has ended.
func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group (a crash) and waits for it.
func (pr *proc) kill() {
	if pr.exited() {
		return
	}
	_ = syscall.Kill(-pr.pid(), syscall.SIGKILL)
	<-pr.done
}

// stop asks the process group to end (SIGTERM) and kills it after grace.
func (pr *proc) stop(grace time.Duration) {
	if pr.exited() {
		return
	}
	_ = syscall.Kill(-pr.pid(), syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(grace):
		pr.kill()
	}
}

// stopAll stops every process still running, all at once.
func (p *procs) stopAll() {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, pr := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.stop(5 * time.Second)
		}()
	}
	wg.Wait()
}

// stopSome stops the given processes and forgets them.
func (p *procs) stopSome(list ...*proc) {
	var wg sync.WaitGroup
	for _, pr := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.stop(5 * time.Second)
		}()
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.list[:0]
	for _, pr := range p.list {
		gone := false
		for _, s := range list {
			gone = gone || s == pr
		}
		if !gone {
			keep = append(keep, pr)
		}
	}
	p.list = keep
}

// waitTCP waits until addr accepts connections or the process ends.
func waitTCP(ctx context.Context, pr *proc, addr string, timeout time.Duration) error {
	return waitFor(ctx, timeout, func() (bool, string) {
		if pr != nil && pr.exited() {
			return false, fmt.Sprintf("%s exited: %v (see its log)", pr.name, pr.err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

// waitHTTP waits until GET url answers 200.
func waitHTTP(ctx context.Context, pr *proc, url string, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, timeout, func() (bool, string) {
		if pr != nil && pr.exited() {
			return false, fmt.Sprintf("%s exited: %v (see its log)", pr.name, pr.err)
		}
		res, err := hc.Get(url)
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, res.Status
	})
}

var errGaveUp = errors.New("gave up waiting")

// waitFor polls cond every 20 ms until it holds, ctx ends or timeout
// passes; the error carries what cond last said.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %s", errGaveUp, timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (last: %s)", errGaveUp, ctx.Err(), last)
		case <-t.C:
		}
	}
}
