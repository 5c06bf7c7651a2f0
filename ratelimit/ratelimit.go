package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options are the settings of a Limiter.
type Options struct {
	SyncEvery time.Duration    // how often Run syncs with Redis; default 100 ms
	Now       func() time.Time // default time.Now
	Logger    *slog.Logger     // default: discard
}

const (
	// keyTTL is the life of a window's counter in Redis; only the current
	// and previous seconds are ever read or written.
	keyTTL = 5 * time.Second
	// syncTimeout bounds one sync: a count older than that is of no use.
	syncTimeout = time.Second
	// warnEvery is the least time between two warnings of a failing Redis.
	warnEvery = 10 * time.Second
)

// Limiter limits requests per second per key across replicas. Allow is safe
// for concurrent use; Run must be running for the limit to be shared and for
// idle keys to be forgotten.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
	rps    int64
	opts   Options

	mu   sync.Mutex
	keys map[string]*entry

	syncMu sync.Mutex // one sync at a time, so that a count is sent once
}

// window is what a replica knows of one key in one second.
type window struct {
	sec     int64 // Unix second
	local   int64 // requests allowed here
	flushed int64 // part of local already added to Redis
	others  int64 // requests allowed by the other replicas, as last read
	touched bool  // a request came, allowed or not
}

// entry is a key's current and previous windows.
type entry struct {
	cur, prev window
}

// roll makes sec the current window, keeping the previous second's one. A
// clock going back does not roll back: the later window stays current.
func (e *entry) roll(sec int64) {
	if sec <= e.cur.sec {
		return
	}
	if e.cur.sec == sec-1 {
		e.prev = e.cur
	} else {
		e.prev = window{sec: sec - 1}
	}
	e.cur = window{sec: sec}
}

// window returns the window of second sec, or nil when it is forgotten.
func (e *entry) window(sec int64) *window {
	switch sec {
	case e.cur.sec:
		return &e.cur
	case e.prev.sec:
		return &e.prev
	}
	return nil
}

// New returns a Limiter allowing rps requests per second per key, summed
// over every replica using the same Redis and prefix ("ecps:" in
// production). It panics when rps < 1.
func New(rdb redis.UniversalClient, prefix string, rps int, opts Options) *Limiter {
	if rps < 1 {
		panic("ratelimit: rps must be at least 1, got " + strconv.Itoa(rps))
	}
	if opts.SyncEvery <= 0 {
		opts.SyncEvery = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Limiter{rdb: rdb, prefix: prefix, rps: int64(rps), opts: opts,
		keys: make(map[string]*entry)}
}

// Allow tells whether a request for key may go on, without calling Redis.
// An allowed request is counted; a refused one is not, and comes with the
// time until the next second (at least 1 ns, at most 1 s).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.opts.Now()
	sec := now.Unix()

	l.mu.Lock()
	e := l.keys[key]
	if e == nil {
		e = &entry{cur: window{sec: sec}, prev: window{sec: sec - 1}}
		l.keys[key] = e
	}
	e.roll(sec)
	w := &e.cur
	w.touched = true
	if w.others+w.local >= l.rps {
		l.mu.Unlock()
		return false, time.Unix(sec+1, 0).Sub(now)
	}
	w.local++
	l.mu.Unlock()
	return true, 0
}

// Run syncs the counts with Redis every SyncEvery until ctx ends. Failures
// are logged at most once every 10 s; the limiter then goes on with its
// local counts.
func (l *Limiter) Run(ctx context.Context) {
	t := time.NewTicker(l.opts.SyncEvery)
	defer t.Stop()
	var (
		lastWarn time.Time
		failures int
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.sync(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if failures > 0 {
				l.opts.Logger.Info("ratelimit: redis sync works again", "failures", failures)
				failures = 0
			}
			continue
		}
		failures++
		if now := l.opts.Now(); lastWarn.IsZero() || now.Sub(lastWarn) >= warnEvery {
			l.opts.Logger.Warn("ratelimit: redis sync failed; limiting on local counts",
				"err", err, "failures", failures)
			lastWarn = now
		}
	}
}

// op is one window of one key to send or read in a sync.
type op struct {
	key   string
	sec   int64
	delta int64            // > 0: INCRBY; 0: GET
	incr  *redis.IntCmd    // when delta > 0
	get   *redis.StringCmd // when delta == 0
}

// sync sends the new local counts and reads the totals back, in one
// pipeline, and forgets the idle keys.
func (l *Limiter) sync(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()

	ops := l.plan(l.opts.Now().Unix())
	if len(ops) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	pipe := l.rdb.Pipeline()
	for i := range ops {
		o := &ops[i]
		k := l.redisKey(o.key, o.sec)
		if o.delta > 0 {
			o.incr = pipe.IncrBy(ctx, k, o.delta)
			pipe.Expire(ctx, k, keyTTL)
		} else {
			o.get = pipe.Get(ctx, k)
		}
	}
	cmds, err := pipe.Exec(ctx)
	l.apply(ops)
	return firstError(cmds, err)
}

// plan rolls every key to second sec, drops the keys without a request in
// this second or the previous one, and lists what to send: the new counts
// of both windows, or a read of the current one when it has nothing new.
func (l *Limiter) plan(sec int64) []op {
	l.mu.Lock()
	defer l.mu.Unlock()
	ops := make([]op, 0, len(l.keys))
	for key, e := range l.keys {
		e.roll(sec)
		if !e.cur.touched && !e.prev.touched {
			delete(l.keys, key)
			continue
		}
		if d := e.prev.local - e.prev.flushed; d > 0 {
			ops = append(ops, op{key: key, sec: e.prev.sec, delta: d})
		}
		ops = append(ops, op{key: key, sec: e.cur.sec, delta: e.cur.local - e.cur.flushed})
	}
	return ops
}

// apply records what a sync sent and read. A window that rolled away in
// the meantime is skipped.
func (l *Limiter) apply(ops []op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ops {
		o := &ops[i]
		var (
			total int64
			err   error
		)
		if o.incr != nil {
			total, err = o.incr.Result()
		} else {
			total, err = o.get.Int64()
			if errors.Is(err, redis.Nil) {
				total, err = 0, nil
			}
		}
		if err != nil {
			continue // not sent (or not known to be): sent again next time
		}
		e := l.keys[o.key]
		if e == nil {
			continue
		}
		w := e.window(o.sec)
		if w == nil {
			continue
		}
		if o.incr != nil {
			w.flushed += o.delta
		}
		if others := total - w.flushed; others > w.others {
			w.others = others
		}
	}
}

// redisKey is the counter of key in second sec.
func (l *Limiter) redisKey(key string, sec int64) string {
	return l.prefix + "{rl:" + key + "}:" + strconv.FormatInt(sec, 10)
}

// firstError is the first failure of a pipeline; a missing counter (GET of
// a window nobody counted yet) is not one.
func firstError(cmds []redis.Cmder, err error) error {
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
			return e
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}
