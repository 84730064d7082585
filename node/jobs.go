package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cohortserver/cohort/broadcast"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/jobs"
	"github.com/cohortserver/cohort/raft"
)

// setupJobs wires the master-only job runner and the cluster broadcast:
// their state machines, the jobs declared in --jobs-file, the admin API
// and the lifecycle.
func (n *Node) setupJobs() error {
	// A partitioned old leader steps down about 1.5 × StepDown after its
	// last quorum contact; the new one is elected a heartbeat timeout
	// (2 × StepDown) after it at the soonest, and waits one more.
	grace := raft.StepDown(n.cfg.RaftTimeoutScale)
	r, err := jobs.New(jobs.Config{Log: n.cluster, Logger: n.log, History: n.cfg.Jobs.History, StartGrace: grace,
		OnFinish: n.events.JobFinished})
	if err != nil {
		return err
	}
	bus, err := broadcast.New(broadcast.Config{Log: n.cluster, Members: n.members, DataDir: n.cfg.DataDir, Logger: n.log})
	if err != nil {
		return err
	}
	n.jobs, n.bus = r, bus
	for _, s := range n.cfg.Jobs.Specs {
		if err := n.registerDeclaredJob(s.Name, s); err != nil {
			return fmt.Errorf("--jobs-file %s: %w", n.cfg.Jobs.File, err)
		}
	}
	r.Routes(n.HandleAdmin)
	n.HandleAdmin("GET /_cohort/api/messages", n.handleMessages)
	n.HandleAdmin("POST /_cohort/api/messages", n.handlePublish)
	n.OnStart(bus.Start, bus.Close)
	n.OnStart(r.Start, r.Close)
	return nil
}

// Jobs returns the job runner: register Go jobs with Jobs().Register
// before Start.
func (n *Node) Jobs() *jobs.Runner { return n.jobs }

// Broadcast returns the cluster broadcast.
func (n *Node) Broadcast() *broadcast.Bus { return n.bus }

// Publish sends payload on topic to every node's subscribers, through the
// Raft log, from any node. It returns once this node applied the message.
func (n *Node) Publish(ctx context.Context, topic string, payload []byte) error {
	_, err := n.bus.Publish(ctx, topic, payload)
	return err
}

// Subscribe calls handler for each message on topic (broadcast.All for
// every topic) in log order, once per node. Subscribe before Start to see
// messages this node catches up on at startup.
func (n *Node) Subscribe(topic string, handler func(broadcast.Message)) (cancel func()) {
	return n.bus.Subscribe(topic, handler)
}

func (n *Node) registerDeclaredJob(name string, s config.JobSpec) error {
	var fn jobs.Func
	if s.HTTP != nil {
		a := jobs.HTTPAction{URL: s.HTTP.URL, Method: s.HTTP.Method, Headers: s.HTTP.Headers, Body: s.HTTP.Body}
		if s.HTTP.Path != "" && n.upstream != nil {
			// The leader calls its own app, over --app-upstream.
			a.URL, a.Client = n.upstream.URL(s.HTTP.Path), n.upstream.Client()
		}
		fn = a.Func()
	} else {
		fn = jobs.CommandAction{Argv: s.Command, Dir: s.Dir, Env: s.Env, Output: os.Stderr}.Func()
	}
	opts := []jobs.Option{jobs.WithDescription(s.Description)}
	if s.TimeZone != "" {
		opts = append(opts, jobs.WithTimeZone(s.TimeZone))
	}
	if s.Concurrency != "" {
		opts = append(opts, jobs.WithConcurrency(s.Concurrency))
	}
	if s.Misfire != "" || s.CatchUp > 0 || s.MisfireThreshold > 0 {
		policy := s.Misfire
		if policy == "" {
			policy = jobs.MisfireFireOnce
		}
		opts = append(opts, jobs.WithMisfire(policy, s.CatchUp, s.MisfireThreshold))
	}
	if s.Recover != "" {
		opts = append(opts, jobs.WithRecover(s.Recover))
	}
	if s.Timeout > 0 {
		opts = append(opts, jobs.WithTimeout(s.Timeout))
	}
	if s.Retries > 0 {
		backoff, maxBackoff := s.Backoff, s.MaxBackoff
		if backoff == 0 {
			backoff = time.Second
		}
		if maxBackoff < backoff {
			maxBackoff = max(backoff, time.Minute)
		}
		opts = append(opts, jobs.WithRetries(s.Retries, backoff, maxBackoff))
	}
	return n.jobs.Register(name, s.Schedule, fn, opts...)
}

// handleMessages lists the retained broadcast messages (last 24 h).
// since= is a sequence number, an RFC 3339 time or a duration back from
// now (10m); topic= filters.
func (n *Node) handleMessages(w http.ResponseWriter, r *http.Request) {
	var seq uint64
	var from time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			seq = v
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			from = t
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			from = time.Now().Add(-d)
		} else {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("since=%q: want a sequence number, an RFC 3339 time or a duration such as 10m", s))
			return
		}
	}
	msgs := n.bus.Since(seq, from, r.URL.Query().Get("topic"))
	type view struct {
		Seq           uint64    `json:"seq"`
		Topic         string    `json:"topic"`
		Payload       string    `json:"payload,omitempty"`
		PayloadBase64 []byte    `json:"payload_base64,omitempty"`
		Time          time.Time `json:"time"`
		Origin        string    `json:"origin"`
	}
	out := make([]view, 0, len(msgs))
	for _, m := range msgs {
		v := view{Seq: m.Seq, Topic: m.Topic, Time: m.Time, Origin: m.Origin}
		if json.Valid(m.Payload) || isText(m.Payload) {
			v.Payload = string(m.Payload)
		} else {
			v.PayloadBase64 = m.Payload
		}
		out = append(out, v)
	}
	WriteJSON(w, http.StatusOK, map[string]any{"messages": out})
}

func isText(b []byte) bool {
	for _, c := range string(b) {
		if c == 0xFFFD || (c < 0x20 && c != '\n' && c != '\t' && c != '\r') {
			return false
		}
	}
	return true
}

// handlePublish publishes {"topic","payload"} (payload a string).
func (n *Node) handlePublish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		WriteError(w, http.StatusBadRequest, "body must be JSON {\"topic\":\"...\",\"payload\":\"...\"}")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	seq, err := n.bus.Publish(ctx, req.Topic, []byte(req.Payload))
	switch {
	case errors.Is(err, broadcast.ErrBadTopic), errors.Is(err, broadcast.ErrTooLarge):
		WriteError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		WriteError(w, http.StatusServiceUnavailable, err.Error())
	default:
		WriteJSON(w, http.StatusOK, map[string]any{"seq": seq})
	}
}
