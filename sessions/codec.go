package sessions

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// Value encoding: one tag byte, then the value. Typed values round-trip
// exactly; anything else is stored as JSON.
const (
	tagString = 's'
	tagInt    = 'i'
	tagUint   = 'u'
	tagBool   = 'b'
	tagFloat  = 'f'
	tagBytes  = 'y'
	tagTime   = 't'
	tagDur    = 'd'
	tagJSON   = 'j'
)

// encodeValue turns a Put value into its stored bytes.
func encodeValue(v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return append([]byte{tagString}, x...), nil
	case []byte:
		return append([]byte{tagBytes}, x...), nil
	case bool:
		if x {
			return []byte{tagBool, 1}, nil
		}
		return []byte{tagBool, 0}, nil
	case int:
		return binary.AppendVarint([]byte{tagInt}, int64(x)), nil
	case int8:
		return binary.AppendVarint([]byte{tagInt}, int64(x)), nil
	case int16:
		return binary.AppendVarint([]byte{tagInt}, int64(x)), nil
	case int32:
		return binary.AppendVarint([]byte{tagInt}, int64(x)), nil
	case int64:
		return binary.AppendVarint([]byte{tagInt}, x), nil
	case uint:
		return binary.AppendUvarint([]byte{tagUint}, uint64(x)), nil
	case uint8:
		return binary.AppendUvarint([]byte{tagUint}, uint64(x)), nil
	case uint16:
		return binary.AppendUvarint([]byte{tagUint}, uint64(x)), nil
	case uint32:
		return binary.AppendUvarint([]byte{tagUint}, uint64(x)), nil
	case uint64:
		return binary.AppendUvarint([]byte{tagUint}, x), nil
	case float32:
		return binary.LittleEndian.AppendUint64([]byte{tagFloat}, math.Float64bits(float64(x))), nil
	case float64:
		return binary.LittleEndian.AppendUint64([]byte{tagFloat}, math.Float64bits(x)), nil
	case time.Time:
		b, err := x.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode time: %w", err)
		}
		return append([]byte{tagTime}, b...), nil
	case time.Duration:
		return binary.AppendVarint([]byte{tagDur}, int64(x)), nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %T as JSON: %w", v, err)
		}
		return append([]byte{tagJSON}, b...), nil
	}
}

// decodeValue returns the Go value of stored bytes: string, []byte, bool,
// int64, uint64, float64, time.Time, time.Duration or json.RawMessage.
func decodeValue(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	body := b[1:]
	switch b[0] {
	case tagString:
		return string(body)
	case tagBytes:
		return append([]byte(nil), body...)
	case tagBool:
		return len(body) == 1 && body[0] == 1
	case tagInt:
		v, _ := binary.Varint(body)
		return v
	case tagUint:
		v, _ := binary.Uvarint(body)
		return v
	case tagFloat:
		if len(body) != 8 {
			return float64(0)
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(body))
	case tagTime:
		var t time.Time
		_ = t.UnmarshalBinary(body)
		return t
	case tagDur:
		v, _ := binary.Varint(body)
		return time.Duration(v)
	case tagJSON:
		return json.RawMessage(append([]byte(nil), body...))
	}
	return nil
}

// Attribute blob: the attributes of a session are one immutable byte slice
// of entries uvarint(len key) key uvarint(len value) value, in first-put
// order. A session costs one allocation for all its data, snapshots copy it
// as is, and a write builds a new blob (copy on write), so readers and
// snapshot views never see a blob change.

// blobIter walks a blob.
type blobIter struct {
	b   []byte
	key []byte
	val []byte
}

