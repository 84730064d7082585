package kv

import (
	"strconv"
	"time"
)

// memcached's commands as the state machine runs them, in namespace
// nsMemcached. Their replies are memcached's words as status replies; the
// text server (memcache.go) writes them out.

// mcRelativeMax is memcached's bound: an exptime up to 30 days is relative
// to now, a larger one is a Unix time.
const mcRelativeMax = 60 * 60 * 24 * 30

const (
	mcTooLarge = "SERVER_ERROR object too large for cache"
	mcOOM      = "SERVER_ERROR out of memory storing object"
)

// mcExpiry converts a memcached exptime at leader time now: 0 never
// (returns 0), negative or past means already expired (returns now).
func mcExpiry(exptime, now int64) int64 {
	switch {
	case exptime == 0:
		return 0
	case exptime < 0:
		return now
	case exptime <= mcRelativeMax:
		return now + exptime*int64(time.Second)
	default:
		at := exptime * int64(time.Second)
		if at <= now {
			return now
		}
		return at
	}
}

func mcGet(x *execCtx, a [][]byte) Reply {
	it := x.get(a[1])
	if it == nil || it.typ != typeString {
		return rNil()
	}
	return rArr([]Reply{rBulk(it.str), rInt(int64(it.flags)), rInt(int64(it.rev))})
}

// mcStore: MC.STORE mode key flags exptime cas value.
func mcStore(x *execCtx, a [][]byte) Reply {
	mode, key, val := string(a[1]), a[2], a[6]
	flags, err1 := strconv.ParseUint(string(a[3]), 10, 32)
	exptime, ok2 := parseInt(a[4])
	cas, err3 := strconv.ParseUint(string(a[5]), 10, 64)
	if err1 != nil || !ok2 || err3 != nil {
		return rErr("CLIENT_ERROR bad command line format")
	}
	old := x.get(key)
	if old != nil && old.typ != typeString {
		old = nil // a Redis-side value cannot be here: memcached has its own namespace
	}
	switch mode {
	case "add":
		if old != nil {
			return rStatus("NOT_STORED")
		}
	case "replace", "append", "prepend":
		if old == nil {
			return rStatus("NOT_STORED")
		}
	case "cas":
		if old == nil {
			return rStatus("NOT_FOUND")
		}
		if old.rev != cas {
			return rStatus("EXISTS")
		}
	case "set":
	default:
		return rErr("ERROR")
	}
	n := &item{typ: typeString, str: val, flags: uint32(flags)}
	switch mode {
	case "append", "prepend":
		if !x.checkSize(len(old.str) + len(val)) {
			return rErr(mcTooLarge)
		}
		n.flags, n.expire = old.flags, old.expire
		buf := make([]byte, 0, len(old.str)+len(val))
		if mode == "append" {
			buf = append(append(buf, old.str...), val...)
		} else {
			buf = append(append(buf, val...), old.str...)
		}
		n.str = buf
	default:
		if !x.checkSize(len(val)) {
			return rErr(mcTooLarge)
		}
		n.expire = mcExpiry(exptime, x.now)
		if n.expire != 0 && n.expire <= x.now {
			x.remove(fullKey(x.ns, key))
			return rStatus("STORED")
		}
	}
	x.put(key, n)
	return rStatus("STORED")
}

func mcSetExpiry(x *execCtx, key []byte, exptime int64) *item {
	it := x.get(key)
	if it == nil || it.typ != typeString {
		return nil
	}
	at := mcExpiry(exptime, x.now)
	if at != 0 && at <= x.now {
		x.remove(fullKey(x.ns, key))
		return it
	}
	c := it.clone()
	c.expire = at
	x.put(key, c)
	return c
}

// mcTouch: MC.TOUCH key exptime.
func mcTouch(x *execCtx, a [][]byte) Reply {
	exptime, ok := parseInt(a[2])
	if !ok {
		return rErr("CLIENT_ERROR invalid exptime argument")
	}
	if mcSetExpiry(x, a[1], exptime) == nil {
		return rStatus("NOT_FOUND")
	}
	return rStatus("TOUCHED")
}

// mcGat: MC.GAT key exptime; answers as MC.GET.
func mcGat(x *execCtx, a [][]byte) Reply {
	exptime, ok := parseInt(a[2])
	if !ok {
		return rErr("CLIENT_ERROR invalid exptime argument")
	}
	it := mcSetExpiry(x, a[1], exptime)
	if it == nil {
		return rNil()
	}
	return rArr([]Reply{rBulk(it.str), rInt(int64(it.flags)), rInt(int64(it.rev))})
}

func mcDel(x *execCtx, a [][]byte) Reply {
	if x.get(a[1]) == nil {
		return rStatus("NOT_FOUND")
	}
	x.remove(fullKey(x.ns, a[1]))
	return rStatus("DELETED")
}

// mcIncr: MC.INCR key delta +|-. incr wraps at 2^64, decr stops at 0.
func mcIncr(x *execCtx, a [][]byte) Reply {
	delta, err := strconv.ParseUint(string(a[2]), 10, 64)
	if err != nil {
		return rErr("CLIENT_ERROR invalid numeric delta argument")
	}
	it := x.get(a[1])
	if it == nil || it.typ != typeString {
		return rStatus("NOT_FOUND")
	}
	cur, err := strconv.ParseUint(string(it.str), 10, 64)
	if err != nil {
		return rErr("CLIENT_ERROR cannot increment or decrement non-numeric value")
	}
	if string(a[3]) == "-" {
		cur -= min(cur, delta)
	} else {
		cur += delta
	}
	c := it.clone()
	c.str = strconv.AppendUint(nil, cur, 10)
	x.put(a[1], c)
	return rBulk(c.str)
}

// mcFlush: MC.FLUSH delay. With a delay, items expire then.
func mcFlush(x *execCtx, a [][]byte) Reply {
	delay, ok := parseInt(a[1])
	if !ok || delay < 0 {
		return rErr("CLIENT_ERROR bad command line format")
	}
	at := mcExpiry(delay, x.now)
	for k, it := range x.st.keys {
		if k[0] != x.ns {
			continue
		}
		if delay == 0 || at <= x.now {
			x.remove(k)
			continue
		}
		if it.expire == 0 || it.expire > at {
			c := it.clone()
			c.expire = at
			c.rev = x.index
			x.st.set(k, c)
		}
	}
	return rStatus("OK")
}
