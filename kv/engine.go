package kv

import (
	"bytes"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Value kinds of a key.
const (
	typeString byte = 1
	typeHash   byte = 2
	typeSet    byte = 3
	typeList   byte = 4
)

// nsMemcached is the namespace of the memcached protocol; Redis databases
// are namespaces 0..NumDBs-1.
const (
	NumDBs             = 16
	NamespaceMemcached = 0xFF
	nsMemcached        = NamespaceMemcached
)

// item is the value of one key. A version is immutable once it is in the
// map: commands replace it (copy on write), so a snapshot is a shallow
// clone of the map and readers need the lock only for the lookup.
type item struct {
	typ    byte
	str    []byte
	hash   map[string][]byte
	set    map[string]struct{}
	list   [][]byte // typeList; elements alias immutable buffers
	expire int64    // unix nanoseconds of the leader's clock; 0 = never
	rev    uint64   // Raft index of the last change (WATCH, memcached cas)
	flags  uint32   // memcached client flags
}

// itemOverhead approximates the bookkeeping bytes of a key, as Redis'
// used_memory counts its dict entries and object headers.
const itemOverhead = 64

func (it *item) size(key string) int64 {
	n := int64(len(key) + len(it.str) + itemOverhead)
	for f, v := range it.hash {
		n += int64(len(f)+len(v)) + 16
	}
	for m := range it.set {
		n += int64(len(m)) + 16
	}
	for _, e := range it.list {
		n += int64(len(e)) + 16
	}
	return n
}

func (it *item) clone() *item {
	c := *it
	if it.hash != nil {
		c.hash = maps.Clone(it.hash)
	}
	if it.set != nil {
		c.set = maps.Clone(it.set)
	}
	if it.list != nil {
		c.list = slices.Clone(it.list)
	}
	return &c
}

// state is the keyspace. Keys are the namespace byte followed by the key.
type state struct {
	keys map[string]*item
	// volatile indexes the keys whose item has an expiry, so that the
	// background expiry looks only at those (Store.expiredKeys).
	volatile   map[string]struct{}
	used       int64  // sum of item sizes
	lastDelete uint64 // Raft index of the last removal of any key (WATCH of a missing key)
}

func newState() *state {
	return &state{keys: make(map[string]*item), volatile: make(map[string]struct{})}
}

// set stores it under the full key k, keeping used and volatile current.
func (st *state) set(k string, it *item) {
	if old := st.keys[k]; old != nil {
		st.used -= old.size(k)
	}
	st.keys[k] = it
	st.used += it.size(k)
	if it.expire != 0 {
		st.volatile[k] = struct{}{}
	} else {
		delete(st.volatile, k)
	}
}

// limits are stamped by the proposer into every batch, so that nodes with
// different flags still agree on what Apply refuses.
type limits struct {
	maxValue  int64
	maxMemory int64 // 0 = unlimited
}

// execCtx is one command's view of the state: inside Apply (write true,
// now the entry's leader time, index its Raft index) or a local read
// (write false, now the node's estimate of the leader's clock).
type execCtx struct {
	st      *state
	now     int64
	index   uint64
	write   bool
	ns      byte
	lim     limits
	publish func(channel, msg []byte)
	// applied is, in a local read, the index applied here; seen is the
	// newest index whose entry the answer so far may reflect: a key's
	// revision, the last delete for a missing key, applied for a listing
	// of keys (Store.read shows nothing above the visible index).
	applied uint64
	seen    uint64
}

// saw notes that the answer may reflect the entry at index.
func (x *execCtx) saw(index uint64) { x.seen = max(x.seen, index) }

func fullKey(ns byte, key []byte) string {
	b := make([]byte, 1+len(key))
	b[0] = ns
	copy(b[1:], key)
	return string(b)
}

// get returns the live item of key, or nil. In Apply an expired item is
// removed (deterministically: the entry's time decides).
func (x *execCtx) get(key []byte) *item {
	k := fullKey(x.ns, key)
	it := x.st.keys[k]
	if it == nil {
		x.saw(x.st.lastDelete)
		return nil
	}
	x.saw(it.rev)
	if it.expire != 0 && x.now >= it.expire {
		if x.write {
			x.remove(k)
		}
		return nil
	}
	return it
}

func (x *execCtx) remove(k string) bool {
	it := x.st.keys[k]
	if it == nil {
		return false
	}
	x.st.used -= it.size(k)
	delete(x.st.keys, k)
	delete(x.st.volatile, k)
	x.st.lastDelete = x.index
	return true
}

// put stores a new version of key.
func (x *execCtx) put(key []byte, it *item) {
	it.rev = x.index
	x.st.set(fullKey(x.ns, key), it)
}

// Error texts are Redis' own, so that clients recognise them.
const (
	errWrongType  = "WRONGTYPE Operation against a key holding the wrong kind of value"
	errNotInt     = "ERR value is not an integer or out of range"
	errOverflow   = "ERR increment or decrement would overflow"
	errSyntax     = "ERR syntax error"
	errOOM        = "OOM command not allowed when used memory > 'maxmemory'."
	errTooBig     = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
	errNoSuchKey  = "ERR no such key"
	errHashNotInt = "ERR hash value is not an integer"
)

func errArity(name string) Reply {
	return rErrf("ERR wrong number of arguments for '%s' command", strings.ToLower(name))
}

// cmdSpec describes one command. arity counts the name, negative means
// "at least". isWrite decides whether an invocation must go through Raft.
type cmdSpec struct {
	arity int
	write func(args [][]byte) bool
	fn    func(x *execCtx, args [][]byte) Reply
}

var (
	isWrite = func([][]byte) bool { return true }
	isRead  = func([][]byte) bool { return false }
)

// commands is the data command table (connection and transaction commands
// are the protocol server's). Names are upper case.
var commands map[string]cmdSpec

func init() {
	commands = map[string]cmdSpec{
		"GET":       {2, isRead, cmdGet},
		"SET":       {-3, isWrite, cmdSet},
		"SETEX":     {4, isWrite, cmdSetex},
		"PSETEX":    {4, isWrite, cmdSetex},
		"SETNX":     {3, isWrite, cmdSetnx},
		"GETDEL":    {2, isWrite, cmdGetdel},
		"GETEX":     {-2, func(a [][]byte) bool { return len(a) > 2 }, cmdGetex},
		"MGET":      {-2, isRead, cmdMget},
		"MSET":      {-3, isWrite, cmdMset},
		"MSETNX":    {-3, isWrite, cmdMset},
		"INCR":      {2, isWrite, cmdIncr},
		"DECR":      {2, isWrite, cmdIncr},
		"INCRBY":    {3, isWrite, cmdIncr},
		"DECRBY":    {3, isWrite, cmdIncr},
		"APPEND":    {3, isWrite, cmdAppend},
		"STRLEN":    {2, isRead, cmdStrlen},
		"DEL":       {-2, isWrite, cmdDel},
		"UNLINK":    {-2, isWrite, cmdDel},
		"EXISTS":    {-2, isRead, cmdExists},
		"EXPIRE":    {-3, isWrite, cmdExpire},
		"PEXPIRE":   {-3, isWrite, cmdExpire},
		"EXPIREAT":  {-3, isWrite, cmdExpire},
		"PEXPIREAT": {-3, isWrite, cmdExpire},
		"TTL":       {2, isRead, cmdTTL},
		"PTTL":      {2, isRead, cmdTTL},
		"PERSIST":   {2, isWrite, cmdPersist},
		"TYPE":      {2, isRead, cmdType},
		"KEYS":      {2, isRead, cmdKeys},
		"SCAN":      {-2, isRead, cmdScan},
		"RENAME":    {3, isWrite, cmdRename},
		"DBSIZE":    {1, isRead, cmdDbsize},
		"FLUSHDB":   {-1, isWrite, cmdFlushdb},
		"HSET":      {-4, isWrite, cmdHset},
		"HMSET":     {-4, isWrite, cmdHset},
		"HSETNX":    {4, isWrite, cmdHsetnx},
		"HGET":      {3, isRead, cmdHget},
		"HMGET":     {-3, isRead, cmdHmget},
		"HGETALL":   {2, isRead, cmdHgetall},
		"HKEYS":     {2, isRead, cmdHgetall},
		"HVALS":     {2, isRead, cmdHgetall},
		"HLEN":      {2, isRead, cmdHlen},
		"HEXISTS":   {3, isRead, cmdHexists},
		"HDEL":      {-3, isWrite, cmdHdel},
		"HINCRBY":   {4, isWrite, cmdHincrby},
		"HSCAN":     {-3, isRead, cmdHscan},
		"SADD":      {-3, isWrite, cmdSadd},
		"SREM":      {-3, isWrite, cmdSrem},
		"SMEMBERS":  {2, isRead, cmdSmembers},
		"SISMEMBER": {3, isRead, cmdSismember},
		"SCARD":     {2, isRead, cmdScard},
		"PUBLISH":   {3, isWrite, cmdPublish},
		"LPUSH":     {-3, isWrite, cmdPush},
		"RPUSH":     {-3, isWrite, cmdPush},
		"LPOP":      {-2, isWrite, cmdPop},
		"RPOP":      {-2, isWrite, cmdPop},
		"LLEN":      {2, isRead, cmdLlen},
		"LRANGE":    {4, isRead, cmdLrange},
		"LINDEX":    {3, isRead, cmdLindex},
		// memcached's commands, in their own namespace (memcache.go).
		"MC.GET":   {2, isRead, mcGet},
		"MC.STORE": {7, isWrite, mcStore},
		"MC.TOUCH": {3, isWrite, mcTouch},
		"MC.GAT":   {3, isWrite, mcGat},
		"MC.DEL":   {2, isWrite, mcDel},
		"MC.INCR":  {4, isWrite, mcIncr},
		"MC.FLUSH": {2, isWrite, mcFlush},
	}
}

// lookupCommand returns the spec of an upper-case name and whether args
// (name included) fit its arity.
func lookupCommand(name string) (cmdSpec, bool) {
	s, ok := commands[name]
	return s, ok
}

func arityOK(s cmdSpec, n int) bool {
	if s.arity >= 0 {
		return n == s.arity
	}
	return n >= -s.arity
}

// run executes one command on x. args[0] is the upper-case name.
func (x *execCtx) run(args [][]byte) Reply {
	name := string(args[0])
	spec, ok := commands[name]
	if !ok {
		return unknownCommand(args)
	}
	if !arityOK(spec, len(args)) {
		return errArity(name)
	}
	return spec.fn(x, args)
}

// unknownCommand is Redis' answer to a command it does not know.
func unknownCommand(args [][]byte) Reply {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.Write(args[0])
	b.WriteString("', with args beginning with: ")
	for _, a := range args[1:min(len(args), 21)] {
		b.WriteByte('\'')
		b.Write(a[:min(len(a), 128)])
		b.WriteString("' ")
	}
	return rErr(b.String())
}

func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

func upper(b []byte) string { return strings.ToUpper(string(b)) }

// checkSize refuses a string value over the limit.
func (x *execCtx) checkSize(n int) bool { return int64(n) <= x.lim.maxValue }

// ---- strings

// getTyped returns the live item of key, nil when missing, or Redis'
// WRONGTYPE error when it holds another type.
func (x *execCtx) getTyped(typ byte, key []byte) (*item, Reply, bool) {
	it := x.get(key)
	if it != nil && it.typ != typ {
		return nil, rErr(errWrongType), false
	}
	return it, Reply{}, true
}

func cmdGet(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rNil()
	}
	return rBulk(it.str)
}

