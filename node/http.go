package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files/mount"
	"github.com/cohortserver/cohort/httpapi"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/raft"
)

// maxAdminBody bounds admin API request bodies.
const maxAdminBody = 1 << 20

func (n *Node) routes() {
	n.mux.HandleFunc("GET /_cohort/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	n.mux.HandleFunc("GET /_cohort/ready", n.handleReady)
	n.mux.Handle("GET /_cohort/status", n.admin(n.handleStatus))
	n.mux.Handle("POST /_cohort/api/nodes", n.admin(n.handleAddNode))
	n.mux.Handle("DELETE /_cohort/api/nodes/{id}", n.admin(n.handleRemoveNode))
	n.mux.Handle("POST /_cohort/api/nodes/{id}/{action}", n.admin(n.handleNodeState))
	n.mux.Handle("POST /_cohort/api/leader/transfer", n.admin(n.handleTransfer))
	n.localRoutes()
	n.mux.Handle("/_cohort/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
}

// Handle mounts a handler on the public front beside /_cohort/ (not behind
// the sessions middleware or the sticky front). Call it before Start.
func (n *Node) Handle(pattern string, h http.Handler) {
	n.notePublic(pattern)
	n.mux.Handle(pattern, h)
}

// HandleAdmin mounts a handler on the public front behind the admin token.
func (n *Node) HandleAdmin(pattern string, h http.HandlerFunc) {
	n.notePublic(pattern)
	n.mux.Handle(pattern, n.admin(h))
}

// notePublic remembers the path of a pattern mounted beside the front, so
// that the fast front (proxy.FastListener) leaves its requests to the mux.
// A path ending in "/" or holding a wildcard covers everything under it.
func (n *Node) notePublic(pattern string) {
	_, path, _ := strings.Cut(strings.TrimSpace(pattern), "/")
	path = "/" + path
	if strings.HasPrefix(path, "/_cohort/") {
		return // frontClaims refuses /_cohort already
	}
	if i := strings.IndexByte(path, '{'); i >= 0 {
		path = path[:i]
	}
	n.publicPaths = append(n.publicPaths, path)
}

// frontClaims tells the fast front which requests are the front's: not a
// node endpoint, and the node serving (caught up, not draining); the rest
// go through the mux (catchup.go's gate and drain) as before.
func (n *Node) frontClaims(path []byte) bool {
	if n.draining.Load() || !n.isCaughtUp() || bytes.HasPrefix(path, []byte("/_cohort")) {
		return false
	}
	for _, p := range n.publicPaths {
		if string(path) == p || strings.HasSuffix(p, "/") && bytes.HasPrefix(path, []byte(p)) {
			return false
		}
	}
	return true
}

// WriteJSON writes v as JSON with status code (httpapi.WriteJSON).
func WriteJSON(w http.ResponseWriter, code int, v any) { httpapi.WriteJSON(w, code, v) }

// WriteError writes the API's error shape {"error": msg} (httpapi.WriteError).
func WriteError(w http.ResponseWriter, code int, msg string) { httpapi.WriteError(w, code, msg) }

// admin guards h with the bearer token, compared in constant time.
func (n *Node) admin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(n.adminToken) == 0 {
			WriteError(w, http.StatusForbidden, "the admin API is disabled: start the node with --admin-token-file")
			return
		}
		if !n.validToken(bearer(r)) && !n.consoleAuthorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <token>")
			return
		}
		h(w, r)
	})
}