func (it *blobIter) next() bool {
	if len(it.b) == 0 {
		return false
	}
	kl, n := binary.Uvarint(it.b)
	if n <= 0 || uint64(len(it.b)-n) < kl {
		it.b = nil
		return false
	}
	it.key = it.b[n : n+int(kl)]
	rest := it.b[n+int(kl):]
	vl, m := binary.Uvarint(rest)
	if m <= 0 || uint64(len(rest)-m) < vl {
		it.b = nil
		return false
	}
	it.val = rest[m : m+int(vl)]
	it.b = rest[m+int(vl):]
	return true
}

// blobGet returns the stored value of key, or nil.
func blobGet(b []byte, key string) []byte {
	it := blobIter{b: b}
	for it.next() {
		if string(it.key) == key {
			return it.val
		}
	}
	return nil
}

// blobKeys lists the keys of a blob.
func blobKeys(b []byte) []string {
	var out []string
	it := blobIter{b: b}
	for it.next() {
		out = append(out, string(it.key))
	}
	return out
}

// validBlob reports whether b decodes completely and has no duplicate key.
func validBlob(b []byte) bool {
	seen := map[string]bool{}
	it := blobIter{b: b}
	n := 0
	for it.next() {
		if seen[string(it.key)] {
			return false
		}
		seen[string(it.key)] = true
		n += entrySize(len(it.key), len(it.val))
	}
	return n == len(b)
}

func entrySize(kl, vl int) int {
	return uvarintLen(uint64(kl)) + kl + uvarintLen(uint64(vl)) + vl
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func appendEntry(dst []byte, key string, val []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(val)))
	return append(dst, val...)
}

// Operations of a commit, in the order the handler made them.
const (
	opSet       byte = 1 // key, value
	opDelete    byte = 2 // key
	opClear     byte = 3 // every attribute
	opIdle      byte = 4 // varint nanoseconds (0 = the default)
	opLifetime  byte = 5 // varint nanoseconds (0 = the default)
	opPrincipal byte = 6 // string ("" = none)

	// Atomic operations: Apply computes their result from the value the
	// key holds at that point of the log, so concurrent ones commute.
	opIncr      byte = 7  // key, varint delta: add to an integer (absent = 0)
	opCAS       byte = 8  // key, expected (flag, value), new (flag, value): set (or delete) only if equal
	opAppend    byte = 9  // key, JSON element: append to a JSON array (absent = [])
	opSetAdd    byte = 10 // key, string member: add to a JSON array of distinct strings
	opSetRemove byte = 11 // key, string member: remove from such an array
)

// atomicOp reports whether ops of kind k return a result and so commit at
// once (see reqSession.atomic).
func atomicOp(k byte) bool { return k >= opIncr && k <= opSetRemove }

type op struct {
	kind byte
	key  string
	val  []byte // opSet, opAppend: the value; opCAS: the new value (nil = delete)
	old  []byte // opCAS: the expected value (nil = absent)
	n    int64
}

// applyOps returns a new blob with ops applied to b (b is not changed)
// and the results of its atomic ops, in order. Only attribute ops are
// handled here. An atomic op on a value of the wrong type fails the whole
// commit (nothing of it is applied).
func applyOps(b []byte, ops []op) ([]byte, []int64, error) {
	var list attrList
	it := blobIter{b: b}
	for it.next() {
		list = append(list, attr{string(it.key), it.val})
	}
	var results []int64
	for _, o := range ops {
		switch o.kind {
		case opSet:
			list.set(o.key, o.val)
		case opDelete:
			list.del(o.key)
		case opClear:
			list = list[:0]
		default:
			if !atomicOp(o.kind) {
				continue
			}
			r, err := list.atomic(o)
			if err != nil {
				return nil, nil, err
			}
			results = append(results, r)
		}
	}
	return list.blob(), results, nil
}

// attr is one attribute while a commit is applied.
type attr struct {
	k string
	v []byte
}

type attrList []attr

func (l attrList) get(key string) []byte {
	for _, e := range l {
		if e.k == key {
			return e.v
		}
	}
	return nil
}