// expiryOption parses one of EX PX EXAT PXAT with its value into an
// absolute expiry (unix ns). ok false means a syntax or range error.
func (x *execCtx) expiryOption(opt string, v []byte, cmd string) (int64, Reply, bool) {
	n, ok := parseInt(v)
	if !ok {
		return 0, rErr(errNotInt), false
	}
	if n <= 0 {
		return 0, rErrf("ERR invalid expire time in '%s' command", cmd), false
	}
	var at int64
	switch opt {
	case "EX":
		if n > math.MaxInt64/int64(time.Second)-x.now/int64(time.Second) {
			return 0, rErrf("ERR invalid expire time in '%s' command", cmd), false
		}
		at = x.now + n*int64(time.Second)
	case "PX":
		if n > math.MaxInt64/int64(time.Millisecond)-x.now/int64(time.Millisecond) {
			return 0, rErrf("ERR invalid expire time in '%s' command", cmd), false
		}
		at = x.now + n*int64(time.Millisecond)
	case "EXAT":
		if n > math.MaxInt64/int64(time.Second) {
			return 0, rErrf("ERR invalid expire time in '%s' command", cmd), false
		}
		at = n * int64(time.Second)
	case "PXAT":
		if n > math.MaxInt64/int64(time.Millisecond) {
			return 0, rErrf("ERR invalid expire time in '%s' command", cmd), false
		}
		at = n * int64(time.Millisecond)
	}
	return at, Reply{}, true
}

