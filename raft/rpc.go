package raft

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	hraft "github.com/hashicorp/raft"
)

// maxForwardBody bounds a forwarded command.
const maxForwardBody = 64 << 20

// termHeader carries the term of a forwarded command's entry in the
// leader's answer, so the follower can apply it from its own log at once
// (router.catchUp). A header, not part of the answer's body, so that nodes
// of the previous version ignore it during a rolling upgrade.
const termHeader = "Cohort-Term"

// Status codes of the internal RPCs beyond 200.
const (
	codeNotLeader = http.StatusMisdirectedRequest // retry against the new leader
	codeUnknown   = http.StatusServiceUnavailable // outcome unknown
	codeNotMember = http.StatusGone               // the sender is not in the configuration
)

// forwardApply sends a command to the leader: over the forward channel
// (forward.go), or over HTTP to a leader of the previous version and for
// commands too large for the channel.
func (c *Cluster) forwardApply(ctx context.Context, typ string, payload []byte) (Result, error) {
	_, addr := c.Leader()
	if addr == "" {
		return Result{}, errRetry
	}
	if c.fwd.usable(addr, len(payload)) {
		c.stages.mark(stageForward, 0)
		status, term, body, err := c.fwd.call(ctx, addr, typ, payload)
		if !errors.Is(err, errFwdRefused) {
			if err != nil {
				if errors.Is(err, ErrOutcomeUnknown) {
					return Result{}, fmt.Errorf("forward %s to leader: %w", typ, err)
				}
				return Result{}, err
			}
			var res Result
			switch status {
			case fwdOK:
				res, err = decodeApplyAnswer(body)
				res.term = term
			case fwdNotLeader:
				return Result{}, errRetry
			case fwdUnknown:
				return Result{}, fmt.Errorf("forward %s: %w: %s", typ, ErrOutcomeUnknown, body)
			case fwdNotMember:
				return Result{}, fmt.Errorf("forward %s: %w", typ, ErrRemoved)
			default:
				return Result{}, fmt.Errorf("forward %s to leader: %s", typ, body)
			}
			c.stages.mark(stageForwarded, res.Index)
			return res, err
		}
	}
	return c.forwardHTTP(ctx, addr, typ, payload)
}

// forwardHTTP sends a command to the leader at addr as one HTTP request.
func (c *Cluster) forwardHTTP(ctx context.Context, addr, typ string, payload []byte) (Result, error) {
	body := binary.AppendUvarint(nil, uint64(len(typ)))
	body = append(body, typ...)
	body = append(body, payload...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/_internal/raft/apply", bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("forward apply: %w", err)
	}
	c.stages.mark(stageForward, 0)
	resp, err := c.client.Do(req)
	if err != nil {
		if isDialError(err) {
			return Result{}, errRetry
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("forward %s to leader: %w (%w)", typ, ErrOutcomeUnknown, ctx.Err())
		}
		return Result{}, fmt.Errorf("forward %s to leader: %w: %w", typ, ErrOutcomeUnknown, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardBody))
	if err != nil {
		return Result{}, fmt.Errorf("forward %s to leader: read answer: %w: %w", typ, ErrOutcomeUnknown, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case codeNotLeader:
		return Result{}, errRetry
	case codeUnknown:
		return Result{}, fmt.Errorf("forward %s: %w", typ, ErrOutcomeUnknown)
	case codeNotMember:
		return Result{}, fmt.Errorf("forward %s: %w", typ, ErrRemoved)
	default:
		return Result{}, fmt.Errorf("forward %s to leader: %s: %s", typ, resp.Status, bytes.TrimSpace(rb))
	}
	res, err := decodeApplyAnswer(rb)
	res.term, _ = strconv.ParseUint(resp.Header.Get(termHeader), 10, 64) // absent from an older leader: 0
	c.stages.mark(stageForwarded, res.Index)
	return res, err
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, errBlocked)
}

func (c *Cluster) handleApply(w http.ResponseWriter, r *http.Request) {
	c.httpApplies.Add(1)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBody))
	if err != nil {
		http.Error(w, "read command: "+err.Error(), http.StatusBadRequest)
		return
	}
	typ, payload, err := readString(body, maxTypeLen)
	if err != nil {
		http.Error(w, "malformed forwarded command: "+err.Error(), http.StatusBadRequest)
		return
	}
	status, term, out := c.leaderApply(r.Context(), PeerID(r.Context()), typ, payload)
	switch status {
	case fwdOK:
		if term != 0 {
			w.Header().Set(termHeader, strconv.FormatUint(term, 10))
		}
		_, _ = w.Write(out)
	case fwdNotLeader:
		http.Error(w, string(out), codeNotLeader)
	case fwdUnknown:
		http.Error(w, string(out), codeUnknown)
	case fwdNotMember:
		http.Error(w, string(out), codeNotMember)
	default:
		http.Error(w, string(out), http.StatusInternalServerError)
	}
}

