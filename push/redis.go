package push

import "github.com/redis/go-redis/v9"

// Key layout (docs/redis.md). Every key starts with the configured prefix and
// carries the {push} hash tag, so that the scripts below touch one slot.
//
//	{push}:jobs                 stream, one entry per push (fields c challenge_id,
//	                            d device_id, t token, x expiry ms, n enqueue ms,
//	                            a attempts before a hand-back, w not before ms:
//	                            the retry a hand-back's push waited for); consumer group
//	                            "senders". Entries are deleted when done; older
//	                            than Retention they are trimmed (XADD/XTRIM MINID ~);
//	                            the stream expires 24 h after its last enqueue.
//	{push}:enq:<challenge_id>   string, "this login's pushes are queued": a retried
//	                            enqueue adds nothing; TTL the login's life + 1 min
type keys struct{ prefix string }

func (k keys) stream() string                   { return k.prefix + "{push}:jobs" }
func (k keys) enqueued(challenge string) string { return k.prefix + "{push}:enq:" + challenge }

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