func cmdSet(x *execCtx, a [][]byte) Reply {
	key, val := a[1], a[2]
	var nx, xx, keep, get bool
	var expire int64
	var hasExp bool
	for i := 3; i < len(a); i++ {
		switch o := upper(a[i]); o {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "KEEPTTL":
			keep = true
		case "GET":
			get = true
		case "EX", "PX", "EXAT", "PXAT":
			if hasExp || i+1 >= len(a) {
				return rErr(errSyntax)
			}
			at, e, ok := x.expiryOption(o, a[i+1], "set")
			if !ok {
				return e
			}
			expire, hasExp = at, true
			i++
		default:
			return rErr(errSyntax)
		}
	}
	if (nx && xx) || (keep && hasExp) {
		return rErr(errSyntax)
	}
	if !x.checkSize(len(val)) {
		return rErr(errTooBig)
	}
	old := x.get(key)
	if get && old != nil && old.typ != typeString {
		return rErr(errWrongType)
	}
	var prev Reply
	if get {
		prev = rNil()
		if old != nil {
			prev = rBulk(old.str)
		}
	}
	if (nx && old != nil) || (xx && old == nil) {
		if get {
			return prev
		}
		return rNil()
	}
	it := &item{typ: typeString, str: val, expire: expire}
	if keep && old != nil {
		it.expire = old.expire
	}
	x.put(key, it)
	if get {
		return prev
	}
	return rOK()
}

