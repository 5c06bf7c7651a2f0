// Package deviceindex is the hot path's view of a practitioner's devices:
// which are active, with their push tokens, and when each was last used,
// as plain strings that Lua scripts read without decoding JSON.
//
// Package enrollment keeps each device as JSON in {sub:<idNat>}:devices
// (its descriptive part and its status: the source of truth). Beside it, on
// the same hash tag (so that every script stays on one Cluster slot):
//
//	{sub:<idNat>}:active  hash: device_id -> push token ("" when none), exactly
//	                      the active devices, and the marker field "_v" = "1"
//	{sub:<idNat>}:used    hash: device_id -> last_used_at (RFC 3339), written by
//	                      every accepted request proof
//
// Every script that changes a device's status or push token changes the
// active hash in the same run. A hash without the marker (written by a
// version before this index, or never built) is built from the JSON by the
// first script that needs it (Lua: device_index, device_index_ensure), once.
// Scripts skip the marker when they read the hash (Marker).
//
// Package challenge's push login reads the active hash; it gets the keys'
// names from enrollment through its own small interface and shares only
// this Lua with it.
package deviceindex

// Marker is the field of the active hash that says it is built; it is never
// a device id (those start with "dev_").
const Marker = "_v"

// Lua is a fragment for domain scripts. It defines:
//
//	device_index_build(devices, active)  builds the active hash from the devices'
//	                                     JSON (one cjson.decode per device) and
//	                                     returns its fields and values, marker
//	                                     included; writes nothing when the
//	                                     practitioner has no device at all
//	device_index(devices, active)        HGETALL of the active hash, built first
//	                                     when its marker is missing
//	device_index_ensure(devices, active) builds it when its marker is missing;
//	                                     a script calls it before it changes the
//	                                     active hash
const Lua = `
local function device_index_build(devices, active)
  local h = redis.call('HGETALL', devices)
  redis.call('DEL', active)
  if #h == 0 then return {} end
  local out = {'_v', '1'}
  for i = 1, #h, 2 do
    local d = cjson.decode(h[i + 1])
    if d.status == 'active' then
      out[#out + 1] = h[i]
      out[#out + 1] = d.push_token or ''
    end
  end
  redis.call('HSET', active, unpack(out))
  return out
end
local function device_index(devices, active)
  local a = redis.call('HGETALL', active)
  for i = 1, #a, 2 do
    if a[i] == '_v' then return a end
  end
  return device_index_build(devices, active)
end
local function device_index_ensure(devices, active)
  if redis.call('HEXISTS', active, '_v') == 0 then device_index_build(devices, active) end
end
`

// ProofLua is a fragment for domain scripts, after Lua (it uses it). It
// defines proof_accept(devices, jti, active, used, device_id, now, jti ttl
// ms, op): the Redis step of a request proof verified in memory. It returns
// unknown | suspended | revoked | replay | ok. An active device is found in
// the active hash: no JSON is read. Only a device absent from it (not
// active, or an active hash not built yet) reads its JSON to say why, or
// builds the hash. The jti is recorded with the op of the request it
// belongs to: the same step resent by go-redis (or run again by the
// request's next script) finds its own op there, not a replay. On ok, the
// device's last use is now.
//
// Package enrollment runs it alone (its touch script) or hands its keys and
// arguments to the script of the request it guards, which runs it first:
// the decision's (package challenge), one script call for both.
const ProofLua = `
local function proof_accept(devices, jti, active, used, device, now, ttl, op)
  if redis.call('HEXISTS', active, device) == 0 then
    local raw = redis.call('HGET', devices, device)
    if not raw then return 'unknown' end
    local status = cjson.decode(raw).status
    if status ~= 'active' then
      device_index_ensure(devices, active)
      return status
    end
    device_index_build(devices, active) -- not built yet, or written by an older version
  end
  local seen = redis.call('SET', jti, op, 'NX', 'GET', 'PX', ttl)
  if seen and seen ~= op then return 'replay' end
  redis.call('HSET', used, device, now)
  return 'ok'
end
`
