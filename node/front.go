package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/proxy"
	"github.com/cohortserver/cohort/raft"
)

// setupFront wires the sticky front (package proxy). It runs after every
// other part that wraps the application (only setupOps, which wraps
// nothing, follows it in New), so its wrapper is the outermost: the sessions
// middleware and the app are inside it, and forwarded requests arriving on
// the cluster port at /_internal/front/ run through that same inner chain.
// Its drain hook (first in a graceful Close, while the public port still
// serves; Abort skips it) takes this node out of the traffic.
func (n *Node) setupFront() error {
	prefixes, err := config.ParsePrefixes(n.cfg.Front.TrustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	f, err := proxy.New(proxy.Config{
		SelfID:         n.cfg.NodeID,
		Members:        n.members,
		CookieName:     n.cfg.SessionCookie,
		Stateless:      n.sessionIgnore, // setupSessions ran first
		Balance:        n.cfg.Balance,
		TrustedProxies: prefixes,
		MaxRequestBody: n.cfg.Front.MaxRequestBody,
		MaxTries:       n.cfg.Front.MaxTries,
		DrainTimeout:   n.cfg.Front.DrainTimeout,
		AccessLog:      n.cfg.Front.AccessLog,
		PeerID:         raft.PeerID,
		Dial:           n.dialPeer,
		Ready:          func() bool { return n.isCaughtUp() && n.appUp() },
		LocalUp:        n.appUp,
		Observe:        n.events.FrontRequest,
		StateFile:      filepath.Join(n.cfg.DataDir, "front-state"),
		Logger:         n.log,
	})
	if err != nil {
		return fmt.Errorf("front: %w", err)
	}
	n.front = f
	n.WrapApp(n.boundRequests) // inside the front: forwarded requests too (catchup.go)
	n.events.InitRoutes(proxy.KindForwarded, proxy.KindFailover, proxy.KindBalanced)
	n.WrapApp(f.Wrap)
	n.cluster.HandleInternal("/_internal/front/", f.InternalHandler())
	n.OnStart(func(ctx context.Context) error {
		if c := n.cfg.Front; c.PublicTLSCertFile != "" {
			cf, err := loadCertFile(c.PublicTLSCertFile, c.PublicTLSKeyFile, n.log)
			if err != nil {
				return fmt.Errorf("--public-tls-cert-file/--public-tls-key-file: %w", err)
			}
			n.publicTLS = &tls.Config{
				GetCertificate: cf.getCertificate, // re-read when the files change
				NextProtos:     []string{"h2", "http/1.1"},
				MinVersion:     tls.VersionTLS12,
			}
		}
		f.Start(ctx, n.cluster.Client().Transport)
		return nil
	}, f.Close)
	n.OnDrain(func(ctx context.Context) error {
		if err := f.Shutdown(ctx); err != nil {
			return fmt.Errorf("front drain: %w", err)
		}
		return nil
	})
	return nil
}

// dialPeer opens a hop connection to a peer for the front, within the
// wait budget: a peer behind a partition drops the SYN, and a request
// should fail over (or be refused) within the budget, not after the
// front's own 5 s dial bound.
func (n *Node) dialPeer(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cluster.WaitBudget())
	defer cancel()
	return n.cluster.DialHTTP(ctx, addr)
}

// Front returns the node's sticky front.
func (n *Node) Front() *proxy.Front { return n.front }