func cmdSetex(x *execCtx, a [][]byte) Reply {
	opt := "EX"
	if string(a[0]) == "PSETEX" {
		opt = "PX"
	}
	at, e, ok := x.expiryOption(opt, a[2], strings.ToLower(string(a[0])))
	if !ok {
		return e
	}
	if !x.checkSize(len(a[3])) {
		return rErr(errTooBig)
	}
	x.put(a[1], &item{typ: typeString, str: a[3], expire: at})
	return rOK()
}

func cmdSetnx(x *execCtx, a [][]byte) Reply {
	if x.get(a[1]) != nil {
		return rInt(0)
	}
	if !x.checkSize(len(a[2])) {
		return rErr(errTooBig)
	}
	x.put(a[1], &item{typ: typeString, str: a[2]})
	return rInt(1)
}

func cmdGetdel(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rNil()
	}
	x.remove(fullKey(x.ns, a[1]))
	return rBulk(it.str)
}

func cmdGetex(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	var expire int64
	persist, set := false, false
	for i := 2; i < len(a); i++ {
		switch o := upper(a[i]); o {
		case "PERSIST":
			persist = true
		case "EX", "PX", "EXAT", "PXAT":
			if set || i+1 >= len(a) {
				return rErr(errSyntax)
			}
			at, e, ok := x.expiryOption(o, a[i+1], "getex")
			if !ok {
				return e
			}
			expire, set = at, true
			i++
		default:
			return rErr(errSyntax)
		}
	}
	if persist && set {
		return rErr(errSyntax)
	}
	if it == nil {
		return rNil()
	}
	if x.write && (persist || set) {
		n := it.clone()
		n.expire = expire
		x.put(a[1], n)
	}
	return rBulk(it.str)
}

func cmdMget(x *execCtx, a [][]byte) Reply {
	out := make([]Reply, 0, len(a)-1)
	for _, k := range a[1:] {
		it := x.get(k)
		if it == nil || it.typ != typeString {
			out = append(out, rNil())
		} else {
			out = append(out, rBulk(it.str))
		}
	}
	return rArr(out)
}

func cmdMset(x *execCtx, a [][]byte) Reply {
	if len(a)%2 != 1 {
		return errArity(string(a[0]))
	}
	for i := 2; i < len(a); i += 2 {
		if !x.checkSize(len(a[i])) {
			return rErr(errTooBig)
		}
	}
	if string(a[0]) == "MSETNX" {
		for i := 1; i < len(a); i += 2 {
			if x.get(a[i]) != nil {
				return rInt(0)
			}
		}
	}
	for i := 1; i < len(a); i += 2 {
		x.put(a[i], &item{typ: typeString, str: a[i+1]})
	}
	if string(a[0]) == "MSETNX" {
		return rInt(1)
	}
	return rOK()
}

func cmdIncr(x *execCtx, a [][]byte) Reply {
	by := int64(1)
	switch string(a[0]) {
	case "DECR":
		by = -1
	case "INCRBY", "DECRBY":
		n, ok := parseInt(a[2])
		if !ok {
			return rErr(errNotInt)
		}
		by = n
		if string(a[0]) == "DECRBY" {
			if n == math.MinInt64 {
				return rErr("ERR decrement would overflow")
			}
			by = -n
		}
	}
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	var cur int64
	var expire int64
	if it != nil {
		if cur, ok = parseInt(it.str); !ok {
			return rErr(errNotInt)
		}
		expire = it.expire
	}
	if (by > 0 && cur > math.MaxInt64-by) || (by < 0 && cur < math.MinInt64-by) {
		return rErr(errOverflow)
	}
	cur += by
	x.put(a[1], &item{typ: typeString, str: strconv.AppendInt(nil, cur, 10), expire: expire})
	return rInt(cur)
}

