package push

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// drainLegacy sends what the versions before the shards left in their one
// stream, {push}:jobs: pushes queued by a replica not yet upgraded, handed
// back by one that stopped, or held by one that died. While that stream
// exists (it expires 24 h after the last enqueue of an old version), each
// housekeeping round takes over its stale pending entries and reads its new
// ones without blocking: during a rolling upgrade the old replicas read it
// themselves, and what is left once the last one stopped waits Housekeep at
// most. It is never written here, nor created: when it is gone this costs
// one EXISTS per round.
func (q *Queue) drainLegacy(ctx context.Context) {
	legacy := q.keys.legacyStream()
	if n, err := q.rdb.Exists(ctx, legacy).Result(); err != nil || n == 0 {
		return
	}
	q.reclaimStream(ctx, legacy)
	for ctx.Err() == nil {
		room := q.opts.MaxHeld - q.heldCount()
		if room <= 0 {
			return
		}
		count := min(room, 100)
		read, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: q.opts.Consumer,
			Streams: []string{legacy, ">"}, Count: int64(count), Block: -1}).Result() // no BLOCK
		if isNoGroup(err) { // a stream without the group: not one of ours, or being deleted
			if err := q.rdb.XGroupCreate(ctx, legacy, group, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				return
			}
			continue
		}
		if err != nil { // redis.Nil: nothing new
			return
		}
		got := 0
		for _, s := range read {
			for _, msg := range s.Messages {
				got++
				if t := q.hold(legacy, msg); t != nil {
					at := time.Now()
					if t.next.After(at) { // handed back while waiting for its retry
						at = t.next
					}
					q.later(t, at)
				}
			}
		}
		if got < count {
			return
		}
	}
}
