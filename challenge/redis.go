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
//	{sub:<idNat>}:refused:<challenge_id>  string "limit|retry_ms", a push login
//	                        refused by a limit, so that the script run again
//	                        answers the same; TTL 1 min
//	{sub:<idNat>}:ended:<challenge_id>    string, the end of a login (decision
//	                        or cancellation) was counted and audited on the
//	                        practitioner's side; TTL the authentication's
//	<prefix>auth-events     pub/sub channel: the tag of an authentication that ended
type keys struct{ prefix string }

func (k keys) auth(tag string) string        { return k.prefix + "{a:" + tag + "}" }
func (k keys) qr(tag string) string          { return k.prefix + "{a:" + tag + "}:qr" }
func (k keys) pending(subject string) string { return k.prefix + "{sub:" + subject + "}:pending" }
func (k keys) pushes(subject string) string  { return k.prefix + "{sub:" + subject + "}:pushes" }
func (k keys) denials(subject string) string { return k.prefix + "{sub:" + subject + "}:denials" }
func (k keys) block(subject string) string   { return k.prefix + "{sub:" + subject + "}:block" }
func (k keys) refused(subject, challengeID string) string {
	return k.prefix + "{sub:" + subject + "}:refused:" + challengeID
}
func (k keys) ended(subject, challengeID string) string {
	return k.prefix + "{sub:" + subject + "}:ended:" + challengeID
}
func (k keys) channel() string { return k.prefix + "auth-events" }

const auditLua = audit.AppendLua

// createPushScript checks the practitioner's devices and limits and records
// a new push login, atomically on the practitioner's hash tag.
// KEYS: devices, pending, pushes, block, audit, refused.
// ARGV: now_ms, expires_ms, challenge_id, pending_limit, pushes_limit,
// window_ms, created entry, limit entry (with __LIMIT__), minid, audit ttl.
// Returns {ok, device_id, token, ...} | {unknown_user} | {no_active_device} |
// {limit, name, retry_ms}. Run again for the same challenge_id, it answers
// as the first run did and changes nothing.
var createPushScript = redis.NewScript(auditLua + `
local now = tonumber(ARGV[1])
local out = {'ok'}
local refused = redis.call('GET', KEYS[6])
if refused then
  local name, retry = string.match(refused, '^(.*)|(.*)$')
  return {'limit', name, retry}
end
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
  retry = tostring(math.max(retry, 1))
  redis.call('SET', KEYS[6], name .. '|' .. retry, 'PX', 60000)
  return {'limit', name, retry}
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
// poll mark ms (when this poll counts as having ended), op (this read).
// Returns {invalid_grant} | {slow_down, interval_s} | {pending} | {expired} |
// {denied, reason} | {approved, subject, decided_ms, device_id, uv, identity}.
// The read that delivers the result leaves its op in "delivered": the same
// read resent (a lost reply) gets the result again, any other invalid_grant.
var pollScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'auth_sha', 'client_id', 'status', 'expires_ms', 'interval',
  'last_poll_ms', 'audited', 'delivered', 'reason', 'subject', 'decided_ms', 'device_id', 'uv', 'poll_op', 'identity')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return {'invalid_grant'} end
if h[8] ~= '0' then
  if h[8] == ARGV[6] then return {'approved', h[10], h[11], h[12], h[13], h[15] or ''} end
  return {'invalid_grant'}
end
local now = tonumber(ARGV[3])
local again = h[14] == ARGV[6]
if ARGV[4] == '1' and not again and h[6] and now - tonumber(h[6]) < tonumber(h[5]) * 1000 then
  local interval = tonumber(h[5]) + 5
  redis.call('HSET', KEYS[1], 'interval', interval, 'last_poll_ms', now, 'poll_op', ARGV[6])
  return {'slow_down', tostring(interval)}
end
local status = h[3]
if h[7] == '1' and status == 'approved' then
  redis.call('HSET', KEYS[1], 'delivered', ARGV[6], 'last_poll_ms', ARGV[5], 'poll_op', ARGV[6])
  return {'approved', h[10], h[11], h[12], h[13], h[15] or ''}
end
redis.call('HSET', KEYS[1], 'last_poll_ms', ARGV[5], 'poll_op', ARGV[6])
if h[7] == '1' and status == 'denied' then return {'denied', h[9]} end
if status == 'cancelled' then return {'denied', 'cancelled'} end
if now >= tonumber(h[4]) then return {'expired'} end
return {'pending'}
`)