func cmdAppend(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	n := &item{typ: typeString}
	if it != nil {
		if !x.checkSize(len(it.str) + len(a[2])) {
			return rErr(errTooBig)
		}
		n.expire = it.expire
		n.str = append(slices.Clip(bytes.Clone(it.str)), a[2]...)
	} else {
		if !x.checkSize(len(a[2])) {
			return rErr(errTooBig)
		}
		n.str = a[2]
	}
	x.put(a[1], n)
	return rInt(int64(len(n.str)))
}

func cmdStrlen(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeString, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	return rInt(int64(len(it.str)))
}

// ---- keys

func cmdDel(x *execCtx, a [][]byte) Reply {
	var n int64
	for _, k := range a[1:] {
		if x.get(k) != nil && x.remove(fullKey(x.ns, k)) {
			n++
		}
	}
	return rInt(n)
}

func cmdExists(x *execCtx, a [][]byte) Reply {
	var n int64
	for _, k := range a[1:] {
		if x.get(k) != nil {
			n++
		}
	}
	return rInt(n)
}

func cmdExpire(x *execCtx, a [][]byte) Reply {
	name := string(a[0])
	n, ok := parseInt(a[2])
	if !ok {
		return rErr(errNotInt)
	}
	var nx, xx, gt, lt bool
	for _, o := range a[3:] {
		switch upper(o) {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "GT":
			gt = true
		case "LT":
			lt = true
		default:
			return rErrf("ERR Unsupported option %s", o)
		}
	}
	if nx && (xx || gt || lt) {
		return rErr("ERR NX and XX, GT or LT options at the same time are not compatible")
	}
	if gt && lt {
		return rErr("ERR GT and LT options at the same time are not compatible")
	}
	unit := int64(time.Second)
	if name[0] == 'P' {
		unit = int64(time.Millisecond)
	}
	if n > math.MaxInt64/unit || n < math.MinInt64/unit {
		return rErrf("ERR invalid expire time in '%s' command", strings.ToLower(name))
	}
	at := n * unit
	if !strings.HasSuffix(name, "AT") {
		if at > 0 && x.now > math.MaxInt64-at {
			return rErrf("ERR invalid expire time in '%s' command", strings.ToLower(name))
		}
		at += x.now
	}
	it := x.get(a[1])
	if it == nil {
		return rInt(0)
	}
	cur := it.expire
	switch {
	case nx && cur != 0, xx && cur == 0:
		return rInt(0)
	case gt && (cur == 0 || at <= cur):
		return rInt(0)
	case lt && cur != 0 && at >= cur:
		return rInt(0)
	}
	if at <= x.now {
		x.remove(fullKey(x.ns, a[1]))
		return rInt(1)
	}
	c := it.clone()
	c.expire = at
	x.put(a[1], c)
	return rInt(1)
}

