package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Command encoding of a kv.batch entry (all integers uvarint unless noted):
//
//	version(1) | maxValue | maxMemory | nops | op...
//	op  = kind(1 byte) | ns(1 byte) | body
//	cmd (kind 0): nargs | (len | bytes)...
//	tx  (kind 1): watchIndex | nwatch | (len | key | rev)... | ncmds | cmd body...
//	exp (kind 2): nkeys | (len | full key)...   (leader's background expiry)
const (
	batchVersion byte = 1
	opCmd        byte = 0
	opTx         byte = 1
	opExpire     byte = 2
)

var errCodec = errors.New("malformed kv command")

// watch is one WATCHed key: its revision when it was watched (0: missing).
type watch struct {
	key []byte
	rev uint64
}

// op is one decoded operation of a batch.
type op struct {
	kind       byte
	ns         byte
	args       [][]byte   // opCmd
	watchIndex uint64     // opTx: applied index when the first WATCH ran
	watches    []watch    // opTx
	cmds       [][][]byte // opTx
	keys       [][]byte   // opExpire: full keys
}

func appendArgs(b []byte, args [][]byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(args)))
	for _, a := range args {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	return b
}

func encodeCmdOp(ns byte, args [][]byte) []byte {
	b := []byte{opCmd, ns}
	return appendArgs(b, args)
}

func encodeTxOp(ns byte, watchIndex uint64, watches []watch, cmds [][][]byte) []byte {
	b := []byte{opTx, ns}
	b = binary.AppendUvarint(b, watchIndex)
	b = binary.AppendUvarint(b, uint64(len(watches)))
	for _, w := range watches {
		b = binary.AppendUvarint(b, uint64(len(w.key)))
		b = append(b, w.key...)
		b = binary.AppendUvarint(b, w.rev)
	}
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = appendArgs(b, c)
	}
	return b
}

func encodeExpireOp(keys []string) []byte {
	b := []byte{opExpire, 0}
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

func encodeBatch(lim limits, ops [][]byte) []byte {
	n := 1 + 3*binary.MaxVarintLen64
	for _, o := range ops {
		n += len(o)
	}
	b := make([]byte, 0, n)
	b = append(b, batchVersion)
	b = binary.AppendUvarint(b, uint64(lim.maxValue))
	b = binary.AppendUvarint(b, uint64(lim.maxMemory))
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, o := range ops {
		b = append(b, o...)
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCodec
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCodec
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	l := d.uvarint()
	if d.err != nil {
		return nil
	}
	if l > uint64(len(d.b)) {
		d.err = errCodec
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}

// count reads a count that cannot exceed the bytes left (every element
// takes at least one byte), so a corrupt count cannot allocate much.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errCodec
		return 0
	}
	return int(n)
}

func (d *decoder) args() [][]byte {
	n := d.count()
	out := make([][]byte, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.bytes())
	}
	return out
}

// decodeBatch decodes a kv.batch payload. The returned slices alias b.
func decodeBatch(b []byte) (limits, []op, error) {
	d := &decoder{b: b}
	if v := d.byte1(); v != batchVersion {
		return limits{}, nil, fmt.Errorf("%w: version %d", errCodec, v)
	}
	lim := limits{maxValue: int64(d.uvarint()), maxMemory: int64(d.uvarint())}
	n := d.count()
	ops := make([]op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		o := op{kind: d.byte1(), ns: d.byte1()}
		switch o.kind {
		case opCmd:
			o.args = d.args()
		case opTx:
			o.watchIndex = d.uvarint()
			nw := d.count()
			for j := 0; j < nw && d.err == nil; j++ {
				o.watches = append(o.watches, watch{key: d.bytes(), rev: d.uvarint()})
			}
			nc := d.count()
			for j := 0; j < nc && d.err == nil; j++ {
				o.cmds = append(o.cmds, d.args())
			}
		case opExpire:
			nk := d.count()
			for j := 0; j < nk && d.err == nil; j++ {
				o.keys = append(o.keys, d.bytes())
			}
		default:
			d.err = fmt.Errorf("%w: op kind %d", errCodec, o.kind)
		}
		ops = append(ops, o)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCodec, len(d.b))
	}
	return lim, ops, d.err
}

func encodeReplies(rs []Reply) []byte {
	b := binary.AppendUvarint(nil, uint64(len(rs)))
	for _, r := range rs {
		b = appendReply(b, r)
	}
	return b
}

func decodeReplies(b []byte) ([]Reply, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errReplyCodec
	}
	b = b[k:]
	out := make([]Reply, n)
	for i := range out {
		var err error
		if out[i], b, err = readReply(b, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}
