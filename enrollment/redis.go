package enrollment

import (
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/deviceindex"
)

const indexLua = deviceindex.Lua

// Key layout (docs/redis.md). Every key starts with the configured prefix.
// Keys that one script touches together share a hash tag.
//
//	{act:<activation_id>}            string JSON, immutable part of an activation
//	                                 (subject, hashes of secret and code, expiry);
//	                                 TTL activation_ttl + 24 h
//	{sub:<idNat>}:act:<activation_id> hash status|attempts|expires_ms|device_id;
//	                                 TTL activation_ttl + 24 h
//	{sub:<idNat>}:devices            hash device_id -> device JSON; no TTL: devices
//	                                 live until revoked, and revoked ones stay listed
//	{sub:<idNat>}:active             hash device_id -> push token ("" when none) of
//	                                 exactly the active devices, and "_v" = "1"
//	                                 (package deviceindex); no TTL, as the devices
//	{sub:<idNat>}:used               hash device_id -> last_used_at (RFC 3339), written
//	                                 by every accepted request proof; no TTL
//	{sub:<idNat>}:jti:<device>:<jti> string, a seen proof jti; TTL 2 x proof_max_skew
//	{dev:<device_id>}                string JSON {subject, jwk}, immutable; no TTL
//	{key:<thumbprint>}               string device_id; no TTL: a key is never
//	                                 enrolled twice
type keys struct{ prefix string }

func (k keys) activation(id string) string { return k.prefix + "{act:" + id + "}" }
func (k keys) activationState(subject, id string) string {
	return k.prefix + "{sub:" + subject + "}:act:" + id
}
func (k keys) devices(subject string) string { return k.prefix + "{sub:" + subject + "}:devices" }
func (k keys) active(subject string) string  { return k.prefix + "{sub:" + subject + "}:active" }
func (k keys) used(subject string) string    { return k.prefix + "{sub:" + subject + "}:used" }
func (k keys) jti(subject, deviceID, jti string) string {
	return k.prefix + "{sub:" + subject + "}:jti:" + deviceID + ":" + jti
}
func (k keys) device(id string) string       { return k.prefix + "{dev:" + id + "}" }
func (k keys) publicKey(thumb string) string { return k.prefix + "{key:" + thumb + "}" }

// countLive counts the devices that are not revoked: the device limit.
const countLiveLua = `
local function count_live(devices)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', devices)) do
    if cjson.decode(v).status ~= 'revoked' then n = n + 1 end
  end
  return n
end
`

// createActivationScript: KEYS[1] devices, KEYS[2] activation state, KEYS[3] audit.
// ARGV: max devices, expires_ms, ttl_ms, audit entry, minid, audit ttl.
var createActivationScript = redis.NewScript(auditLua + countLiveLua + `
if redis.call('EXISTS', KEYS[2]) == 1 then return 'ok' end
if count_live(KEYS[1]) >= tonumber(ARGV[1]) then return 'limit' end
redis.call('HSET', KEYS[2], 'status', 'pending', 'attempts', 0, 'expires_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
audit_append(KEYS[3], ARGV[4], ARGV[5], ARGV[6])
return 'ok'
`)

// failAttemptScript uses one attempt for one wrong secret or code, once per
// operation: a resent script answers what the first run did.
// KEYS[1] activation state, KEYS[2] audit.
// ARGV: now_ms, max attempts, failed entry, destroyed entry, minid, audit ttl, op.
// Returns gone | failed | destroyed.
var failAttemptScript = redis.NewScript(auditLua + `
local again = redis.call('HGET', KEYS[1], 'op:' .. ARGV[7])
if again then return again end
local st = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
if st[1] ~= 'pending' or tonumber(st[2]) <= tonumber(ARGV[1]) then return 'gone' end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
audit_append(KEYS[2], ARGV[3], ARGV[5], ARGV[6])
local res = 'failed'
if n >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', 'destroyed')
  audit_append(KEYS[2], ARGV[4], ARGV[5], ARGV[6])
  res = 'destroyed'
end
redis.call('HSET', KEYS[1], 'op:' .. ARGV[7], res)
return res
`)

