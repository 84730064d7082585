package proxy

import (
	"bytes"

	"github.com/cohortserver/cohort/internal/sessioncookie"
)

// This file parses the request heads the fast front (fast.go) takes and
// the answer heads it relays. It is strict on purpose: anything it does
// not fully understand, and anything net/http's server would refuse
// (a malformed Host, a bad header name or value, a head larger than
// MaxHeaderBytes allows), is left to net/http, whose answer (often a 400,
// given on this node without touching a peer) is then the one the client
// gets. The fast front never forwards a head it parsed differently from
// net/http; FuzzFastFrontAgainstServer feeds every head it takes to a
// real http.Server behind the same front and compares what the
// application sees.

// fastReq is a request head the fast front accepted: GET or HEAD, HTTP/1.1,
// origin-form target with a clean path, no body, no upgrade.
type fastReq struct {
	head      []byte // the whole head, the blank line included
	method    []byte
	target    []byte // path and query, as sent
	host      []byte
	cookie    []byte // the session cookie's value (internal/sessioncookie's rule)
	hasCookie bool
	close     bool // the client sent Connection: close
}

// path is the target without its query.
func (r *fastReq) path() []byte {
	if i := bytes.IndexByte(r.target, '?'); i >= 0 {
		return r.target[:i]
	}
	return r.target
}

// headEnd returns the length of the request head at the start of b, the
// blank line included, or 0 if b does not hold all of it yet. bad is true
// when a line ends in a bare LF, which net/http accepts and this parser
// does not.
func headEnd(b []byte) (n int, bad bool) {
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return 0, false
		}
		i += off
		if i == 0 || b[i-1] != '\r' {
			return 0, true
		}
		if i == off+1 { // an empty line
			if off == 0 {
				return 0, true // a blank line before the request line
			}
			return i + 1, false
		}
		off = i + 1
	}
}

// headerClass says what the fast front does with a request header.
type headerClass uint8

const (
	clsPass     headerClass = iota // sent on as it came
	clsHost                        // sent on; must appear once
	clsCookie                      // sent on; searched for the session cookie
	clsConn                        // Connection: read, not sent on
	clsDrop                        // not sent on: hop-by-hop or replaced by the front's own
	clsDecline                     // leave the whole request to net/http
	clsLength                      // an answer's Content-Length: read, sent on
	clsEncoding                    // an answer's Transfer-Encoding: read, sent on (the framing is relayed as it is)
	clsUnready                     // an answer's Cohort-Front-Unready: read, not sent on
)

// requestHeaderClasses maps lower-case names to their class; names not
// listed pass.
var requestHeaderClasses = map[string]headerClass{
	"host":       clsHost,
	"cookie":     clsCookie,
	"connection": clsConn,
	// A body, a protocol switch or an expectation: net/http's path.
	"content-length":    clsDecline,
	"transfer-encoding": clsDecline,
	"upgrade":           clsDecline,
	"expect":            clsDecline,
	"te":                clsDecline,
	"trailer":           clsDecline,
	"http2-settings":    clsDecline,
	// Hop-by-hop (httputil.ReverseProxy removes the same: RFC 9110
	// section 7.6.1, and the Proxy-* of section 11.7), or what the front
	// writes itself for an untrusted peer.
	"keep-alive":           clsDrop,
	"proxy-connection":     clsDrop,
	"proxy-authorization":  clsDrop,
	"proxy-authenticate":   clsDrop,
	"cohort-front-no-host": clsDrop,
	"forwarded":            clsDrop,
	"x-forwarded-for":      clsDrop,
	"x-forwarded-proto":    clsDrop,
	"x-forwarded-host":     clsDrop,
	"cohort-front-client":  clsDrop,
	"cohort-front-tls":     clsDrop,
	"cohort-front-unready": clsDrop,
}