// leaderApply applies a command a follower forwarded, over HTTP or the
// forward channel, and returns the answer's status, the entry's term and
// the answer's bytes (encodeApplyAnswer, or an error's text).
func (c *Cluster) leaderApply(ctx context.Context, origin, typ string, payload []byte) (status byte, term uint64, out []byte) {
	if !c.IsLeader() {
		return fwdNotLeader, 0, []byte("not the leader")
	}
	if origin != "" && !c.inConfiguration(origin) {
		// A removed node would never apply the entry, so it could not
		// answer its caller; and its writes are not the cluster's.
		return fwdNotMember, 0, []byte(ErrRemoved.Error())
	}
	c.stages.mark(stageLeaderRecv, 0)
	res, err := c.applyLocal(ctx, origin, typ, payload)
	var ae *ApplyError
	switch {
	case err == nil, errors.As(err, &ae):
	case errors.Is(err, errRetry):
		return fwdNotLeader, 0, []byte("not the leader")
	case errors.Is(err, ErrOutcomeUnknown):
		return fwdUnknown, 0, []byte(err.Error())
	default:
		return fwdFailed, 0, []byte(err.Error())
	}
	c.stages.mark(stageLeaderReply, res.Index)
	return fwdOK, res.term, encodeApplyAnswer(res, ae)
}

// encodeApplyAnswer: uvarint index | uvarint len | error JSON | data.
func encodeApplyAnswer(res Result, ae *ApplyError) []byte {
	var ej []byte
	if ae != nil {
		ej, _ = json.Marshal(ae)
	}
	b := binary.AppendUvarint(nil, res.Index)
	b = binary.AppendUvarint(b, uint64(len(ej)))
	b = append(b, ej...)
	return append(b, res.Data...)
}

func decodeApplyAnswer(b []byte) (Result, error) {
	idx, n := binary.Uvarint(b)
	if n <= 0 {
		return Result{}, fmt.Errorf("malformed apply answer: %w", ErrOutcomeUnknown)
	}
	b = b[n:]
	el, n := binary.Uvarint(b)
	if n <= 0 || el > uint64(len(b)-n) {
		return Result{}, fmt.Errorf("malformed apply answer: %w", ErrOutcomeUnknown)
	}
	res := Result{Index: idx, Data: b[n+int(el):]}
	if el > 0 {
		ae := &ApplyError{}
		if err := json.Unmarshal(b[n:n+int(el)], ae); err != nil {
			return res, fmt.Errorf("malformed apply error: %w", err)
		}
		return res, ae
	}
	return res, nil
}

// JoinRequest asks the cluster to add a voter.
type JoinRequest struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// AddVoter adds (or re-addresses) a voter through the leader. It is
// idempotent for the same id and address.
func (c *Cluster) AddVoter(ctx context.Context, id, addr string) error {
	return c.leaderDo(ctx, "join", JoinRequest{ID: id, Address: addr}, func() error {
		return c.addVoterLocal(id, addr)
	})
}

func (c *Cluster) addVoterLocal(id, addr string) error {
	if id == "" || addr == "" {
		return errors.New("join: both id and address are required")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("join: address %q is not host:port", addr)
	}
	servers, err := c.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.ID == id && s.Address == addr && s.Voter {
			return nil // already a member: joining again is a no-op
		}
		if s.Address == addr && s.ID != id {
			return fmt.Errorf("join: address %s is already used by node %q; remove that node first", addr, s.ID)
		}
	}
	if err := c.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(addr), 0, 30*time.Second).Error(); err != nil {
		return mapLeaderErr(fmt.Errorf("add voter %s: %w", id, err), err)
	}
	c.log.Info("added voter", "id", id, "address", addr)
	return nil
}

// RemoveServer removes a node from the configuration through the leader.
func (c *Cluster) RemoveServer(ctx context.Context, id string) error {
	return c.leaderDo(ctx, "remove", JoinRequest{ID: id}, func() error {
		if !c.inConfiguration(id) {
			return fmt.Errorf("remove %q: %w", id, ErrNotMember)
		}
		if err := c.raft.RemoveServer(hraft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
			return mapLeaderErr(fmt.Errorf("remove %s: %w", id, err), err)
		}
		c.log.Info("removed server", "id", id)
		return nil
	})
}

