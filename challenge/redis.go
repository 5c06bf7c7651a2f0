package challenge

import (
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
)

// Key layout (docs/redis.md). Every key starts with the configured prefix.
//
//	{a:<tag>}               hash, one authentication; TTL expiry + 10 min (the
//	                        IdP and the QR page still read its end)
//	{a:<tag>}:qr            hash sha256(qr token) -> expiry ms, one per slot of a QR
//	                        login, written at creation (qr.go); TTL the authentication's
//	{sub:<idNat>}:pending   zset challenge_id -> expiry ms, the practitioner's
//	                        pending logins; TTL the longest expiry
//	{sub:<idNat>}:pushes    zset challenge_id -> creation ms, push logins in the
//	                        window; TTL the window
//	{sub:<idNat>}:denials   string, consecutive denials; TTL 24 h
//	{sub:<idNat>}:block     string, why pushes are blocked; TTL block_duration
//	<prefix>auth-events     pub/sub channel: the tag of an authentication that ended
type keys struct{ prefix string }

func (k keys) auth(tag string) string        { return k.prefix + "{a:" + tag + "}" }
func (k keys) qr(tag string) string          { return k.prefix + "{a:" + tag + "}:qr" }
func (k keys) pending(subject string) string { return k.prefix + "{sub:" + subject + "}:pending" }
func (k keys) pushes(subject string) string  { return k.prefix + "{sub:" + subject + "}:pushes" }
func (k keys) denials(subject string) string { return k.prefix + "{sub:" + subject + "}:denials" }
func (k keys) block(subject string) string   { return k.prefix + "{sub:" + subject + "}:block" }
func (k keys) channel() string               { return k.prefix + "auth-events" }

const auditLua = audit.AppendLua

// createPushScript checks the practitioner's devices and limits and records
// a new push login, atomically on the practitioner's hash tag.
// KEYS: devices, pending, pushes, block, audit.
// ARGV: now_ms, expires_ms, challenge_id, pending_limit, pushes_limit,
// window_ms, created entry, limit entry (with __LIMIT__), minid, audit ttl.
// Returns {ok, device_id, token, ...} | {unknown_user} | {no_active_device} |
// {limit, name, retry_ms}.
var createPushScript = redis.NewScript(auditLua + `
local now = tonumber(ARGV[1])
local out = {'ok'}
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  -- A retried run: the login is already recorded.
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    local d = cjson.decode(v)
    if d.status == 'active' and d.push_token ~= '' then
      table.insert(out, d.device_id); table.insert(out, d.push_token)
    end
  end
  return out
end
local devices = redis.call('HVALS', KEYS[1])
if #devices == 0 then return {'unknown_user'} end
local active = 0
for _, v in ipairs(devices) do
  local d = cjson.decode(v)
  if d.status == 'active' then
    active = active + 1
    if d.push_token ~= '' then table.insert(out, d.device_id); table.insert(out, d.push_token) end
  end
end
if active == 0 then return {'no_active_device'} end
local function refuse(name, retry)
  audit_append(KEYS[5], string.gsub(ARGV[8], '__LIMIT__', name), ARGV[9], ARGV[10])
  return {'limit', name, tostring(math.max(retry, 1))}
end
local block = redis.call('PTTL', KEYS[4])
if block > 0 then return refuse('blocked', block) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return refuse('pending_per_subject', tonumber(first[2]) - now)
end
local window = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return refuse('pushes_per_subject', tonumber(first[2]) + window - now)
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]) - now + 60000)
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('PEXPIRE', KEYS[3], window)
audit_append(KEYS[5], ARGV[7], ARGV[9], ARGV[10])
return out
`)

// pollScript reads an authentication for its IdP. KEYS: auth.
// ARGV: sha256(auth secret), client_id, now_ms, check interval (1|0),
// poll mark ms (when this poll counts as having ended).
// Returns {invalid_grant} | {slow_down, interval_s} | {pending} | {expired} |
// {denied, reason} | {approved, subject, decided_ms, device_id, uv}.
var pollScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'auth_sha', 'client_id', 'status', 'expires_ms', 'interval',
  'last_poll_ms', 'audited', 'delivered', 'reason', 'subject', 'decided_ms', 'device_id', 'uv')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] or h[8] == '1' then return {'invalid_grant'} end
local now = tonumber(ARGV[3])
if ARGV[4] == '1' and h[6] and now - tonumber(h[6]) < tonumber(h[5]) * 1000 then
  local interval = tonumber(h[5]) + 5
  redis.call('HSET', KEYS[1], 'interval', interval, 'last_poll_ms', now)
  return {'slow_down', tostring(interval)}
