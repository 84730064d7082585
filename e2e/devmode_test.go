package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/internal/syncbuf"
)

// devProc is one `cohort dev` process.
type devProc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

// startDev runs `cohort dev` in dir on its own ports and waits until the
// banner is printed and the node is ready.
func startDev(t *testing.T, bin, dir, httpAddr, clusterAddr string) *devProc {
	t.Helper()
	// The Redis listener, on by default in dev mode, gets its own port too.
	cmd := exec.Command(bin, "dev", "--http-addr", httpAddr, "--cluster-addr", clusterAddr, "--redis-addr", freeAddr(t))
	cmd.Dir = dir
	out := &syncbuf.Buffer{}
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = out
	must(t, cmd.Start())
	p := &devProc{cmd: cmd, out: out, done: make(chan struct{})}
	banner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "admin token:") {
				banner <- b.String()
			}
			out.Write([]byte(sc.Text() + "\n"))
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case b := <-banner:
		t.Logf("cohort dev banner:\n%s", b)
		if !strings.Contains(b, "http://"+httpAddr+"/") {
			t.Errorf("banner does not show the app URL http://%s/", httpAddr)
		}
	case <-p.done:
		t.Fatalf("cohort dev exited at start:\n%s", out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("cohort dev printed no banner within 60 s:\n%s", out.String())
	}
	poll.Until(t, 60*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + httpAddr + "/_cohort/ready")
		if err != nil {
			return false, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200, string(b)
	})
	return p
}

// stop sends SIGTERM and waits; a process that does not exit in 30 s is
// killed, and the test fails.
func (p *devProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("cohort dev did not stop within 30 s of SIGTERM; killed")
	}
}

// TestDevModeInBrowser runs `cohort dev` in an empty directory and drives
// the demo page in headless Chromium: +1, log in, upload, demo-tick rows.
// It restarts the process and checks the data stayed. The screenshots are
// kept under e2e/artifacts/.
func TestDevModeInBrowser(t *testing.T) {
	chromium := os.Getenv("COHORT_CHROMIUM")
	if chromium == "" {
		t.Skip("COHORT_CHROMIUM is empty: no headless Chromium for the browser test (run it through scripts/test.sh)")
	}
	bin := cohortBinary(t)
	dir := t.TempDir()
	httpAddr, clusterAddr := freeAddr(t), freeAddr(t)
	p := startDev(t, bin, dir, httpAddr, clusterAddr)
	base := "http://" + httpAddr

	artifacts, err := filepath.Abs("artifacts")
	must(t, err)
	must(t, os.MkdirAll(artifacts, 0o755))
	upload := filepath.Join(t.TempDir(), "hello cohort.txt")
	must(t, os.WriteFile(upload, []byte("uploaded from headless Chromium\n"), 0o644))

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 960),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// The first call starts the browser and must not carry a timeout.
	if err := chromedp.Do(browser, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("browser: open %s: %v", base, err)
	}
	ctx, cancel := context.WithTimeout(browser, 3*time.Minute)
	defer cancel()

	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("inc")),
		waitJS(`document.getElementById("served-by").textContent === "dev"`),
		chromedp.Click(chromedp.ID("inc")),
		waitJS(`document.getElementById("count").textContent === "1"`),
		chromedp.Click(chromedp.ID("inc")),
		waitJS(`document.getElementById("count").textContent === "2"`),
		chromedp.SendKeys(chromedp.ID("user"), "alice"),
		chromedp.Click(chromedp.ID("login")),
		waitJS(`document.getElementById("whoami").textContent.includes("alice")`),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{upload}),
		chromedp.Click(chromedp.ID("upload")),
		waitJS(`document.getElementById("files").textContent.includes("hello_cohort.txt")`),
		waitJS(`document.getElementById("ticks").textContent.includes("demo-tick@")`),
		waitJS(`document.getElementById("members").textContent.includes("leader")`),
	)
	if err != nil {
		failShot(ctx, t, artifacts, "devmode-failed.png")
		t.Fatalf("browser: %v\ncohort log tail:\n%s", err, logTail(p.out.String(), 4000))
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(t, err)
	path := filepath.Join(artifacts, "devmode.png")
	must(t, os.WriteFile(path, shot, 0o644))
	t.Logf("screenshot of the demo page: %s", path)

	// The uploaded file reads back through the demo API.
	resp, err := http.Get(base + "/demo/api/files/hello_cohort.txt")
	must(t, err)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "uploaded from headless Chromium\n" {
		t.Fatalf("uploaded file reads %q", got)
	}

	// Restarting keeps the data: session, files, tick rows.
	var ticksBefore struct {
		Ticks []struct {
			RunID string `json:"run_id"`
		} `json:"ticks"`
	}
	resp, err = http.Get(base + "/demo/api/ticks")
	must(t, err)
	_ = json.NewDecoder(resp.Body).Decode(&ticksBefore)
	resp.Body.Close()
	p.stop(t)
	startDev(t, bin, dir, httpAddr, clusterAddr)
	err = chromedp.Do(ctx,
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.ID("inc")),
		waitJS(`document.getElementById("count").textContent === "2"`),
		waitJS(`document.getElementById("whoami").textContent.includes("alice")`),
		waitJS(`document.getElementById("files").textContent.includes("hello_cohort.txt")`),
		chromedp.Click(chromedp.ID("inc")),
		waitJS(`document.getElementById("count").textContent === "3"`),
	)
	if err != nil {
		failShot(ctx, t, artifacts, "devmode-restart-failed.png")
		t.Fatalf("browser after restart: %v", err)
	}
	shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(t, err)
	path = filepath.Join(artifacts, "devmode-after-restart.png")
	must(t, os.WriteFile(path, shot, 0o644))
	t.Logf("screenshot after the restart: %s", path)
	if len(ticksBefore.Ticks) > 0 {
		before := map[string]bool{}
		for _, tk := range ticksBefore.Ticks {
			before[tk.RunID] = true
		}
		poll.Until(t, 30*time.Second, func() (bool, string) {
			var now struct {
				Ticks []struct {
					RunID string `json:"run_id"`
				} `json:"ticks"`
			}
			resp, err := http.Get(base + "/demo/api/ticks")
			if err != nil {
				return false, err.Error()
			}
			_ = json.NewDecoder(resp.Body).Decode(&now)
			resp.Body.Close()
			kept, fresh := false, false
			for _, tk := range now.Ticks {
				kept = kept || before[tk.RunID]
				fresh = fresh || !before[tk.RunID]
			}
			return kept && fresh, fmt.Sprintf("after restart: %+v", now.Ticks)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "dev", "business.db")); err != nil {
		t.Fatalf("dev mode keeps its SQLite business database under data/dev: %v", err)
	}
}

// waitJS waits until the JavaScript expression is true.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	a := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// failShot keeps what the browser showed when a step failed.
func failShot(ctx context.Context, t *testing.T, dir, name string) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if shot, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(dir, name)
		if os.WriteFile(path, shot, 0o644) == nil {
			t.Logf("screenshot of the failure: %s", path)
		}
	}
}

func logTail(s string, n int) string {
	if len(s) > n {
		return fmt.Sprint("...", s[len(s)-n:])
	}
	return s
}