// TransferLeadership hands leadership to node to ("" lets Raft choose).
func (c *Cluster) TransferLeadership(ctx context.Context, to string) error {
	return c.leaderDo(ctx, "transfer", JoinRequest{ID: to}, func() error {
		var f hraft.Future
		if to == "" {
			f = c.raft.LeadershipTransfer()
		} else {
			if to == c.cfg.NodeID {
				return nil // already the leader
			}
			addr := ""
			servers, err := c.Servers()
			if err != nil {
				return err
			}
			for _, s := range servers {
				if s.ID == to {
					addr = s.Address
				}
			}
			if addr == "" {
				return fmt.Errorf("transfer leadership to %q: %w", to, ErrNotMember)
			}
			f = c.raft.LeadershipTransferToServer(hraft.ServerID(to), hraft.ServerAddress(addr))
		}
		if err := f.Error(); err != nil {
			return mapLeaderErr(fmt.Errorf("transfer leadership: %w", err), err)
		}
		return nil
	})
}

func mapLeaderErr(wrapped, err error) error {
	if errors.Is(err, hraft.ErrNotLeader) {
		return errRetry
	}
	return wrapped
}

// leaderDo runs local on the leader, or forwards op to it, retrying while
// no leader is known.
func (c *Cluster) leaderDo(ctx context.Context, op string, body JoinRequest, local func() error) error {
	if _, err := c.running(); err != nil {
		return err
	}
	backoff := 20 * time.Millisecond
	for {
		var err error
		if c.IsLeader() {
			err = local()
		} else {
			err = c.forwardOp(ctx, op, body)
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%w)", op, ErrNoLeader, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func (c *Cluster) forwardOp(ctx context.Context, op string, body JoinRequest) error {
	_, addr := c.Leader()
	if addr == "" {
		return errRetry
	}
	return postOp(ctx, c.client, addr, op, body)
}

func postOp(ctx context.Context, client *http.Client, addr, op string, body JoinRequest) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/_internal/raft/"+op, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if isDialError(err) {
			return errRetry
		}
		return fmt.Errorf("%s through %s: %w", op, addr, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case codeNotLeader, http.StatusServiceUnavailable:
		return errRetry
	case http.StatusNotFound:
		return fmt.Errorf("%s: %s: %w", op, bytes.TrimSpace(msg), ErrNotMember)
	default:
		return fmt.Errorf("%s through %s: %s", op, addr, bytes.TrimSpace(msg))
	}
}

func (c *Cluster) opHandler(w http.ResponseWriter, r *http.Request, op func(JoinRequest) error) {
	var req JoinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "malformed request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !c.IsLeader() {
		// Forward once more: the caller may have had a stale leader.
		if _, addr := c.Leader(); addr != "" {
			err := postOp(r.Context(), c.client, addr, r.URL.Path[len("/_internal/raft/"):], req)
			writeOpErr(w, err)
			return
		}
		http.Error(w, "no leader", http.StatusServiceUnavailable)
		return
	}
	writeOpErr(w, op(req))
}

func writeOpErr(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusOK)
	case errors.Is(err, errRetry), errors.Is(err, ErrNoLeader):
		http.Error(w, "not the leader", codeNotLeader)
	case errors.Is(err, ErrNotMember):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		http.Error(w, err.Error(), http.StatusConflict)
	}
}

func (c *Cluster) handleJoin(w http.ResponseWriter, r *http.Request) {
	c.opHandler(w, r, func(q JoinRequest) error { return c.addVoterLocal(q.ID, q.Address) })
}

func (c *Cluster) handleRemove(w http.ResponseWriter, r *http.Request) {
	c.opHandler(w, r, func(q JoinRequest) error {
		return c.RemoveServer(r.Context(), q.ID)
	})
}

func (c *Cluster) handleTransfer(w http.ResponseWriter, r *http.Request) {
	c.opHandler(w, r, func(q JoinRequest) error {
		return c.TransferLeadership(r.Context(), q.ID)
	})
}

// Join asks the members at addrs (cluster addresses, any member) to add
// this node as a voter, trying each in turn with backoff until one accepts
// or ctx ends. Joining is idempotent.
func (c *Cluster) Join(ctx context.Context, addrs []string) error {
	if _, err := c.running(); err != nil {
		return err
	}
	self := JoinRequest{ID: c.cfg.NodeID, Address: c.AdvertiseAddr()}
	backoff := 100 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		for _, a := range addrs {
			if a == self.Address {
				continue
			}
			err := postOp(ctx, c.client, a, "join", self)
			if err == nil {
				c.log.Info("joined cluster", "through", a, "attempt", attempt)
				return nil
			}
			if errors.Is(err, errRetry) {
				err = fmt.Errorf("%s is unreachable or has no leader", a)
			}
			last = err
			c.log.Warn("join attempt failed", "through", a, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join through %v: %w (last error: %w)", addrs, ctx.Err(), last)
		case <-c.stop:
			return ErrNotStarted
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
