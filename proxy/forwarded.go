package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Headers that carry the original request across the cluster hop. The
// receiving node believes them only because they arrived over the
// authenticated cluster port; the front deletes them from every request
// that enters through the public port, so a client cannot forge them.
const (
	hdrClient  = "Cohort-Front-Client" // resolved client address, ip:port
	hdrTLS     = "Cohort-Front-Tls"    // "1" when the client spoke TLS to the front
	hdrUnready = "Cohort-Front-Unready"
	hdrNoHost  = "Cohort-Front-No-Host" // "1": the client sent no Host (HTTP/1.0)
)

// clientView is what the front concluded about where a request came from.
type clientView struct {
	addr    string   // the client, ip:port ("ip:0" when learned from X-Forwarded-For)
	chain   []string // X-Forwarded-For to send: trusted prior hops + the peer
	proto   string   // http or https as the client saw it
	host    string   // the host the client asked for
	tls     bool     // the connection to this front is TLS
	trusted bool     // the immediate peer is a trusted proxy
}

// resolveClient applies --trusted-proxies: X-Forwarded-* are believed only
// when the immediate peer is trusted, and X-Forwarded-For is read right to
// left, skipping trusted hops, so the client is the first untrusted address.
func (f *Front) resolveClient(r *http.Request) clientView {
	v := clientView{addr: r.RemoteAddr, host: r.Host, proto: "http", tls: r.TLS != nil}
	if v.tls {
		v.proto = "https"
	}
	peerHost, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peerHost = r.RemoteAddr
	}
	peer, perr := netip.ParseAddr(peerHost)
	if perr == nil && f.trusted(peer.Unmap()) {
		v.trusted = true
		var hops []string
		for _, line := range r.Header.Values("X-Forwarded-For") {
			for _, h := range strings.Split(line, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hops = append(hops, h)
				}
			}
		}
		v.chain = append(hops, peerHost)
		// Right to left: the last hop not in a trusted range is the client.
		client := ""
		for i := len(v.chain) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(v.chain[i])
			if err != nil {
				break // garbage: stop believing anything further left
			}
			client = a.Unmap().String()
			if !f.trusted(a.Unmap()) {
				break
			}
		}
		if client != "" && client != peerHost {
			v.addr = net.JoinHostPort(client, "0")
		}
		if p := strings.ToLower(strings.TrimSpace(firstValue(r.Header.Get("X-Forwarded-Proto")))); p == "http" || p == "https" {
			v.proto = p
		}
		if h := strings.TrimSpace(firstValue(r.Header.Get("X-Forwarded-Host"))); h != "" {
			v.host = h
		}
	} else {
		v.chain = []string{peerHost}
	}
	return v
}

func firstValue(s string) string {
	s, _, _ = strings.Cut(s, ",")
	return s
}

func (f *Front) trusted(a netip.Addr) bool {
	for _, p := range f.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// setForwarded writes the normalised X-Forwarded-* headers into h.
// It runs on every request served here: the keys are written in their
// canonical form directly and the three values share one allocation.
func (v *clientView) setForwarded(h http.Header) {
	delete(h, "Forwarded")
	vals := []string{strings.Join(v.chain, ", "), v.proto, v.host}
	h["X-Forwarded-For"] = vals[0:1:1]
	h["X-Forwarded-Proto"] = vals[1:2:2]
	h["X-Forwarded-Host"] = vals[2:3:3]
}

// stripHop removes the hop headers a client might have sent.
func stripHop(h http.Header) {
	delete(h, hdrClient)
	delete(h, hdrTLS)
	delete(h, hdrUnready)
	delete(h, hdrNoHost)
}
