package challenge

import (
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceindex"
)

// Key layout (docs/redis.md). Every key starts with the configured prefix.
//
//	{a:<tag>}               hash, one authentication; TTL expiry + 10 min (the
//	                        IdP and the QR page still read its end)
//	{a:<tag>}:qr            hash sha256(qr token) -> expiry ms; TTL the authentication's
//	{sub:<idNat>}:logins    hash, the practitioner's side of their logins, read
//	                        whole in one command (HGETALL: a few dozen fields):
//	  p:<challenge_id>      "<expiry ms>|<challenge JSON>": undecided, for the
//	                        phone's list and the pending limit
//	  w:<challenge_id>      "<creation ms>": a push login in the push window
//	  e:<challenge_id>      "<keep until ms>": its end (decision or cancel) was
//	                        counted and audited: run again, nothing more
//	  r:<challenge_id>      "<keep until ms>|<limit>|<retry ms>": a refusal by a
//	                        limit, so that the create run again answers the same
//	  block                 "<until ms>|<denials|fraud>": pushes blocked
//	  denials               "<count>|<last ms>": consecutive denials (24 h)
//	                        stale fields go when the next login is created; TTL
//	                        refreshed on every write (24 h, or the block)
//	<prefix>auth-events     pub/sub channel: the tag of an authentication that ended
type keys struct{ prefix string }

func (k keys) auth(tag string) string       { return k.prefix + "{a:" + tag + "}" }
func (k keys) qr(tag string) string         { return k.prefix + "{a:" + tag + "}:qr" }
func (k keys) logins(subject string) string { return k.prefix + "{sub:" + subject + "}:logins" }
func (k keys) channel() string              { return k.prefix + "auth-events" }

const auditLua = audit.AppendLua

const indexLua = deviceindex.Lua