// validToken compares hashes so neither content nor length leaks by
// timing; every accepted token is compared, whichever matches.
func (n *Node) validToken(got string) bool {
	if got == "" || len(n.adminTokens) == 0 {
		return false
	}
	a := sha256.Sum256([]byte(got))
	ok := 0
	for _, tok := range n.adminTokens {
		b := sha256.Sum256(tok)
		ok |= subtle.ConstantTimeCompare(a[:], b[:])
	}
	return ok == 1
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	ok, reason := n.Ready(r.Context())
	if !ok {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// Ready reports whether the node can serve: it knows a leader, it has
// applied the leader's commit index as of its last contact, it has caught
// up once since start through a read index (see watchCatchUp), its own
// entry in the member table (its addresses) is applied, and every added
// check (such as the business database) passes.
func (n *Node) Ready(ctx context.Context) (bool, string) {
	if ok, reason := n.cluster.Ready(); !ok {
		return false, reason
	}
	if !n.isCaughtUp() {
		return false, "catching up: the leader's applied index is not confirmed yet"
	}
	if m, ok := n.members.Get(n.cfg.NodeID); !ok || m.HTTPAddress == "" {
		// Until then no other node forwards a session here or sends it a
		// new one: a cluster that reports ready must be whole.
		return false, "announcing: this node's addresses are not in the member table yet"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, c := range n.readyChecks {
		if err := c(ctx); err != nil {
			return false, err.Error()
		}
	}
	return true, ""
}

// MemberStatus is one member in /_cohort/status.
type MemberStatus struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	HTTPAddress string    `json:"http_address"`
	Voter       bool      `json:"voter"`
	State       string    `json:"state"`
	Healthy     bool      `json:"healthy"`
	Leader      bool      `json:"leader"`
	Version     string    `json:"version,omitempty"`
	Since       time.Time `json:"since,omitzero"`
}

// Status is the JSON of /_cohort/status.
type Status struct {
	NodeID        string         `json:"node_id"`
	LeaderID      string         `json:"leader_id"`
	State         string         `json:"state"`
	Term          uint64         `json:"term"`
	CommitIndex   uint64         `json:"commit_index"`
	AppliedIndex  uint64         `json:"applied_index"`
	LastIndex     uint64         `json:"last_index"`
	LastContactMS int64          `json:"last_contact_ms"`
	Ready         bool           `json:"ready"`
	ReadyReason   string         `json:"ready_reason,omitempty"`
	Version       string         `json:"version"`
	UptimeSeconds int64          `json:"uptime_seconds"`
	Members       []MemberStatus `json:"members"`
	App           *AppStatus     `json:"app,omitempty"` // the app beside the node (--app-upstream)
	// Singletons are the --singleton processes and whether they run here.
	Singletons []SingletonStatus `json:"singletons,omitempty"`
	// FilesMount is the state of --files-mount, when set.
	FilesMount *mount.Status `json:"files_mount,omitempty"`
	KV         *KVStatus     `json:"kv,omitempty"`
}

// Status returns this node's view of the cluster.
func (n *Node) Status(ctx context.Context) Status {
	in := n.cluster.Info()
	st := Status{
		NodeID: n.cfg.NodeID, LeaderID: in.LeaderID, State: in.State, Term: in.Term,
		CommitIndex: in.CommitIndex, AppliedIndex: in.AppliedIndex, LastIndex: in.LastIndex,
		Version: buildinfo.Version, UptimeSeconds: int64(time.Since(n.started).Seconds()),
	}
	if !in.LastContact.IsZero() {
		st.LastContactMS = time.Since(in.LastContact).Milliseconds()
	}
	st.Ready, st.ReadyReason = n.Ready(ctx)
	st.App = n.AppStatus()
	st.Singletons = n.Singletons()
	if n.filesMount != nil {
		ms := n.filesMount.Status()
		st.FilesMount = &ms
	}
	st.KV = n.kvStatus()
	servers, _ := n.cluster.Servers()
	for _, s := range servers {
		m, _ := n.members.Get(s.ID)
		ms := MemberStatus{ID: s.ID, Address: s.Address, HTTPAddress: m.HTTPAddress, Voter: s.Voter,
			State: m.State, Healthy: n.members.Healthy(s.ID), Leader: s.ID == in.LeaderID, Version: m.Version, Since: m.Since}
		if ms.State == "" {
			ms.State = membership.StateActive
		}
		st.Members = append(st.Members, ms)
	}
	if st.Members == nil {
		st.Members = []MemberStatus{}
	}
	return st
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, n.Status(r.Context()))
}

// decodeJSON reads a JSON body into v, refusing unknown fields.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		WriteError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (n *Node) handleAddNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID      string `json:"id"`
		Address string `json:"address"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	if !config.ValidNodeID(req.ID) {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("id %q must match [a-z0-9][a-z0-9-]{0,31}", req.ID))
		return
	}
	if host, _, err := net.SplitHostPort(req.Address); err != nil || host == "" {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("address %q must be the node's cluster HOST:PORT", req.Address))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := n.cluster.AddVoter(ctx, req.ID, req.Address); err != nil {
		writeClusterErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"id": req.ID, "address": req.Address, "voter": true})
}

func (n *Node) handleRemoveNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	err := n.cluster.RemoveServer(ctx, id)
	_, inTable := n.members.Get(id)
	switch {
	case errors.Is(err, raft.ErrNotMember) && inTable:
		// Not a Raft member any more (e.g. after a restore or a recovery)
		// but still listed: forgetting it is what the operator asked.
	case err != nil:
		writeClusterErr(w, err)
		return
	}
	if inTable {
		if err := n.members.Forget(ctx, id); err != nil {
			writeClusterErr(w, err)
			return
		}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"removed": id})
}

func (n *Node) handleNodeState(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var state string
	switch r.PathValue("action") {
	case "drain":
		state = membership.StateDraining
	case "disable":
		state = membership.StateDisabled
	case "enable":
		state = membership.StateActive
	default:
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown node action %q: use drain, disable or enable", r.PathValue("action")))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := n.members.SetState(ctx, id, state); err != nil {
		writeClusterErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"id": id, "state": state})
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To string `json:"to"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	before, _ := n.cluster.Leader()
	if err := n.cluster.TransferLeadership(ctx, req.To); err != nil {
		writeClusterErr(w, err)
		return
	}
	// Answer with the leader this node sees once the handover reached it.
	leader := n.waitNewLeader(ctx, before, req.To)
	WriteJSON(w, http.StatusOK, map[string]any{"transferred": true, "to": req.To, "leader_id": leader})
}

// waitNewLeader polls until this node knows a leader other than before (or
// the one asked for), or ctx ends; it returns the leader it sees then.
func (n *Node) waitNewLeader(ctx context.Context, before, want string) string {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		id, _ := n.cluster.Leader()
		if id != "" && id != before && (want == "" || id == want) {
			return id
		}
		if want != "" && id == want {
			return id
		}
		select {
		case <-ctx.Done():
			return id
		case <-t.C:
		}
	}
}

func writeClusterErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, raft.ErrNotMember), errors.Is(err, membership.ErrUnknownNode):
		WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, raft.ErrNoLeader), errors.Is(err, raft.ErrNotStarted):
		WriteError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, raft.ErrOutcomeUnknown):
		WriteError(w, http.StatusServiceUnavailable, err.Error()+"; check the cluster state before retrying")
	case errors.Is(err, membership.ErrBadState):
		WriteError(w, http.StatusBadRequest, err.Error())
	default:
		WriteError(w, http.StatusConflict, err.Error())
	}
}
