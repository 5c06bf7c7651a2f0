package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/token"
)

// Failures limits failed attempts per key (a client address signing in)
// over a sliding window: once a key has Limit failures within the last
// Window, its attempts are refused, right or wrong, until the oldest of
// them leaves the window. Unlike Limiter it is exact across replicas, at
// one Redis script per attempt: it guards secrets against guessing, where
// rare attempts and exactness matter more than a round trip.
type Failures struct {
	rdb    redis.UniversalClient
	prefix string
	name   string
	opts   FailuresOptions
}

// FailuresOptions are the settings of a Failures limiter.
type FailuresOptions struct {
	Limit  int              // failures allowed per window; default 10
	Window time.Duration    // default 1 minute
	Now    func() time.Time // default time.Now
}

// Verdict is the outcome of an attempt.
type Verdict struct {
	// Refused: the key is over its limit; the attempt was not counted and
	// must be refused whatever its outcome.
	Refused bool
	// Reached: this failure used the last one allowed; attempts are refused
	// from now on. True at most once per key and window, so that the caller
	// can audit it without an attacker flooding the audit trail.
	Reached bool
	// RetryAfter, when Refused or Reached: until an attempt is allowed again.
	RetryAfter time.Duration
}

// NewFailures returns a Failures limiter whose keys are named
// <prefix>{fail:<name>:<key>}.
func NewFailures(rdb redis.UniversalClient, prefix, name string, opts FailuresOptions) *Failures {
	if opts.Limit < 1 {
		opts.Limit = 10
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Failures{rdb: rdb, prefix: prefix, name: name, opts: opts}
}

// Limit and Window are the limiter's settings.
func (f *Failures) Limit() int            { return f.opts.Limit }
func (f *Failures) Window() time.Duration { return f.opts.Window }

// failuresScript records an attempt. KEYS: failures (zset member -> time
// ms), reached marker. ARGV: now_ms, window_ms, limit, failed (1|0), member.
// Returns {refused, retry_ms} | {reached, retry_ms} | {ok}. The member is
// unique per attempt: the same attempt run twice (a resend after a lost
// reply) counts once.
var failuresScript = redis.NewScript(`
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local function retry(n)
  -- When the (n - limit + 1)th oldest failure leaves, fewer than limit remain.
  local e = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  return tostring(math.max(tonumber(e[2]) + window - now, 1))
end
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[5]) then
  return {'ok'}
end
if n >= limit then return {'refused', retry(n)} end
if ARGV[4] ~= '1' then return {'ok'} end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
n = n + 1
if n >= limit and redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then
  return {'reached', retry(n)}
end
return {'ok'}
`)

// Attempt records an attempt of key whose outcome is known: failed or not.
// Call it before answering, and answer as the Verdict says: a Refused
// attempt must get the refusal even when it was right, or the limit would
// tell a right guess from a wrong one.
func (f *Failures) Attempt(ctx context.Context, key string, failed bool) (Verdict, error) {
	k := f.prefix + "{fail:" + f.name + ":" + key + "}"
	flag := "0"
	if failed {
		flag = "1"
	}
	now := f.opts.Now().UnixMilli()
	vals, err := failuresScript.Run(ctx, f.rdb, []string{k, k + ":reached"}, now, f.opts.Window.Milliseconds(),
		f.opts.Limit, flag, strconv.FormatInt(now, 10)+"."+token.New(9)).StringSlice()
	if err != nil {
		return Verdict{}, fmt.Errorf("failures %s: %w", f.name, err)
	}
	if len(vals) == 0 {
		return Verdict{}, errors.New("failures: empty reply")
	}
	var v Verdict
	switch vals[0] {
	case "refused":
		v.Refused = true
	case "reached":
		v.Reached = true
	default:
		return v, nil
	}
	if len(vals) > 1 {
		ms, _ := strconv.ParseInt(vals[1], 10, 64)
		v.RetryAfter = time.Duration(ms) * time.Millisecond
	}
	return v, nil
}