// createPushScript checks the practitioner's devices and limits and records
// a new push login, atomically on the practitioner's hash tag.
// KEYS: devices, logins, audit, active devices. The active devices and their
// push tokens are read as strings from the active hash (package
// deviceindex), built from the devices' JSON only when it has never been;
// the devices hash is only asked whether it exists, when no device is active.
// ARGV: now_ms, expires_ms, challenge_id, pending_limit, pushes_limit,
// window_ms, created entry, minid, audit ttl, "<expiry ms>|<challenge JSON>" (the phone's
// view), time (RFC 3339, for a limit.hit entry), client_id, keep ms (the
// hash's TTL), subject. Only a refusal builds its limit.hit entry.
// Returns {ok, device_id, token, ...} | {unknown_user} | {no_active_device} |
// {limit, name, retry_ms}. Run again for the same challenge_id, it answers
// as the first run did and changes nothing.
var createPushScript = redis.NewScript(auditLua + indexLua + `
local now, chl = tonumber(ARGV[1]), ARGV[3]
local out = {'ok'}
local index = device_index(KEYS[1], KEYS[4])
local active = 0
for i = 1, #index, 2 do
  if index[i] ~= '_v' then
    active = active + 1
    if index[i + 1] ~= '' then table.insert(out, index[i]); table.insert(out, index[i + 1]) end
  end
end
local h = redis.call('HGETALL', KEYS[2])
local f = {}
for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
if f['p:' .. chl] or f['e:' .. chl] then return out end -- a run again: recorded already
local memo = f['r:' .. chl]
if memo then
  local _, name, retry = string.match(memo, '^(%d+)|(.*)|(%d+)$')
  return {'limit', name, retry}
end
if active == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_user'} end
  return {'no_active_device'}
end
-- Count, and forget what is stale.
local window = tonumber(ARGV[6])
local pending, oldestExp, pushes, oldestPush, stale = 0, nil, 0, nil, {}
for k, v in pairs(f) do
  local kind = string.sub(k, 1, 2)
  local t = tonumber(string.match(v, '^(%d+)'))
  if kind == 'p:' then
    if t <= now then table.insert(stale, k) else
      pending = pending + 1
      if not oldestExp or t < oldestExp then oldestExp = t end
    end
  elseif kind == 'w:' then
    if t <= now - window then table.insert(stale, k) else
      pushes = pushes + 1
      if not oldestPush or t < oldestPush then oldestPush = t end
    end
  elseif (kind == 'e:' or kind == 'r:') and t <= now then
    table.insert(stale, k)
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
local function refuse(name, retry)
  retry = tostring(math.max(retry, 1))
  local entry = cjson.encode({time = ARGV[11], event = 'limit.hit', subject = ARGV[14],
    actor = {type = 'client', id = ARGV[12]}, details = {limit = name, kind = 'push', challenge_id = chl}})
  audit_append(KEYS[3], entry, ARGV[8], ARGV[9])
  redis.call('HSET', KEYS[2], 'r:' .. chl, (now + 60000) .. '|' .. name .. '|' .. retry)
  redis.call('PEXPIRE', KEYS[2], ARGV[13])
  return {'limit', name, retry}
end
local block = f['block']
if block then
  local untilMs = tonumber(string.match(block, '^(%d+)'))
  if untilMs > now then return refuse('blocked', untilMs - now) end
  redis.call('HDEL', KEYS[2], 'block')
end
if pending >= tonumber(ARGV[4]) then return refuse('pending_per_subject', oldestExp - now) end
if pushes >= tonumber(ARGV[5]) then return refuse('pushes_per_subject', oldestPush + window - now) end
redis.call('HSET', KEYS[2], 'p:' .. chl, ARGV[10], 'w:' .. chl, now)
redis.call('PEXPIRE', KEYS[2], ARGV[13])
audit_append(KEYS[3], ARGV[7], ARGV[8], ARGV[9])
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

// afterDecisionLua defines after_decision(logins, audit, chl, status,
// reason, denials before block, block ms, entry, fraud entry or ”, minid,
// audit ttl, end kept until ms, now ms, keep ms): audits a decision and
// keeps the practitioner's counters, once per login. Returns ok | blocked
// | again (already done: nothing changed).
const afterDecisionLua = `
local function after_decision(logins, stream, chl, status, reason, denialsMax, blockMs, entry, fraud, minid, ttl,
    endUntil, now, keep)
  if redis.call('HSETNX', logins, 'e:' .. chl, endUntil) == 0 then return 'again' end
  audit_append(stream, entry, minid, ttl)
  if status == 'approved' then
    -- Fields removed: the hash was there before this script, with the TTL
    -- that every writer of it sets (longer than the end mark's life).
    if redis.call('HDEL', logins, 'p:' .. chl, 'denials') == 0 then redis.call('PEXPIRE', logins, keep) end
    return 'ok'
  end
  redis.call('HDEL', logins, 'p:' .. chl)
  local res = 'ok'
  if reason == 'fraud' then
    audit_append(stream, fraud, minid, ttl)
    redis.call('HSET', logins, 'block', (now + tonumber(blockMs)) .. '|fraud')
    redis.call('HDEL', logins, 'denials')
    res = 'blocked'
  else
    local d = redis.call('HGET', logins, 'denials')
    local n, last = 0, 0
    if d then n, last = string.match(d, '^(%d+)|(%d+)$'); n, last = tonumber(n), tonumber(last) end
    if now - last > 86400000 then n = 0 end
    n = n + 1
    if n >= tonumber(denialsMax) then
      redis.call('HSET', logins, 'block', (now + tonumber(blockMs)) .. '|denials')
      redis.call('HDEL', logins, 'denials')
      res = 'blocked'
    else
      redis.call('HSET', logins, 'denials', n .. '|' .. now)
    end
  end
  redis.call('PEXPIRE', logins, keep)
  return res
end
`

// afterDecisionScript audits a decision and keeps the practitioner's
// counters, once per login (after_decision). KEYS: logins, audit.
// ARGV: challenge_id, status, reason, denials before block, block ms,
// decision entry, fraud entry (or empty), minid, audit ttl, end kept until
// ms, now ms, keep ms (the hash's TTL).
// Returns ok | blocked | again (already done: nothing changed).
var afterDecisionScript = redis.NewScript(auditLua + afterDecisionLua + `
return after_decision(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
  ARGV[9], ARGV[10], tonumber(ARGV[11]), ARGV[12])
`)

// decideOnceScript is a decision in one step, for a login on its
// practitioner's slot: the request proof's step first when it is given
// (deviceindex.ProofLua), decideScript's checks and record, then
// after_decision, and the result made readable (audited = 1) unless it
// is a Keycloak login and a hook takes those (ARGV[19] = 1): then
// Respond queues the callback before it marks it readable.
// KEYS: auth, logins, audit, and, with a proof, its four keys
// (proof_accept's: devices, jti, active devices, last uses).
// ARGV: subject, device_id, now_ms, nonce, decision, number, uv,
// sha256(decision JWS), challenge_id, denials before block, block ms,
// entry if approved, entry if denied, fraud entry (or empty) — their
// client_id is "@client_id@", put in here —, minid, audit ttl, kept after
// end ms, logins keep ms, keycloak hook (1|0), and, with a proof, its four
// arguments.
// Returns {proof, why} (the proof was refused: nothing done) | {notfound} |
// {conflict} | {gone} | {badnonce} |
// {approved|denied, reason, client_id, kind, expires_ms, ok|blocked|again,
// audited}. The same decision sent again answers as the first did.
var decideOnceScript = redis.NewScript(auditLua + afterDecisionLua + indexLua + deviceindex.ProofLua + `
if KEYS[4] then
  local proof = proof_accept(KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[20], ARGV[21], ARGV[22], ARGV[23])
  if proof ~= 'ok' then return {'proof', proof} end
end
local h = redis.call('HMGET', KEYS[1], 'kind', 'subject', 'status', 'expires_ms', 'nonce', 'number', 'client_id',
  'decision_sha', 'device_id', 'reason', 'audited')
if not h[1] or h[2] ~= ARGV[1] then return {'notfound'} end
local now, status, reason, audited = tonumber(ARGV[3]), h[3], h[10], h[11]
if status ~= 'pending' and status ~= 'claimed' then
  if h[8] ~= ARGV[8] or h[9] ~= ARGV[2] then return {'conflict'} end
else
  if now >= tonumber(h[4]) then return {'gone'} end
  if h[5] ~= ARGV[4] then return {'badnonce'} end
  status, reason = 'denied', 'denied'
  if ARGV[5] == 'approve' then
    if ARGV[6] == h[6] then status, reason = 'approved', '' else reason = 'wrong_number' end
  elseif ARGV[5] == 'fraud' then
    reason = 'fraud'
  end
  audited = '1'
  if ARGV[19] == '1' and string.sub(h[7], 1, 9) == 'keycloak:' then audited = '0' end
  redis.call('HSET', KEYS[1], 'status', status, 'reason', reason, 'device_id', ARGV[2], 'uv', ARGV[7],
    'decided_ms', ARGV[3], 'audited', audited, 'decision_sha', ARGV[8])
end
local function with_client(entry)
  local i, j = string.find(entry, '"@client_id@"', 1, true)
  if not i then return entry end
  return string.sub(entry, 1, i - 1) .. cjson.encode(h[7]) .. string.sub(entry, j + 1)
end
local entry = ARGV[13]
if status == 'approved' then entry = ARGV[12] end
local fraud = ''
if reason == 'fraud' then fraud = with_client(ARGV[14]) end
local done = after_decision(KEYS[2], KEYS[3], ARGV[9], status, reason, ARGV[10], ARGV[11], with_client(entry),
  fraud, ARGV[15], ARGV[16], tonumber(h[4]) + tonumber(ARGV[17]), now, ARGV[18])
return {status, reason, h[7], h[1], h[4], done, audited}
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
// KEYS: logins, audit. ARGV: challenge_id, "<expiry ms>|<challenge JSON>",
// entry, minid, audit ttl, keep ms.
var claimedScript = redis.NewScript(auditLua + `
local chl = ARGV[1]
if redis.call('HEXISTS', KEYS[1], 'e:' .. chl) == 1 then return 'ok' end
if redis.call('HSETNX', KEYS[1], 'p:' .. chl, ARGV[2]) == 0 then return 'ok' end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
audit_append(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
return 'ok'
`)

// cancelledScript audits a cancellation on the practitioner's hash tag, once.
// KEYS: logins, audit. ARGV: challenge_id, entry, minid, audit ttl, end
// kept until ms, keep ms.
var cancelledScript = redis.NewScript(auditLua + `
local chl = ARGV[1]
if redis.call('HSETNX', KEYS[1], 'e:' .. chl, ARGV[5]) == 0 then return 'again' end
redis.call('HDEL', KEYS[1], 'p:' .. chl)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
audit_append(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
return 'ok'
`)