func (l *attrList) set(key string, val []byte) {
	for i := range *l {
		if (*l)[i].k == key {
			(*l)[i].v = val
			return
		}
	}
	*l = append(*l, attr{key, val})
}

func (l *attrList) del(key string) {
	for i := range *l {
		if (*l)[i].k == key {
			*l = append((*l)[:i], (*l)[i+1:]...)
			return
		}
	}
}

// blob encodes the list (nil when empty).
func (l attrList) blob() []byte {
	size := 0
	for _, e := range l {
		size += entrySize(len(e.k), len(e.v))
	}
	if size == 0 {
		return nil
	}
	out := make([]byte, 0, size)
	for _, e := range l {
		out = appendEntry(out, e.k, e.v)
	}
	return out
}

// atomic applies one atomic op and returns its result: the new integer
// (opIncr), 1 or 0 for swapped (opCAS), added (opSetAdd) or removed
// (opSetRemove), the new length (opAppend).
func (l *attrList) atomic(o op) (int64, error) {
	cur := l.get(o.key)
	if len(cur) == 0 {
		cur = nil // no stored value is empty (it has a tag); a malformed one counts as absent
	}
	if (o.kind == opAppend || o.kind == opSetAdd || o.kind == opSetRemove) && string(cur) == string(tagJSON)+"null" {
		cur = nil // a nil slice Put as JSON: an empty list or set
	}
	switch o.kind {
	case opIncr:
		n, err := incr(o.key, cur, o.n)
		if err != nil {
			return 0, err
		}
		l.set(o.key, binary.AppendVarint([]byte{tagInt}, n))
		return n, nil
	case opCAS:
		if !bytes.Equal(cur, o.old) || (cur == nil) != (o.old == nil) {
			return 0, nil
		}
		if o.val == nil {
			l.del(o.key)
		} else {
			l.set(o.key, o.val)
		}
		return 1, nil
	case opAppend:
		elems, err := jsonArray(o.key, cur)
		if err != nil {
			return 0, err
		}
		l.set(o.key, appendJSON(cur, elems, o.val))
		return int64(len(elems) + 1), nil
	default: // opSetAdd, opSetRemove
		return l.setMember(o, cur)
	}
}

// setMember adds or removes one member of a set stored as a JSON array of
// distinct strings, in the order added.
func (l *attrList) setMember(o op, cur []byte) (int64, error) {
	var members []string
	if cur != nil {
		if cur[0] != tagJSON || json.Unmarshal(cur[1:], &members) != nil {
			return 0, &typeError{key: o.key, want: "a set (JSON array of strings)"}
		}
	}
	member := string(o.val)
	i := slices.Index(members, member)
	switch {
	case o.kind == opSetAdd && i >= 0, o.kind == opSetRemove && i < 0:
		return 0, nil
	case o.kind == opSetAdd:
		members = append(members, member)
	default:
		members = slices.Delete(members, i, i+1)
	}
	enc, _ := json.Marshal(members) // strings always encode
	l.set(o.key, append([]byte{tagJSON}, enc...))
	return 1, nil
}

// incr adds delta to the integer value cur (absent = 0).
func incr(key string, cur []byte, delta int64) (int64, error) {
	var n int64
	switch {
	case cur == nil:
	case cur[0] == tagInt:
		n, _ = binary.Varint(cur[1:])
	case cur[0] == tagUint:
		u, _ := binary.Uvarint(cur[1:])
		if u > math.MaxInt64 {
			return 0, &typeError{key: key, want: "an int64"}
		}
		n = int64(u)
	default:
		return 0, &typeError{key: key, want: "an integer"}
	}
	if (delta > 0 && n > math.MaxInt64-delta) || (delta < 0 && n < math.MinInt64-delta) {
		return 0, &typeError{key: key, want: "an integer that does not overflow int64"}
	}
	return n + delta, nil
}