// enrolScript: KEYS[1] activation state, KEYS[2] devices, KEYS[3] audit,
// KEYS[4] active devices.
// ARGV: device_id, device JSON, max devices, now_ms, entry, minid, audit ttl,
// push token ("" when none).
// Returns {ok, device JSON} | {gone} | {limit}. Run again for a device it
// already enrolled (same activation, same key: same device id), it answers
// {ok, the device as stored} and changes nothing.
var enrolScript = redis.NewScript(auditLua + countLiveLua + indexLua + `
local done = redis.call('HGET', KEYS[2], ARGV[1])
if done then return {'ok', done} end
local st = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
if st[1] ~= 'pending' or tonumber(st[2]) <= tonumber(ARGV[4]) then return {'gone'} end
if count_live(KEYS[2]) >= tonumber(ARGV[3]) then return {'limit'} end
device_index_ensure(KEYS[2], KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], '_v', '1', ARGV[1], ARGV[8])
redis.call('HSET', KEYS[1], 'status', 'used', 'device_id', ARGV[1])
audit_append(KEYS[3], ARGV[5], ARGV[6], ARGV[7])
return {'ok', ARGV[2]}
`)

// releaseKeyScript gives back a key claimed for a device that was not
// enrolled: KEYS[1] the key's claim; ARGV[1] device_id. Only that device's
// claim is removed.
var releaseKeyScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// transitionScript changes a device's status: KEYS[1] devices, KEYS[2] audit,
// KEYS[3] active devices, KEYS[4] last uses.
// ARGV: device_id, action (suspend|resume|revoke), entry, minid, audit ttl, op.
// Returns {notfound} | {revoked} | {changed|same, device JSON after,
// last_used_at or ""}. The device keeps the op of its last change: a resent
// script answers changed. The active hash follows the status in the same run.
var transitionScript = redis.NewScript(auditLua + indexLua + `
local function answer(res, raw)
  return {res, raw, redis.call('HGET', KEYS[4], ARGV[1]) or ''}
end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'notfound'} end
local d = cjson.decode(raw)
if d.op == ARGV[6] then return answer('changed', raw) end
local action = ARGV[2]
local to
if action == 'revoke' then
  if d.status == 'revoked' then return answer('same', raw) end
  to = 'revoked'
  d.push_token = ''
elseif d.status == 'revoked' then
  return {'revoked'}
elseif action == 'suspend' then
  to = 'suspended'
else
  to = 'active'
end
if d.status == to then return answer('same', raw) end
device_index_ensure(KEYS[1], KEYS[3])
d.status = to
d.op = ARGV[6]
raw = cjson.encode(d)
redis.call('HSET', KEYS[1], ARGV[1], raw)
if to == 'active' then
  redis.call('HSET', KEYS[3], ARGV[1], d.push_token or '')
else
  redis.call('HDEL', KEYS[3], ARGV[1])
end
audit_append(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
return answer('changed', raw)
`)

// touchScript accepts a verified request proof (deviceindex.ProofLua):
// KEYS[1] devices, KEYS[2] jti, KEYS[3] active devices, KEYS[4] last uses.
// ARGV: device_id, now (RFC 3339), jti ttl ms, op.
// Returns unknown | suspended | revoked | replay | ok.
var touchScript = redis.NewScript(indexLua + deviceindex.ProofLua + `
return proof_accept(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
`)

// setPushTokenScript: KEYS[1] devices, KEYS[2] active devices; ARGV
// device_id, token. Returns notfound | revoked | ok.
var setPushTokenScript = redis.NewScript(indexLua + `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'notfound' end
local d = cjson.decode(raw)
if d.status == 'revoked' then return 'revoked' end
device_index_ensure(KEYS[1], KEYS[2])
d.push_token = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(d))
if d.status == 'active' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 'ok'
`)

// clearPushTokenScript clears a device's push token that the push provider
// reported dead, only if it is still that token (the phone may have sent a
// new one meanwhile), and audits it. KEYS[1] devices, KEYS[2] audit, KEYS[3]
// active devices. ARGV: device_id, token, entry, minid, audit ttl, op.
// Returns notfound | changed (another token, or none, is set: nothing done) |
// cleared.
var clearPushTokenScript = redis.NewScript(auditLua + indexLua + `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'notfound' end
local d = cjson.decode(raw)
if d.op == ARGV[6] then return 'cleared' end
if d.push_token ~= ARGV[2] then return 'changed' end
device_index_ensure(KEYS[1], KEYS[3])
d.push_token = ''
d.op = ARGV[6]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(d))
if d.status == 'active' then redis.call('HSET', KEYS[3], ARGV[1], '') end
audit_append(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
return 'cleared'
`)