// undoDeliveryScript takes back a delivery whose read failed (the IdP got
// an error, not the result), if that read made it. KEYS: auth. ARGV: op.
var undoDeliveryScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'delivered') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'delivered', '0')
return 1
`)

// decideScript records the one decision that wins. KEYS: auth.
// ARGV: subject, device_id, now_ms, nonce, decision, number, uv,
// sha256(decision JWS).
// Returns {notfound} | {conflict} | {gone} | {badnonce} |
// {approved|denied, reason, client_id, kind, expires_ms}. The same decision
// sent again (same JWS, same device) answers as the first did.
var decideScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'kind', 'subject', 'status', 'expires_ms', 'nonce', 'number', 'client_id',
  'decision_sha', 'device_id', 'reason')
if not h[1] or h[2] ~= ARGV[1] then return {'notfound'} end
if h[3] ~= 'pending' and h[3] ~= 'claimed' then
  if h[8] == ARGV[8] and h[9] == ARGV[2] then return {h[3], h[10], h[7], h[1], h[4]} end
  return {'conflict'}
end
if tonumber(ARGV[3]) >= tonumber(h[4]) then return {'gone'} end
if h[5] ~= ARGV[4] then return {'badnonce'} end
local status, reason = 'denied', 'denied'
if ARGV[5] == 'approve' then
  if ARGV[6] == h[6] then status, reason = 'approved', '' else reason = 'wrong_number' end
elseif ARGV[5] == 'fraud' then
  reason = 'fraud'
end
redis.call('HSET', KEYS[1], 'status', status, 'reason', reason, 'device_id', ARGV[2], 'uv', ARGV[7],
  'decided_ms', ARGV[3], 'audited', '0', 'decision_sha', ARGV[8])
return {status, reason, h[7], h[1], h[4]}
`)

// afterDecisionScript audits a decision and keeps the practitioner's
// counters, once per login. KEYS: pending, denials, block, audit, ended.
// ARGV: challenge_id, status, reason, denials before block, block ms,
// decision entry, fraud entry, minid, audit ttl, ended ttl ms.
// Returns ok | blocked | again (already done: nothing changed).
var afterDecisionScript = redis.NewScript(auditLua + `
if not redis.call('SET', KEYS[5], 'decided', 'NX', 'PX', ARGV[10]) then return 'again' end
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
// Returns {invalid_grant} | {noop} | {cancelled, subject, expires_ms}. A
// cancelled login answers cancelled again, so that a cancel run again
// finishes what the first may not have (cancelledScript runs once).
var cancelScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'auth_sha', 'client_id', 'status', 'expires_ms', 'subject')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return {'invalid_grant'} end
if h[3] == 'cancelled' then return {'cancelled', h[5], h[4]} end
if (h[3] ~= 'pending' and h[3] ~= 'claimed') or tonumber(ARGV[3]) >= tonumber(h[4]) then return {'noop'} end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'reason', 'cancelled', 'audited', '1')
return {'cancelled', h[5], h[4]}
`)

// claimScript binds a QR login to the claiming device's practitioner.
// KEYS: auth, qr. ARGV: sha256(token), now_ms, subject, device_id, op,
// identity (JSON, or empty without a directory).
// Returns {invalid} | {ok, field, value, ...} (the authentication). The
// claim keeps its op: the same claim resent (a lost reply) gets the same
// answer; any other use of the token is refused (single use).
var claimScript = redis.NewScript(`
local now = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'claim_op') == ARGV[5] then
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, 1, 'ok')
  return out
end
local exp = redis.call('HGET', KEYS[2], ARGV[1])
if not exp or tonumber(exp) <= now then return {'invalid'} end
local h = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
if h[1] ~= 'pending' or now >= tonumber(h[2]) then return {'invalid'} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'claimed', 'subject', ARGV[3], 'claimed_device', ARGV[4],
  'claim_op', ARGV[5], 'identity', ARGV[6])
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 'ok')
return out
`)

// claimedScript records a claimed login on the practitioner's hash tag, once:
// not again when it is pending there already or has ended.
// KEYS: pending, audit, ended. ARGV: challenge_id, expires_ms, entry, minid, audit ttl, now_ms.
var claimedScript = redis.NewScript(auditLua + `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 1 then return 'ok' end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) - tonumber(ARGV[6]) + 60000)
audit_append(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
return 'ok'
`)

// cancelledScript audits a cancellation on the practitioner's hash tag, once.
// KEYS: pending, audit, ended. ARGV: challenge_id, entry, minid, audit ttl, ended ttl ms.
var cancelledScript = redis.NewScript(auditLua + `
if not redis.call('SET', KEYS[3], 'cancelled', 'NX', 'PX', ARGV[5]) then return 'again' end
redis.call('ZREM', KEYS[1], ARGV[1])
audit_append(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
return 'ok'
`)
