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