func cmdTTL(x *execCtx, a [][]byte) Reply {
	it := x.get(a[1])
	if it == nil {
		return rInt(-2)
	}
	if it.expire == 0 {
		return rInt(-1)
	}
	left := it.expire - x.now
	if string(a[0]) == "PTTL" {
		return rInt((left + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	}
	return rInt((left + int64(time.Second)/2) / int64(time.Second))
}

func cmdPersist(x *execCtx, a [][]byte) Reply {
	it := x.get(a[1])
	if it == nil || it.expire == 0 {
		return rInt(0)
	}
	c := it.clone()
	c.expire = 0
	x.put(a[1], c)
	return rInt(1)
}

func cmdType(x *execCtx, a [][]byte) Reply {
	it := x.get(a[1])
	if it == nil {
		return rStatus("none")
	}
	return rStatus(map[byte]string{typeString: "string", typeHash: "hash", typeSet: "set", typeList: "list"}[it.typ])
}

// liveKeys lists the live keys of x's namespace matching pattern (nil =
// all), without the namespace byte.
func (x *execCtx) liveKeys(pattern []byte) []string {
	x.saw(x.applied)
	var out []string
	for k, it := range x.st.keys {
		if k[0] != x.ns || (it.expire != 0 && x.now >= it.expire) {
			continue
		}
		if pattern != nil && !matchGlob(string(pattern), k[1:]) {
			continue
		}
		out = append(out, k[1:])
	}
	return out
}

func cmdKeys(x *execCtx, a [][]byte) Reply {
	keys := x.liveKeys(a[1])
	slices.Sort(keys)
	out := make([]Reply, len(keys))
	for i, k := range keys {
		out[i] = rBulk([]byte(k))
	}
	return rArr(out)
}

func cmdDbsize(x *execCtx, _ [][]byte) Reply { return rInt(int64(len(x.liveKeys(nil)))) }

func cmdFlushdb(x *execCtx, _ [][]byte) Reply {
	for k := range x.st.keys {
		if k[0] == x.ns {
			x.remove(k)
		}
	}
	return rOK()
}

func cmdRename(x *execCtx, a [][]byte) Reply {
	it := x.get(a[1])
	if it == nil {
		return rErr(errNoSuchKey)
	}
	if bytes.Equal(a[1], a[2]) {
		return rOK()
	}
	x.remove(fullKey(x.ns, a[1]))
	x.put(a[2], it.clone())
	return rOK()
}

// scanHash orders keys for SCAN cursors: a cursor is the hash to continue
// from, which stays valid while keys come and go (a key present for the
// whole scan is returned once, as Redis promises).
func scanHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	v := h.Sum64()
	if v == 0 {
		v = 1 // 0 is the cursor that starts and ends a scan
	}
	return v
}

// scanPage returns up to count names from names at or after cursor and
// the next cursor (0 at the end).
func scanPage(names []string, cursor uint64, count int) ([]string, uint64) {
	type hk struct {
		h uint64
		k string
	}
	hs := make([]hk, 0, len(names))
	for _, n := range names {
		if h := scanHash(n); h >= cursor {
			hs = append(hs, hk{h, n})
		}
	}
	slices.SortFunc(hs, func(a, b hk) int {
		if a.h != b.h {
			if a.h < b.h {
				return -1
			}
			return 1
		}
		return strings.Compare(a.k, b.k)
	})
	var out []string
	for i, e := range hs {
		if i >= count && e.h != hs[i-1].h {
			return out, e.h
		}
		out = append(out, e.k)
	}
	return out, 0
}

// scanOptions parses MATCH, COUNT (and TYPE for SCAN) from args.
func scanOptions(args [][]byte, allowType bool) (pattern []byte, count int, typ string, e Reply, ok bool) {
	count = 10
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return nil, 0, "", rErr(errSyntax), false
		}
		switch upper(args[i]) {
		case "MATCH":
			pattern = args[i+1]
		case "COUNT":
			n, good := parseInt(args[i+1])
			if !good {
				return nil, 0, "", rErr(errNotInt), false
			}
			if n < 1 {
				return nil, 0, "", rErr(errSyntax), false
			}
			count = int(min(n, 1<<20))
		case "TYPE":
			if !allowType {
				return nil, 0, "", rErr(errSyntax), false
			}
			typ = strings.ToLower(string(args[i+1]))
		default:
			return nil, 0, "", rErr(errSyntax), false
		}
	}
	return pattern, count, typ, Reply{}, true
}

func parseCursor(b []byte) (uint64, bool) {
	c, err := strconv.ParseUint(string(b), 10, 64)
	return c, err == nil
}

func cmdScan(x *execCtx, a [][]byte) Reply {
	cursor, ok := parseCursor(a[1])
	if !ok {
		return rErr("ERR invalid cursor")
	}
	pattern, count, typ, e, ok := scanOptions(a[2:], true)
	if !ok {
		return e
	}
	names := x.liveKeys(pattern)
	if typ != "" {
		kept := names[:0]
		for _, n := range names {
			if t := cmdType(x, [][]byte{nil, []byte(n)}); string(t.Str) == typ {
				kept = append(kept, n)
			}
		}
		names = kept
	}
	page, next := scanPage(names, cursor, count)
	out := make([]Reply, len(page))
	for i, k := range page {
		out[i] = rBulk([]byte(k))
	}
	return rArr([]Reply{rBulk(strconv.AppendUint(nil, next, 10)), rArr(out)})
}

// ---- hashes

func (x *execCtx) hashForWrite(key []byte) (*item, Reply, bool) {
	it, e, ok := x.getTyped(typeHash, key)
	if !ok {
		return nil, e, false
	}
	if it == nil {
		return &item{typ: typeHash, hash: make(map[string][]byte)}, Reply{}, true
	}
	return it.clone(), Reply{}, true
}

func cmdHset(x *execCtx, a [][]byte) Reply {
	if len(a)%2 != 0 {
		return errArity(string(a[0]))
	}
	for i := 3; i < len(a); i += 2 {
		if !x.checkSize(len(a[i])) {
			return rErr(errTooBig)
		}
	}
	it, e, ok := x.hashForWrite(a[1])
	if !ok {
		return e
	}
	var added int64
	for i := 2; i < len(a); i += 2 {
		if _, had := it.hash[string(a[i])]; !had {
			added++
		}
		it.hash[string(a[i])] = a[i+1]
	}
	x.put(a[1], it)
	if string(a[0]) == "HMSET" {
		return rOK()
	}
	return rInt(added)
}

