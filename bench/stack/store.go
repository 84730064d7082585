package stack

import (
	"errors"
	"fmt"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/gomodule/redigo/redis"
)

// RedisStore is an scs.Store on a redigo pool, the way scs's redisstore
// does it: one GET per load, one MULTI/SET/PEXPIREAT/EXEC per commit.
type RedisStore struct {
	pool   *redis.Pool
	prefix string
}

var _ scs.Store = (*RedisStore)(nil)

// NewRedisStore returns a store keeping sessions under "scs:session:" in
// the Redis at addr (host:port). maxIdle bounds the idle connections kept.
func NewRedisStore(addr string, maxIdle int) *RedisStore {
	return &RedisStore{
		prefix: "scs:session:",
		pool: &redis.Pool{
			MaxIdle:     maxIdle,
			IdleTimeout: 5 * time.Minute,
			Dial:        func() (redis.Conn, error) { return redis.Dial("tcp", addr) },
		},
	}
}

// Find implements scs.Store.
func (s *RedisStore) Find(token string) ([]byte, bool, error) {
	conn := s.pool.Get()
	defer conn.Close()
	b, err := redis.Bytes(conn.Do("GET", s.prefix+token))
	if errors.Is(err, redis.ErrNil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis get session: %w", err)
	}
	return b, true, nil
}

// Commit implements scs.Store.
func (s *RedisStore) Commit(token string, b []byte, expiry time.Time) error {
	conn := s.pool.Get()
	defer conn.Close()
	if err := conn.Send("MULTI"); err != nil {
		return fmt.Errorf("redis multi: %w", err)
	}
	if err := conn.Send("SET", s.prefix+token, b); err != nil {
		return fmt.Errorf("redis set session: %w", err)
	}
	if err := conn.Send("PEXPIREAT", s.prefix+token, expiry.UnixMilli()); err != nil {
		return fmt.Errorf("redis pexpireat session: %w", err)
	}
	if _, err := conn.Do("EXEC"); err != nil {
		return fmt.Errorf("redis exec session commit: %w", err)
	}
	return nil
}

// Delete implements scs.Store.
func (s *RedisStore) Delete(token string) error {
	conn := s.pool.Get()
	defer conn.Close()
	if _, err := conn.Do("DEL", s.prefix+token); err != nil {
		return fmt.Errorf("redis del session: %w", err)
	}
	return nil
}

// Close releases the pool's connections.
func (s *RedisStore) Close() error { return s.pool.Close() }
