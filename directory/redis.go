package directory

import (
	"hash/fnv"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Key layout (docs/redis.md). Every key starts with the configured prefix.
//
//	{dir}:current          hash version, buckets: the version readers use (absent: none loaded)
//	{dir}:lock             string, the token of the import or clear running; PX LockTTL, renewed
//	{dir}:versions         set of every version written and not yet removed (current,
//	                       being imported, or left behind by a killed import)
//	{dir}:meta:<v>         hash state, buckets, started, file; summary (JSON) once switched
//	{dir}:labels:<v>       string, the version's label table (encode.go)
//	{dir:<b>}:<v>          hash idNat -> compact entry, for the idNats of bucket b
//
// The version's bookkeeping shares the {dir} hash tag (one slot: the switch
// is one script); each bucket has a tag of its own, so a Cluster spreads a
// version over every node, and the importer writes, and removes, one key per
// command. No key has a TTL: a version lives until replaced or cleared.
type keys struct{ prefix string }

func (k keys) current() string               { return k.prefix + "{dir}:current" }
func (k keys) lock() string                  { return k.prefix + "{dir}:lock" }
func (k keys) versions() string              { return k.prefix + "{dir}:versions" }
func (k keys) meta(v string) string          { return k.prefix + "{dir}:meta:" + v }
func (k keys) labels(v string) string        { return k.prefix + "{dir}:labels:" + v }
func (k keys) bucket(v string, b int) string { return k.prefix + "{dir:" + strconv.Itoa(b) + "}:" + v }

// bucketOf is the bucket of an idNat: FNV-1a (32 bits) modulo the version's
// number of buckets. Writers and readers must agree on it forever: a change
// needs a new format.
func bucketOf(idNat string, buckets int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(idNat))
	return int(h.Sum32() % uint32(buckets))
}

// renewLockScript: KEYS[1] lock; ARGV token, ttl ms. 1 when still ours.
var renewLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// unlockScript: KEYS[1] lock; ARGV token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// switchScript makes a version current, if the lock is still ours.
// KEYS[1] lock, KEYS[2] current, KEYS[3] the new version's meta.
// ARGV: token, version, buckets, summary JSON.
// Returns {lost} | {ok, previous version or ”}.
var switchScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
local old = redis.call('HGET', KEYS[2], 'version') or ''
redis.call('HSET', KEYS[3], 'state', 'current', 'summary', ARGV[4])
redis.call('HSET', KEYS[2], 'version', ARGV[2], 'buckets', ARGV[3])
return {'ok', old}
`)

// unloadScript removes the pointer (no directory loaded), if the lock is
// still ours. KEYS[1] lock, KEYS[2] current. ARGV token.
// Returns {lost} | {ok, previous version or ”}.
var unloadScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
local old = redis.call('HGET', KEYS[2], 'version') or ''
redis.call('DEL', KEYS[2])
return {'ok', old}
`)