end
local status = h[3]
if h[7] == '1' and status == 'approved' then
  redis.call('HSET', KEYS[1], 'delivered', '1', 'last_poll_ms', ARGV[5])
  return {'approved', h[10], h[11], h[12], h[13]}
end
redis.call('HSET', KEYS[1], 'last_poll_ms', ARGV[5])
if h[7] == '1' and status == 'denied' then return {'denied', h[9]} end
if status == 'cancelled' then return {'denied', 'cancelled'} end
if now >= tonumber(h[4]) then return {'expired'} end
return {'pending'}
`)

// decideScript records the one decision that wins. KEYS: auth.
// ARGV: subject, device_id, now_ms, nonce, decision, number, uv.
// Returns {notfound} | {conflict} | {gone} | {badnonce} |
// {approved|denied, reason, client_id, kind}.
var decideScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'kind', 'subject', 'status', 'expires_ms', 'nonce', 'number', 'client_id')
if not h[1] or h[2] ~= ARGV[1] then return {'notfound'} end
if h[3] ~= 'pending' and h[3] ~= 'claimed' then return {'conflict'} end
if tonumber(ARGV[3]) >= tonumber(h[4]) then return {'gone'} end
if h[5] ~= ARGV[4] then return {'badnonce'} end
local status, reason = 'denied', 'denied'
if ARGV[5] == 'approve' then
  if ARGV[6] == h[6] then status, reason = 'approved', '' else reason = 'wrong_number' end
elseif ARGV[5] == 'fraud' then
  reason = 'fraud'
end
redis.call('HSET', KEYS[1], 'status', status, 'reason', reason, 'device_id', ARGV[2], 'uv', ARGV[7],
  'decided_ms', ARGV[3], 'audited', '0')
return {status, reason, h[7], h[1]}
`)

// afterDecisionScript audits a decision and keeps the practitioner's
// counters. KEYS: pending, denials, block, audit.
// ARGV: challenge_id, status, reason, denials before block, block ms,
// decision entry, fraud entry, minid, audit ttl.
var afterDecisionScript = redis.NewScript(auditLua + `
redis.call('ZREM', KEYS[1], ARGV[1])
audit_append(KEYS[4], ARGV[6], ARGV[8], ARGV[9])
if ARGV[2] == 'approved' then
  redis.call('DEL', KEYS[2])
  return 'ok'
end
if ARGV[3] == 'fraud' then
  audit_append(KEYS[4], ARGV[7], ARGV[8], ARGV[9])
  redis.call('SET', KEYS[3], 'fraud', 'PX', ARGV[5])
  redis.call('DEL', KEYS[2])
  return 'blocked'
end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
if n >= tonumber(ARGV[4]) then
  redis.call('SET', KEYS[3], 'denials', 'PX', ARGV[5])
  redis.call('DEL', KEYS[2])
  return 'blocked'
end
return 'ok'
`)

// cancelScript cancels an undecided authentication for its IdP. KEYS: auth.
// ARGV: sha256(auth secret), client_id, now_ms.
// Returns {invalid_grant} | {noop} | {cancelled, subject}.
var cancelScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'auth_sha', 'client_id', 'status', 'expires_ms', 'subject')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return {'invalid_grant'} end
if (h[3] ~= 'pending' and h[3] ~= 'claimed') or tonumber(ARGV[3]) >= tonumber(h[4]) then return {'noop'} end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'reason', 'cancelled', 'audited', '1')
return {'cancelled', h[5]}
`)

// claimScript binds a QR login to the claiming device's practitioner.
// KEYS: auth, qr. ARGV: sha256(token), now_ms, subject, device_id.
// Returns {invalid} | {ok, field, value, ...} (the authentication).
var claimScript = redis.NewScript(`
local now = tonumber(ARGV[2])
local exp = redis.call('HGET', KEYS[2], ARGV[1])
if not exp or tonumber(exp) <= now then return {'invalid'} end
local h = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
if h[1] ~= 'pending' or now >= tonumber(h[2]) then return {'invalid'} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'claimed', 'subject', ARGV[3], 'claimed_device', ARGV[4], 'qr_exp_ms', '0')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 'ok')
return out
`)

// claimedScript records a claimed login on the practitioner's hash tag.
// KEYS: pending, audit. ARGV: challenge_id, expires_ms, entry, minid, audit ttl, now_ms.
var claimedScript = redis.NewScript(auditLua + `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'ok' end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) - tonumber(ARGV[6]) + 60000)
audit_append(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
return 'ok'
`)

// cancelledScript audits a cancellation on the practitioner's hash tag.
// KEYS: pending, audit. ARGV: challenge_id, entry, minid, audit ttl.
var cancelledScript = redis.NewScript(auditLua + `
redis.call('ZREM', KEYS[1], ARGV[1])
audit_append(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
return 'ok'
`)
