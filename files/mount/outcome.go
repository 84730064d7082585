//go:build linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/raft"
)

// A change whose Raft outcome is unknown (raft.ErrOutcomeUnknown: the
// leadership changed, or the leader's answer was lost, after the command
// went out) is not answered with EIO while the outcome can still be found
// out. settle waits, within the request's wait budget, for a linearizable
// read index; this node's state then holds every command a leader
// committed, and the operation reads there what became of its own:
//   - the entry it was conditioned on is unchanged: the command did not
//     land, and it is sent again (every command of the mount is a
//     compare-and-set on that entry, so a copy still in flight cannot
//     land twice or over a newer change);
//   - the entry moved on: the command landed, or another change came
//     first; either way the answer is success, the command ordered just
//     before whatever followed (a close then did commit and was replaced,
//     an unlink did remove the name before it was made again). Nothing
//     written after the command is undone by sending it again;
//   - creates that must be exclusive (O_EXCL, mkdir) look at who made the
//     file: this node (creates of one name on one node are serialized by
//     the kernel's lock on the directory) means it landed, another node
//     means the race was lost (EEXIST).
// Only when the cluster cannot be reached within the budget (or this node
// is cut off from its quorum) does the operation fail with EIO.

// maxAttempts bounds how often one operation sends its command again after
// an outcome found not to have landed. A command refused because this
// node's view was stale or the file changed meanwhile (a lost
// compare-and-set) is sent again for as long as the operation's context
// lives: last change wins, however many others land in between.
const maxAttempts = 6

// settle waits until this node's state tells the outcome of a command
// that failed with cause (an unknown outcome): files.Store.Settle within
// ctx's wait budget, after which a change that is not in the local state
// never lands. Its error (with cause) means the cluster could not be
// reached in time; the operation then fails with EIO.
func (m *Mount) settle(ctx context.Context, op, p string, cause error) error {
	m.log.Info("files mount: outcome of a change unknown; finding it out", "op", op, "path", p, "err", cause)
	if err := m.store.Settle(ctx); err != nil {
		return fmt.Errorf("%w; finding out its outcome: %w", cause, err)
	}
	return nil
}

// sameEntry reports whether a and b are the same entry of a path (the
// same version, live or tombstone; two zero Infos for no entry at all).
func sameEntry(a, b files.Info) bool {
	return a.Version == b.Version && a.Deleted == b.Deleted
}

// remove deletes the live file at p, whatever its version, as a
// compare-and-set on the version this node sees (after catching up when
// that view refuses it). ENOENT when no file is there.
func (m *Mount) remove(ctx context.Context, op, p string) syscall.Errno {
	caughtUp := false
	var sent *files.Info // the entry a removal with an unknown outcome was conditioned on
	for unknown := 0; ; {
		cur, _ := m.store.Local(p)
		if sent != nil && !sameEntry(cur, *sent) {
			return 0 // landed (or another removal did): the name is gone as asked
		}
		if cur.Version == 0 || cur.Deleted {
			if !caughtUp {
				m.store.Barrier(ctx) // the file may be on its way here
				caughtUp = true
				continue
			}
			return syscall.ENOENT
		}
		_, err := m.store.Remove(ctx, p, &files.WriteOptions{IfVersion: files.Version(cur.Version)})
		switch {
		case err == nil:
			return 0
		case (errors.Is(err, files.ErrVersionMismatch) || errors.Is(err, files.ErrNotFound)) && ctx.Err() == nil:
			// This node's view was behind, or the file changed meanwhile
			// (a close elsewhere): remove what is there now, however many
			// writers commit meanwhile, for as long as the commit may take.
			m.store.Barrier(ctx)
			caughtUp = true
		case isUnknown(err) && unknown < maxAttempts:
			unknown++
			if serr := m.settle(ctx, op, p, err); serr != nil {
				return m.errno(op, p, serr)
			}
			sent = &cur
		default:
			return m.errno(op, p, err)
		}
	}
}

// createEmpty commits an empty file at p on condition that no live file
// is there (O_EXCL creates, mkdir's marker). An unknown outcome is found
// out: the file there, made by this node, is this create's; another
// node's means the race was lost (ErrVersionMismatch); none means the
// create did not land, and it is sent again.
func (m *Mount) createEmpty(ctx context.Context, op, p string, o files.WriteOptions) (files.Info, error) {
	o.IfVersion, o.SizeKnown, o.Size = files.Version(0), true, 0
	for attempt := 0; ; attempt++ {
		info, err := m.put(ctx, p, empty, o)
		if !isUnknown(err) || attempt == maxAttempts-1 {
			return info, err
		}
		if serr := m.settle(ctx, op, p, err); serr != nil {
			return files.Info{}, serr
		}
		if in, ok := m.store.Local(p); ok && !in.Deleted {
			if in.Writer == m.store.Status().Node && in.Size == 0 {
				return in, nil
			}
			return files.Info{}, fmt.Errorf("%w: %s was created by %s meanwhile", files.ErrVersionMismatch, p, in.Writer)
		}
	}
}

// isUnknown reports a command that may or may not have been committed.
func isUnknown(err error) bool { return errors.Is(err, raft.ErrOutcomeUnknown) }