// classify looks a header name up in classes without allocating; names
// longer than any listed pass.
func classify(classes map[string]headerClass, name []byte) headerClass {
	var buf [24]byte
	if len(name) > len(buf) {
		return clsPass
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return classes[string(buf[:len(name)])]
}

// parseRequestHead fills r from head (as headEnd delimited it) and
// reports whether the fast front may take the request.
func parseRequestHead(head []byte, cookieName string, r *fastReq) bool {
	*r = fastReq{head: head}
	line, rest := cutCRLF(head)
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	r.method = line[:sp]
	if string(r.method) != "GET" && string(r.method) != "HEAD" {
		return false
	}
	line = line[sp+1:]
	if sp = bytes.IndexByte(line, ' '); sp < 0 || string(line[sp+1:]) != "HTTP/1.1" {
		return false
	}
	r.target = line[:sp]
	if !cleanTarget(r.target) {
		return false
	}
	hosts, cookies := 0, 0
	for {
		line, rest = cutCRLF(rest)
		if len(line) == 0 {
			break
		}
		name, value, ok := splitField(line)
		if !ok {
			return false
		}
		switch classify(requestHeaderClasses, name) {
		case clsDecline:
			return false
		case clsHost:
			hosts++
			r.host = value
			if !validHost(value) {
				return false // net/http answers 400 "malformed Host header"
			}
		case clsCookie:
			cookies += sessioncookie.Count(value)
			if !r.hasCookie {
				r.cookie, r.hasCookie = sessioncookie.FindIn(value, cookieName)
			}
		case clsConn:
			for len(value) > 0 {
				var tok []byte
				tok, value, _ = bytes.Cut(value, []byte{','})
				tok = trimOWS(tok)
				switch {
				case len(tok) == 0 || asciiEqualFold(tok, "keep-alive"):
				case asciiEqualFold(tok, "close"):
					r.close = true
				default:
					return false // it names headers to remove: net/http's path
				}
			}
		}
	}
	if sessioncookie.TooMany(cookies) {
		return false // net/http reads no cookie at all: its path decides
	}
	return hosts == 1 && len(r.host) > 0
}

// validHost is httpguts.ValidHostHeader, the check net/http's server
// makes: only the bytes of a uri-host and port (RFC 3986: unreserved,
// sub-delims, '%', ':', '[' and ']'). TestValidHost compares the two.
func validHost(h []byte) bool {
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			continue
		}
		switch c {
		case '!', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', ':', ';', '=', '[', ']', '_', '~':
			continue
		}
		return false
	}
	return true
}

// cutCRLF splits b after its first line, which headEnd checked ends in CRLF.
func cutCRLF(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	return b[:i-1], b[i+1:]
}

// splitField splits "Name: value" and checks both: the name a token, the
// value free of control characters other than tab.
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name = line[:colon]
	for _, c := range name {
		if !isTokenChar(c) {
			return nil, nil, false // also a folded line (leading space)
		}
	}
	value = trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// cleanTarget accepts an origin-form target whose path the public mux
// would route as it is: no "//", no dot segments, no escapes that could
// hide them, no bytes outside printable ASCII.
func cleanTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inPath := true
	for i, c := range t {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
		if c == '?' {
			inPath = false
		}
		if !inPath {
			continue
		}
		switch c {
		case '%', '\\':
			return false
		case '/':
			if i+1 < len(t) && t[i+1] == '/' {
				return false
			}
		case '.':
			if t[i-1] == '/' && dotSegmentAt(t[i:]) {
				return false
			}
		}
	}
	return true
}

// dotSegmentAt reports whether s, which starts a path segment with '.',
// is a "." or ".." segment.
func dotSegmentAt(s []byte) bool {
	end := func(i int) bool { return i == len(s) || s[i] == '/' || s[i] == '?' }
	return end(1) || (s[1] == '.' && end(2))
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func trimOWS[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// asciiEqualFold compares b with lower, a lower-case ASCII string,
// ignoring b's case.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
