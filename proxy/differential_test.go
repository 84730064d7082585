package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// appView is what the application saw of a request.
type appView struct {
	Node       string
	Method     string
	Host       string
	URI        string
	RemoteHost string
	Header     http.Header
	Cookies    []string // name=value as r.Cookies reads them
	Length     int64
	Encoding   []string
	Close      bool
}

// diffFixture is one front (n1) serving two public ports with the
// http.Server settings of package node: one behind the fast front
// (FastListener), one net/http's alone (WatchRefusals, as with
// --front-fast-path=false). Both forward to a second front (n2) whose
// internal handler runs an application that reports what it saw.
type diffFixture struct {
	fast, slow string
	seen       chan appView
	ownerLog   *logBuf // the owner's front: its refusals of forwarded heads
}

// ownerRefusals counts the heads the owner's server refused.
func (dx *diffFixture) ownerRefusals() int {
	return strings.Count(dx.ownerLog.String(), `msg="request refused"`)
}

func newDiffFixture(tb testing.TB) *diffFixture {
	tb.Helper()
	dx := &diffFixture{seen: make(chan appView, 4), ownerLog: &logBuf{}}
	app := func(node string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			v := appView{Node: node, Method: r.Method, Host: r.Host, URI: r.RequestURI, RemoteHost: host,
				Header: r.Header.Clone(), Length: r.ContentLength, Encoding: r.TransferEncoding, Close: r.Close}
			for _, c := range r.Cookies() {
				v.Cookies = append(v.Cookies, c.Name+"="+c.Value)
			}
			dx.seen <- v
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body)
		})
	}
	members := &fakeMembers{failed: map[string]int{}}
	owner, err := New(Config{SelfID: "n2", Members: members, CookieName: "sid", Logger: dx.ownerLog.logger(),
		PeerID: func(context.Context) string { return "n1" }})
	if err != nil {
		tb.Fatal(err)
	}
	owner.Wrap(app("n2"))
	up := httptest.NewUnstartedServer(owner.InternalHandler())
	up.Listener = owner.WatchRefusals(up.Listener) // a forwarded head the owner refuses is logged
	up.Start()
	members.addr = up.Listener.Addr().String()

	entry, err := New(Config{SelfID: "n1", Members: members, CookieName: "sid",
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}})
	if err != nil {
		tb.Fatal(err)
	}
	handler := CloseChunked(entry.Wrap(app("n1")))
	ctx, cancel := context.WithCancel(context.Background())
	entry.Start(ctx, &http.Transport{})
	server := func() *http.Server { // package node's settings
		return &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	}
	lnFast, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	lnSlow, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	dx.fast, dx.slow = lnFast.Addr().String(), lnSlow.Addr().String()
	fl := entry.Listen(lnFast, ListenOptions{HeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10})
	srvFast, srvSlow := server(), server()
	done := make(chan struct{}, 2)
	go func() { _ = srvFast.Serve(fl); done <- struct{}{} }()
	go func() { _ = srvSlow.Serve(entry.WatchRefusals(lnSlow)); done <- struct{}{} }()
	tb.Cleanup(func() {
		_ = srvFast.Close()
		_ = srvSlow.Close()
		fl.CloseConns()
		<-done
		<-done
		cancel()
		_ = entry.Close()
		up.Close()
	})
	return dx
}

// outcome is what a client and the application saw of one head.
type diffOutcome struct {
	status int
	close  bool // the answer ends the connection
	view   *appView
}

// exchange sends head on a new connection to addr and reads the answer.
func (dx *diffFixture) exchange(tb testing.TB, addr, head string) diffOutcome {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		tb.Fatal(err)
	}
	method, _, _ := strings.Cut(head, " ")
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		tb.Fatalf("%q on %s: no answer: %v", head, addr, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	o := diffOutcome{status: res.StatusCode, close: res.Close}
	select {
	case v := <-dx.seen:
		v.Header.Del("X-Forwarded-Port") // none today; the client's port differs between the two
		o.view = &v
	default:
	}
	return o
}

