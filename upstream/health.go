package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Healthy reports whether the app passed its last health check and is not
// held down.
func (p *Proxy) Healthy() bool { return p.healthy.Load() && p.held.Load() == nil }

// Reason says why the app is not healthy ("" when it is).
func (p *Proxy) Reason() string {
	if h := p.held.Load(); h != nil {
		return *h
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// Ready is a readiness check: nil while the app is healthy.
func (p *Proxy) Ready(context.Context) error {
	if p.Healthy() {
		return nil
	}
	return fmt.Errorf("app %s: %s", p.cfg.Display, p.Reason())
}

// Fail marks the app unhealthy until its next passing check (the
// supervisor saw it exit; a request could not connect).
func (p *Proxy) Fail(reason string) {
	if p.cfg.HealthPath == "" && !p.cfg.CheckConnect {
		return // nothing would bring it back
	}
	p.mu.Lock()
	p.reason = reason
	p.mu.Unlock()
	if p.healthy.Swap(false) {
		p.log.Warn("app unhealthy: the node takes no new sessions and its sessions fail over", "upstream", p.cfg.Display, "reason", reason)
		p.notify()
	}
}

// Hold marks the app unhealthy whatever its checks say (a rolling restart
// takes it out before stopping it); Release ends that.
func (p *Proxy) Hold(reason string) { p.held.Store(&reason); p.notify() }

// Release ends a Hold.
func (p *Proxy) Release() { p.held.Store(nil); p.notify() }

// Checks returns the number of health checks run and failed.
func (p *Proxy) Checks() (run, failed int64) { return p.checks.Load(), p.failures.Load() }

func (p *Proxy) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Changed returns a channel closed at the next change of health.
func (p *Proxy) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// CheckNow runs one health check and records its outcome.
func (p *Proxy) CheckNow(ctx context.Context) bool {
	if p.cfg.HealthPath == "" && !p.cfg.CheckConnect {
		return true
	}
	err := p.check(ctx)
	p.checks.Add(1)
	ok := err == nil
	if !ok {
		p.failures.Add(1)
	}
	was := p.healthy.Swap(ok)
	p.mu.Lock()
	if ok {
		p.reason = ""
	} else {
		p.reason = "health check failed: " + err.Error()
	}
	p.mu.Unlock()
	if was != ok {
		if ok {
			p.log.Info("app healthy", "upstream", p.cfg.Display)
		} else {
			p.log.Warn("app unhealthy: the node takes no new sessions and its sessions fail over", "upstream", p.cfg.Display, "err", err)
		}
		p.notify()
	}
	return ok
}

func (p *Proxy) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HealthTimeout)
	defer cancel()
	if p.cfg.HealthPath == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, p.cfg.Network, p.cfg.Addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.hostHeader()+p.cfg.HealthPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set(HeaderNode, p.cfg.NodeID)
	res, err := p.transport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("GET %s answered %s", p.cfg.HealthPath, res.Status)
	}
	return nil
}

// Run checks the app's health every HealthInterval until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	if p.cfg.HealthPath == "" && !p.cfg.CheckConnect {
		return
	}
	t := time.NewTicker(p.cfg.HealthInterval)
	defer t.Stop()
	for {
		p.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WaitHealthy waits until the app passes a health check (checking at once
// and then every HealthInterval/4), or ctx ends.
func (p *Proxy) WaitHealthy(ctx context.Context) error {
	step := max(p.cfg.HealthInterval/4, 50*time.Millisecond)
	for {
		if p.CheckNow(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			p.mu.Lock()
			reason := p.reason // the check's, not a Hold's
			p.mu.Unlock()
			return fmt.Errorf("app %s not healthy: %s: %w", p.cfg.Display, reason, ctx.Err())
		case <-time.After(step):
		}
	}
}
