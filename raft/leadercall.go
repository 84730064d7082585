package raft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Leader calls: a follower asks the leader a question that is not a
// command, such as a read index, over one multiplexed connection per
// leader on the cluster port's call channel, framed as the forward channel
// is (forward.go): a request body is
//
//	uvarint timeout (ms, 0: the leader's default) | uvarint len | name | payload
//
// and an answer's is status | uvarint term | body (fwdOK: the handler's
// answer; fwdFailed: the error's text). A round trip costs two small
// writes instead of an HTTP request and its answer. A leader of an older
// version refuses the channel in its handshake; CallLeader then answers
// ErrLeaderCallRefused and the caller asks over HTTP, as before.

// chanCall is the cluster port's channel of leader calls.
const chanCall byte = 'Q'

// LeaderCallFunc answers a leader call on the leader. An error that wraps
// ErrNoLeader tells the caller to ask again (this node stopped leading).
type LeaderCallFunc func(ctx context.Context, payload []byte) ([]byte, error)

// ErrLeaderCallRefused means the leader does not take leader calls (a node
// of an older version): ask it over HTTP.
var ErrLeaderCallRefused = errors.New("the leader does not take leader calls")

// errUnknownCall means the leader has no handler for the call (a node of
// an older version, or a name nobody registered); its text starts the
// leader's answer.
var errUnknownCall = errors.New("unknown leader call")

// leaderCallTimeout bounds a leader call whose caller set no deadline.
const leaderCallTimeout = 10 * time.Second

// HandleLeaderCall registers fn as the answer to the leader call name. Call
// it before Start.
func (c *Cluster) HandleLeaderCall(name string, fn LeaderCallFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.callFns == nil {
		c.callFns = make(map[string]LeaderCallFunc)
	}
	c.callFns[name] = fn
}

// CallLeader asks the leader the call name with payload and returns its
// answer. On the leader it runs the handler itself. Errors: one wrapping
// ErrNoLeader when no leader answered (none known, it stopped leading, the
// connection failed): ask again; ErrLeaderCallRefused when the leader is of
// an older version; the handler's error otherwise.
func (c *Cluster) CallLeader(ctx context.Context, name string, payload []byte) ([]byte, error) {
	if _, err := c.running(); err != nil {
		return nil, err
	}
	if c.IsLeader() {
		fn := c.callFn(name)
		if fn == nil {
			return nil, fmt.Errorf("leader call %q: not registered", name)
		}
		return fn(ctx, payload)
	}
	_, addr := c.Leader()
	if addr == "" {
		return nil, fmt.Errorf("leader call %s: %w", name, ErrNoLeader)
	}
	if !c.calls.usable(addr, len(payload)) {
		return nil, ErrLeaderCallRefused
	}
	status, _, body, err := c.calls.call(ctx, addr, name, payload)
	switch {
	case errors.Is(err, errFwdRefused):
		return nil, ErrLeaderCallRefused
	case err != nil:
		return nil, fmt.Errorf("leader call %s to %s: %w (%w)", name, addr, ErrNoLeader, err)
	}
	switch status {
	case fwdOK:
		return body, nil
	case fwdNotLeader:
		return nil, fmt.Errorf("leader call %s: %s is not the leader: %w", name, addr, ErrNoLeader)
	default:
		if bytes.HasPrefix(body, []byte(errUnknownCall.Error())) {
			return nil, fmt.Errorf("leader call %s to %s: %w", name, addr, errUnknownCall)
		}
		return nil, fmt.Errorf("leader call %s to %s: %s", name, addr, body)
	}
}

func (c *Cluster) callFn(name string) LeaderCallFunc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.callFns[name]
}

// leaderCall decodes and answers one leader call a follower sent over the
// call channel.
func (c *Cluster) leaderCall(ctx context.Context, origin string, body []byte) (status byte, term uint64, out []byte) {
	c.leaderCalls.Add(1)
	ctx = context.WithValue(ctx, peerKey{}, origin) // PeerID names the caller
	ms, n := binary.Uvarint(body)
	if n <= 0 {
		return fwdFailed, 0, []byte("malformed leader call: timeout")
	}
	timeout := leaderCallTimeout
	if ms > 0 {
		timeout = min(time.Duration(ms)*time.Millisecond, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name, payload, err := readString(body[n:], maxTypeLen)
	if err != nil {
		return fwdFailed, 0, []byte("malformed leader call: " + err.Error())
	}
	if !c.IsLeader() {
		return fwdNotLeader, 0, nil
	}
	fn := c.callFn(name)
	if fn == nil {
		return fwdFailed, 0, fmt.Appendf(nil, "%s %q", errUnknownCall, name)
	}
	out, err = fn(ctx, payload)
	switch {
	case errors.Is(err, ErrNoLeader):
		return fwdNotLeader, 0, nil
	case err != nil:
		return fwdFailed, 0, []byte(err.Error())
	}
	return fwdOK, c.Term(), out
}

// commitIndexCall is the leader call of LeaderCommitIndex.
const commitIndexCall = "raft.commitindex"

// answerCommitIndex answers LeaderCommitIndex on the leader: its commit
// index and the term of its entry, as uvarints.
func (c *Cluster) answerCommitIndex(context.Context, []byte) ([]byte, error) {
	if !c.IsLeader() {
		return nil, fmt.Errorf("commit index: %w", ErrNoLeader)
	}
	return encodeIndexTerm(c.CommitIndexTerm()), nil
}

// LeaderCommitIndex is the leader's commit index and the term of its
// entry, as the leader knows them when it answers (no quorum round: a
// catch-up, not a linearizable read index). Passed to CatchUp, it makes this
// node's state cover every write acknowledged before the call. Errors are
// CallLeader's (ErrLeaderCallRefused: ask a leader of an older version
// over HTTP).
func (c *Cluster) LeaderCommitIndex(ctx context.Context) (index, term uint64, err error) {
	out, err := c.CallLeader(ctx, commitIndexCall, nil)
	if err != nil {
		return 0, 0, err
	}
	return decodeIndexTerm(out, "commit index answer")
}