func cmdHsetnx(x *execCtx, a [][]byte) Reply {
	if !x.checkSize(len(a[3])) {
		return rErr(errTooBig)
	}
	it, e, ok := x.hashForWrite(a[1])
	if !ok {
		return e
	}
	if _, had := it.hash[string(a[2])]; had {
		return rInt(0)
	}
	it.hash[string(a[2])] = a[3]
	x.put(a[1], it)
	return rInt(1)
}

func cmdHget(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rNil()
	}
	v, had := it.hash[string(a[2])]
	if !had {
		return rNil()
	}
	return rBulk(v)
}

func cmdHmget(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	out := make([]Reply, 0, len(a)-2)
	for _, f := range a[2:] {
		v, had := []byte(nil), false
		if it != nil {
			v, had = it.hash[string(f)]
		}
		if had {
			out = append(out, rBulk(v))
		} else {
			out = append(out, rNil())
		}
	}
	return rArr(out)
}

func cmdHgetall(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	var fields []string
	if it != nil {
		fields = slices.Sorted(maps.Keys(it.hash))
	}
	var out []Reply
	for _, f := range fields {
		switch string(a[0]) {
		case "HGETALL":
			out = append(out, rBulk([]byte(f)), rBulk(it.hash[f]))
		case "HKEYS":
			out = append(out, rBulk([]byte(f)))
		default:
			out = append(out, rBulk(it.hash[f]))
		}
	}
	if string(a[0]) == "HGETALL" {
		return Reply{Kind: kindMap, Arr: out}
	}
	return rArr(out)
}

func cmdHlen(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	return rInt(int64(len(it.hash)))
}

func cmdHexists(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	_, had := it.hash[string(a[2])]
	return rBool(had)
}

func cmdHdel(x *execCtx, a [][]byte) Reply { return x.delMembers(typeHash, a[1], a[2:]) }

// delMembers removes fields of a hash or members of a set; the key goes
// when nothing is left.
func (x *execCtx) delMembers(typ byte, key []byte, names [][]byte) Reply {
	it, e, ok := x.getTyped(typ, key)
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	it = it.clone()
	var n int64
	for _, f := range names {
		k := string(f)
		if _, had := it.hash[k]; had {
			delete(it.hash, k)
			n++
		} else if _, had := it.set[k]; had {
			delete(it.set, k)
			n++
		}
	}
	if n == 0 {
		return rInt(0)
	}
	if len(it.hash)+len(it.set) == 0 {
		x.remove(fullKey(x.ns, key))
	} else {
		x.put(key, it)
	}
	return rInt(n)
}

func cmdHincrby(x *execCtx, a [][]byte) Reply {
	by, ok := parseInt(a[3])
	if !ok {
		return rErr(errNotInt)
	}
	it, e, ok := x.hashForWrite(a[1])
	if !ok {
		return e
	}
	var cur int64
	if v, had := it.hash[string(a[2])]; had {
		if cur, ok = parseInt(v); !ok {
			return rErr(errHashNotInt)
		}
	}
	if (by > 0 && cur > math.MaxInt64-by) || (by < 0 && cur < math.MinInt64-by) {
		return rErr(errOverflow)
	}
	cur += by
	it.hash[string(a[2])] = strconv.AppendInt(nil, cur, 10)
	x.put(a[1], it)
	return rInt(cur)
}

func cmdHscan(x *execCtx, a [][]byte) Reply {
	cursor, ok := parseCursor(a[2])
	if !ok {
		return rErr("ERR invalid cursor")
	}
	pattern, count, _, e, ok := scanOptions(a[3:], false)
	if !ok {
		return e
	}
	it, e, ok := x.getTyped(typeHash, a[1])
	if !ok {
		return e
	}
	var names []string
	if it != nil {
		for f := range it.hash {
			if pattern == nil || matchGlob(string(pattern), f) {
				names = append(names, f)
			}
		}
	}
	page, next := scanPage(names, cursor, count)
	out := make([]Reply, 0, 2*len(page))
	for _, f := range page {
		out = append(out, rBulk([]byte(f)), rBulk(it.hash[f]))
	}
	return rArr([]Reply{rBulk(strconv.AppendUint(nil, next, 10)), rArr(out)})
}

// ---- sets

