package keycloak

import "github.com/redis/go-redis/v9"

// Key layout (docs/redis.md). Every key starts with the configured prefix and
// carries the {kc} hash tag, so that each script below touches one slot.
//
//	{kc}:job:<id>   hash, one callback: st (waiting | queued | sending | sent |
//	                failed | unknown), status (SUCCEED | UNAUTHORIZED), why (the
//	                reason of an UNAUTHORIZED), params (JSON of the extra fields),
//	                url, tok (the realm's Bearer, removed when the job ends), sub
//	                (idNat), iss, azp, exp (the token's, ms), acc (our 201, ms), t0
//	                (decision or refusal, ms), n (attempts), try (the op of the
//	                claim that owns it), owner, stale, last (last error).
//	                id = challenge_id for a login, kcr_<hash of iss and jti> for a
//	                login that could not start. TTL: the token's exp + Keep while it
//	                waits or is queued, Keep once ended.
//	{kc}:due        zset id -> ms: a queued job's next attempt, a claimed job's
//	                lease end (the job is due again if its replica dies). No TTL:
//	                ended and vanished jobs leave it at once.
type keys struct{ prefix string }

func (k keys) job(id string) string { return k.prefix + "{kc}:job:" + id }
func (k keys) due() string          { return k.prefix + "{kc}:due" }

// Job states.
const (
	stWaiting = "waiting" // the login is pending: nothing to send yet
	stQueued  = "queued"  // to send at its due time
	stSending = "sending" // claimed by a replica: an attempt is (or may be) in flight
)

// expectScript records a job once. KEYS job, due. ARGV: id, st (waiting or
// queued), due ms, ttl ms, then field, value pairs. Returns 1, or 0 when the
// job exists (a resent or repeated record changes nothing).
var expectScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', ARGV[2], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[2] == 'queued' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
`)

// decidedScript queues a waiting job with the login's outcome. KEYS job,
// due. ARGV: id, status, why, params, now ms. Returns ok | dup (already
// queued or ended: a decision sent again) | none (no such job).
var decidedScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return 'none' end
if st ~= 'waiting' then return 'dup' end
redis.call('HSET', KEYS[1], 'st', 'queued', 'status', ARGV[2], 'why', ARGV[3], 'params', ARGV[4], 't0', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 'ok'
`)

// claimScript takes a due job for one attempt: it becomes "sending", owned
// by this claim's op, and due again at the lease's end (if the replica dies,
// another takes it over: "stale", and a stale SUCCEED is never sent again).
// KEYS job, due. ARGV: id, now ms, lease ms, owner, op.
// Returns {ok, field, value, ...} | {notdue} | {gone}. The same claim resent
// (same op) gets the job again.
var claimScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'st', 'try', 'status')
if not h[1] then redis.call('ZREM', KEYS[2], ARGV[1]); return {'gone'} end
local function job()
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, 1, 'ok')
  return out
end
if h[2] == ARGV[5] then return job() end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return {'notdue'} end
local stale = '0'
if h[1] == 'sending' then
  stale = '1'
elseif h[1] ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'gone'}
end
redis.call('HSET', KEYS[1], 'st', 'sending', 'try', ARGV[5], 'owner', ARGV[4], 'stale', stale)
if not (stale == '1' and h[3] == 'SUCCEED') then redis.call('HINCRBY', KEYS[1], 'n', 1) end
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return job()
`)

// retryScript puts a claimed job back in the queue for a later attempt.
// KEYS job, due. ARGV: id, op, next ms, last error. Returns ok | lost
// (another claim owns it now). Resent, it answers ok again.
var retryScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'st', 'try')
if h[2] ~= ARGV[2] or (h[1] ~= 'sending' and h[1] ~= 'queued') then return 'lost' end
redis.call('HSET', KEYS[1], 'st', 'queued', 'last', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 'ok'
`)

// finishScript ends a claimed job: sent, failed or unknown; the token is
// dropped and the job kept a while (a decision sent again finds it).
// KEYS job, due. ARGV: id, op, outcome, keep ms, last error. Returns ok |
// lost. Resent, it answers ok again.
var finishScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'st', 'try')
if not h[1] or h[2] ~= ARGV[2] then return 'lost' end
redis.call('HSET', KEYS[1], 'st', ARGV[3], 'last', ARGV[5])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 'ok'
`)
