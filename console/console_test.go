package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohortserver/cohort/console"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

// login posts the token through the console's form and returns a client
// holding the session cookie and the page's CSRF token.
func login(t *testing.T, base, token string) (*http.Client, string, *http.Response) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	resp, err := cl.PostForm(base+"/_cohort/ui/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="cohort-csrf" content="([^"]+)"`).FindSubmatch(page)
	csrf := ""
	if m != nil {
		csrf = string(m[1])
	}
	return cl, csrf, resp
}

func TestLoginCookieAndCSRF(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitLeader(t)
	nd := c.Followers()[0]
	base := "http://" + nd.HTTPAddr
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		return len(nd.Node().Members().All()) == 3, "members not announced"
	})
	target := c.Followers()[1].ID

	t.Run("wrong token", func(t *testing.T) {
		cl, csrf, resp := login(t, base, "not-the-token-0123456789")
		u, _ := url.Parse(base)
		if csrf != "" || len(cl.Jar.Cookies(u)) != 0 || !strings.Contains(resp.Request.URL.RawQuery, "e=1") {
			t.Fatalf("a wrong token logged in: csrf %q cookies %v url %s", csrf, cl.Jar.Cookies(u), resp.Request.URL)
		}
	})

	cl, csrf, resp := login(t, base, c.Token())
	if csrf == "" {
		t.Fatal("no CSRF token on the page after login")
	}
	var sc *http.Cookie
	for _, r := range []*http.Response{resp.Request.Response, resp} {
		if r == nil {
			continue
		}
		for _, ck := range r.Cookies() {
			if ck.Name == console.SessionCookie {
				sc = ck
			}
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || strings.Contains(sc.Value, c.Token()) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not the token", sc)
	}

	call := func(method, path string, hdr map[string]string) int {
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		want   int
	}{
		{"read with cookie", http.MethodGet, "/_cohort/api/members", nil, http.StatusOK},
		{"metrics with cookie", http.MethodGet, "/_cohort/metrics", nil, http.StatusOK},
		{"write without csrf", http.MethodPost, "/_cohort/api/nodes/" + target + "/drain", map[string]string{"Origin": base}, http.StatusUnauthorized},
		{"write with wrong csrf", http.MethodPost, "/_cohort/api/nodes/" + target + "/drain", map[string]string{"Origin": base, console.CSRFHeader: "x" + csrf}, http.StatusUnauthorized},
		{"write cross-origin", http.MethodPost, "/_cohort/api/nodes/" + target + "/drain", map[string]string{"Origin": "http://evil.example", console.CSRFHeader: csrf}, http.StatusUnauthorized},
		{"write without origin", http.MethodPost, "/_cohort/api/nodes/" + target + "/drain", map[string]string{console.CSRFHeader: csrf}, http.StatusUnauthorized},
		{"write with csrf and origin", http.MethodPost, "/_cohort/api/nodes/" + target + "/drain", map[string]string{"Origin": base, console.CSRFHeader: csrf}, http.StatusOK},
		{"enable again", http.MethodPost, "/_cohort/api/nodes/" + target + "/enable", map[string]string{"Origin": base, console.CSRFHeader: csrf}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := call(tt.method, tt.path, tt.hdr); got != tt.want {
				t.Errorf("%s %s: HTTP %d, want %d", tt.method, tt.path, got, tt.want)
			}
		})
	}

	t.Run("session valid on every node", func(t *testing.T) {
		other := c.Leader()
		req, _ := http.NewRequest(http.MethodGet, "http://"+other.HTTPAddr+"/_cohort/api/members", nil)
		req.AddCookie(&http.Cookie{Name: sc.Name, Value: sc.Value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("cookie on %s: HTTP %d", other.ID, resp.StatusCode)
		}
	})

	t.Run("forged cookie", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/_cohort/api/members", nil)
		exp := fmt.Sprint(time.Now().Add(time.Hour).Unix())
		req.AddCookie(&http.Cookie{Name: console.SessionCookie, Value: exp + ".AAAA"})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged cookie: HTTP %d", resp.StatusCode)
		}
	})
}

// artifactDir is where the browser test leaves its screenshots:
// $COHORT_ARTIFACTS, else a new temp dir that outlives the test.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("COHORT_ARTIFACTS")
	if dir == "" {
		d, err := os.MkdirTemp("", "cohort-console-")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsoleInBrowser drives the console in headless Chromium: log in,
// see three nodes and the leader, drain one and see it on the page,
// transfer leadership to it, and save screenshots.
func TestConsoleInBrowser(t *testing.T) {
	exe := os.Getenv("COHORT_CHROMIUM")
	if exe == "" {
		t.Skip("COHORT_CHROMIUM is empty: no browser to drive (source scripts/lib/chromium.sh and run cohort_ensure_chromium)")
	}
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(t)
	nd := c.Followers()[0]
	target := c.Followers()[1].ID
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		return len(nd.Node().Members().All()) == 3, "members not announced"
	})
	dir := artifactDir(t)

	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1440, 1100), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, buf, 0o644); err != nil {
				return err
			}
			t.Logf("screenshot: %s", p)
			return nil
		})
	}
	// wait polls a JavaScript condition on the page.
	wait := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	}
	confirm := func(action, id string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`#node-%s button[data-action=%q]`, id, action))),
			chromedp.WaitVisible(chromedp.ID("modal-ok")),
			chromedp.Click(chromedp.ID("modal-ok")),
		)
	}
	base := "http://" + nd.HTTPAddr + "/_cohort/ui/"
	// The first call starts the browser and must not carry a deadline.
	if err := chromedp.Do(bctx, chromedp.Navigate(base)); err != nil {
		t.Fatalf("start the browser: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 120*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("token")),
		shot("01-login.png"),
		chromedp.SendKeys(chromedp.ID("token"), c.Token()),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("summary")),
		wait(`document.querySelectorAll('#nodes .card').length === 3`),
		wait(fmt.Sprintf(`(document.querySelector('.card[data-leader="true"]')||{}).id === 'node-%s'`, leader.ID)),
		wait(`document.querySelectorAll('#nodes .dot.bad').length === 0`),
		wait(`document.querySelectorAll('#events .event').length > 0`),
		shot("02-three-nodes.png"),
		confirm("drain", target),
		wait(fmt.Sprintf(`(document.querySelector('#node-%s')||{dataset:{}}).dataset.state === 'draining'`, target)),
		wait(`!document.querySelector('#toast').classList.contains('hidden')`),
		shot("03-drained.png"),
		confirm("transfer", target),
		wait(fmt.Sprintf(`(document.querySelector('.card[data-leader="true"]')||{}).id === 'node-%s'`, target)),
		wait(fmt.Sprintf(`[...document.querySelectorAll('#events .event')].some(e => e.textContent.includes('%s is the leader'))`, target)),
		shot("04-leader-transferred.png"),
	)
	if err != nil {
		if buf, serr := chromedp.Run(bctx, chromedp.FullScreenshot(100)); serr == nil {
			_ = os.WriteFile(filepath.Join(dir, "failure.png"), buf, 0o644)
			t.Logf("failure screenshot: %s", filepath.Join(dir, "failure.png"))
		}
		t.Fatalf("console in the browser: %v", err)
	}
	// The page told the truth: the cluster agrees.
	code, b := nd.Do(t, http.MethodGet, "/_cohort/api/members", nil)
	var v node.MembersView
	if code != http.StatusOK || json.Unmarshal(b, &v) != nil {
		t.Fatalf("members: HTTP %d %s", code, b)
	}
	for _, m := range v.Members {
		if m.ID == target && (m.State != "draining" || !m.Leader) {
			t.Errorf("%s after the browser's actions: %+v", target, m)
		}
	}
}