// jsonArray returns the elements of a stored JSON array (none when absent).
func jsonArray(key string, cur []byte) ([]json.RawMessage, error) {
	if cur == nil {
		return nil, nil
	}
	var elems []json.RawMessage
	if cur[0] != tagJSON || len(cur) < 3 || cur[1] != '[' || json.Unmarshal(cur[1:], &elems) != nil {
		return nil, &typeError{key: key, want: "a list (JSON array)"}
	}
	return elems, nil
}

// appendJSON appends elem to the stored array cur, keeping its bytes.
func appendJSON(cur []byte, elems []json.RawMessage, elem []byte) []byte {
	if cur == nil {
		out := append([]byte{tagJSON, '['}, elem...)
		return append(out, ']')
	}
	body := bytes.TrimRight(cur[1:], " \t\r\n")
	out := make([]byte, 0, len(cur)+len(elem)+2)
	out = append(out, tagJSON)
	out = append(out, body[:len(body)-1]...)
	if len(elems) > 0 {
		out = append(out, ',')
	}
	out = append(out, elem...)
	return append(out, ']')
}

// appendResults encodes the results of a commit's atomic ops (Apply's
// answer); decodeResults reads them back.
func appendResults(dst []byte, rs []int64) []byte {
	for _, r := range rs {
		dst = binary.AppendVarint(dst, r)
	}
	return dst
}

func decodeResults(b []byte) []int64 {
	var out []int64
	for len(b) > 0 {
		v, n := binary.Varint(b)
		if n <= 0 {
			break
		}
		out = append(out, v)
		b = b[n:]
	}
	return out
}

// Commands. Every payload starts with a version byte.
const (
	cmdCommit  = "sessions.commit"  // one request's changes to one session
	cmdTouch   = "sessions.touch"   // coalesced last-access times
	cmdSweep   = "sessions.sweep"   // expired ids the leader found
	cmdDestroy = "sessions.destroy" // every session of a principal
	cmdClaim   = "sessions.claim"   // this node takes sessions over (owner = origin)
	cmdVersion = 1
)

// Commit flags.
const (
	flagCreate  byte = 1 << 0 // create newID when absent
	flagRenew   byte = 1 << 1 // move id to newID, carrying its data
	flagDestroy byte = 1 << 2 // delete id first
)

// commit is the replicated form of one request's changes.
type commit struct {
	flags    byte
	id       string // the session the request loaded ("" when none)
	newID    string // the id after the commit when creating or renewing
	maxBytes int64  // the proposer's size limit, enforced in Apply
	idle     int64  // the proposer's idle timeout, for a session it creates
	lifetime int64  // the proposer's lifetime, for a session it creates
	ops      []op
}

type wbuf struct{ b []byte }

func (w *wbuf) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}
func (w *wbuf) bytes(p []byte) {
	w.b = binary.AppendUvarint(w.b, uint64(len(p)))
	w.b = append(w.b, p...)
}

// opt writes an optional value: 0, or 1 and the bytes.
func (w *wbuf) opt(p []byte) {
	if p == nil {
		w.b = append(w.b, 0)
		return
	}
	w.b = append(w.b, 1)
	w.bytes(p)
}

func (w *wbuf) uv(x uint64) { w.b = binary.AppendUvarint(w.b, x) }
func (w *wbuf) v(x int64)   { w.b = binary.AppendVarint(w.b, x) }

type rbuf struct {
	b   []byte
	err error
}

func (r *rbuf) fail() {
	if r.err == nil {
		r.err = errBadCommand
	}
	r.b = nil
}

func (r *rbuf) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *rbuf) uv() uint64 {
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *rbuf) v() int64 {
	x, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *rbuf) raw() []byte {
	l := r.uv()
	if r.err != nil || uint64(len(r.b)) < l {
		r.fail()
		return nil
	}
	p := r.b[:l:l]
	r.b = r.b[l:]
	return p
}

func (r *rbuf) str() string { return string(r.raw()) }