func cmdSadd(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeSet, a[1])
	if !ok {
		return e
	}
	if it == nil {
		it = &item{typ: typeSet, set: make(map[string]struct{})}
	} else {
		it = it.clone()
	}
	var n int64
	for _, m := range a[2:] {
		if !x.checkSize(len(m)) {
			return rErr(errTooBig)
		}
		if _, had := it.set[string(m)]; !had {
			it.set[string(m)] = struct{}{}
			n++
		}
	}
	if n > 0 {
		x.put(a[1], it)
	}
	return rInt(n)
}

func cmdSrem(x *execCtx, a [][]byte) Reply { return x.delMembers(typeSet, a[1], a[2:]) }

func cmdSmembers(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeSet, a[1])
	if !ok {
		return e
	}
	out := []Reply{}
	if it != nil {
		for _, m := range slices.Sorted(maps.Keys(it.set)) {
			out = append(out, rBulk([]byte(m)))
		}
	}
	return Reply{Kind: kindSet, Arr: out}
}

func cmdSismember(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeSet, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	_, had := it.set[string(a[2])]
	return rBool(had)
}

func cmdScard(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeSet, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	return rInt(int64(len(it.set)))
}

// cmdPublish goes through the log so that every node delivers each
// message once, in log order; its reply is filled in by the server with
// the receivers on the serving node.
func cmdPublish(x *execCtx, a [][]byte) Reply {
	if x.publish != nil {
		x.publish(a[1], a[2])
	}
	return rInt(0)
}

// ---- lists

func cmdPush(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeList, a[1])
	if !ok {
		return e
	}
	if it == nil {
		it = &item{typ: typeList}
	} else {
		it = it.clone()
	}
	for _, v := range a[2:] {
		if !x.checkSize(len(v)) {
			return rErr(errTooBig)
		}
		if string(a[0]) == "LPUSH" {
			it.list = slices.Insert(it.list, 0, v)
		} else {
			it.list = append(it.list, v)
		}
	}
	x.put(a[1], it)
	return rInt(int64(len(it.list)))
}

func cmdPop(x *execCtx, a [][]byte) Reply {
	if len(a) > 3 {
		return errArity(string(a[0]))
	}
	count, withCount := int64(1), len(a) == 3
	if withCount {
		n, ok := parseInt(a[2])
		if !ok || n < 0 {
			return rErr("ERR value is out of range, must be positive")
		}
		count = n
	}
	it, e, ok := x.getTyped(typeList, a[1])
	if !ok {
		return e
	}
	if it == nil {
		if withCount {
			return Reply{Kind: kindNilArray}
		}
		return rNil()
	}
	it = it.clone()
	n := int(min(count, int64(len(it.list))))
	var out []Reply
	for range n {
		var v []byte
		if string(a[0]) == "LPOP" {
			v, it.list = it.list[0], it.list[1:]
		} else {
			v, it.list = it.list[len(it.list)-1], it.list[:len(it.list)-1]
		}
		out = append(out, rBulk(v))
	}
	if n > 0 {
		if len(it.list) == 0 {
			x.remove(fullKey(x.ns, a[1]))
		} else {
			x.put(a[1], it)
		}
	}
	if withCount {
		return rArr(out)
	}
	if len(out) == 0 {
		return rNil()
	}
	return out[0]
}

func cmdLlen(x *execCtx, a [][]byte) Reply {
	it, e, ok := x.getTyped(typeList, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rInt(0)
	}
	return rInt(int64(len(it.list)))
}

// listIndex turns a Redis index (negative from the end) into a position.
func listIndex(i int64, n int) int64 {
	if i < 0 {
		i += int64(n)
	}
	return i
}

func cmdLrange(x *execCtx, a [][]byte) Reply {
	start, ok1 := parseInt(a[2])
	stop, ok2 := parseInt(a[3])
	if !ok1 || !ok2 {
		return rErr(errNotInt)
	}
	it, e, ok := x.getTyped(typeList, a[1])
	if !ok {
		return e
	}
	out := []Reply{}
	if it == nil {
		return rArr(out)
	}
	n := len(it.list)
	start, stop = max(listIndex(start, n), 0), min(listIndex(stop, n), int64(n)-1)
	for i := start; i <= stop; i++ {
		out = append(out, rBulk(it.list[i]))
	}
	return rArr(out)
}

func cmdLindex(x *execCtx, a [][]byte) Reply {
	i, ok := parseInt(a[2])
	if !ok {
		return rErr(errNotInt)
	}
	it, e, ok := x.getTyped(typeList, a[1])
	if !ok {
		return e
	}
	if it == nil {
		return rNil()
	}
	if i = listIndex(i, len(it.list)); i < 0 || i >= int64(len(it.list)) {
		return rNil()
	}
	return rBulk(it.list[i])
}
