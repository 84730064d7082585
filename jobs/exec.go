package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// HTTPAction calls a URL for each run (the HTTP executor of config-declared
// jobs). Method defaults to POST. The run is described in headers
// X-Cohort-Job, X-Cohort-Run-Key, X-Cohort-Fence (Fence.Value),
// X-Cohort-Scheduled-At and X-Cohort-Node. Any 2xx answer is success.
type HTTPAction struct {
	URL     string
	Method  string
	Headers map[string]string
	Body    string
	// Client makes the call; nil means a client without a timeout of its
	// own (the job's timeout applies).
	Client *http.Client
}

// Func returns the job function.
func (a HTTPAction) Func() Func {
	client := a.Client
	if client == nil {
		client = &http.Client{}
	}
	method := a.Method
	if method == "" {
		method = http.MethodPost
	}
	return func(ctx context.Context, run Run) error {
		var body io.Reader
		if a.Body != "" {
			body = strings.NewReader(a.Body)
		}
		req, err := http.NewRequestWithContext(ctx, method, a.URL, body)
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		for k, v := range a.Headers {
			req.Header.Set(k, v)
		}
		req.Header.Set("X-Cohort-Job", run.Job)
		req.Header.Set("X-Cohort-Run-Key", run.Key)
		req.Header.Set("X-Cohort-Fence", strconv.FormatUint(run.FencingToken(), 10))
		req.Header.Set("X-Cohort-Scheduled-At", run.ScheduledAt.UTC().Format(time.RFC3339))
		req.Header.Set("X-Cohort-Node", run.Node)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, a.URL, err)
		}
		defer resp.Body.Close()
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: status %d: %s", method, a.URL, resp.StatusCode, bytes.TrimSpace(snippet))
		}
		return nil
	}
}

// CommandAction runs a process for each run (the command executor). The
// process runs in its own process group; when the run's context ends
// (timeout, replace, leadership lost) the whole group is killed. The run is
// described in the environment: COHORT_JOB, COHORT_RUN_KEY, COHORT_FENCE,
// COHORT_FENCE_TERM, COHORT_SCHEDULED_AT, COHORT_NODE.
type CommandAction struct {
	Argv []string          // program and arguments; no shell unless Argv names one
	Dir  string            // working directory; "" is the node's
	Env  map[string]string // added to the node's environment
	// Output receives the combined stdout and stderr; nil discards it.
	Output io.Writer
}

// Func returns the job function.
func (a CommandAction) Func() Func {
	return func(ctx context.Context, run Run) error {
		if len(a.Argv) == 0 {
			return errors.New("command: empty argv")
		}
		cmd := exec.CommandContext(ctx, a.Argv[0], a.Argv[1:]...)
		cmd.Dir = a.Dir
		cmd.Env = os.Environ()
		for k, v := range a.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env,
			"COHORT_JOB="+run.Job,
			"COHORT_RUN_KEY="+run.Key,
			"COHORT_FENCE="+strconv.FormatUint(run.FencingToken(), 10),
			"COHORT_FENCE_TERM="+strconv.FormatUint(run.Fence.Term, 10),
			"COHORT_SCHEDULED_AT="+run.ScheduledAt.UTC().Format(time.RFC3339),
			"COHORT_NODE="+run.Node,
		)
		var tail tailBuffer
		if a.Output != nil {
			cmd.Stdout = io.MultiWriter(a.Output, &tail)
		} else {
			cmd.Stdout = &tail
		}
		cmd.Stderr = cmd.Stdout
		processGroup(cmd)
		cmd.WaitDelay = 2 * time.Second
		err := cmd.Run()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("command %s: %w (process group killed)", a.Argv[0], context.Cause(ctx))
			}
			return fmt.Errorf("command %s: %w: %s", a.Argv[0], err, bytes.TrimSpace(tail.b))
		}
		return nil
	}
}

// tailBuffer keeps the last 512 bytes written, for error messages.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 512 {
		t.b = t.b[len(t.b)-512:]
	}
	return len(p), nil
}
