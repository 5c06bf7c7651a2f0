package push

import (
	"hash/fnv"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/keyslot"
)

// Key layout (docs/redis.md). Every key starts with the configured prefix.
// The queue is Shards streams; a login's pushes and its marker carry the
// hash tag of its shard n (FNV-1a of the challenge id mod Shards), so that
// the enqueue script touches one slot. The tag is {push:<n>:<k>}, k the
// smallest number that puts it in the n-th of Shards equal ranges of the
// 16,384 slots: a Cluster whose masters hold equal slot ranges (as
// `redis-cli --cluster create` makes them) gets an equal share of the shards
// (16 over 3 masters: 5, 6, 5). Plain {push:0}..{push:15} would not: CRC16
// puts them in four bunches (4, 4, 8 over 3 masters; none on 2 of 6).
//
//	{push:<n>:<k>}:jobs             stream, one entry per push (fields c challenge_id,
//	                                d device_id, t token, x expiry ms, n enqueue ms,
//	                                a attempts before a hand-back, w not before ms:
//	                                the retry a hand-back's push waited for); consumer group
//	                                "senders". Entries are deleted when done; older
//	                                than Retention they are trimmed (XADD/XTRIM MINID ~);
//	                                the stream expires 24 h after its last enqueue.
//	{push:<n>:<k>}:enq:<challenge_id>
//	                                string, "this login's pushes are queued": a retried
//	                                enqueue adds nothing; TTL the login's life + 1 min
//	{push}:jobs                     the single stream of the versions before the shards:
//	                                only read (drained), never written, until it expires
type keys struct {
	prefix string
	tags   []string // each shard's hash tag, braces included
}

func newKeys(prefix string, shards int) keys {
	k := keys{prefix: prefix, tags: make([]string, shards)}
	for n := range shards {
		lo, hi := n*keyslot.Count/shards, (n+1)*keyslot.Count/shards
		for i := 0; ; i++ {
			tag := "push:" + strconv.Itoa(n) + ":" + strconv.Itoa(i)
			if s := int(keyslot.Of(tag)); s >= lo && s < hi {
				k.tags[n] = "{" + tag + "}"
				break
			}
		}
	}
	return k
}

func (k keys) stream(shard int) string { return k.prefix + k.tags[shard] + ":jobs" }
func (k keys) enqueued(shard int, challenge string) string {
	return k.prefix + k.tags[shard] + ":enq:" + challenge
}

// legacyStream is the one stream of the versions before the shards.
func (k keys) legacyStream() string { return k.prefix + "{push}:jobs" }

// shard is the shard of a login: stable, so that a retried enqueue finds
// its marker.
func (k keys) shard(challenge string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(challenge))
	return int(h.Sum32() % uint32(len(k.tags)))
}

// streams are every shard's stream, shard 0 first.
func (k keys) streams() []string {
	out := make([]string, len(k.tags))
	for i := range out {
		out[i] = k.stream(i)
	}
	return out
}

// StreamKeys are the keys of the queue's shard streams for a key prefix and
// a number of shards (0: the default), for tools and tests that look inside
// the queue.
func StreamKeys(keyPrefix string, shards int) []string {
	if shards <= 0 {
		shards = DefaultShards
	}
	return newKeys(keyPrefix, shards).streams()
}

// group is the consumer group of every replica's senders.
const group = "senders"

// enqueueScript queues one login's pushes once. KEYS[1] stream, KEYS[2]
// enqueued marker. ARGV: marker ttl ms, MINID, stream ttl ms, then five per
// push: challenge_id, device_id, token, expiry ms, enqueue ms.
// Returns the number of pushes queued (0 for a retried enqueue).
var enqueueScript = redis.NewScript(`
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local n = 0
for i = 4, #ARGV, 5 do
  redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*',
    'c', ARGV[i], 'd', ARGV[i+1], 't', ARGV[i+2], 'x', ARGV[i+3], 'n', ARGV[i+4])
  n = n + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
`)

// renewScript renews this consumer's lease on the entries it still owns
// (XCLAIM to itself resets their idle time, so that no other replica takes
// them over). KEYS[1] stream. ARGV: group, consumer, ids. Returns the ids
// still owned.
var renewScript = redis.NewScript(`
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(kept, ARGV[i])
  end
end
return kept
`)

// releaseScript hands pushes that this consumer still owns back to the
// queue, for another replica to take at once (graceful stop): a copy is
// added and the original acknowledged and deleted, atomically. KEYS[1]
// stream. ARGV: group, consumer, then eight per push: id, c, d, t, x, n, a,
// w (Unix ms before which it must not be sent: a Retry-After or backoff it
// was waiting for; 0 for none, and then no w field).
// Returns how many were handed back.
var releaseScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV, 8 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    local f = {'c', ARGV[i+1], 'd', ARGV[i+2], 't', ARGV[i+3], 'x', ARGV[i+4], 'n', ARGV[i+5], 'a', ARGV[i+6]}
    if ARGV[i+7] ~= '0' then
      table.insert(f, 'w')
      table.insert(f, ARGV[i+7])
    end
    redis.call('XADD', KEYS[1], '*', unpack(f))
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
`)