// opt reads what wbuf.opt wrote (nil when absent; never nil when present).
func (r *rbuf) opt() []byte {
	if r.byte() == 0 {
		return nil
	}
	p := r.raw()
	if p == nil {
		p = []byte{}
	}
	return p
}

func (c commit) encode() []byte {
	w := wbuf{b: make([]byte, 0, 64)}
	w.b = append(w.b, cmdVersion, c.flags)
	w.str(c.id)
	w.str(c.newID)
	w.v(c.maxBytes)
	w.v(c.idle)
	w.v(c.lifetime)
	w.uv(uint64(len(c.ops)))
	for _, o := range c.ops {
		w.b = append(w.b, o.kind)
		switch o.kind {
		case opSet:
			w.str(o.key)
			w.bytes(o.val)
		case opDelete:
			w.str(o.key)
		case opIdle, opLifetime:
			w.v(o.n)
		case opPrincipal:
			w.str(o.key)
		case opIncr:
			w.str(o.key)
			w.v(o.n)
		case opCAS:
			w.str(o.key)
			w.opt(o.old)
			w.opt(o.val)
		case opAppend, opSetAdd, opSetRemove:
			w.str(o.key)
			w.bytes(o.val)
		}
	}
	return w.b
}

func decodeCommit(p []byte) (commit, error) {
	r := rbuf{b: p}
	var c commit
	if r.byte() != cmdVersion {
		return c, fmt.Errorf("%w: unknown version", errBadCommand)
	}
	c.flags = r.byte()
	c.id = r.str()
	c.newID = r.str()
	c.maxBytes = r.v()
	c.idle = r.v()
	c.lifetime = r.v()
	n := r.uv()
	if n > uint64(len(r.b)) {
		return c, errBadCommand
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		o := op{kind: r.byte()}
		switch o.kind {
		case opSet:
			o.key = r.str()
			o.val = r.raw()
		case opDelete, opPrincipal:
			o.key = r.str()
		case opIdle, opLifetime:
			o.n = r.v()
		case opClear:
		case opIncr:
			o.key = r.str()
			o.n = r.v()
		case opCAS:
			o.key = r.str()
			o.old = r.opt()
			o.val = r.opt()
		case opAppend, opSetAdd, opSetRemove:
			o.key = r.str()
			o.val = r.raw()
			if o.kind == opAppend && !json.Valid(o.val) {
				r.fail()
			}
		default:
			r.fail()
		}
		c.ops = append(c.ops, o)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return c, r.err
}

// encodeIDs encodes the payload of touch and sweep: a list of ids.
func encodeIDs(ids []string) []byte {
	w := wbuf{b: make([]byte, 0, 2+len(ids)*(idLen+1))}
	w.b = append(w.b, cmdVersion)
	w.uv(uint64(len(ids)))
	for _, id := range ids {
		w.str(id)
	}
	return w.b
}

func decodeIDs(p []byte) ([]string, error) {
	r := rbuf{b: p}
	if r.byte() != cmdVersion {
		return nil, fmt.Errorf("%w: unknown version", errBadCommand)
	}
	n := r.uv()
	if n > uint64(len(r.b)) {
		return nil, errBadCommand
	}
	ids := make([]string, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		ids = append(ids, r.str())
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return ids, r.err
}

// destroyCmd ends every session of a principal except one id.
type destroyCmd struct {
	principal string
	except    string
}

func (d destroyCmd) encode() []byte {
	w := wbuf{}
	w.b = append(w.b, cmdVersion)
	w.str(d.principal)
	w.str(d.except)
	return w.b
}

func decodeDestroy(p []byte) (destroyCmd, error) {
	r := rbuf{b: p}
	if r.byte() != cmdVersion {
		return destroyCmd{}, fmt.Errorf("%w: unknown version", errBadCommand)
	}
	d := destroyCmd{principal: r.str(), except: r.str()}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return d, r.err
}