// FuzzFastFrontAgainstServer is the fast front's differential oracle:
// every head the fast front's parser takes is sent both to the port it
// serves and to a port net/http serves alone, behind the same front and
// server settings. The owner must never refuse a head either forwarded
// (the entry node answers those, without a cluster connection), and the
// two ports must agree on refusing or not, and on what the
// application sees: method, target, Host, every header and cookie, body
// framing, and whether the connection ends after the answer. Heads the
// parser does not take go to net/http on both ports by construction.
func FuzzFastFrontAgainstServer(f *testing.F) {
	routed := "Cookie: sid=" + tok + ".r2\r\n"
	for _, s := range []string{
		"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n" + routed + "\r\n",
		"HEAD / HTTP/1.1\r\nHost: x:80\r\nConnection: close\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: a/b\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: a\"<b>\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: user@evil\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YTpi\r\nProxy-Authenticate: x\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=x\r\nCohort-Front-Client: 1.2.3.4:5\r\nCohort-Front-No-Host: 1\r\n" + routed + "\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; sid=a b\r\ncookie: sid=\"" + tok + ".r2\"; z=\"q\"\r\nX-A:\t1 \r\n\r\n",
		"GET /a/.b/c.d?x=/../ HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\n" + routed + "\r\n",
	} {
		f.Add(s)
	}
	dx := newDiffFixture(f)
	f.Fuzz(func(t *testing.T, raw string) {
		n, bad := headEnd([]byte(raw))
		if bad || n == 0 {
			return
		}
		head := raw[:n]
		var r fastReq
		if !parseRequestHead([]byte(head), "sid", &r) {
			return // net/http's on both ports
		}
		// The public mux must route the path as it is (no dot segments,
		// no "//", nothing it would clean or redirect).
		if p := string(r.path()); path.Clean(p) != p && path.Clean(p)+"/" != p {
			t.Fatalf("%q: the fast front takes the unclean path %q", head, p)
		}
		refused := dx.ownerRefusals()
		fast := dx.exchange(t, dx.fast, head)
		slow := dx.exchange(t, dx.slow, head)
		if n := dx.ownerRefusals() - refused; n > 0 {
			t.Fatalf("%q: the owner refused %d forwarded heads (the entry node should have answered)", head, n)
		}
		if (fast.status == http.StatusBadRequest) != (slow.status == http.StatusBadRequest) || (fast.view == nil) != (slow.view == nil) {
			t.Fatalf("%q: the fast front answers %d (app saw %v), net/http %d (app saw %v)", head, fast.status, fast.view != nil, slow.status, slow.view != nil)
		}
		if fast.status != slow.status || fast.close != slow.close {
			t.Fatalf("%q: fast front %d close=%v; net/http %d close=%v", head, fast.status, fast.close, slow.status, slow.close)
		}
		if fast.view == nil {
			return
		}
		slices.Sort(fast.view.Cookies)
		slices.Sort(slow.view.Cookies)
		if !reflect.DeepEqual(fast.view, slow.view) {
			t.Fatalf("%q: the application saw\nfast front: %+v\nnet/http:   %+v", head, *fast.view, *slow.view)
		}
	})
}

// TestHTTP10WithoutHost: a forwarded HTTP/1.0 request without Host shows
// the owner's application no Host, as serving it here would; the hop
// (HTTP/1.1) must not put the owner's cluster address in its place.
func TestHTTP10WithoutHost(t *testing.T) {
	dx := newDiffFixture(t)
	o := dx.exchange(t, dx.slow, "GET /a HTTP/1.0\r\nCookie: sid="+tok+".r2\r\n\r\n")
	if o.view == nil || o.view.Node != "n2" {
		t.Fatalf("not forwarded to n2: %+v", o)
	}
	if o.view.Host != "" || o.view.Header.Get(hdrNoHost) != "" {
		t.Fatalf("the application saw Host %q (headers %v), want none", o.view.Host, o.view.Header)
	}
}
