// Package stack is the conventional stack's application server for the
// benchmark: the same session counter as cohort's demo, kept in Redis
// through alexedwards/scs, run as several processes behind HAProxy.
//
// It owns only that handler and a minimal scs Store on redigo (GET per
// load; MULTI, SET, PEXPIREAT, EXEC per commit), written here because the
// module proxy of the build machine refuses scs's own redisstore. It does
// not own HAProxy or Redis: the harness starts them.
package stack
